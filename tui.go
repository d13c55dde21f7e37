package main

// tui.go is the terminal: prompts for names and secrets without echo, the
// client-side password policy, the progress bar, and the sanitizer that
// keeps server text from driving the terminal.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// printable is the one sanitizer of text bound for a terminal that may
// hold what a server sent: control characters (escape sequences could set
// the window title, erase lines or write the clipboard), other characters
// that do not print (bidi overrides, for one) and bytes that are not UTF-8
// become visible escapes such as \x1b or \u202e. Nothing is dropped, so the
// user sees that the server sent something odd. Its output is printable,
// so applying it twice changes nothing.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r < utf8.RuneSelf && (r < 0x20 || r == 0x7f):
			fmt.Fprintf(&b, "\\x%02x", r)
		case unicode.IsGraphic(r):
			b.WriteString(s[i : i+n])
		case r <= 0xffff:
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			fmt.Fprintf(&b, "\\U%08x", r)
		}
		i += n
	}
	return b.String()
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

// openTTY opens the controlling terminal. The tests replace it: their
// in-process runs must have none, like the binary they run in a session of
// its own, so that no prompt waits on the developer's terminal.
var openTTY = func() (*os.File, error) { return os.OpenFile("/dev/tty", os.O_RDWR, 0) }

// tty returns a terminal's file descriptor: standard input if it is one,
// else the controlling terminal.
func (t *terminal) tty() (*os.File, func(), error) {
	if t.stdinIsTerminal() {
		return t.stdin.(*os.File), func() {}, nil
	}
	f, err := openTTY()
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

// stdinIsTerminal reports whether standard input is a terminal.
func (t *terminal) stdinIsTerminal() bool {
	f, ok := t.stdin.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// checkPasswordStdin refuses --password-stdin when standard input is a
// terminal: it reads a plain line, so the password would be typed with
// echo on and without a prompt.
func (t *terminal) checkPasswordStdin(fromStdin bool) error {
	if fromStdin && t.stdinIsTerminal() {
		return fail(exitOther, "pipe the password in (e.g. from a password manager), or leave out --password-stdin to be asked without echo",
			"--password-stdin: standard input is a terminal, where the password would show as it is typed")
	}
	return nil
}

// password reads a secret without echo, or one line of stdin.
func (t *terminal) password(fromStdin bool, prompt string) (string, error) {
	if err := t.checkPasswordStdin(fromStdin); err != nil {
		return "", err
	}
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
		b, err := readPasswordRestoring(int(f.Fd()), t.stderr, prompt)
		fmt.Fprintln(t.stderr)
		if errors.Is(err, errPromptEOF) {
			return "", fail(exitOther, "", "cancelled: no password given (end of input)")
		}
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

// readPasswordRestoring shows prompt and reads without echo and, if the
// user interrupts the prompt, puts the terminal back before exiting:
// otherwise a shell without line editing is left with echo off. Echo goes
// off before the prompt shows: whatever is typed once the prompt is there
// (fast, or pasted) is never echoed.
func readPasswordRestoring(fd int, stderr io.Writer, prompt string) ([]byte, error) {
	state, err := term.GetState(fd)
	if err != nil {
		return nil, err
	}
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	noEcho := *tio
	noEcho.Lflag &^= unix.ECHO
	// Line by line, with ^C as a signal and Enter as a newline, whatever
	// mode the terminal was left in: readSecretLine relies on all three.
	noEcho.Lflag |= unix.ICANON | unix.ISIG
	noEcho.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return nil, err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, tio)
	fmt.Fprint(stderr, prompt)
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
	return readSecretLine(fd)
}

// errPromptEOF is returned when the user ends the input (^D) at a prompt.
var errPromptEOF = errors.New("end of input at the prompt")

// readSecretLine reads one line from a terminal in canonical mode, without
// its newline. term.ReadPassword cannot serve here: a read of 0 bytes,
// which is how a terminal reports ^D at the start of a line, makes it read
// on, so the next line typed became the password. Here it cancels, as
// ssh and psql do.
func readSecretLine(fd int) ([]byte, error) {
	var line []byte
	var b [1]byte
	for {
		n, err := unix.Read(fd, b[:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, err
		case n == 0 && len(line) == 0:
			return nil, errPromptEOF
		case n == 0:
			// ^D after some characters hands them over without a newline;
			// a second one reads nothing and ends the line.
			return line, nil
		case b[0] == '\n':
			return line, nil
		}
		line = append(line, b[0])
	}
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

// progress is an import's progress bar, drawn only when standard error is
// a terminal: first the bytes read, then a spinner while the accounts are
// written. Any output clears it first.
type progress struct {
	mu  sync.Mutex
	w   io.Writer
	on  bool
	bar *progressbar.ProgressBar
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, on: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *progress) reading(r io.Reader, size int64, what string) io.Reader {
	if !p.on {
		return r
	}
	p.bar = progressbar.NewOptions64(size, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(), progressbar.OptionFullWidth())
	return &progressReader{r: r, p: p}
}

type progressReader struct {
	r io.Reader
	p *progress
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.mu.Lock()
	defer pr.p.mu.Unlock()
	if pr.p.bar != nil {
		pr.p.bar.Add(n)
		if errors.Is(err, io.EOF) {
			pr.p.bar.Finish()
			pr.p.bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(pr.p.w),
				progressbar.OptionSetDescription("writing accounts"), progressbar.OptionClearOnFinish(),
				progressbar.OptionSpinnerType(14), progressbar.OptionSetRenderBlankState(true))
		}
	}
	return n, err
}

// stop clears the bar, if one is drawn.
func (p *progress) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish()
		p.bar.Clear()
		p.bar = nil
	}
}

type clearingWriter struct {
	p *progress
	w io.Writer
}

func (p *progress) clearing(w io.Writer) io.Writer {
	if !p.on {
		return w
	}
	return &clearingWriter{p: p, w: w}
}

func (c *clearingWriter) Write(b []byte) (int, error) {
	c.p.stop()
	return c.w.Write(b)
}
