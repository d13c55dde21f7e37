package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails its first fails Accepts with err (all of them if
// fails < 0), then accepts as the listener it wraps. closed is closed when
// it is.
type flakyListener struct {
	net.Listener
	err    error
	mu     sync.Mutex
	fails  int
	once   sync.Once
	closed chan struct{}
}

func newFlakyListener(t *testing.T, path string, fails int, err error) *flakyListener {
	t.Helper()
	ln, lerr := net.Listen("unix", path)
	if lerr != nil {
		t.Fatal(lerr)
	}
	return &flakyListener{Listener: ln, err: err, fails: fails, closed: make(chan struct{})}
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	fail := l.fails != 0
	if l.fails > 0 {
		l.fails--
	}
	l.mu.Unlock()
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	if fail {
		return nil, l.err
	}
	return l.Listener.Accept()
}

func (l *flakyListener) Close() error {
	// The socket is closed before closed says so: a test that dials once
	// it is told must find nobody there.
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}

// notifyLog is a log sink that ticks at every line, so that a test can
// wait for one without polling on a timer.
type notifyLog struct {
	syncBuffer
	lines chan struct{}
}

func newNotifyLog() *notifyLog { return &notifyLog{lines: make(chan struct{}, 1)} }

func (l *notifyLog) Write(p []byte) (int, error) {
	n, err := l.syncBuffer.Write(p)
	select {
	case l.lines <- struct{}{}:
	default:
	}
	return n, err
}

// wait waits until the log holds s.
func (l *notifyLog) wait(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !strings.Contains(l.String(), s) {
		select {
		case <-l.lines:
		case <-deadline:
			t.Fatalf("the log has no %q:\n%s", s, l.String())
		}
	}
}

// adminFixture is a store whose admin socket a test serves itself.
func adminFixture(t *testing.T) (*Store, string, *notifyLog, *slog.Logger) {
	t.Helper()
	db := filepath.Join(t.TempDir(), "test.db")
	store, err := OpenStore(db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	logs := newNotifyLog()
	return store, db, logs, slog.New(newLogHandler(logs, false))
}

// TestAdminAcceptRecovers: out of file descriptors, the admin socket
// pauses and tries again, as the TCP loop does, and a command waiting in
// the backlog is then served.
func TestAdminAcceptRecovers(t *testing.T) {
	store, db, logs, log := adminFixture(t)
	emfile := &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	ln := newFlakyListener(t, AdminSocketPath(db), 3, emfile)
	a := serveAdmin(store, nil, log, ln.Addr().String(), ln)
	t.Cleanup(func() { a.Shutdown(context.Background()) })
	var out bytes.Buffer
	ac := &adminClient{db: db, out: adminOut{Stdout: &out, Stderr: io.Discard}}
	if err := ac.run(adminRequest{Op: opList}, nil, false); err != nil || out.String() != "no accounts\n" {
		t.Fatalf("users list: %v %q", err, out.String())
	}
	logs.wait(t, "msg=admin op=list")
	if n := strings.Count(logs.String(), "accept failed; pausing"); n != 3 {
		t.Errorf("%d pauses logged, want 3:\n%s", n, logs.String())
	}
	for _, pause := range []string{"pause=5ms", "pause=10ms", "pause=20ms"} {
		if !strings.Contains(logs.String(), pause) {
			t.Errorf("no %s logged: the pause does not double from 5ms:\n%s", pause, logs.String())
		}
	}
}

// TestAdminAcceptGivesUp: an accept error that cannot pass closes the
// socket, so that commands are refused at once instead of waiting in the backlog of a socket nobody serves.
func TestAdminAcceptGivesUp(t *testing.T) {
	store, db, logs, log := adminFixture(t)
	ln := newFlakyListener(t, AdminSocketPath(db), -1, errors.New("broken beyond repair"))
	a := serveAdmin(store, nil, log, ln.Addr().String(), ln)
	t.Cleanup(func() { a.Shutdown(context.Background()) })
	<-ln.closed
	logs.wait(t, `msg="the admin socket failed; admin commands cannot reach this server" err="broken beyond repair"`)
	// Refused, a command opens the db, and finds it locked: see
	// TestAdminSocketLifecycle for what it then says.
	c, err := net.DialTimeout("unix", AdminSocketPath(db), adminDialTimeout)
	if err == nil {
		c.Close()
		t.Fatal("the dead admin socket still takes connections")
	}
}

// TestAdminShutdown: Shutdown waits for a command under way while ctx
// lasts, and refuses new ones; when ctx ends it cuts the command, which
// then imports nothing, and returns ctx's error.
func TestAdminShutdown(t *testing.T) {
	line := "user," + rfcPGVerifier + "\n"
	for _, grace := range []bool{true, false} {
		t.Run(fmt.Sprint("grace=", grace), func(t *testing.T) {
			store, db, logs, log := adminFixture(t)
			ln := newFlakyListener(t, AdminSocketPath(db), 0, nil)
			a := serveAdmin(store, nil, log, ln.Addr().String(), ln)
			t.Cleanup(func() { a.Shutdown(context.Background()) })
			nc, err := net.Dial("unix", a.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(30 * time.Second))
			io.WriteString(nc, `{"op":"import","format":"pg","file":"x.pg"}`+"\n")
			logs.wait(t, "msg=admin op=import") // the server waits for the upload
			ctx, cancel := context.WithCancel(context.Background())
			if !grace {
				cancel()
			}
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- a.Shutdown(ctx) }()
			if grace {
				<-ln.closed
				if c, err := net.Dial("unix", a.Path()); err == nil {
					c.Close()
					t.Fatal("a new command reached a server shutting down")
				}
				select {
				case err := <-shut:
					t.Fatalf("Shutdown returned %v with a command under way", err)
				default:
				}
				fmt.Fprintf(nc, `{"len":%d}`+"\n%s"+`{"end":true,"total":%d}`+"\n", len(line), line, len(line))
			}
			reply, _ := io.ReadAll(bufio.NewReader(nc))
			err = <-shut
			n, _ := store.Count()
			switch {
			case grace && (err != nil || n != 1 || !strings.HasSuffix(string(reply), `{"end":true,"exit":0}`+"\n")):
				t.Fatalf("within the grace: Shutdown %v, %d accounts, reply %q", err, n, reply)
			case !grace && (!errors.Is(err, context.Canceled) || n != 0 || len(reply) != 0):
				t.Fatalf("after the grace: Shutdown %v, %d accounts, reply %q", err, n, reply)
			}
		})
	}
}

// TestAdminSocketSpeaksFrames checks the admin protocol as adminwire.go
// describes it, byte by byte, on an in-process server.
func TestAdminSocketSpeaksFrames(t *testing.T) {
	ts := startServer(t, testConfig(t))
	admin, err := ListenAdmin(ts.store, nil, nil)
	if err == nil {
		t.Cleanup(func() { admin.Shutdown(context.Background()) })
	}
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, ts.addr, "alice", "Secret123")
	nc, err := net.Dial("unix", admin.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, `{"op":"show","name":"alice","json":true}`+"\n")
	nc.(*net.UnixConn).CloseWrite()
	reply, err := io.ReadAll(nc)
	if err != nil {
		t.Fatal(err)
	}
	head, rest, _ := strings.Cut(string(reply), "\n")
	var f adminFrame
	if err := json.Unmarshal([]byte(head), &f); err != nil || f.Stream != "stdout" || f.Len > len(rest) {
		t.Fatalf("first frame %q: %v", head, err)
	}
	var a AccountInfo
	if err := json.Unmarshal([]byte(rest[:f.Len]), &a); err != nil || a.Name != "alice" || a.Kind != "scram" {
		t.Fatalf("payload %q: %v", rest[:f.Len], err)
	}
	if end := rest[f.Len:]; end != `{"end":true,"exit":0}`+"\n" {
		t.Fatalf("end %q", end)
	}
}

// TestAdminUploadNeedsItsEnd speaks the upload framing of adminwire.go to an
// in-process admin socket: only an upload with its end line and the right
// total is imported.
func TestAdminUploadNeedsItsEnd(t *testing.T) {
	ts := startServer(t, testConfig(t))
	admin, err := ListenAdmin(ts.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Shutdown(context.Background()) })
	line := "user," + rfcPGVerifier + "\n"
	frame := fmt.Sprintf(`{"len":%d}`+"\n%s", len(line), line)
	req := `{"op":"import","format":"pg","file":"x.pg"}` + "\n"
	send := func(upload string) adminFrame {
		t.Helper()
		nc, err := net.Dial("unix", admin.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		io.WriteString(nc, req+upload)
		nc.(*net.UnixConn).CloseWrite()
		reply, err := io.ReadAll(nc)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(reply), "\n"), "\n")
		var end adminFrame
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &end); err != nil || !end.End || end.Exit == nil {
			t.Fatalf("reply %q: %v", reply, err)
		}
		return end
	}
	for _, tc := range []struct{ upload, want string }{
		{line, "the upload is malformed"},                        // unframed, as before the framing
		{frame, "the upload was cut off"},                        // no end line
		{frame + frame[:10], "the upload was cut off"},           // cut inside a frame head
		{frame + frame[:len(frame)-5], "the upload was cut off"}, // cut inside a frame
		{frame + `{"end":true,"total":1}` + "\n", "bytes arrived, and the client sent 1"},
		{`{"len":100000000}` + "\n", "a frame of 100000000 bytes"},
	} {
		end := send(tc.upload)
		if *end.Exit != int(AdminFailed) || !strings.Contains(end.Error, tc.want) {
			t.Errorf("upload %.40q: exit %d %+v, want exit 2 and %q", tc.upload, *end.Exit, end, tc.want)
		}
		if n, _ := ts.store.Count(); n != 0 {
			t.Fatalf("upload %.40q: %d accounts imported", tc.upload, n)
		}
	}
	end := send(frame + fmt.Sprintf(`{"end":true,"total":%d}`, len(line)) + "\n")
	if n, _ := ts.store.Count(); *end.Exit != 0 || n != 1 {
		t.Fatalf("a whole upload: %+v, %d accounts", end, n)
	}
}

// TestStaleSocketOnlyWhenRefused: the server replaces a socket file only
// when connecting to it is refused (nobody listens); a live socket of
// another kind is left alone, and the server refuses to start.
func TestStaleSocketOnlyWhenRefused(t *testing.T) {
	db := filepath.Join(t.TempDir(), "test.db")
	sock := AdminSocketPath(db)
	dg, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer dg.Close()
	store, err := OpenStore(db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	admin, err := ListenAdmin(store, nil, nil)
	if err == nil {
		admin.Shutdown(context.Background())
		t.Fatal("the admin socket replaced a live datagram socket")
	}
	if !strings.Contains(err.Error(), sock+" exists and cannot be checked") || !strings.Contains(err.Error(), "remove it if no server uses it") {
		t.Fatalf("error: %v", err)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("the socket file was touched: %v %v", fi, err)
	}
	// The datagram socket still gets what is sent to it.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatalf("the datagram socket is gone: %v", err)
	}
	c.Close()
}
