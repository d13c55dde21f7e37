package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// serveStopTimeout bounds how long a stopped in-process serve may take to
// return: its grace period is the config's shutdown_timeout, and a test
// server has nothing left to drain.
const serveStopTimeout = 15 * time.Second

// logWatch is a log sink that ticks on every write, so a test can wait for
// a line without polling.
type logWatch struct {
	syncBuffer
	wrote chan struct{}
}

func newLogWatch() *logWatch { return &logWatch{wrote: make(chan struct{}, 1)} }

func (l *logWatch) Write(p []byte) (int, error) {
	n, err := l.syncBuffer.Write(p)
	select {
	case l.wrote <- struct{}{}:
	default:
	}
	return n, err
}

// inProcServe is "authbox serve" running in this process, through run.
type inProcServe struct {
	addr   string
	log    *logWatch
	cancel context.CancelFunc
	code   chan int
	exit   int
	done   bool
}

// serveInProcess runs "authbox serve --listen 127.0.0.1:0 args..." in dir
// and waits for its "listening" line. The test then stays in dir (a
// server's relative paths, its admin socket's among them, are resolved
// when it uses them); stop, or the cleanup, ends it as SIGTERM would.
func serveInProcess(t testing.TB, dir string, args ...string) *inProcServe {
	t.Helper()
	t.Chdir(dir)
	ctx, cancel := context.WithCancel(context.Background())
	s := &inProcServe{log: newLogWatch(), cancel: cancel, code: make(chan int, 1)}
	go func() {
		s.code <- runContext(ctx, append([]string{"authbox", "serve", "--listen", "127.0.0.1:0"}, args...), strings.NewReader(""), &syncBuffer{}, s.log)
	}()
	t.Cleanup(func() { s.stop(t) })
	deadline := time.After(30 * time.Second)
	for {
		if m := listeningRE.FindStringSubmatch(s.log.String()); m != nil {
			s.addr = m[1]
			pinServer(t, s.addr, s.log.String())
			return s
		}
		select {
		case <-s.log.wrote:
		case code := <-s.code:
			s.exit, s.done = code, true
			t.Fatalf("serve exited with %d before listening:\n%s", code, s.log)
		case <-deadline:
			t.Fatalf("serve did not start:\n%s", s.log)
		}
	}
}

// stop ends the server as SIGTERM would and returns its exit code; safe
// to call twice.
func (s *inProcServe) stop(t testing.TB) int {
	t.Helper()
	if s.done {
		return s.exit
	}
	s.cancel()
	select {
	case s.exit = <-s.code:
		s.done = true
	case <-time.After(serveStopTimeout):
		t.Fatalf("serve did not stop within %v:\n%s", serveStopTimeout, s.log)
	}
	return s.exit
}

func TestCLIServeErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	serveInProcess(t, dir, "--config", cfg)

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

// TestCLIServeRefuses covers each way serve fails to start: the message,
// the hint, exit code 2, and no db file left behind when it cannot listen.
func TestCLIServeRefuses(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if err := os.WriteFile(filepath.Join(dir, "blocked.db.sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		args      []string
		msg, hint string
	}{
		{"stray argument", []string{"serve", "now"}, `unexpected argument "now"`, `run "authbox serve --help" for usage`},
		{"no config file", []string{"serve", "--config", "missing.toml"}, "missing.toml", "check the path given to --config"},
		{"address in use", []string{"serve", "--config", cfg, "--db", "unused.db", "--listen", taken.Addr().String()},
			"cannot listen on " + taken.Addr().String() + ": address already in use", "is another server using that address?"},
		{"no such directory", []string{"serve", "--config", cfg, "--listen", "127.0.0.1:0", "--db", "no/such/dir.db"},
			"cannot open the database no/such/dir.db: no such file or directory\n", "check the path: authbox creates the file, but not its directory"},
		{"socket path taken", []string{"serve", "--config", cfg, "--listen", "127.0.0.1:0", "--db", "blocked.db"},
			"blocked.db.sock exists and is not a socket", `the admin socket is the db's path plus ".sock"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, dir, "", nil, tc.args...)
			if r.code != 2 || !strings.Contains(r.stderr, "authbox: error: ") || !strings.Contains(r.stderr, tc.msg) ||
				!strings.Contains(r.stderr, "authbox: hint: "+tc.hint) {
				t.Fatalf("%v: %+v", tc.args, r)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "unused.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a serve that could not listen left a db behind: %v", err)
	}
}

// TestCLIServeDefaults runs "authbox serve" with no config at all, as the
// README's first command does, and checks it serves.
func TestCLIServeDefaults(t *testing.T) {
	dir := t.TempDir()
	srv := serveInProcess(t, dir)
	c, err := testDial(t, srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if strings.Join(c.Mechs, " ") != "SCRAM-SHA-256-PLUS SCRAM-SHA-256" || !c.OverTLS() {
		t.Fatalf("mechanisms %v, over TLS %v", c.Mechs, c.OverTLS())
	}
	r, err := c.Do("REGISTER", "alice")
	if err != nil || r.Word != ReplySalt || r.Args[1] != "600000" {
		t.Fatalf("REGISTER on defaults: %+v %v", r, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "authbox.db")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("default db: %v %v", fi, err)
	}
}

// TestCLIServeSignals stops the binary with each signal it handles: both
// end in a clean stop and exit code 0. Signals need a process of their own.
func TestCLIServeSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			srv := startServe(t, dir, "--config", writeConfig(t, dir, ""))
			srv.cmd.Process.Signal(sig)
			<-srv.done
			if err := srv.cmd.Wait(); err != nil || !strings.Contains(srv.log.String(), "stopped cleanly") {
				t.Fatalf("serve after %v: %v\n%s", sig, err, srv.log)
			}
		})
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

// TestKill9LosesNoAcknowledgedAccount registers from many clients against
// the real binary, kills it with SIGKILL mid-storm, and checks that every
// account that got OK is in the db, which opens cleanly. Several rounds on
// one file.
func TestKill9LosesNoAcknowledgedAccount(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "tls = false\n")
	var acked []string
	for round := range 3 {
		srv := startServe(t, dir, "--config", cfg)
		var mu sync.Mutex
		var wg sync.WaitGroup
		stop := make(chan struct{})
		var okCount atomic.Int64
		enough := make(chan struct{})
		var enoughOnce sync.Once
		for g := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					name := fmt.Sprintf("r%dg%di%d", round, g, i)
					c, err := testDial(t, srv.addr)
					if err != nil {
						return // the server is gone
					}
					err = c.Register(name, "Secret123")
					c.nc.Close()
					if err == nil {
						mu.Lock()
						acked = append(acked, name)
						mu.Unlock()
						if okCount.Add(1) == 100 {
							enoughOnce.Do(func() { close(enough) })
						}
					}
				}
			}()
		}
		select {
		case <-enough:
		case <-time.After(2 * time.Minute):
			t.Fatalf("round %d: only %d registrations in 2 minutes", round, okCount.Load())
		}
		srv.cmd.Process.Signal(syscall.SIGKILL)
		srv.cmd.Wait()
		close(stop)
		wg.Wait()

		s, err := OpenStore(filepath.Join(dir, "authbox.db"))
		if err != nil {
			t.Fatalf("round %d: db does not open after kill -9: %v", round, err)
		}
		n := 0
		if err := s.Each(func(string, Record) error { n++; return nil }); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		var missing []string
		for _, name := range acked {
			if _, err := s.Get(name); err != nil {
				missing = append(missing, name)
			}
		}
		s.Close()
		if len(missing) > 0 {
			t.Fatalf("round %d: %d acknowledged accounts lost, e.g. %v", round, len(missing), missing[0])
		}
		t.Logf("round %d: %d acknowledged, %d in the db", round, len(acked), n)
	}
}

// TestSIGTERMUnderLoad stops the real binary while 64 clients log in: each
// login completes, or fails cleanly with BUSY (or cannot connect at all);
// none is cut mid-exchange; the db is closed cleanly.
func TestSIGTERMUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and signals the binary")
	}
	dir := t.TempDir()
	// Slow clients on a loaded CI machine are not what this test is about.
	cfg := writeConfig(t, dir, "tls = false\nline_timeout = \"2m\"\n")
	srv := startServe(t, dir, "--config", cfg)
	for g := range 64 {
		mustRegister(t, srv.addr, fmt.Sprint("user", g), "Secret123")
	}

	var ok, busy, refused atomic.Int64
	enough := make(chan struct{})
	var enoughOnce sync.Once
	var bad sync.Map
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := fmt.Sprintf("127.0.2.%d", 1+g%4) // 16 per source, under the cap
			for {
				c, err := dialFrom(t, srv.addr, src)
				if err != nil {
					var pe *ProtoError
					if errors.As(err, &pe) && pe.Code != CodeBusy {
						bad.Store(err.Error(), true)
					}
					refused.Add(1)
					return // connection-level: no exchange began
				}
				err = c.Login(fmt.Sprint("user", g), "Secret123")
				c.nc.Close()
				switch {
				case err == nil:
					if ok.Add(1) == 200 {
						enoughOnce.Do(func() { close(enough) })
					}
				case code(err) == CodeBusy:
					busy.Add(1)
					return
				default:
					bad.Store(err.Error(), true)
					return
				}
			}
		}()
	}
	select {
	case <-enough:
	case <-time.After(2 * time.Minute):
		t.Fatalf("only %d logins in 2 minutes", ok.Load())
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	wg.Wait()
	<-srv.done
	err := srv.cmd.Wait()
	t.Logf("%d logins, %d BUSY at shutdown, %d could not connect", ok.Load(), busy.Load(), refused.Load())
	bad.Range(func(k, _ any) bool { t.Errorf("unclean failure: %v", k); return true })
	if t.Failed() {
		os.WriteFile("/tmp/sigterm.log", []byte(srv.log.String()), 0o644)
	}
	if err != nil {
		t.Fatalf("serve exited with %v\n%s", err, srv.log)
	}
	if !strings.Contains(srv.log.String(), "stopped cleanly") {
		t.Fatalf("no clean stop:\n%s", srv.log)
	}
	s := OpenStoreForTest(t, filepath.Join(dir, "authbox.db"))
	if err := s.Each(func(string, Record) error { return nil }); err != nil {
		t.Fatalf("db after shutdown: %v", err)
	}
	if n, err := s.Count(); err != nil || n != 64 {
		t.Fatalf("after shutdown: %d accounts, %v", n, err)
	}
}
