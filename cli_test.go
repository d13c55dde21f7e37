package main

import (
	"bufio"
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
	// No test waits a whole second for a lock held by another handle, or
	// for a client that does not close after the server's last line.
	dbLockTimeout, drainTimeout = 100*time.Millisecond, 100*time.Millisecond
	// Clients pin servers here, never in the developer's own file; each
	// server a test starts is pinned as it starts (pinServer), as a user
	// would have after a first contact.
	pins, err := os.MkdirTemp("", "authbox-known-servers-")
	if err != nil {
		panic(err)
	}
	os.Setenv(knownServersEnv, filepath.Join(pins, "known_servers"))
	code := m.Run()
	os.RemoveAll(pins)
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

var (
	listeningRE   = regexp.MustCompile(`(?:msg=listening addr=|"msg":"listening","addr":")([^\s"]+)`)
	fingerprintRE = regexp.MustCompile(`msg=listening .*fingerprint=(SHA256:\S+)`)
)

// pinServer pins the server whose "listening" line is log in the tests'
// known_servers file, so that client commands trust it, and drops any pin
// an earlier test's server left for the same address: ports are reused,
// and a stale pin would make a plain server look like a TLS one, or a new
// key like a changed one.
func pinServer(t testing.TB, addr, log string) {
	t.Helper()
	path := os.Getenv(knownServersEnv)
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var kept []string
	for _, line := range strings.Split(string(old), "\n") {
		if line != "" && !strings.HasPrefix(line, addr+" ") {
			kept = append(kept, line)
		}
	}
	if m := fingerprintRE.FindStringSubmatch(log); m != nil {
		kept = append(kept, addr+" "+m[1])
	}
	if err := writeFileAtomic(path, []byte(strings.Join(kept, "\n")+"\n")); err != nil {
		t.Fatal(err)
	}
}

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
				pinServer(t, m[1], sc.Text())
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
