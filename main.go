// Command authbox is a small authentication server and its client: one
// binary, one bbolt file, SCRAM-SHA-256 on a line protocol.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

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
	// cause is the error explained, where a caller still needs to tell
	// what happened (the client's failover); nil for most.
	cause error
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) Unwrap() error { return e.cause }

func fail(code int, hint, format string, args ...any) error {
	return &cliError{code: code, msg: fmt.Sprintf(format, args...), hint: hint}
}

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process: the tests drive it directly.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdin, stdout, stderr)
}

// runContext is run with a context whose end stops "serve" as SIGTERM
// does: the tests stop an in-process server with it, since a signal would
// reach the whole test process.
func runContext(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := newApp(stdin, stdout, stderr).RunContext(ctx, args)
	if err == nil {
		return exitOK
	}
	var ce *cliError
	if !errors.As(err, &ce) {
		ce = &cliError{code: exitOther, msg: err.Error(), hint: runHint("", "usage")}
	}
	// Every error ends here, and many carry what a server (or a file)
	// said: printable keeps escape sequences in it off the terminal.
	fmt.Fprintf(stderr, "authbox: error: %s\n", printable(ce.msg))
	if ce.hint != "" {
		fmt.Fprintf(stderr, "authbox: hint: %s\n", printable(ce.hint))
	}
	return ce.code
}

// The flags that several commands take, each defined here once. Every app
// makes its own: urfave/cli writes into a flag as it applies it (the value
// from AUTHBOX_SERVER, say), so one flag shared between runs would carry
// one run's state into the next.

func newServerFlag() cli.Flag {
	return &cli.StringFlag{Name: "server", Usage: "server `HOST[:PORT]`, port 7886 when left out, or several separated by commas, tried in order (default: AUTHBOX_SERVER, else client.server from --config, else 127.0.0.1:7886)", EnvVars: []string{"AUTHBOX_SERVER"}}
}

func newConfigFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", Usage: "read settings from `FILE`, in the format of auth.toml (default: the built-in defaults)"}
}

func newPasswordStdinFlag() cli.Flag {
	return &cli.BoolFlag{Name: "password-stdin", Usage: "read the password from one line of standard input, a pipe or a file (not a terminal), instead of asking", DisableDefaultText: true}
}

// clientFlags are the flags of the client commands (register, login,
// passwd, delete), then extra: a flag for all of them goes here.
func clientFlags(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{
		newServerFlag(),
		&cli.StringFlag{Name: "user", Usage: "username `NAME` (asked for when missing)"},
		newPasswordStdinFlag(),
		newConfigFlag(),
	}, append(newTrustFlags(), extra...)...)
}

// usageError reports what urfave/cli found wrong with the flags in our
// words, with a hint to the command's help.
func usageError(ctx *cli.Context, err error, _ bool) error {
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag --" + strings.TrimPrefix(f, "-")
	} else if m := flagValueError(ctx, msg); m != "" {
		msg = m
	}
	return fail(exitOther, helpHint(ctx), "%s", msg)
}

// newApp is the table of commands, long because it is one table: each
// entry is its name, its help, its flags and its action.
func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:            "authbox",
		Usage:           "a small SCRAM-SHA-256 authentication server and its client",
		Version:         version(),
		Flags:           []cli.Flag{cli.HelpFlag}, // our "help" command stops urfave/cli from adding it
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		OnUsageError:    usageError,
		ExitErrHandler:  func(*cli.Context, error) {},
		// With no command, say so on standard error; a bare "authbox" in a
		// script is a mistake, not a request for help.
		Action: func(ctx *cli.Context) error {
			if ctx.NArg() > 0 {
				return fail(exitOther, runHint("", "the commands"), "unknown command %q", ctx.Args().First())
			}
			// The help goes to standard error with the error: a bare
			// "authbox" is a mistake, and its output must not look like data.
			out := ctx.App.Writer
			ctx.App.Writer = ctx.App.ErrWriter
			cli.ShowAppHelp(ctx)
			ctx.App.Writer = out
			return fail(exitOther, runHint("COMMAND", "a command's flags"), "no command given")
		},
		Commands: []*cli.Command{
			{
				Name:         "serve",
				Usage:        "run the server",
				OnUsageError: usageError,
				Flags: []cli.Flag{
					newConfigFlag(),
					&cli.StringFlag{Name: "listen", Usage: "listen on `ADDR` (overrides the config's listen)"},
					&cli.StringFlag{Name: "db", Usage: "account database `FILE` (overrides the config's db)"},
				},
				Action: cmdServe,
			},
			{
				Name:         "register",
				Usage:        "create an account on a server",
				OnUsageError: usageError,
				Flags:        clientFlags(),
				Action:       cmdRegister,
			},
			{
				Name:         "login",
				Usage:        "check a username and password against a server",
				OnUsageError: usageError,
				Flags:        clientFlags(),
				Action:       cmdLogin,
			},
			{
				Name:         "passwd",
				Usage:        "change an account's password (the current password, checked first, then the new one twice; --password-stdin: two lines)",
				OnUsageError: usageError,
				Flags:        clientFlags(),
				Action:       cmdPasswd,
			},
			{
				Name:         "delete",
				Usage:        "delete an account, after its password and a confirmation",
				OnUsageError: usageError,
				Flags:        clientFlags(&cli.BoolFlag{Name: "yes", Usage: "do not ask for a confirmation"}),
				Action:       cmdDelete,
			},
			{
				Name:         "pw",
				Usage:        "print the SCRAM-SHA-256 verifier of a password, as PostgreSQL stores it, for users import --format pg",
				OnUsageError: usageError,
				Flags: []cli.Flag{newPasswordStdinFlag(), newConfigFlag(),
					&cli.IntFlag{Name: "iterations", Usage: "PBKDF2 iterations `N` (default: iterations from the config, 600000)"}},
				Action: cmdPw,
			},
			{
				Name:         "fingerprint",
				Usage:        "print the server's TLS key fingerprint, which clients pin (through the running server, or from the db and config)",
				OnUsageError: usageError,
				Flags: []cli.Flag{newConfigFlag(),
					&cli.StringFlag{Name: "db", Usage: "account database `FILE` (default: db from the config)"}},
				Action: cmdFingerprint,
			},
			checkCommand(usageError),
			benchCommand(usageError),
		},
	}
	app.Commands = append(app.Commands, append(adminCommands(usageError), restoreCommand(usageError), configCommand(usageError), helpCommand())...)
	oneDefaultText(app.Commands)
	return app
}

// oneDefaultText keeps urfave/cli from adding its own "(default: 0)" to a
// flag whose usage already ends by saying what its default is (the
// config's value, say): the help would show two defaults, one of them
// wrong. The usage's own default becomes the flag's DefaultText; a bool
// flag's default text is turned off.
func oneDefaultText(cmds []*cli.Command) {
	for _, c := range cmds {
		for _, f := range c.Flags {
			v := reflect.ValueOf(f)
			if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
				continue
			}
			usage, text := v.Elem().FieldByName("Usage"), v.Elem().FieldByName("DefaultText")
			if !usage.IsValid() || usage.Kind() != reflect.String || !usage.CanSet() {
				continue
			}
			if b, ok := f.(*cli.BoolFlag); ok {
				b.DisableDefaultText = b.DisableDefaultText || strings.Contains(b.Usage, "(default:")
				continue
			}
			m := ownDefaultRE.FindStringSubmatch(usage.String())
			if m == nil || !text.IsValid() || text.Kind() != reflect.String || !text.CanSet() || text.String() != "" {
				continue
			}
			usage.SetString(m[1])
			text.SetString(m[2])
		}
		oneDefaultText(c.Subcommands)
	}
}

// ownDefaultRE matches a usage that ends with its own "(default: …)".
var ownDefaultRE = regexp.MustCompile(`^(.*?)\s*\(default: ([^()]*)\)$`)

// invalidValueRE matches urfave/cli's complaint about a flag's value.
var invalidValueRE = regexp.MustCompile(`^invalid value "(.*)" for flag -([\w-]+): `)

// flagValueError says what is wrong with a flag's value in words a person
// can act on ("parse error" says nothing), or returns "" when the message
// is not about a flag's value.
func flagValueError(ctx *cli.Context, msg string) string {
	m := invalidValueRE.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	value, name := m[1], m[2]
	var flags []cli.Flag
	if ctx.Command != nil {
		flags = ctx.Command.Flags
	}
	for _, f := range flags {
		if !slices.Contains(f.Names(), name) {
			continue
		}
		switch f.(type) {
		case *cli.DurationFlag:
			example := "5s"
			if _, err := strconv.ParseFloat(value, 64); err == nil {
				example = value + "s"
			}
			return fmt.Sprintf("--%s %q is not a duration: use a unit, e.g. %s (also ms, m, h)", name, value, example)
		case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag:
			return fmt.Sprintf("--%s %q is not a whole number", name, value)
		}
	}
	return fmt.Sprintf("--%s %q is not a valid value", name, value)
}

// runHint is the one builder of the hints that point at a help page:
// runHint("users list", "usage") is `run "authbox users list --help" for usage`.
func runHint(command, forWhat string) string {
	if command != "" {
		command += " "
	}
	return `run "authbox ` + command + `--help" for ` + forWhat
}

// helpHint points at the help of the command at hand.
func helpHint(ctx *cli.Context) string {
	return runHint(commandPath(ctx), "usage")
}

// commandPath is the command at hand as typed after "authbox": "users
// list" for a subcommand, "" for none. (urfave/cli's Command.FullName
// would do, but v2 never fills in the parents it is meant to join.)
func commandPath(ctx *cli.Context) string {
	var path []string
	for _, c := range ctx.Lineage() {
		if c.Command != nil && c.Command.Name != "" && c.Command.Name != ctx.App.Name {
			path = append([]string{c.Command.Name}, path...)
		}
	}
	return strings.Join(path, " ")
}

// noCLIArgs refuses positional arguments, for the commands that take none.
func noCLIArgs(ctx *cli.Context) error {
	if ctx.NArg() > 0 {
		return fail(exitOther, helpHint(ctx), "unexpected argument %q", ctx.Args().First())
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

// errText is an error's last, most specific part ("connection refused",
// "no such file or directory"), for a message that names the address or
// the file itself: a *fs.PathError would name the file again.
func errText(err error) string {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// dbOpenFailure says why the db file at path could not be opened (err,
// from OpenStore, neither locked nor damaged) and what to do: the message
// names the file once, and the hint fits the cause, which the file's first
// bytes tell when the error is bbolt's "invalid database".
func dbOpenFailure(path string, err error) (msg, hint string) {
	// OpenStore's errors, and the *fs.PathError inside, start with the
	// path already.
	text := strings.TrimPrefix(strings.TrimPrefix(errText(err), "open "+path+": "), path+": ")
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("cannot open the database %s: %s", path, text),
			"the user running authbox must be able to read and write the file and its directory: check their owner and mode"
	case errors.As(err, &pe) && errors.Is(pe.Err, syscall.EISDIR):
		return fmt.Sprintf("cannot open the database %s: it is a directory", path), "give the path of a file (authbox creates it if missing)"
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("cannot open the database %s: %s", path, text), "check the path: authbox creates the file, but not its directory"
	case errors.As(err, &pe):
	case dbFileKind(path) == "sqlite":
		return fmt.Sprintf("%s is an SQLite database, not an authbox database (a bbolt file)", path),
			fmt.Sprintf(`give the authbox db (made by "authbox serve" or "users import"); to bring in the accounts of the original system, export them with sqlite3 -csv %s "SELECT login,password,salt FROM USERS" > users.csv and import that file with "authbox users import --format seed-csv"`, path)
	case dbFileKind(path) == "":
		return fmt.Sprintf("%s is not an authbox database (not a bbolt file)", path),
			"check the path given to --db or db in the config; authbox makes its db itself, in a new or empty file"
	}
	return fmt.Sprintf("cannot open the database %s: %s", path, text), "check the path and its permissions"
}

// sqliteMagic starts every SQLite 3 database file.
const sqliteMagic = "SQLite format 3\x00"

// dbFileKind tells what the file at path is, from its first bytes:
// "sqlite", "bbolt" (bbolt's magic number in its first meta page), "none"
// when it cannot be read or is empty, or "" for anything else.
func dbFileKind(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "none"
	}
	defer f.Close()
	head := make([]byte, 32)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case n == 0:
		return "none"
	case strings.HasPrefix(string(head), sqliteMagic):
		return "sqlite"
	case n >= 20 && binary.LittleEndian.Uint32(head[16:20]) == boltMagic:
		return "bbolt"
	}
	return ""
}

// boltMagic is the number bbolt writes in its meta pages, after the
// 16-byte page header.
const boltMagic = 0xED0CDAED
