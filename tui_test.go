package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

func TestCheckPolicy(t *testing.T) {
	all := ClientConfig{MinPasswordLength: 8, RequireDigit: true, RequireLower: true, RequireUpper: true}
	for _, tc := range []struct {
		pw      string
		pol     ClientConfig
		missing string // "" when the password passes
	}{
		{"Abcdefg1", all, ""},
		{"abc", all, "at least 8 characters, a digit and an upper-case letter"},
		{"ABCDEFGH", all, "a digit and a lower-case letter"},
		{"abcdefgh1", all, "an upper-case letter"},
		{"ééééééé", ClientConfig{MinPasswordLength: 7}, ""}, // characters, not bytes
		{"short", ClientConfig{MinPasswordLength: 6}, "at least 6 characters"},
	} {
		err := checkPolicy(tc.pw, tc.pol)
		var ce *cliError
		switch {
		case tc.missing == "" && err != nil:
			t.Errorf("%q refused: %v", tc.pw, err)
		case tc.missing == "":
		case !errors.As(err, &ce) || ce.msg != "the password is too weak: it needs "+tc.missing:
			t.Errorf("%q: %v, want it to need %s", tc.pw, err, tc.missing)
		case strings.Contains(ce.msg+ce.hint, tc.pw):
			t.Errorf("the message quotes the password: %+v", ce)
		case ce.hint != "choose a password with "+policyText(tc.pol):
			t.Errorf("hint %q", ce.hint)
		}
	}
	if got := policyText(all); got != "at least 8 characters, a digit, a lower-case letter and an upper-case letter" {
		t.Errorf("policyText = %q", got)
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"ok \x1b[31mred\x07\u0085 é \xff":          `ok \x1b[31mred\x07\u0085 é \xff`,
		"\x1b]0;pwned\x07\x1b]52;c;aGk=\x1b\\":     `\x1b]0;pwned\x07\x1b]52;c;aGk=\x1b\`,
		"tab\tcr\rlf\ndel\x7f":                     `tab\x09cr\x0dlf\x0adel\x7f`,
		"\u009b2K \u202etxt.exe \u2028 \U000e0041": `\u009b2K \u202etxt.exe \u2028 \U000e0041`,
		"name 名前 ✓ nbsp\u00a0ok":                   "name 名前 ✓ nbsp\u00a0ok",
	} {
		got := printable(in)
		if got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
		if again := printable(got); again != got {
			t.Errorf("printable is not idempotent on %q: %q", got, again)
		}
	}
}

// TestStdinLines reads passwords line by line from standard input: CRLF
// or a missing last newline are fine, a missing line is named by number.
func TestStdinLines(t *testing.T) {
	term := &terminal{stdin: strings.NewReader("first\r\nsecond")}
	if pw, err := term.password(true, "current password: "); err != nil || pw != "first" {
		t.Fatalf("line 1: %q %v", pw, err)
	}
	if pw, err := term.password(true, "new password: "); err != nil || pw != "second" {
		t.Fatalf("line 2: %q %v", pw, err)
	}
	_, err := term.password(true, "new password: ")
	if ce := (*cliError)(nil); !errors.As(err, &ce) || ce.msg != "--password-stdin: no new password on line 3 of standard input" {
		t.Fatalf("line 3: %v", err)
	}
}

// TestProgress draws the import's bar into a buffer (newProgress turns it
// on only for a terminal), and checks that output clears it and that the
// data passes through whole.
func TestProgress(t *testing.T) {
	var plain bytes.Buffer
	if p := newProgress(&plain); p.on || p.clearing(&plain) != io.Writer(&plain) {
		t.Fatal("a progress bar on something that is no terminal")
	}
	var screen, out syncBuffer
	p := &progress{w: &screen, on: true}
	data := strings.Repeat("x", 1<<16)
	r := p.reading(strings.NewReader(data), int64(len(data)), "reading in.pg")
	got, err := io.ReadAll(r)
	if err != nil || string(got) != data {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if p.bar == nil {
		t.Fatal("no spinner after the last byte")
	}
	fmt.Fprintf(p.clearing(&out), "imported 1 account\n")
	if p.bar != nil || out.String() != "imported 1 account\n" || !strings.Contains(screen.String(), "reading in.pg") {
		t.Fatalf("bar %v, out %q, screen %q", p.bar, out.String(), screen.String())
	}
	p.stop()
}

// openPTY opens a pseudo-terminal and returns its master and the path of
// its slave.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatal(e)
	}
	return master, fmt.Sprintf("/dev/pts/%d", n)
}

// withTTY makes a pseudo-terminal the in-process runs' terminal for the
// rest of the test, and returns its master, to type into.
func withTTY(t *testing.T) *os.File {
	master, slave := openPTY(t)
	saved := openTTY
	openTTY = func() (*os.File, error) { return os.OpenFile(slave, os.O_RDWR|syscall.O_NOCTTY, 0) }
	t.Cleanup(func() { openTTY = saved })
	return master
}

// TestCLITerminalPrompts answers the prompts on a pseudo-terminal: the
// name, the password twice, the confirmation of a delete. The line
// discipline keeps what is typed ahead, so the answers go in first.
func TestCLITerminalPrompts(t *testing.T) {
	dir := t.TempDir()
	srv := serveInProcess(t, dir, "--config", writeConfig(t, dir, ""))
	tty := withTTY(t)
	server := "--server=" + srv.addr
	typed := func(lines ...string) {
		t.Helper()
		if _, err := io.WriteString(tty, strings.Join(lines, "\n")+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	const pw = "Typed-pass-1"

	typed("alice", pw, pw)
	r := runCLI(t, dir, "", nil, "register", server)
	if r.code != 0 || r.stderr != "username: password: \npassword (again): \n" || !strings.Contains(r.stdout, `registered "alice"`) {
		t.Fatalf("register at the terminal: %+v", r)
	}
	typed(pw+"x", pw+"y")
	if r := runCLI(t, dir, "", nil, "register", server, "--user", "bob"); r.code != 2 || !strings.Contains(r.stderr, "the passwords do not match") {
		t.Fatalf("mismatch: %+v", r)
	}
	typed("")
	if r := runCLI(t, dir, "", nil, "login", server, "--user", "alice"); r.code != 2 || !strings.Contains(r.stderr, "the password is empty") {
		t.Fatalf("empty password: %+v", r)
	}
	typed("no")
	if r := runCLI(t, dir, "", nil, "delete", server, "--user", "alice"); r.code != 2 || !strings.Contains(r.stderr, "not confirmed; the account was not deleted") {
		t.Fatalf("delete, not confirmed: %+v", r)
	}
	// ^D at the question is a no too.
	if _, err := io.WriteString(tty, "\x04"); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, dir, "", nil, "delete", server, "--user", "alice"); r.code != 2 || !strings.Contains(r.stderr, "for good? [y/N] \nauthbox: error: not confirmed; the account was not deleted\n") {
		t.Fatalf("delete, ^D at the question: %+v", r)
	}
	typed("YES", pw)
	r = runCLI(t, dir, "", nil, "delete", server, "--user", "alice")
	if r.code != 0 || !strings.Contains(r.stderr, `delete the account "alice" on `+srv.addr+` for good? [y/N] password: `) {
		t.Fatalf("delete: %+v", r)
	}
	for _, out := range []string{r.stdout, r.stderr} {
		if strings.Contains(out, pw) {
			t.Fatalf("the password reached the output: %q", out)
		}
	}
}

// TestCLIPasswordPromptEOF drives the built binary at a terminal: ^D at
// the password prompt cancels (exit 2) rather than taking the next line
// typed as the password, and --password-stdin refuses a terminal as its
// standard input, where the password would echo.
func TestCLIPasswordPromptEOF(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	authboxBin(t) // built from the package directory, before serve moves into dir
	dir := t.TempDir()
	srv := serveInProcess(t, dir, "--config", writeConfig(t, dir, ""))
	const pw = "Typed-pass-1"
	mustCLI(t, 0, dir, pw+"\n", "register", "--server", srv.addr, "--user", "alice", "--password-stdin")

	p := startPTY(t, dir, "login", "--server", srv.addr, "--user", "alice")
	p.expect("password: ")
	// The line discipline hands the program the end of input, then the
	// line: the fix must stop at the first.
	if _, err := p.master.WriteString("\x04" + pw + "\n"); err != nil {
		t.Fatal(err)
	}
	code, out := p.wait()
	if code != 2 || !strings.Contains(out, "authbox: error: cancelled: no password given (end of input)") || strings.Contains(out, "logged in") {
		t.Fatalf("^D at the password prompt: exit %d\n%s", code, out)
	}

	p = startPTY(t, dir, "login", "--server", srv.addr, "--user", "alice", "--password-stdin")
	// Typed ahead, for a client that would read it; one that refuses has
	// exited, and the write may then fail.
	p.master.WriteString(pw + "\n")
	code, out = p.wait()
	if code != 2 || !strings.Contains(out, "--password-stdin: standard input is a terminal") ||
		!strings.Contains(out, "authbox: hint: pipe the password in") || strings.Contains(out, "password:") {
		t.Fatalf("--password-stdin on a terminal: exit %d\n%s", code, out)
	}
}

// TestCLIPasswdChecksCurrentFirst changes a password at a terminal: the
// current password is checked before the new one is asked, so a wrong one
// ends the command after one prompt.
func TestCLIPasswdChecksCurrentFirst(t *testing.T) {
	dir := t.TempDir()
	srv := serveInProcess(t, dir, "--config", writeConfig(t, dir, ""))
	mustCLI(t, 0, dir, "Old-pass-1\n", "register", "--server", srv.addr, "--user", "alice", "--password-stdin")
	passwd := func(lines ...string) result {
		t.Helper()
		// A terminal of its own per run: lines a run leaves unread must
		// not answer the next run's prompts.
		tty := withTTY(t)
		if _, err := io.WriteString(tty, strings.Join(lines, "\n")+"\n"); err != nil {
			t.Fatal(err)
		}
		return runCLI(t, dir, "", nil, "passwd", "--server", srv.addr, "--user", "alice")
	}
	if r := passwd("Wrong-pass-1", "New-pass-2", "New-pass-2"); r.code != 1 || r.stderr != "current password: \nauthbox: error: login failed: wrong username or password\nauthbox: hint: check the username and password; names are case-sensitive\n" {
		t.Fatalf("a wrong current password: %+v", r)
	}
	if r := passwd("Old-pass-1", "Old-pass-1", "Old-pass-1"); r.code != 2 || !strings.Contains(r.stderr, "the new password is the current one") {
		t.Fatalf("the same password again: %+v", r)
	}
	r := passwd("Old-pass-1", "New-pass-2", "New-pass-2")
	if r.code != 0 || r.stderr != "current password: \nnew password: \nnew password (again): \n" || r.stdout != `changed the password of "alice" on `+srv.addr+"\n" {
		t.Fatalf("passwd: %+v", r)
	}
	mustCLI(t, 0, dir, "New-pass-2\n", "login", "--server", srv.addr, "--user", "alice", "--password-stdin")
}

// TestREADMEPwLine runs the README's "authbox pw" line as written, in a
// shell at a terminal: when pw fails (the passwords differ) nothing is
// written or imported; when it succeeds the account is imported.
func TestREADMEPwLine(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(readme), "\n") {
		if strings.Contains(l, "$(./authbox pw)") {
			line = l
		}
	}
	if line == "" {
		t.Fatal("no line runs ./authbox pw in README.md")
	}
	dir := t.TempDir()
	if err := os.Symlink(authboxBin(t), filepath.Join(dir, "authbox")); err != nil {
		t.Fatal(err)
	}
	p := startPTYCommand(t, dir, "/bin/sh", "-c", line)
	p.expect("password: ")
	p.typeLine("Carol-pass-1")
	p.expect("password (again): ")
	p.typeLine("Carol-pass-2")
	code, out := p.wait()
	if _, err := os.Stat(filepath.Join(dir, "new.pg")); code == 0 || !errors.Is(err, os.ErrNotExist) || strings.Contains(out, "import") {
		t.Fatalf("the line went on after pw failed: exit %d, new.pg: %v\n%s", code, err, out)
	}
	p = startPTYCommand(t, dir, "/bin/sh", "-c", line)
	p.expect("password: ")
	p.typeLine("Carol-pass-1")
	p.expect("password (again): ")
	p.typeLine("Carol-pass-1")
	if code, out := p.wait(); code != 0 || !strings.Contains(out, "imported 1, skipped 0 (name exists), rejected 0") {
		t.Fatalf("the line with matching passwords: exit %d\n%s", code, out)
	}
}
