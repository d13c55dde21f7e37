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
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestRegisterLoginWhoami(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "Secret123")

	c, err := Dial(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "Secret123"); err != nil {
		t.Fatalf("login: %v", err)
	}
	if who, err := c.Whoami(); err != nil || who != "alice" {
		t.Fatalf("whoami = %q, %v", who, err)
	}
	// The store holds the verifier, never anything password-derived that
	// the client could replay: StoredKey is a hash of the proof key.
	rec, err := ts.store.Get("alice")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Kind != KindSCRAM || rec.Iterations != testIterations || len(rec.Salt) != SaltLen || len(rec.StoredKey) != KeyLen || len(rec.ServerKey) != KeyLen {
		t.Fatalf("record = %+v", rec)
	}
	if bytes, _ := os.ReadFile(ts.store.Path()); strings.Contains(string(bytes), "Secret123") {
		t.Fatal("password found in the db file")
	}
}

func TestErrorCodesKeepServing(t *testing.T) {
	cfg := testConfig(t)
	ts := startServer(t, cfg)
	mustRegister(t, ts.addr, "alice", "Secret123")
	rc, greeting := dialRaw(t, ts.addr)
	if greeting != "AUTHBOX 1 SCRAM-SHA-256" {
		t.Fatalf("greeting %q", greeting)
	}
	validFirst := EncodeB64([]byte("n,,n=alice,r=nonce123"))
	cases := []struct{ send, want string }{
		{"PING", "OK PONG"},
		{"PING extra", "ERR BADREQ "},
		{"", "ERR BADCMD "},
		{"HELLO", "ERR BADCMD "},
		{"ping", "ERR BADCMD "},
		{"WHOAMI", "ERR BADCMD "},
		{"WHOAMI x", "ERR BADCMD "}, // state before arguments
		{"LOGOUT", "ERR BADCMD "},
		{"PASSWD", "ERR BADCMD "},
		{"DELETE", "ERR BADCMD "},
		{"VERIFIER a b", "ERR BADCMD "},
		{"RESPONSE x", "ERR BADCMD "},
		{"AUTH", "ERR BADREQ "},
		{"AUTH FOO x", "ERR NOMECH "},
		{"AUTH FOO", "ERR NOMECH "}, // mechanism before arguments
		{"AUTH SEED-SHA256 alice", "ERR NOMECH "},
		{"AUTH SCRAM-SHA-256", "ERR BADREQ "},
		{"AUTH SCRAM-SHA-256 " + validFirst + " extra", "ERR BADREQ "},
		{"AUTH SCRAM-SHA-256 not-base64!", "ERR BADREQ "},
		{"AUTH SCRAM-SHA-256 " + EncodeB64([]byte("p=tls-unique,,n=alice,r=abc")), "ERR BADREQ "},
		{"AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,a=bob,n=alice,r=abc")), "ERR BADREQ "},
		{"AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,,n=alice")), "ERR BADREQ "},
		{"AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,,n=a=zz,r=abc")), "ERR BADREQ "},
		{"AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,,n=has space,r=abc")), "ERR BADNAME "},
		{"AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,,n="+strings.Repeat("x", 65)+",r=abc")), "ERR BADNAME "},
		{"REGISTER", "ERR BADREQ "},
		{"REGISTER a b", "ERR BADREQ "},
		{"REGISTER  a", "ERR BADREQ "},
		{"REGISTER a\u0007", "ERR BADNAME "},
		{"REGISTER alice", "ERR EXISTS "},
		{"REGISTER \xff", "ERR BADREQ "},
		{"WHOAMI \xff", "ERR BADCMD "}, // state before arguments, even bad UTF-8
		{"AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,,n=alice,r="+strings.Repeat("A", 3000))), "ERR BADREQ "},
		{"VERIFIER " + EncodeB64(make([]byte, 32))[:10] + "\r" + EncodeB64(make([]byte, 32))[10:] + " x", "ERR BADCMD "},
		{"PING", "OK PONG"},
		{"PING\r", "OK PONG"},
	}
	for _, tc := range cases {
		got := rc.do(tc.send)
		if !(got == tc.want || strings.HasPrefix(got, tc.want) && strings.HasSuffix(tc.want, " ") && len(got) > len(tc.want)) {
			t.Errorf("%q: got %q, want %q…", tc.send, got, tc.want)
		}
	}

	// A half-finished exchange is abandoned by any other line, which is
	// then handled afresh; nothing was created.
	if got := rc.do("REGISTER bob"); !strings.HasPrefix(got, "SALT ") {
		t.Fatalf("REGISTER bob: %q", got)
	}
	if got := rc.do("PING"); got != "OK PONG" {
		t.Fatalf("PING mid-exchange: %q", got)
	}
	if got := rc.do("VERIFIER " + EncodeB64(make([]byte, 32)) + " " + EncodeB64(make([]byte, 32))); !strings.HasPrefix(got, "ERR BADCMD ") {
		t.Fatalf("VERIFIER after abandon: %q", got)
	}
	if _, err := ts.store.Get("bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("abandoned registration left an account: %v", err)
	}
	// Key length and encoding in VERIFIER.
	rc.do("REGISTER bob")
	if got := rc.do("VERIFIER " + EncodeB64(make([]byte, 31)) + " " + EncodeB64(make([]byte, 32))); !strings.HasPrefix(got, "ERR BADREQ ") {
		t.Fatalf("short key: %q", got)
	}
	// A SCRAM RESPONSE that does not extend the server's nonce, or has the
	// wrong channel binding, is BADREQ; a wrong proof is AUTH.
	for _, final := range []string{
		"c=biws,r=wrongnonce,p=" + EncodeB64(make([]byte, 32)),
		"c=eSws,r=%s,p=" + EncodeB64(make([]byte, 32)),
		"c=biws,r=%s,p=" + EncodeB64(make([]byte, 5)),
		"c=biws,r=%s",
		"c=biws,r=%s,p=" + EncodeB64(make([]byte, 32))[:8] + "\r\n" + EncodeB64(make([]byte, 32))[8:],
	} {
		s1, _ := challenge(t, rc, "alice")
		nonce := strings.TrimPrefix(strings.Split(s1, ",")[0], "r=")
		if strings.Contains(final, "%s") {
			final = fmt.Sprintf(final, nonce)
		}
		if got := rc.do("RESPONSE " + EncodeB64([]byte(final))); !strings.HasPrefix(got, "ERR BADREQ ") {
			t.Errorf("RESPONSE %q: %q", final, got)
		}
	}
	s1, _ := challenge(t, rc, "alice")
	nonce := strings.TrimPrefix(strings.Split(s1, ",")[0], "r=")
	if got := rc.do("RESPONSE " + EncodeB64([]byte("c=biws,r="+nonce+",p="+EncodeB64(make([]byte, 32))))); !strings.HasPrefix(got, "ERR AUTH ") {
		t.Errorf("wrong proof: %q", got)
	}
	if got := rc.do("PING"); got != "OK PONG" {
		t.Fatalf("server stopped serving after errors: %q", got)
	}
}

func TestManyProtocolErrorsKeepTheConnection(t *testing.T) {
	ts := startServer(t, testConfig(t))
	rc, _ := dialRaw(t, ts.addr)
	// The spec's table keeps the connection open after BADCMD and BADREQ,
	// however many; the deadlines bound what a garbage client costs.
	for i := range 200 {
		if got := rc.do("GET / HTTP/1.1"); !strings.HasPrefix(got, "ERR BADCMD ") {
			t.Fatalf("error %d: %q", i, got)
		}
	}
	if got := rc.do("PING"); got != "OK PONG" {
		t.Fatal(got)
	}
}

func TestAuthenticatedState(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "Secret123")
	c, err := Dial(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "Secret123"); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"REGISTER bob", "AUTH SCRAM-SHA-256 x", "AUTH FOO x"} {
		if _, err := c.Do(cmd); code(err) != CodeBadCmd {
			t.Errorf("%s while logged in: %v, want BADCMD", cmd, err)
		}
	}
	if _, err := c.Do("WHOAMI", "x"); code(err) != CodeBadReq {
		t.Errorf("WHOAMI x while logged in: %v, want BADREQ", err)
	}
	if r, err := c.Do("LOGOUT"); err != nil || r.Word != "OK" {
		t.Fatalf("LOGOUT: %v %v", r, err)
	}
	if _, err := c.Do("WHOAMI"); code(err) != CodeBadCmd {
		t.Errorf("WHOAMI after LOGOUT: %v", err)
	}
	// Log in again on the same connection, change the password, and
	// delete the account.
	if err := c.Login("alice", "Secret123"); err != nil {
		t.Fatal(err)
	}
	if err := c.Passwd("alice", "Newpass123"); err != nil {
		t.Fatalf("passwd: %v", err)
	}
	if err := login(t, ts.addr, "alice", "Secret123"); code(err) != CodeAuth {
		t.Fatalf("old password after PASSWD: %v", err)
	}
	if err := login(t, ts.addr, "alice", "Newpass123"); err != nil {
		t.Fatalf("new password after PASSWD: %v", err)
	}
	if err := c.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Do("WHOAMI"); code(err) != CodeBadCmd {
		t.Errorf("WHOAMI after DELETE: %v", err)
	}
	if err := login(t, ts.addr, "alice", "Newpass123"); code(err) != CodeAuth {
		t.Fatalf("login after DELETE: %v", err)
	}
}

func TestInternalErrorIsGeneric(t *testing.T) {
	ts := startServer(t, testConfig(t))
	rc, _ := dialRaw(t, ts.addr)
	ts.store.Close() // every store call now fails
	got := rc.do("REGISTER alice")
	if !strings.HasPrefix(got, "ERR INTERNAL ") || strings.Contains(strings.ToLower(got), "database") {
		t.Fatalf("store failure reached the wire as %q", got)
	}
	if !strings.Contains(ts.logs.String(), "internal error") {
		t.Fatal("store failure not logged")
	}
	if got := rc.do("PING"); got != "OK PONG" {
		t.Fatalf("after INTERNAL: %q", got)
	}
}

func TestLineTooLong(t *testing.T) {
	ts := startServer(t, testConfig(t))
	rc, _ := dialRaw(t, ts.addr)
	// Exactly 4096 bytes with the LF is allowed; CR counts.
	if got := rc.do("PING\r"); got != "OK PONG" {
		t.Fatal(got)
	}
	maxArg := strings.Repeat("A", MaxLineBytes-len("REGISTER \n"))
	if got := rc.do("REGISTER " + maxArg); !strings.HasPrefix(got, "ERR BADNAME ") {
		t.Fatalf("4096-byte line: %q", got)
	}
	rc.send("REGISTER " + maxArg + "\r\n") // 4097 bytes
	if got := rc.read(); !strings.HasPrefix(got, "ERR TOOLONG ") {
		t.Fatalf("4097-byte line: %q", got)
	}
	rc.expectClosed()
	// Others are still served.
	rc2, _ := dialRaw(t, ts.addr)
	if got := rc2.do("PING"); got != "OK PONG" {
		t.Fatal(got)
	}
}

func TestSilentClientTimesOut(t *testing.T) {
	cfg := testConfig(t)
	cfg.LineTimeout = Duration{200 * time.Millisecond}
	ts := startServer(t, cfg)
	rc, _ := dialRaw(t, ts.addr)
	rc.send("PIN") // an incomplete line
	if got := rc.read(); !strings.HasPrefix(got, "ERR TIMEOUT ") {
		t.Fatalf("silent client got %q", got)
	}
	rc.expectClosed()
}

// pipeConn is a conn of a server on a fresh store over one end of a
// net.Pipe, for tests in a synctest bubble (the pipe's deadlines then run
// on the bubble's clock); it returns the client's end. Call it inside the
// bubble; the store is opened outside it, by the caller, with openStore.
func pipeConn(cfg Config, store Storage) (*conn, net.Conn) {
	server, client := net.Pipe()
	return &conn{srv: NewServer(cfg, store, nil), raw: server, nc: server, started: time.Now(), r: bufio.NewReader(server)}, client
}

// openStore opens cfg's store for the test, closed when it ends.
func openStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	store, err := OpenStore(cfg.DB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// TestLineDeadlines: every line has at least a line timeout from the
// moment the server starts waiting for it, and at most a sixteenth more;
// lines that follow closely share one deadline (one timer update, not one
// a line). In a synctest bubble, over net.Pipe, whose deadlines run on the
// bubble's clock, so the bounds are exact.
func TestLineDeadlines(t *testing.T) {
	cfg := testConfig(t)
	cfg.LineTimeout = Duration{1600 * time.Millisecond}
	lt, slack := cfg.LineTimeout.Duration, cfg.LineTimeout.Duration/lineSlack
	store := openStore(t, cfg)
	synctest.Test(t, func(t *testing.T) {
		c, client := pipeConn(cfg, store)
		var senders sync.WaitGroup
		defer senders.Wait() // each ends once the pipe is closed
		defer c.raw.Close()
		defer client.Close()
		// send writes parts, the given time apart; a write the server no
		// longer reads fails when the pipe closes.
		send := func(first string, after time.Duration, rest string) {
			senders.Go(func() {
				if _, err := io.WriteString(client, first); err != nil {
					return
				}
				time.Sleep(after)
				io.WriteString(client, rest)
			})
		}
		readLine := func() (time.Duration, error) {
			t.Helper()
			start := time.Now()
			_, err := c.readLine()
			return time.Since(start), err
		}

		send("PING\n", 0, "")
		if _, err := readLine(); err != nil {
			t.Fatal(err)
		}
		first := c.readBy
		if want := c.started.Add(lt + slack); !first.Equal(want) {
			t.Fatalf("first deadline %v after the start, want %v", first.Sub(c.started), lt+slack)
		}

		// Just over a line timeout of it is left: the next line keeps it,
		// and has that line timeout.
		time.Sleep(slack - time.Millisecond)
		send("PI", lt-time.Millisecond, "NG\n")
		if took, err := readLine(); err != nil {
			t.Fatalf("a line sent within a line timeout (%v) failed: %v", took, err)
		}
		if !c.readBy.Equal(first) {
			t.Fatalf("a line that followed closely set a new deadline (%v later)", c.readBy.Sub(first))
		}

		// Less than a line timeout is left now (a millisecond or two), or
		// later three quarters of one: the next line gets a new deadline
		// each time, a line timeout and a sixteenth from now.
		send("PING\n", 0, "")
		if _, err := readLine(); err != nil {
			t.Fatal(err)
		}
		second := c.readBy
		if !second.After(first) {
			t.Fatal("a line with less than a line timeout left kept the old deadline")
		}
		time.Sleep(slack + lt/4)
		send("PI", lt-time.Millisecond, "NG\n")
		if took, err := readLine(); err != nil {
			t.Fatalf("a line sent within a line timeout (%v) failed: %v", took, err)
		}
		send("PI", lt+slack+time.Millisecond, "NG\n")
		took, err := readLine()
		if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
			t.Fatalf("a line slower than its deadline: %v after %v, want a timeout", err, took)
		}
		if took != lt+slack {
			t.Fatalf("the line was cut after %v, want %v", took, lt+slack)
		}
	})
}

// TestLineAfterInterrupt: Shutdown cuts a connection waiting for a
// command by setting its read deadline to now; if the read got its line
// first and that line began an exchange, the exchange's next line is still
// read, and gets a deadline of its own (it was once cut at once with ERR
// TIMEOUT, as the deadline in the past was taken for the shared one).
func TestLineAfterInterrupt(t *testing.T) {
	cfg := testConfig(t)
	store := openStore(t, cfg)
	synctest.Test(t, func(t *testing.T) {
		c, client := pipeConn(cfg, store)
		defer client.Close()
		defer c.raw.Close()
		go io.WriteString(client, "PING\n")
		if _, err := c.readLine(); err != nil { // sets the deadline lines share
			t.Fatal(err)
		}
		errs := make(chan error, 1)
		go func() { _, err := c.readLine(); errs <- err }()
		synctest.Wait() // the read waits, idle
		c.interruptIfIdle()
		if err := <-errs; err == nil {
			t.Fatal("the interrupted read returned a line")
		}
		c.pending = &c.scram // as if the line had been an AUTH
		go func() {
			time.Sleep(time.Second)
			io.WriteString(client, "RESPONSE x\n")
		}()
		if _, err := c.readLine(); err != nil {
			t.Fatalf("the exchange's next line, a second after the interrupt: %v", err)
		}
	})
}

// A client that sends commands and never reads their replies fills the
// socket buffers; the server's next write then fails within a line timeout
// and the connection ends, freeing its worker for the next client.
func TestClientThatNeverReadsIsCut(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = 1
	// Long enough that the writing goroutine is never starved of a whole
	// line timeout on a busy machine, which would end the connection by
	// a read timeout instead.
	cfg.LineTimeout = Duration{time.Second}
	cfg.QueueTimeout = Duration{10 * time.Second}
	// Small socket buffers on both sides, so that the server's replies
	// fill them within a few thousand PINGs: the server then blocks in a
	// write. Left to grow (a server's send buffer reaches 4 MB here),
	// they take tens of thousands, and Linux 6.18 meanwhile drops the
	// segments that a client with a full receive buffer is sent, their
	// acknowledgements with them, so the client's own writes stall and
	// the server's read times out first.
	store, err := OpenStore(cfg.DB) // serveStoreOn closes it
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ts := serveStoreOn(t, cfg, store, smallSendBuffers{ln.(*net.TCPListener)})
	rc, _ := dialRaw(t, ts.addr)
	rc.nc.(*net.TCPConn).SetReadBuffer(4096)
	pings := []byte(strings.Repeat("PING\n", 1024))
	go func() {
		rc.nc.SetWriteDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, err := rc.nc.Write(pings); err != nil {
				return
			}
		}
	}()
	// With one worker, the next client is served only once the first
	// connection has ended.
	next, greeting := dialRaw(t, ts.addr)
	if !strings.HasPrefix(greeting, "AUTHBOX ") {
		t.Fatalf("next client's greeting %q", greeting)
	}
	next.send("PING\n")
	if got := next.read(); got != "OK PONG" {
		t.Fatalf("next client got %q", got)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "end=\"write failed\"") {
		t.Fatalf("the cut connection is not logged as a failed write:\n%s", logs)
	}
}

// smallSendBuffers is a listener whose connections have the smallest
// send buffer Linux allows.
type smallSendBuffers struct{ *net.TCPListener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.AcceptTCP()
	if err != nil {
		return nil, err
	}
	c.SetWriteBuffer(4096)
	return c, nil
}

func TestSessionTimeLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.SessionTimeout = Duration{300 * time.Millisecond}
	ts := startServer(t, cfg)
	rc, _ := dialRaw(t, ts.addr)
	// A client that keeps sending is still cut at the session limit.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		// Trickle one line in two parts; the server may already have hung
		// up, so write errors are expected and the reply tells.
		io.WriteString(rc.nc, "PI")
		io.WriteString(rc.nc, "NG\n")
		got := rc.read()
		if strings.HasPrefix(got, "ERR TIMEOUT ") {
			rc.expectClosed()
			return
		}
		if got != "OK PONG" {
			t.Fatal(got)
		}
	}
	t.Fatal("session limit never enforced")
}

func TestPanicIsRecoveredPerConnection(t *testing.T) {
	cfg := testConfig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	srv := NewServer(cfg, OpenStoreForTest(t, cfg.DB), slog.New(newLogHandler(logs, false)))
	// A throttle without its table of logins under way panics at the
	// first attempt: a stand-in for any bug in a handler. (A store call
	// that panics no longer will: the store takes that for a damaged
	// file and answers ErrDamaged.)
	srv.thr.inflight = nil
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})

	for range 3 {
		rc, _ := dialRaw(t, ln.Addr().String())
		if got := rc.do("REGISTER alice"); !strings.HasPrefix(got, "ERR INTERNAL ") {
			t.Fatalf("panicking handler answered %q", got)
		}
		rc.expectClosed()
	}
	rc, _ := dialRaw(t, ln.Addr().String())
	if got := rc.do("PING"); got != "OK PONG" {
		t.Fatalf("server after panics: %q", got)
	}
	if l := logs.String(); !strings.Contains(l, "panic serving connection") || !strings.Contains(l, "goroutine ") {
		t.Fatalf("panic not logged with its stack:\n%s", l)
	}
}
