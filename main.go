// Command authbox is a small authentication server and its client: one
// binary, one bbolt file, SCRAM-SHA-256 on a line protocol.
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// Exit codes, as documented in the README.
const (
	exitOK      = 0
	exitRefused = 1 // the server refused the credentials or the name
	exitOther   = 2 // usage, connection, protocol, BUSY, LIMIT, TIMEOUT
)

// cliError is an error with what the user should see and the exit code.
type cliError struct {
	code int
	msg  string
	hint string
}

func (e *cliError) Error() string { return e.msg }

func fail(code int, hint, format string, args ...any) error {
	return &cliError{code: code, msg: fmt.Sprintf(format, args...), hint: hint}
}

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process: the tests drive it directly.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdin, stdout, stderr)
	err := app.Run(args)
	if err == nil {
		return exitOK
	}
	var ce *cliError
	if !errors.As(err, &ce) {
		ce = &cliError{code: exitOther, msg: err.Error(), hint: `run "authbox --help" for usage`}
	}
	fmt.Fprintf(stderr, "authbox: error: %s\n", ce.msg)
	if ce.hint != "" {
		fmt.Fprintf(stderr, "authbox: hint: %s\n", ce.hint)
	}
	return ce.code
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	serverFlag := &cli.StringFlag{Name: "server", Usage: "server `HOST:PORT` (default: AUTHBOX_SERVER, else client.server from --config, else 127.0.0.1:7886)", EnvVars: []string{"AUTHBOX_SERVER"}}
	userFlag := &cli.StringFlag{Name: "user", Usage: "username `NAME` (asked for when missing)"}
	stdinFlag := &cli.BoolFlag{Name: "password-stdin", Usage: "read the password from one line of standard input instead of the terminal", DisableDefaultText: true}
	configFlag := &cli.StringFlag{Name: "config", Usage: "read settings from `FILE`, in the format of auth.toml (default: the built-in defaults)"}
	usageErr := func(ctx *cli.Context, err error, _ bool) error {
		msg := err.Error()
		if f, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
			msg = "unknown flag --" + strings.TrimPrefix(f, "-")
		}
		return fail(exitOther, helpHint(ctx), "%s", msg)
	}
	app := &cli.App{
		Name:            "authbox",
		Usage:           "a small SCRAM-SHA-256 authentication server and its client",
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		OnUsageError:    usageErr,
		ExitErrHandler:  func(*cli.Context, error) {},
		// With no command, say so on standard error; a bare "authbox" in a
		// script is a mistake, not a request for help.
		Action: func(ctx *cli.Context) error {
			if ctx.NArg() > 0 {
				return fail(exitOther, `run "authbox --help" for the commands`, "unknown command %q", ctx.Args().First())
			}
			// The help goes to standard error with the error: a bare
			// "authbox" is a mistake, and its output must not look like data.
			out := ctx.App.Writer
			ctx.App.Writer = ctx.App.ErrWriter
			cli.ShowAppHelp(ctx)
			ctx.App.Writer = out
			return fail(exitOther, `run "authbox COMMAND --help" for a command's flags`, "no command given")
		},
		Commands: []*cli.Command{
			{
				Name:         "serve",
				Usage:        "run the server",
				OnUsageError: usageErr,
				Flags: []cli.Flag{
					configFlag,
					&cli.StringFlag{Name: "listen", Usage: "listen on `ADDR` (overrides the config's listen)"},
					&cli.StringFlag{Name: "db", Usage: "account database `FILE` (overrides the config's db)"},
				},
				Action: cmdServe,
			},
			{
				Name:         "register",
				Usage:        "create an account on a server",
				OnUsageError: usageErr,
				Flags:        []cli.Flag{serverFlag, userFlag, stdinFlag, configFlag},
				Action:       cmdRegister,
			},
			{
				Name:         "login",
				Usage:        "check a username and password against a server",
				OnUsageError: usageErr,
				Flags:        []cli.Flag{serverFlag, userFlag, stdinFlag, configFlag},
				Action:       cmdLogin,
			},
			{
				Name:         "passwd",
				Usage:        "change an account's password (current password, then the new one twice; --password-stdin: two lines)",
				OnUsageError: usageErr,
				Flags:        []cli.Flag{serverFlag, userFlag, stdinFlag, configFlag},
				Action:       cmdPasswd,
			},
			{
				Name:         "delete",
				Usage:        "delete an account, after its password and a confirmation",
				OnUsageError: usageErr,
				Flags: []cli.Flag{serverFlag, userFlag, stdinFlag, configFlag,
					&cli.BoolFlag{Name: "yes", Usage: "do not ask for a confirmation"}},
				Action: cmdDelete,
			},
			{
				Name:         "pw",
				Usage:        "print the SCRAM-SHA-256 verifier of a password, as PostgreSQL stores it, for users import --format pg",
				OnUsageError: usageErr,
				Flags: []cli.Flag{stdinFlag, configFlag,
					&cli.IntFlag{Name: "iterations", Usage: "PBKDF2 iterations `N` (default: iterations from the config, 600000)"}},
				Action: cmdPw,
			},
			benchCommand(usageErr),
		},
	}
	app.Commands = append(app.Commands, adminCommands(usageErr, configFlag)...)
	return app
}

// helpHint points at the help of the command at hand.
func helpHint(ctx *cli.Context) string {
	if ctx != nil && ctx.Command != nil && ctx.Command.Name != "" && ctx.Command.Name != ctx.App.Name {
		return `run "authbox ` + ctx.Command.FullName() + ` --help" for usage`
	}
	return `run "authbox --help" for usage`
}

func noCLIArgs(ctx *cli.Context) error {
	if ctx.NArg() > 0 {
		return fail(exitOther, `run "authbox `+ctx.Command.Name+` --help" for usage`, "unexpected argument %q", ctx.Args().First())
	}
	return nil
}

func loadConfig(ctx *cli.Context) (Config, error) {
	cfg, err := LoadConfig(ctx.String("config"))
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, fail(exitOther, "check the path given to --config; without --config the built-in defaults apply", "%s", err)
	}
	if err != nil {
		return cfg, fail(exitOther, "fix the file, or compare it with the documented defaults in auth.toml", "%s", err)
	}
	return cfg, nil
}

// errText is an error's last, most specific part ("connection refused").
func errText(err error) string {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	return err.Error()
}
