// Command authbox is a small authentication server and its client: one
// binary, one bbolt file, SCRAM-SHA-256 on a line protocol.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"unicode"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
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
	serverFlag := &cli.StringFlag{Name: "server", Usage: "server `ADDR` (default: client.server from the config, 127.0.0.1:7886)", EnvVars: []string{"AUTHBOX_SERVER"}}
	userFlag := &cli.StringFlag{Name: "user", Usage: "username (asked for when missing)"}
	stdinFlag := &cli.BoolFlag{Name: "password-stdin", Usage: "read the password from one line of standard input instead of the terminal"}
	configFlag := &cli.StringFlag{Name: "config", Usage: "read settings from `FILE` (auth.toml)"}
	usageErr := func(_ *cli.Context, err error, _ bool) error {
		return fail(exitOther, `run "authbox --help" for usage`, "%s", err)
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
			benchCommand(usageErr),
		},
	}
	return app
}

func noCLIArgs(ctx *cli.Context) error {
	if ctx.NArg() > 0 {
		return fail(exitOther, `run "authbox `+ctx.Command.Name+` --help" for usage`, "unexpected argument %q", ctx.Args().First())
	}
	return nil
}

func loadConfig(ctx *cli.Context) (Config, error) {
	cfg, err := LoadConfig(ctx.String("config"))
	if err != nil {
		return cfg, fail(exitOther, "fix the file, or compare it with the documented defaults in auth.toml", "%s", err)
	}
	return cfg, nil
}

func cmdServe(ctx *cli.Context) error {
	if err := noCLIArgs(ctx); err != nil {
		return err
	}
	cfg, err := loadConfig(ctx)
	if err != nil {
		return err
	}
	if v := ctx.String("listen"); v != "" {
		cfg.Listen = v
	}
	if v := ctx.String("db"); v != "" {
		cfg.DB = v
	}
	log := slog.New(slog.NewTextHandler(ctx.App.ErrWriter, nil))

	store, err := OpenStore(cfg.DB)
	if errors.Is(err, ErrDBLocked) {
		return fail(exitOther, `an authbox server is probably running on it already; stop it, or give another file with --db`,
			"database %s is locked by another process", cfg.DB)
	}
	if err != nil {
		return fail(exitOther, "check the path and its permissions", "%s", err)
	}
	defer store.Close()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fail(exitOther, "is another server using that address? choose another with --listen", "cannot listen on %s: %s", cfg.Listen, errText(err))
	}
	srv := NewServer(cfg, store, log)

	sigs, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fail(exitOther, "", "server stopped: %s", err)
	case <-sigs.Done():
	}
	log.Info("shutting down", "grace", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("grace period over; remaining connections were closed", "err", err)
	}
	<-served
	if err := store.Close(); err != nil {
		return fail(exitOther, "", "closing %s: %s", cfg.DB, err)
	}
	log.Info("stopped cleanly")
	return nil
}

// errText is an error's last, most specific part ("connection refused").
func errText(err error) string {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	return err.Error()
}

// clientSetup is what register and login share: config, server, name and
// password.
type clientSetup struct {
	cfg    Config
	server string
	name   string
	term   *terminal
}

func setupClient(ctx *cli.Context) (*clientSetup, error) {
	if err := noCLIArgs(ctx); err != nil {
		return nil, err
	}
	cfg, err := loadConfig(ctx)
	if err != nil {
		return nil, err
	}
	cs := &clientSetup{cfg: cfg, server: ctx.String("server"), term: newTerminal(ctx)}
	if cs.server == "" {
		cs.server = cfg.Client.Server
	}
	name := ctx.String("user")
	if name == "" {
		if name, err = cs.term.readLine("username: "); err != nil {
			return nil, fail(exitOther, "give the name with --user", "cannot ask for a username: %s", err)
		}
	}
	if cs.name, err = NormalizeUsername(name); err != nil {
		return nil, fail(exitRefused, "a username is 1 to 64 bytes of letters, digits and punctuation, without spaces", "invalid username")
	}
	return cs, nil
}

// dial connects and reads the greeting, turning failures into messages.
func (cs *clientSetup) dial() (*Client, error) {
	c, err := Dial(cs.server)
	if err != nil {
		return nil, cs.explain(err)
	}
	c.MaxIterations = cs.cfg.Client.MaxIterations
	return c, nil
}

// explain turns a client-side error into what the user reads.
func (cs *clientSetup) explain(err error) error {
	var pe *ProtoError
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &pe):
		return explainCode(pe, cs.name)
	case errors.Is(err, ErrServerSignature):
		return fail(exitOther, "do not trust this server: it may be an impostor, or the account was restored from another server", "%s", err)
	case errors.Is(err, ErrTooFewIterations), errors.Is(err, ErrTooManyIterations):
		return fail(exitOther, "the server's iterations setting is out of the range this client accepts", "%s", err)
	case errors.As(err, &oe) && oe.Op == "dial":
		return fail(exitOther, `is "authbox serve" running there? the address comes from --server or AUTHBOX_SERVER`, "cannot reach %s: %s", cs.server, errText(err))
	case errors.As(err, &ne) && ne.Timeout():
		return fail(exitOther, "the server or the network is slow or stuck; try again", "no answer from %s in time", cs.server)
	}
	return fail(exitOther, "", "talking to %s: %s", cs.server, err)
}

func explainCode(pe *ProtoError, name string) error {
	switch pe.Code {
	case CodeAuth:
		return fail(exitRefused, "check the username and password; names are case-sensitive", "login failed: wrong username or password")
	case CodeLocked:
		return fail(exitRefused, "ask the server's administrator to unlock it", "account %q is locked", name)
	case CodeExists:
		return fail(exitRefused, "choose another username", "username %q is taken", name)
	case CodeBadName:
		return fail(exitRefused, "a username is 1 to 64 bytes of letters, digits and punctuation, without spaces", "the server rejected the username: %s", pe.Text)
	case CodeDenied:
		return fail(exitOther, "ask the server's administrator", "the server refused: %s", pe.Text)
	case CodeBusy:
		return fail(exitOther, "try again in a moment", "the server is busy: %s", pe.Text)
	case CodeLimit:
		return fail(exitOther, "wait before trying again", "too many attempts: %s", pe.Text)
	case CodeTimeout:
		return fail(exitOther, "try again", "the server timed out the connection: %s", pe.Text)
	}
	return fail(exitOther, "", "the server answered %s: %s", pe.Code, pe.Text)
}

func cmdRegister(ctx *cli.Context) error {
	cs, err := setupClient(ctx)
	if err != nil {
		return err
	}
	pw, err := cs.term.newPassword(ctx.Bool("password-stdin"), cs.cfg.Client)
	if err != nil {
		return err
	}
	c, err := cs.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Register(cs.name, pw); err != nil {
		return cs.explain(err)
	}
	fmt.Fprintf(ctx.App.Writer, "registered %q on %s\n", cs.name, cs.server)
	return nil
}

func cmdLogin(ctx *cli.Context) error {
	cs, err := setupClient(ctx)
	if err != nil {
		return err
	}
	pw, err := cs.term.password(ctx.Bool("password-stdin"), "password: ")
	if err != nil {
		return err
	}
	c, err := cs.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Login(cs.name, pw); err != nil {
		return cs.explain(err)
	}
	fmt.Fprintf(ctx.App.Writer, "logged in as %q on %s; the server proved it holds your verifier\n", cs.name, cs.server)
	return nil
}

// terminal reads names and secrets: secrets only from a terminal without
// echo, or from standard input when the user says so with --password-stdin.
type terminal struct {
	stdin  io.Reader
	stderr io.Writer
	lines  *bufio.Reader // standard input, read line by line, made once
}

func newTerminal(ctx *cli.Context) *terminal {
	return &terminal{stdin: ctx.App.Reader, stderr: ctx.App.ErrWriter}
}

// tty returns a terminal's file descriptor: standard input if it is one,
// else the controlling terminal.
func (t *terminal) tty() (*os.File, func(), error) {
	if f, ok := t.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return f, func() {}, nil
	}
	f, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, nil, errors.New("no terminal")
	}
	return f, func() { f.Close() }, nil
}

func (t *terminal) readLine(prompt string) (string, error) {
	f, done, err := t.tty()
	if err != nil {
		return "", err
	}
	defer done()
	fmt.Fprint(t.stderr, prompt)
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// stdinLine reads exactly one line from standard input.
func (t *terminal) stdinLine() (string, error) {
	if t.lines == nil {
		t.lines = bufio.NewReader(t.stdin)
	}
	line, err := t.lines.ReadString('\n')
	if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
		return "", fail(exitOther, "pipe the password in, one line per password", "--password-stdin: no password on standard input")
	}
	return strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"), nil
}

// password reads a secret without echo, or one line of stdin.
func (t *terminal) password(fromStdin bool, prompt string) (string, error) {
	var pw string
	if fromStdin {
		var err error
		if pw, err = t.stdinLine(); err != nil {
			return "", err
		}
	} else {
		f, done, err := t.tty()
		if err != nil {
			return "", fail(exitOther, "run it in a terminal, or pipe the password with --password-stdin", "cannot ask for a password: no terminal")
		}
		defer done()
		fmt.Fprint(t.stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(t.stderr)
		if err != nil {
			return "", fail(exitOther, "", "reading the password: %s", err)
		}
		pw = string(b)
	}
	if pw == "" {
		return "", fail(exitOther, "", "the password is empty")
	}
	return pw, nil
}

// newPassword reads a password to set: twice on a terminal, once from
// stdin, and checks the policy before anything is sent.
func (t *terminal) newPassword(fromStdin bool, pol ClientConfig) (string, error) {
	pw, err := t.password(fromStdin, "password: ")
	if err != nil {
		return "", err
	}
	if err := checkPolicy(pw, pol); err != nil {
		return "", err
	}
	if !fromStdin {
		again, err := t.password(false, "password (again): ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", fail(exitOther, "type the same password twice", "the passwords do not match")
		}
	}
	return pw, nil
}

// checkPolicy applies the password policy; the message never quotes the
// password.
func checkPolicy(pw string, pol ClientConfig) error {
	var missing []string
	if n := len([]rune(pw)); n < pol.MinPasswordLength {
		missing = append(missing, fmt.Sprintf("at least %d characters", pol.MinPasswordLength))
	}
	has := func(f func(rune) bool) bool { return strings.IndexFunc(pw, f) >= 0 }
	if pol.RequireDigit && !has(unicode.IsDigit) {
		missing = append(missing, "a digit")
	}
	if pol.RequireLower && !has(unicode.IsLower) {
		missing = append(missing, "a lower-case letter")
	}
	if pol.RequireUpper && !has(unicode.IsUpper) {
		missing = append(missing, "an upper-case letter")
	}
	if len(missing) > 0 {
		return fail(exitOther, "the policy is set in the [client] table of auth.toml", "the password is too weak: it needs %s", strings.Join(missing, ", "))
	}
	return nil
}
