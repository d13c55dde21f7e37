// Command authbox is a small authentication server and its client: one
// binary, one bbolt file, SCRAM-SHA-256 on a line protocol.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

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
	logs := newLogBuffer(ctx.App.ErrWriter)
	defer logs.Close()
	log := slog.New(slog.NewTextHandler(logs, nil))

	// Listen first: a server that cannot listen must not leave a new empty
	// db file behind.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fail(exitOther, "is another server using that address? choose another with --listen", "cannot listen on %s: %s", cfg.Listen, errText(err))
	}
	defer ln.Close()

	store, err := OpenStore(cfg.DB)
	if errors.Is(err, ErrDBLocked) {
		return fail(exitOther, `an authbox server is probably running on it already; stop it, or give another file with --db`,
			"database %s is locked by another process", cfg.DB)
	}
	if err != nil {
		return fail(exitOther, "check the path and its permissions", "cannot open database %s: %s", cfg.DB, errText(err))
	}
	defer store.Close()

	admin, err := ListenAdmin(store, log)
	if err != nil {
		ln.Close()
		return fail(exitOther, `the admin socket is the db's path plus ".sock": remove what is in the way, or choose another --db (a shorter one if the path is too long for a socket)`, "%s", err)
	}
	srv := NewServer(cfg, store, log)

	sigs, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		// Serve failed on its own: stop the workers before the deferred
		// store.Close pulls the db from under them.
		now := make(chan struct{})
		close(now)
		admin.Shutdown(now)
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
		defer cancel()
		srv.Shutdown(sctx)
		return fail(exitOther, "", "server stopped: %s", err)
	case <-sigs.Done():
	}
	log.Info("shutting down", "grace", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
	defer cancel()
	adminDone := make(chan struct{})
	go func() { admin.Shutdown(sctx.Done()); close(adminDone) }()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("grace period over; remaining connections were closed", "err", err)
	}
	<-served
	<-adminDone
	if err := store.Close(); err != nil {
		return fail(exitOther, "", "closing %s: %s", cfg.DB, err)
	}
	log.Info("stopped cleanly")
	return nil
}

// printable replaces control characters, so that text from a server
// cannot drive the user's terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
}

// logFlushEvery is how long a server log line may wait in memory. Writing
// each line at once costs a syscall per event, two per login, a fair part
// of a login's whole cost on the server; a tenth of a second of delay costs
// an operator nothing.
const logFlushEvery = 100 * time.Millisecond

// logBuffer batches log lines into few writes when they come thick and
// fast, and writes a line at once when none was written for logFlushEvery,
// so a quiet server's log is as live as an unbuffered one. Lines are whole
// when they reach the output; a kill -9 loses at most logFlushEvery of
// them, never an account (those are on disk before OK).
type logBuffer struct {
	mu      sync.Mutex
	out     io.Writer
	w       *bufio.Writer
	flushed time.Time
	stop    chan struct{}
	done    chan struct{}
}

func newLogBuffer(w io.Writer) *logBuffer {
	l := &logBuffer{out: w, w: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(logFlushEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				l.flush()
			case <-l.stop:
				l.flush()
				return
			}
		}
	}()
	return l
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.w.Write(p)
	if now := time.Now(); err == nil && now.Sub(l.flushed) >= logFlushEvery {
		err = l.flushLocked(now)
	}
	return n, err
}

func (l *logBuffer) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w.Buffered() > 0 {
		l.flushLocked(time.Now())
	}
}

// flushLocked writes the buffer out. bufio.Writer keeps its first error
// for ever; one failed write (a full disk) must not silence the log for
// the rest of the server's life, so a failure drops what was buffered and
// starts afresh.
func (l *logBuffer) flushLocked(now time.Time) error {
	err := l.w.Flush()
	if err != nil {
		l.w.Reset(l.out)
	}
	l.flushed = now
	return err
}

// Close writes what is left and stops the flusher.
func (l *logBuffer) Close() error {
	close(l.stop)
	<-l.done
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

// setupClient reads the config, the server and the name, then checks the
// server (and, for a registration, the name) before any password prompt.
func setupClient(ctx *cli.Context, register bool) (*clientSetup, error) {
	if err := noCLIArgs(ctx); err != nil {
		return nil, err
	}
	cfg, err := loadConfig(ctx)
	if err != nil {
		return nil, err
	}
	cs := &clientSetup{cfg: cfg, server: ctx.String("server"), term: newTerminal(ctx)}
	if cs.server == "" {
		if ctx.IsSet("server") {
			return nil, fail(exitOther, "give HOST:PORT, e.g. 127.0.0.1:7886", "--server is empty")
		}
		cs.server = cfg.Client.Server
	}
	if _, _, err := net.SplitHostPort(cs.server); err != nil {
		return nil, fail(exitOther, "give HOST:PORT, e.g. 127.0.0.1:7886 (from --server, AUTHBOX_SERVER or client.server)", "invalid server address %q", cs.server)
	}
	name := ctx.String("user")
	if name == "" {
		if name, err = cs.term.readLine("username: "); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fail(exitOther, "give the name with --user", "no username given")
			}
			return nil, fail(exitOther, "give the name with --user", "cannot ask for a username: %s", err)
		}
	}
	if cs.name, err = NormalizeUsername(name); err != nil {
		return nil, fail(exitRefused, "a username is 1 to 64 bytes of letters, digits and punctuation, without spaces", "invalid username")
	}
	if err := cs.preflight(register); err != nil {
		return nil, err
	}
	return cs, nil
}

// preflight checks, before the user types a password, that the server
// answers and, for a registration, that the name is free: nobody should
// type a password twice to learn the server is down. It holds no
// connection open while the user types, since the server would time it out.
func (cs *clientSetup) preflight(register bool) error {
	c, err := cs.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if !register {
		return nil
	}
	// REGISTER then QUIT abandons the exchange: nothing is created.
	if _, err := c.Do(CmdRegister, cs.name); err != nil {
		return cs.explain(err)
	}
	return nil
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

// login dials and logs in, trying the legacy scheme after a failed SCRAM
// login (Client.LoginAny). legacy reports an account still to upgrade.
func (cs *clientSetup) login(password string) (c *Client, legacy bool, err error) {
	if c, err = cs.dial(); err != nil {
		return nil, false, err
	}
	if cs.cfg.Client.LegacyFallback {
		legacy, err = c.LoginAny(cs.name, password)
	} else {
		err = c.Login(cs.name, password)
	}
	if err != nil {
		c.Close()
		return nil, false, cs.explain(err)
	}
	if legacy {
		// SEED-SHA256 proves nothing about the server, and what it sent can
		// be attacked offline at the speed of SHA-256: say so every time.
		fmt.Fprintf(cs.term.stderr, "authbox: warning: this login used the legacy SEED-SHA256 scheme, which cannot tell a real server from an impostor; set client.legacy_fallback = false once your accounts are upgraded\n")
	}
	return c, legacy, nil
}

// explain turns a client-side error into what the user reads.
func (cs *clientSetup) explain(err error) error {
	var pe *ProtoError
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &pe):
		// The text comes from the server: keep its control characters
		// (terminal escapes) off the user's terminal.
		return explainCode(&ProtoError{Code: printable(pe.Code), Text: printable(pe.Text)}, cs.name)
	case errors.Is(err, ErrServerSignature):
		return fail(exitOther, "do not trust this server: it may be an impostor, or the account was restored from another server", "%s", err)
	case errors.Is(err, ErrTooFewIterations), errors.Is(err, ErrTooManyIterations):
		return fail(exitOther, "this account's iteration count (the server's iterations setting when it was made, or an imported verifier's) is outside what this client accepts; client.max_iterations sets the cap", "%s", err)
	case errors.As(err, &oe) && oe.Op == "dial":
		return fail(exitOther, `is "authbox serve" running there? the address comes from --server, else AUTHBOX_SERVER, else client.server in --config`, "cannot reach %s: %s", cs.server, errText(err))
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
		return fail(exitOther, "ask the server's administrator to create your account", "%s", pe.Text)
	case CodeBusy:
		return fail(exitOther, "try again in a moment", "the server is busy: %s", pe.Text)
	case CodeLimit:
		return fail(exitOther, "", "%s", pe.Text)
	case CodeTimeout:
		return fail(exitOther, "try again", "the server timed out the connection: %s", pe.Text)
	}
	return fail(exitOther, "", "the server answered %s: %s", pe.Code, pe.Text)
}

func cmdRegister(ctx *cli.Context) error {
	cs, err := setupClient(ctx, true)
	if err != nil {
		return err
	}
	pw, err := cs.term.newPassword(ctx.Bool("password-stdin"), cs.cfg.Client, "password")
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
	cs, err := setupClient(ctx, false)
	if err != nil {
		return err
	}
	pw, err := cs.term.password(ctx.Bool("password-stdin"), "password: ")
	if err != nil {
		return err
	}
	c, legacy, err := cs.login(pw)
	if err != nil {
		return err
	}
	defer c.Close()
	if !legacy {
		fmt.Fprintf(ctx.App.Writer, "logged in as %q on %s; the server proved it holds your verifier\n", cs.name, cs.server)
		return nil
	}
	// The same password, now as a SCRAM verifier: the legacy record goes.
	if err := c.Passwd(cs.name, pw); err != nil {
		return fail(exitOther, "log in again: the upgrade is tried at every login until it succeeds",
			"logged in as %q, but upgrading the account to SCRAM-SHA-256 failed: %s", cs.name, cs.explain(err))
	}
	fmt.Fprintf(ctx.App.Writer, "logged in as %q on %s; upgraded the account from the legacy scheme to SCRAM-SHA-256\n", cs.name, cs.server)
	return nil
}

func cmdPasswd(ctx *cli.Context) error {
	cs, err := setupClient(ctx, false)
	if err != nil {
		return err
	}
	fromStdin := ctx.Bool("password-stdin")
	old, err := cs.term.password(fromStdin, "current password: ")
	if err != nil {
		return err
	}
	pw, err := cs.term.newPassword(fromStdin, cs.cfg.Client, "new password")
	if err != nil {
		return err
	}
	c, legacy, err := cs.login(old)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Passwd(cs.name, pw); err != nil {
		return cs.explain(err)
	}
	note := ""
	if legacy {
		note = "; the account now uses SCRAM-SHA-256"
	}
	fmt.Fprintf(ctx.App.Writer, "changed the password of %q on %s%s\n", cs.name, cs.server, note)
	return nil
}

func cmdDelete(ctx *cli.Context) error {
	cs, err := setupClient(ctx, false)
	if err != nil {
		return err
	}
	// Asked before the password and before connecting: the server would
	// time the connection out while a person makes up their mind.
	if !ctx.Bool("yes") {
		answer, err := cs.term.readLine(fmt.Sprintf("delete the account %q on %s for good? [y/N] ", cs.name, cs.server))
		if err != nil {
			return fail(exitOther, "pass --yes to delete without a confirmation", "cannot ask for a confirmation: %s", err)
		}
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return fail(exitOther, "", "not confirmed; the account was not deleted")
		}
	}
	pw, err := cs.term.password(ctx.Bool("password-stdin"), "password: ")
	if err != nil {
		return err
	}
	c, _, err := cs.login(pw)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Delete(); err != nil {
		return cs.explain(err)
	}
	fmt.Fprintf(ctx.App.Writer, "deleted the account %q on %s\n", cs.name, cs.server)
	return nil
}

func cmdPw(ctx *cli.Context) error {
	if err := noCLIArgs(ctx); err != nil {
		return err
	}
	cfg, err := loadConfig(ctx)
	if err != nil {
		return err
	}
	it := cfg.Iterations
	if ctx.IsSet("iterations") {
		it = ctx.Int("iterations")
	}
	if it < MinIterations || it > cfg.Client.MaxIterations {
		return fail(exitOther, "clients refuse fewer than 4096 and more than client.max_iterations", "--iterations must be %d to %d, got %d", MinIterations, cfg.Client.MaxIterations, it)
	}
	pw, err := newTerminal(ctx).newPassword(ctx.Bool("password-stdin"), cfg.Client, "password")
	if err != nil {
		return err
	}
	salt, err := newSalt()
	if err != nil {
		return err
	}
	// The keys depend on the password, salt and iterations only, not on
	// the name, so one verifier serves any account.
	stored, server, err := Verifier("", pw, salt, it)
	if err != nil {
		return fail(exitOther, "", "%s", err)
	}
	fmt.Fprintln(ctx.App.Writer, FormatPGVerifier(Record{Iterations: it, Salt: salt, StoredKey: stored, ServerKey: server}))
	return nil
}

// terminal reads names and secrets: secrets only from a terminal without
// echo, or from standard input when the user says so with --password-stdin.
type terminal struct {
	stdin  io.Reader
	stderr io.Writer
	lines  *bufio.Reader // standard input, read line by line, made once
	// linesRead counts the lines asked of standard input, for messages.
	linesRead int
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

// stdinLine reads exactly one line from standard input; what names the
// secret it should hold, for the error when it is missing.
func (t *terminal) stdinLine(what string) (string, error) {
	if t.lines == nil {
		t.lines = bufio.NewReader(t.stdin)
	}
	t.linesRead++
	line, err := t.lines.ReadString('\n')
	if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
		return "", fail(exitOther, "one line per password: passwd reads the current password, then the new one",
			"--password-stdin: no %s on line %d of standard input", what, t.linesRead)
	}
	return strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"), nil
}

// password reads a secret without echo, or one line of stdin.
func (t *terminal) password(fromStdin bool, prompt string) (string, error) {
	var pw string
	if fromStdin {
		var err error
		if pw, err = t.stdinLine(strings.TrimSuffix(prompt, ": ")); err != nil {
			return "", err
		}
	} else {
		f, done, err := t.tty()
		if err != nil {
			return "", fail(exitOther, "run it in a terminal, or pipe the password with --password-stdin", "cannot ask for a password: no terminal")
		}
		defer done()
		fmt.Fprint(t.stderr, prompt)
		b, err := readPasswordRestoring(int(f.Fd()), t.stderr)
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

// readPasswordRestoring reads without echo and, if the user interrupts the
// prompt, puts the terminal back before exiting: otherwise a shell without
// line editing is left with echo off.
func readPasswordRestoring(fd int, stderr io.Writer) ([]byte, error) {
	state, err := term.GetState(fd)
	if err != nil {
		return nil, err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	finished := make(chan struct{})
	defer func() { signal.Stop(sigs); close(finished) }()
	go func() {
		select {
		case <-sigs:
			term.Restore(fd, state)
			fmt.Fprintln(stderr)
			os.Exit(130)
		case <-finished:
		}
	}()
	return term.ReadPassword(fd)
}

// newPassword reads a password to set: twice on a terminal, once from
// stdin, and checks the policy before anything is sent. what names it in
// the prompts.
func (t *terminal) newPassword(fromStdin bool, pol ClientConfig, what string) (string, error) {
	pw, err := t.password(fromStdin, what+": ")
	if err != nil {
		return "", err
	}
	if err := checkPolicy(pw, pol); err != nil {
		return "", err
	}
	if !fromStdin {
		again, err := t.password(false, what+" (again): ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", fail(exitOther, "type the same password twice", "the passwords do not match")
		}
	}
	return pw, nil
}

// policyText describes the whole policy, for the hint.
func policyText(pol ClientConfig) string {
	parts := []string{fmt.Sprintf("at least %d characters", pol.MinPasswordLength)}
	for _, c := range []struct {
		on   bool
		what string
	}{{pol.RequireDigit, "a digit"}, {pol.RequireLower, "a lower-case letter"}, {pol.RequireUpper, "an upper-case letter"}} {
		if c.on {
			parts = append(parts, c.what)
		}
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
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
		list := strings.Join(missing, ", ")
		if n := len(missing); n > 1 {
			list = strings.Join(missing[:n-1], ", ") + " and " + missing[n-1]
		}
		return fail(exitOther, "choose a password with "+policyText(pol), "the password is too weak: it needs %s", list)
	}
	return nil
}
