package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestCLIRegisterLoginExitCodes(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	srv := serveInProcess(t, dir, "--config", cfg)
	server := "--server=" + srv.addr
	const pw = "Correct-horse-9"

	r := runCLI(t, dir, pw+"\n", nil, "register", server, "--user", "alice", "--password-stdin")
	if r.code != 0 || !strings.Contains(r.stdout, `registered "alice"`) {
		t.Fatalf("register: %+v", r)
	}
	r = runCLI(t, dir, pw+"\n", nil, "register", server, "--user", "alice", "--password-stdin")
	if r.code != 1 || !strings.Contains(r.stderr, `authbox: error: username "alice" is taken`) || !strings.Contains(r.stderr, "authbox: hint: ") {
		t.Fatalf("duplicate register: %+v", r)
	}
	r = runCLI(t, dir, pw+"\n", nil, "login", server, "--user", "alice", "--password-stdin")
	if r.code != 0 || !strings.Contains(r.stdout, `logged in as "alice"`) {
		t.Fatalf("login: %+v", r)
	}
	// AUTHBOX_SERVER stands in for --server.
	r = runCLI(t, dir, pw+"\r\n", []string{"AUTHBOX_SERVER=" + srv.addr}, "login", "--user", "alice", "--password-stdin")
	if r.code != 0 {
		t.Fatalf("login via AUTHBOX_SERVER with CRLF: %+v", r)
	}
	r = runCLI(t, dir, "Wrong-horse-9\n", nil, "login", server, "--user", "alice", "--password-stdin")
	if r.code != 1 || !strings.Contains(r.stderr, "authbox: error: login failed: wrong username or password") {
		t.Fatalf("wrong password: %+v", r)
	}
	if strings.Contains(r.stderr, "Wrong-horse-9") {
		t.Fatal("an error echoed the password")
	}
	r = runCLI(t, dir, pw+"\n", nil, "login", server, "--user", "nobody", "--password-stdin")
	if r.code != 1 {
		t.Fatalf("unknown user: %+v", r)
	}
	r = runCLI(t, dir, pw+"\n", nil, "register", server, "--user", "has space", "--password-stdin")
	if r.code != 1 || !strings.Contains(r.stderr, "invalid username") {
		t.Fatalf("bad name: %+v", r)
	}
	r = runCLI(t, dir, "short\n", nil, "register", server, "--user", "bob", "--password-stdin")
	if r.code != 2 || !strings.Contains(r.stderr, "too weak") || strings.Contains(r.stderr, "short\n") {
		t.Fatalf("weak password: %+v", r)
	}
	r = runCLI(t, dir, "", nil, "login", server, "--user", "alice")
	if r.code != 2 || !strings.Contains(r.stderr, "no terminal") || !strings.Contains(r.stderr, "--password-stdin") {
		t.Fatalf("no terminal: %+v", r)
	}
	r = runCLI(t, dir, "", nil, "login", server, "--user", "alice", "--password-stdin")
	if r.code != 2 {
		t.Fatalf("empty stdin: %+v", r)
	}
	r = runCLI(t, dir, pw+"\n", nil, "login", "--server=127.0.0.1:1", "--user", "alice", "--password-stdin")
	if r.code != 2 || !strings.Contains(r.stderr, "authbox: error: cannot reach 127.0.0.1:1: connection refused") ||
		!strings.Contains(r.stderr, `authbox: hint: is "authbox serve" running`) {
		t.Fatalf("unreachable: %+v", r)
	}
	r = runCLI(t, dir, "", nil, "login", "--bogus")
	if r.code != 2 {
		t.Fatalf("bad flag: %+v", r)
	}
	r = runCLI(t, dir, "", nil, "login", "extra-arg")
	if r.code != 2 {
		t.Fatalf("stray argument: %+v", r)
	}

	// The server's log holds no password and no key.
	if code := srv.stop(t); code != 0 {
		t.Fatalf("serve exited with %d when stopped:\n%s", code, srv.log)
	}
	logs := srv.log.String()
	if !strings.Contains(logs, "stopped cleanly") {
		t.Fatalf("no clean stop in the log:\n%s", logs)
	}
	store, err := OpenStore(filepath.Join(dir, "authbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := store.Get("alice")
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{pw, "Wrong-horse-9", EncodeB64(rec.StoredKey), EncodeB64(rec.ServerKey), hex.EncodeToString(rec.StoredKey), EncodeB64(rec.Salt)} {
		if strings.Contains(logs, secret) {
			t.Errorf("server log contains a secret %q:\n%s", secret, logs)
		}
	}
}

// TestCLIPasswdAndDelete changes a password and deletes the account
// through the commands, with each refusal on the way.
func TestCLIPasswdAndDelete(t *testing.T) {
	dir := t.TempDir()
	srv := serveInProcess(t, dir, "--config", writeConfig(t, dir, ""))
	user := []string{"--server", srv.addr, "--user", "alice", "--password-stdin"}
	do := func(code int, stdin string, args ...string) result {
		t.Helper()
		r := runCLI(t, dir, stdin, nil, append(args, user...)...)
		if r.code != code {
			t.Fatalf("%v: exit %d, want %d: %+v", args, r.code, code, r)
		}
		return r
	}
	do(0, "Old-pass-1\n", "register")
	if r := do(2, "Old-pass-1\nweak\n", "passwd"); !strings.Contains(r.stderr, "the password is too weak") {
		t.Fatalf("weak new password: %+v", r)
	}
	if r := do(1, "Not-the-pass-1\nNew-pass-2\n", "passwd"); !strings.Contains(r.stderr, "login failed") {
		t.Fatalf("passwd with a wrong current password: %+v", r)
	}
	if r := do(2, "Old-pass-1\nOld-pass-1\n", "passwd"); !strings.Contains(r.stderr, "the new password is the current one; nothing was changed") {
		t.Fatalf("passwd to the same password: %+v", r)
	}
	if r := do(0, "Old-pass-1\nNew-pass-2\n", "passwd"); r.stdout != `changed the password of "alice" on `+srv.addr+"\n" {
		t.Fatalf("passwd: %+v", r)
	}
	do(1, "Old-pass-1\n", "login")
	do(0, "New-pass-2\n", "login")

	// Without --yes the confirmation needs a terminal, and there is none.
	if r := do(2, "New-pass-2\n", "delete"); !strings.Contains(r.stderr, "cannot ask for a confirmation") || !strings.Contains(r.stderr, "pass --yes") {
		t.Fatalf("delete without a terminal: %+v", r)
	}
	do(1, "Old-pass-1\n", "delete", "--yes")
	if r := do(2, "\n", "delete", "--yes"); !strings.Contains(r.stderr, "the password is empty") {
		t.Fatalf("empty password: %+v", r)
	}
	if r := do(0, "New-pass-2\n", "delete", "--yes"); r.stdout != `deleted the account "alice" on `+srv.addr+"\n" {
		t.Fatalf("delete: %+v", r)
	}
	do(1, "New-pass-2\n", "login")
}

// TestCLIClientSettings covers where the client commands take the server
// and the name from, and what they say when those are wrong.
func TestCLIClientSettings(t *testing.T) {
	dir := t.TempDir()
	srv := serveInProcess(t, dir, "--config", writeConfig(t, dir, ""))
	const pw = "Some-pass-1\n"
	mustRegister(t, srv.addr, "alice", strings.TrimSpace(pw))
	fromConfig := writeConfig(t, t.TempDir(), "[client]\nserver = \""+srv.addr+"\"\n")
	for _, tc := range []struct {
		name      string
		env       []string
		args      []string
		code      int
		msg, hint string
	}{
		{"server from the config", nil, []string{"--config", fromConfig, "--user", "alice"}, 0, "", ""},
		{"AUTHBOX_SERVER before the config", []string{"AUTHBOX_SERVER=" + srv.addr}, []string{"--config", writeConfig(t, t.TempDir(), "[client]\nserver = \"127.0.0.1:1\"\n"), "--user", "alice"}, 0, "", ""},
		{"empty --server", nil, []string{"--server=", "--user", "alice"}, 2, "--server is empty", "give HOST:PORT, e.g. 127.0.0.1:7886"},
		{"empty port", nil, []string{"--server", "localhost:", "--user", "alice"}, 2, `invalid server address: "localhost:" has no port after the colon`, "(from --server, AUTHBOX_SERVER or client.server)"},
		{"no name and no terminal", nil, []string{"--server", srv.addr}, 2, "cannot ask for a username: ", "give the name with --user"},
		{"name too long", nil, []string{"--server", srv.addr, "--user", strings.Repeat("a", 65)}, 1, "invalid username", "a username is 1 to 64 bytes"},
		{"bad config", nil, []string{"--config", writeConfig(t, t.TempDir(), "[client]\nmax_iterations = 1\n"), "--user", "alice"}, 2, "client.max_iterations", "fix the file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, dir, pw, tc.env, append([]string{"login", "--password-stdin"}, tc.args...)...)
			if r.code != tc.code || (tc.code == 0) != strings.HasPrefix(r.stdout, `logged in as "alice" on `+srv.addr) ||
				!strings.Contains(r.stderr, tc.msg) || !strings.Contains(r.stderr, tc.hint) {
				t.Fatalf("exit %d, want %d (%q, %q): %+v", r.code, tc.code, tc.msg, tc.hint, r)
			}
		})
	}
}

// TestCLILockedAndCapped checks two refusals that come from settings: a
// locked account, and an account whose iterations are over the client's cap.
func TestCLILockedAndCapped(t *testing.T) {
	dir := t.TempDir()
	// One iteration over the minimum, so that a client capped at the
	// minimum refuses the accounts.
	cfg := filepath.Join(dir, "auth.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("iterations = %d\n", testIterations+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := serveInProcess(t, dir, "--config", cfg)
	mustRegister(t, srv.addr, "alice", "Some-pass-1")
	mustRegister(t, srv.addr, "bob", "Some-pass-1")
	if r := runCLI(t, dir, "", nil, "users", "lock", "--config", cfg, "alice"); r.code != 0 {
		t.Fatalf("lock: %+v", r)
	}
	r := runCLI(t, dir, "Some-pass-1\n", nil, "login", "--server", srv.addr, "--user", "alice", "--password-stdin")
	if r.code != 1 || !strings.Contains(r.stderr, `authbox: error: account "alice" is locked`) {
		t.Fatalf("locked: %+v", r)
	}

	capped := writeConfig(t, t.TempDir(), fmt.Sprintf("[client]\nmax_iterations = %d\n", testIterations))
	r = runCLI(t, dir, "Some-pass-1\n", nil, "login", "--config", capped, "--server", srv.addr, "--user", "bob", "--password-stdin")
	if r.code != 2 || !strings.Contains(r.stderr, "more PBKDF2 iterations than this client allows") || !strings.Contains(r.stderr, "client.max_iterations sets the cap") {
		t.Fatalf("over the cap: %+v", r)
	}
}

// timeoutErr is a net.Error that timed out, as a stuck server's reply does.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestExplain checks what the user reads, and the exit code, for each
// kind of client error.
func TestExplain(t *testing.T) {
	cs := &clientSetup{server: "127.0.0.1:7886", name: "alice"}
	for _, tc := range []struct {
		err       error
		code      int
		msg, hint string
	}{
		{&ProtoError{Code: CodeAuth}, 1, "login failed: wrong username or password", "names are case-sensitive"},
		{&ProtoError{Code: CodeLocked}, 1, `account "alice" is locked`, "unlock"},
		{&ProtoError{Code: CodeExists}, 1, `username "alice" is taken`, "choose another"},
		{&ProtoError{Code: CodeBadName, Text: "too long"}, 1, "the server rejected the username: too long", "1 to 64 bytes"},
		{&ProtoError{Code: CodeDenied, Text: "registration is closed"}, 2, "registration is closed", "administrator to create"},
		{&ProtoError{Code: CodeBusy, Text: "queue full"}, 2, "the server is busy: queue full", "try again in a moment"},
		{&ProtoError{Code: CodeLimit, Text: "too many"}, 2, "too many", ""},
		{&ProtoError{Code: CodeTimeout, Text: "idle"}, 2, "the server timed out the connection: idle", "try again"},
		// Server text is kept whole here: runContext makes it printable
		// as it prints (TestCLIServerTextIsPrintable).
		{&ProtoError{Code: "WEIRD\x1b[2J", Text: "bell\a"}, 2, "the server answered WEIRD\x1b[2J: bell\a", ""},
		{ErrNotGreeting, 2, "127.0.0.1:7886 is not an authbox server: its first line is not an authbox greeting", "another service may listen on that port"},
		{fmt.Errorf("login: %w", ErrServerSignature), 2, "login: " + ErrServerSignature.Error(), "do not trust this server"},
		{fmt.Errorf("%w: 1, the minimum is 4096", ErrTooFewIterations), 2, ErrTooFewIterations.Error() + ": 1, the minimum is 4096", "client.max_iterations sets the cap"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, 2,
			"cannot reach 127.0.0.1:7886: connection refused", `is "authbox serve" running there?`},
		{&net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{}}, 2, "no answer from 127.0.0.1:7886 in time", "slow or stuck"},
		{ErrNoSCRAM, 2, "talking to 127.0.0.1:7886: " + ErrNoSCRAM.Error(), ""},
	} {
		var ce *cliError
		if !errors.As(cs.explain(tc.err), &ce) || ce.code != tc.code || ce.msg != tc.msg || !strings.Contains(ce.hint, tc.hint) || (tc.hint == "") != (ce.hint == "") {
			t.Errorf("explain(%v) = %+v, want exit %d, %q, hint with %q", tc.err, ce, tc.code, tc.msg, tc.hint)
		}
	}
}

// hostileServer is a plain-TCP server on a loopback port that greets with
// greeting (authbox's when empty), then answers each line with
// answer(line), until the test ends.
func hostileServer(t *testing.T, greeting string, answer func(line string) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if greeting == "" {
		greeting = Greeting([]string{MechSCRAM})
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(nc, greeting)
				r := bufio.NewReader(nc)
				for {
					l, err := r.ReadString('\n')
					if err != nil || strings.HasPrefix(l, CmdQuit) {
						return
					}
					io.WriteString(nc, answer(strings.TrimSuffix(l, "\n"))+"\n")
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// TestCLIServerTextIsPrintable has a hostile server answer with terminal
// escapes (window title, line erase, clipboard write, a C1 CSI, a bidi
// override) in its ERR codes and texts and in an unexpected reply: what
// reaches the user's terminal shows them as visible escapes and never
// holds them raw.
func TestCLIServerTextIsPrintable(t *testing.T) {
	const evil = "\x1b]0;pwned\x07\x1b[2K\x1b]52;c;cHduZWQ=\x07\u009b2J\u202e"
	const shown = `\x1b]0;pwned\x07\x1b[2K\x1b]52;c;cHduZWQ=\x07\u009b2J\u202e`
	dir := t.TempDir()
	for _, tc := range []struct {
		name, reply string
		args        []string
	}{
		{"register's preflight, ERR text", "ERR DENIED registration is closed " + evil, []string{"register", "--user", "bob"}},
		{"register's preflight, ERR code", "ERR " + evil + " text", []string{"register", "--user", "bob"}},
		{"an unexpected reply to AUTH", evil + "OK x", []string{"login", "--user", "bob"}},
	} {
		addr := hostileServer(t, "", func(string) string { return tc.reply })
		r := runCLI(t, dir, "Some-pass-1\n", nil, append(tc.args, "--plain", "--server", addr, "--password-stdin")...)
		if r.code != 2 || !strings.Contains(r.stderr, shown) {
			t.Errorf("%s: exit %d, stderr %q, want it to show %s", tc.name, r.code, r.stderr, shown)
		}
		if i := strings.IndexFunc(r.stdout+r.stderr, func(c rune) bool {
			return c != '\n' && (c < 0x20 || c >= 0x7f && c < 0xa0 || c == '\u202e')
		}); i >= 0 {
			t.Errorf("%s: a raw control character reached the terminal: %q", tc.name, r.stderr)
		}
	}
}
