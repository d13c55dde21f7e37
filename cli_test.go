package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// authboxBin builds the binary once per test run.
func authboxBin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "authbox-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "authbox")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	// In-process runs have no controlling terminal, like the binary that
	// command runs in a session of its own: no prompt can wait on the
	// developer's terminal, and "no terminal" reads the same either way.
	openTTY = func() (*os.File, error) { return nil, errors.New("no controlling terminal in tests") }
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// command prepares the binary in a new session, so it has no controlling
// terminal: a prompt can never wait on the developer's terminal. Tests
// use the binary only for what needs a process of its own (signals,
// kill -9, running alongside another command); runCLI runs in-process.
func command(t testing.TB, dir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(authboxBin(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd
}

type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs "authbox args..." in-process to completion, as the binary
// would run in dir with env added and stdin piped in: through run, so
// that -race and coverage see it. The working directory and the
// environment are the process's, so it sets them for the call only, and
// t.Chdir and t.Setenv make sure no parallel test shares them.
func runCLI(t testing.TB, dir, stdin string, env []string, args ...string) result {
	t.Helper()
	if dir != "" {
		back := must(os.Getwd())
		t.Chdir(dir)
		defer os.Chdir(back)
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		old, had := os.LookupEnv(k)
		t.Setenv(k, v)
		if had {
			defer os.Setenv(k, old)
		} else {
			defer os.Unsetenv(k)
		}
	}
	var out, errb syncBuffer
	code := run(append([]string{"authbox"}, args...), strings.NewReader(stdin), &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// serveProc is "authbox serve" running as a child process.
type serveProc struct {
	cmd   *exec.Cmd
	addr  string
	log   *syncBuffer
	lines chan struct{} // a tick for every log line read
	done  chan struct{}
}

// waitLog waits until the server's log contains s: the log reaches the
// test through a pipe and the server batches its writes, so a line may
// come a little after the event that caused it.
func (p *serveProc) waitLog(t testing.TB, s string) bool {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !strings.Contains(p.log.String(), s) {
		select {
		case <-p.lines:
		case <-p.done:
			return strings.Contains(p.log.String(), s)
		case <-deadline:
			return false
		}
	}
	return true
}

var listeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startServe runs "authbox serve" on a free loopback port and waits for its
// "listening" line.
func startServe(t testing.TB, dir string, args ...string) *serveProc {
	t.Helper()
	cmd := command(t, dir, nil, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd, log: &syncBuffer{}, lines: make(chan struct{}, 1), done: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(p.log, sc.Text())
			select {
			case p.lines <- struct{}{}:
			default:
			}
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				ready <- m[1]
			}
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
		}
		cmd.Wait()
	})
	select {
	case p.addr = <-ready:
	case <-p.done:
		t.Fatalf("serve exited before listening:\n%s", p.log)
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not start:\n%s", p.log)
	}
	return p
}

// writeConfig writes an auth.toml with low iterations for tests.
func writeConfig(t testing.TB, dir, extra string) string {
	path := filepath.Join(dir, "auth.toml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf("iterations = %d\n%s", testIterations, extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCLIRegisterLoginExitCodes(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	srv := startServe(t, dir, "--config", cfg)
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
	srv.cmd.Process.Signal(syscall.SIGTERM)
	<-srv.done
	if err := srv.cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, srv.log)
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

func TestCLIServeErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	startServe(t, dir, "--config", cfg)

	// A second server on the same db fails fast and says why.
	start := time.Now()
	r := runCLI(t, dir, "", nil, "serve", "--config", cfg, "--listen", "127.0.0.1:0")
	if r.code != 2 || !strings.Contains(r.stderr, "database authbox.db is locked") || !strings.Contains(r.stderr, "server is probably running") {
		t.Fatalf("second serve: %+v", r)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("second serve took %v to fail", d)
	}

	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("iterations = 10\n"), 0o600)
	r = runCLI(t, dir, "", nil, "serve", "--config", bad, "--db", filepath.Join(dir, "other.db"))
	if r.code != 2 || !strings.Contains(r.stderr, "key iterations") || !strings.Contains(r.stderr, bad) {
		t.Fatalf("bad config: %+v", r)
	}
}

// TestCLIServeDefaults runs "authbox serve" with no config at all, as the
// README's first command does, and checks it serves.
func TestCLIServeDefaults(t *testing.T) {
	dir := t.TempDir()
	srv := startServe(t, dir)
	c, err := Dial(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Mechs) != 1 || c.Mechs[0] != MechSCRAM {
		t.Fatalf("mechanisms %v", c.Mechs)
	}
	r, err := c.Do("REGISTER", "alice")
	if err != nil || r.Word != ReplySalt || r.Args[1] != "600000" {
		t.Fatalf("REGISTER on defaults: %+v %v", r, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "authbox.db")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("default db: %v %v", fi, err)
	}
}

// failingOnce fails its first write, as a full disk would, then works.
type failingOnce struct {
	failed bool
	buf    strings.Builder
}

func (f *failingOnce) Write(p []byte) (int, error) {
	if !f.failed {
		f.failed = true
		return 0, errors.New("no space left on device")
	}
	return f.buf.Write(p)
}

func TestLogBufferRecoversFromAFailedWrite(t *testing.T) {
	sink := &failingOnce{}
	l := newLogBuffer(sink)
	l.Write([]byte("lost\n")) // the first write goes out at once, and fails
	l.flush()
	l.Write([]byte("after\n"))
	l.Close()
	if !strings.Contains(sink.buf.String(), "after\n") {
		t.Fatalf("log lines after one failed write were lost: %q", sink.buf.String())
	}
}
