package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testIterations is the one test-only drop of the KDF work factor: the
// protocol's minimum, so each PBKDF2 costs about a millisecond.
const testIterations = MinIterations

// testConfig is the embedded default config with test-friendly values.
func testConfig(t testing.TB) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Iterations = testIterations
	cfg.DB = filepath.Join(t.TempDir(), "test.db")
	cfg.Listen = "127.0.0.1:0"
	cfg.Workers = 8
	// The suite's protocol tests speak plain TCP, byte for byte; the TLS
	// tests turn it on (tlsConfig).
	cfg.TLS = false
	return cfg
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // closed and replaced at every write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written != nil {
		close(s.written)
		s.written = nil
	}
	return s.b.Write(p)
}

// wait returns at the next write, or at deadline.
func (s *syncBuffer) wait(deadline time.Time) {
	s.mu.Lock()
	if s.written == nil {
		s.written = make(chan struct{})
	}
	ch := s.written
	s.mu.Unlock()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testServer is a running server on a loopback port.
type testServer struct {
	t testing.TB
	*Server
	store   *Store  // the bbolt store, nil on another
	storage Storage // the store, whichever it is
	addr    string
	logs    *syncBuffer
	done    chan error
	once    sync.Once
}

// startServer opens cfg.DB and serves on 127.0.0.1:0 (or cfg.Listen), and
// stops everything in t.Cleanup.
func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	store, err := OpenStore(cfg.DB)
	if err != nil {
		t.Fatal(err)
	}
	return serveStore(t, cfg, store)
}

// serveStore serves an open store as startServer does; the store is
// closed when the server stops.
func serveStore(t testing.TB, cfg Config, store Storage) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	return serveStoreOn(t, cfg, store, ln)
}

// serveStoreOn is serveStore on a listener of the test's own.
func serveStoreOn(t testing.TB, cfg Config, store Storage, ln net.Listener) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	srv := NewServer(cfg, store, slog.New(newLogHandler(logs, false)))
	ts := &testServer{t: t, Server: srv, storage: store, addr: ln.Addr().String(), logs: logs, done: make(chan error, 1)}
	ts.store, _ = store.(*Store)
	go func() { ts.done <- srv.Serve(ln) }()
	t.Cleanup(ts.stop)
	select { // Serve's fields (the etcd cache, shared failures) are set
	case <-srv.ready:
	case err := <-ts.done:
		t.Fatalf("serve: %v", err)
	}
	// No pin an earlier test's server left on this port may make testDial
	// take this one for it.
	pinServer(t, ts.addr, "")
	return ts
}

// stop shuts the server down and closes its store; safe to call twice.
func (ts *testServer) stop() {
	ts.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ts.Shutdown(ctx)
		select {
		case <-ts.done:
		case <-ctx.Done():
			ts.t.Errorf("server did not stop within 5s")
		}
		ts.storage.Close()
	})
}

// rawConn is a line-level connection for byte-exact protocol tests.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

// dialRaw connects and returns the connection and its first line.
func dialRaw(t testing.TB, addr string) (*rawConn, string) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	rc := &rawConn{t: t, nc: nc, r: bufio.NewReader(nc)}
	return rc, rc.read()
}

// read returns the next line without its LF, failing the test on timeout.
func (rc *rawConn) read() string {
	rc.t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := rc.r.ReadString('\n')
	if err != nil {
		rc.t.Fatalf("read: %v (got %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

// send writes raw bytes.
func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.nc, s); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// do sends one line and returns the reply line.
func (rc *rawConn) do(line string) string {
	rc.t.Helper()
	rc.send(line + "\n")
	return rc.read()
}

// expectClosed checks that the server closes the connection.
func (rc *rawConn) expectClosed() {
	rc.t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(rc.r)
	if err != nil && !isConnReset(err) {
		rc.t.Fatalf("expected close, got %v after %q", err, b)
	}
	if len(b) != 0 {
		rc.t.Fatalf("expected close, got more data %q", b)
	}
}

func isConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// testDial connects the real client as a user who pinned the server would:
// over TLS to a server pinned in the tests' known_servers file (the serve
// command's servers, see pinServer), else over plain TCP (startServer's,
// unless the test turned TLS on).
func testDial(t testing.TB, addr string) (*Client, error) {
	t.Helper()
	if path := os.Getenv(knownServersEnv); path != "" {
		k, err := LoadKnownServers(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := k.Lookup(addr); ok {
			return DialTLS(addr, (&Trust{Known: k}).TLSConfig(addr))
		}
	}
	return Dial(addr)
}

// mustRegister registers name with password through the real client.
func mustRegister(t testing.TB, addr, name, password string) {
	t.Helper()
	c, err := testDial(t, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Register(name, password); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
}

// login logs in through the real client and returns its error.
func login(t testing.TB, addr, name, password string) error {
	t.Helper()
	c, err := testDial(t, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.Login(name, password)
}

// code returns the ERR code of an error, or "".
func code(err error) string {
	var pe *ProtoError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// scramExchange is one SCRAM login as it crossed the wire.
type scramExchange struct {
	challenge   string // the CHALLENGE line
	serverFirst string // decoded from it
	clientFinal string
	final       string // the reply to RESPONSE
}

// rawSCRAM runs a real SCRAM-SHA-256 login over rc with the real client
// code and returns every value that crossed the wire.
func rawSCRAM(t testing.TB, rc *rawConn, name, password string) scramExchange {
	t.Helper()
	sc, err := scramClient(name, password)
	if err != nil {
		t.Fatal(err)
	}
	conv := sc.NewConversation()
	c1, _ := conv.Step("")
	var x scramExchange
	x.challenge = rc.do("AUTH SCRAM-SHA-256 " + EncodeB64([]byte(c1)))
	s1, err := DecodeB64(strings.TrimPrefix(x.challenge, "CHALLENGE "))
	if err != nil {
		t.Fatalf("AUTH as %s: %q", name, x.challenge)
	}
	x.serverFirst = string(s1)
	if x.clientFinal, err = conv.Step(x.serverFirst); err != nil {
		t.Fatal(err)
	}
	x.final = rc.do("RESPONSE " + EncodeB64([]byte(x.clientFinal)))
	return x
}

// must returns v, for values a test has already checked can be had.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// dialFrom connects the real client from a chosen loopback address, so one
// test can play several sources.
func dialFrom(t testing.TB, addr, localIP string) (*Client, error) {
	t.Helper()
	return dialWith(&net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}, addr, nil)
}

func loginFrom(t testing.TB, addr, localIP, name, password string) error {
	t.Helper()
	c, err := dialFrom(t, addr, localIP)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Login(name, password)
}

// rawFrom opens a raw connection from a chosen loopback address.
func rawFrom(t testing.TB, addr, localIP string) (*rawConn, string) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	rc := &rawConn{t: t, nc: nc, r: bufio.NewReader(nc)}
	return rc, rc.read()
}
