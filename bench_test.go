package main

// bench_test.go holds the bare reference server, the tests of "authbox
// bench", and the Go benchmarks of the login path, the store and the line
// parser. BENCHMARKS.md says how each figure is made.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// bareLines are the bare reference server's replies: byte for byte the
// sizes of authbox's (32-character nonces on both sides, a 16-byte salt, a
// 32-byte signature), fixed once, so that serving them costs no crypto.
type bareLines struct {
	greeting, challenge, final, salt, ok, pong, bye, badcmd []byte
}

func newBareLines(iterations int, overTLS bool) *bareLines {
	// The mechanisms authbox offers by default on this transport: over TLS
	// the greeting names -PLUS too, and the bench client then binds to the
	// channel, as it does against authbox.
	def := DefaultConfig()
	nonce := strings.Repeat("A", 64) // client's 32 + server's 32 characters
	salt := EncodeB64(make([]byte, SaltLen))
	serverFirst := "r=" + nonce + ",s=" + salt + ",i=" + strconv.Itoa(iterations)
	return &bareLines{
		greeting:  []byte(Greeting(def.Offered(overTLS))),
		challenge: []byte(FormatReply(ReplyChallenge, EncodeB64([]byte(serverFirst)))),
		final:     []byte(FormatReply(ReplyOK, EncodeB64([]byte("v="+EncodeB64(make([]byte, KeyLen)))))),
		salt:      []byte(FormatReply(ReplySalt, salt, strconv.Itoa(iterations))),
		ok:        []byte(FormatReply(ReplyOK)),
		pong:      []byte(FormatReply(ReplyOK, "PONG")),
		bye:       []byte(FormatReply(ReplyOK, "BYE")),
		badcmd:    []byte(FormatReply(ReplyErr, CodeBadCmd, "unknown command")),
	}
}

// reply is the bare server's whole protocol: the command word picks a
// fixed line.
func (bl *bareLines) reply(line []byte) (out []byte, quit bool) {
	word := line
	if i := bytes.IndexAny(line, " \r\n"); i >= 0 {
		word = line[:i]
	}
	switch string(word) {
	case CmdAuth:
		return bl.challenge, false
	case CmdResponse:
		return bl.final, false
	case CmdRegister, CmdPasswd:
		return bl.salt, false
	case CmdVerifier, CmdLogout:
		return bl.ok, false
	case CmdPing:
		return bl.pong, false
	case CmdQuit:
		return bl.bye, true
	}
	return bl.badcmd, false
}

// serveBare is the bare reference server: a goroutine per connection that
// reads a line and writes a fixed line, with no deadline, no crypto, no
// store and no log. It is the physical limit of this protocol's TCP work
// on a machine, what authbox's figures are measured against.
func serveBare(ln net.Listener, bl *bareLines) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			return err
		}
		go serveBareConn(nc, bl)
	}
}

// serveBareConn is the bare server's work for one connection.
func serveBareConn(nc net.Conn, bl *bareLines) {
	defer nc.Close()
	if _, err := nc.Write(bl.greeting); err != nil {
		return
	}
	r := bufio.NewReaderSize(nc, MaxLineBytes)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		out, quit := bl.reply(line)
		if _, err := nc.Write(out); err != nil || quit {
			return
		}
	}
}

// bareTLSListener wraps ln in TLS 1.3 as authbox serves it: a fresh
// self-signed identity of the key type authbox makes for itself (Ed25519)
// and authbox's own serverTLSConfig, so that session tickets, ALPN and the
// version are the same. The bare server does not compute the tls-exporter
// binding of a connection (it checks no proof), so a login over it costs
// the server only the handshake and the record layer.
func bareTLSListener(ln net.Listener) (net.Listener, *ServerIdentity, error) {
	certDER, keyDER, err := newSelfSigned()
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, nil, err
	}
	id, err := newIdentity(tls.Certificate{Certificate: [][]byte{certDER}, PrivateKey: key})
	if err != nil {
		return nil, nil, err
	}
	return tls.NewListener(ln, serverTLSConfig(id)), id, nil
}

// TestBareServer is not a test but the bare reference server as a process
// of its own, so that its CPU time can be read from /proc like the real
// server's; bench.sh starts it so:
//
//	go test -c -o bare.test && AUTHBOX_BARE_ADDR=127.0.0.1:0 ./bare.test -test.run '^TestBareServer$' -test.timeout 0
//
// It prints "bare server listening on ADDR", serves until SIGINT or
// SIGTERM and then passes, so that the process exits 0 when it is stopped.
// AUTHBOX_BARE_ITERATIONS sets the iteration count it announces (4096).
// With AUTHBOX_BARE_TLS=1 it speaks TLS 1.3 (bareTLSListener) and first
// prints "bare server fingerprint SHA256:…", for the bench's --fingerprint.
// Without AUTHBOX_BARE_ADDR, as in every ordinary test run, it is skipped.
func TestBareServer(t *testing.T) {
	addr := os.Getenv("AUTHBOX_BARE_ADDR")
	if addr == "" {
		t.Skip("the bare reference server runs only with AUTHBOX_BARE_ADDR set (see bench.sh)")
	}
	iters := testIterations
	if v := os.Getenv("AUTHBOX_BARE_ITERATIONS"); v != "" {
		var err error
		if iters, err = ParseIterations(v); err != nil || iters < MinIterations {
			t.Fatalf("AUTHBOX_BARE_ITERATIONS=%q: want a count of at least %d", v, MinIterations)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	overTLS := os.Getenv("AUTHBOX_BARE_TLS") == "1"
	if overTLS {
		var id *ServerIdentity
		if ln, id, err = bareTLSListener(ln); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("bare server fingerprint %s\n", id.Fingerprint)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- serveBare(ln, newBareLines(iters, overTLS)) }()
	fmt.Printf("bare server listening on %s\n", ln.Addr())
	select {
	case <-ctx.Done():
		ln.Close()
		<-served
	case err := <-served:
		t.Fatal(err)
	}
}

// TestBareServerStops runs the bare reference server as bench.sh does and
// checks that it answers, and that SIGTERM ends it with exit status 0.
func TestBareServerStops(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run", "^TestBareServer$", "-test.timeout", "0")
	cmd.Env = append(os.Environ(), "AUTHBOX_BARE_ADDR=127.0.0.1:0", "AUTHBOX_BARE_ITERATIONS=5000")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// One reader of its output, which waits for the process once the
	// output ends: Wait must not run before the reads are done.
	addrc := make(chan string, 1)
	exited := make(chan struct{})
	var rest strings.Builder
	var waitErr error
	go func() {
		defer close(exited)
		lines := bufio.NewScanner(out)
		for lines.Scan() {
			if a, ok := strings.CutPrefix(lines.Text(), "bare server listening on "); ok {
				addrc <- a
			} else {
				rest.WriteString(lines.Text() + "\n")
			}
		}
		waitErr = cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	var addr string
	select {
	case addr = <-addrc:
	case <-exited:
		t.Fatalf("the bare server exited before listening: %v, output %q", waitErr, rest.String())
	case <-time.After(10 * time.Second):
		t.Fatal("the bare server did not say where it listens within 10s")
	}

	rc, greeting := dialRaw(t, addr)
	if !strings.HasPrefix(greeting, "AUTHBOX 1 ") {
		t.Fatalf("greeting %q", greeting)
	}
	if r := rc.do("REGISTER bench0"); !strings.HasSuffix(r, " 5000") {
		t.Fatalf("SALT with AUTHBOX_BARE_ITERATIONS=5000: %q", r)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the bare server still runs 10s after SIGTERM")
	}
	if waitErr != nil || !strings.Contains(rest.String(), "PASS") {
		t.Fatalf("bare server after SIGTERM: %v, output %q", waitErr, rest.String())
	}
}

// startBare runs the bare server in this process until the test ends.
func startBare(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { serveBare(ln, newBareLines(testIterations, false)); close(done) }()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// startBareTLS runs the TLS bare server in this process until the test
// ends and returns its address and fingerprint.
func startBareTLS(t testing.TB) (addr, fingerprint string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln, id, err := bareTLSListener(ln)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { serveBare(tln, newBareLines(testIterations, true)); close(done) }()
	t.Cleanup(func() { tln.Close(); <-done })
	return ln.Addr().String(), id.Fingerprint
}

// benchCLI runs "authbox ARGS..." in this process, as main does, so that
// the bench's code runs under the race detector and counts in coverage.
func benchCLI(t testing.TB, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"authbox"}, args...), strings.NewReader(""), &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// benchJSON runs "authbox bench --plain ... --json" against one of the
// tests' plain-TCP servers and decodes its report.
func benchJSON(t *testing.T, args ...string) benchReport {
	t.Helper()
	r := benchCLI(t, append([]string{"bench", "--plain", "--json", "--warmup", "0"}, args...)...)
	if r.code != 0 {
		t.Fatalf("bench %v: %+v", args, r)
	}
	var rep benchReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("bench --json output %q: %v", r.stdout, err)
	}
	return rep
}

// benchJSONFailing is benchJSON for a run that must exit 2: it returns the
// report, which is printed all the same, and what the run printed.
func benchJSONFailing(t *testing.T, args ...string) (benchReport, result) {
	t.Helper()
	r := benchCLI(t, append([]string{"bench", "--plain", "--json", "--warmup", "0"}, args...)...)
	var rep benchReport
	if r.code != exitOther || !strings.Contains(r.stderr, "authbox: error: ") || !strings.Contains(r.stderr, "authbox: hint: ") {
		t.Fatalf("bench %v: %+v, want exit 2 with an error and a hint", args, r)
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("bench --json output %q: %v", r.stdout, err)
	}
	return rep, r
}

func TestBenchLoginAndRegister(t *testing.T) {
	ts := startServer(t, testConfig(t))

	rep := benchJSON(t, "--server", ts.addr, "--users", "12", "--conc", "4", "--duration", "300ms")
	if rep.Mode != "login" || rep.Ops == 0 || rep.Errors != 0 || rep.Iterations != testIterations || rep.Conc != 4 {
		t.Fatalf("login run: %+v", rep)
	}
	if rep.LatencyMs["p50"].(float64) <= 0 || rep.LatencyMs["max"].(float64) < rep.LatencyMs["p99"].(float64) {
		t.Fatalf("latencies: %v", rep.LatencyMs)
	}
	for _, name := range []string{"bench0", "bench11"} {
		if _, err := ts.store.Get(name); err != nil {
			t.Fatalf("setup did not register %s: %v", name, err)
		}
	}
	if n, _ := ts.store.Count(); n != 12 {
		t.Fatalf("%d accounts after setup of 12", n)
	}
	// A second run finds the accounts and logs in as them; the text report
	// is what a user reads.
	r := benchCLI(t, "bench", "--plain", "--server", ts.addr, "--users", "12", "--conc", "3", "--duration", "300ms", "--warmup", "50ms", "--reuse", "--pid", strconv.Itoa(os.Getpid()))
	if r.code != 0 {
		t.Fatalf("reuse run: %+v", r)
	}
	for _, want := range []string{"one connection per client", "server iterations: 4096", "logins:", "errors:       none", "latency:      p50 ", "server cpu:", "server rss:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stderr, "\r") || !strings.HasPrefix(r.stderr, "authbox: warning: bench writes to "+ts.addr) {
		t.Errorf("stderr, not a terminal, has more than the announcement: %q", r.stderr)
	}

	rep = benchJSON(t, "--server", ts.addr, "--mode", "register", "--conc", "4", "--duration", "300ms")
	if rep.Mode != "register" || rep.Ops == 0 || rep.Errors != 0 {
		t.Fatalf("register run: %+v", rep)
	}
	// Registrations under way when the run ends complete but are not
	// counted in the run.
	if n, _ := ts.store.Count(); n < 12+int(rep.Ops) {
		t.Fatalf("%d accounts after %d registrations", n, rep.Ops)
	}
}

func TestBenchBareServer(t *testing.T) {
	addr := startBare(t)
	rep := benchJSON(t, "--server", addr, "--bare", "--users", "5", "--conc", "2", "--duration", "200ms")
	if rep.Ops == 0 || rep.Errors != 0 || rep.Iterations != testIterations || !rep.Bare {
		t.Fatalf("bare run: %+v", rep)
	}
	// Without --bare the client checks the server's nonce and signature,
	// and the bare server's replayed lines fail.
	rep, r := benchJSONFailing(t, "--server", addr, "--no-setup", "--users", "5", "--conc", "2", "--duration", "200ms")
	if rep.Ops != 0 || rep.ErrorsByCode["protocol"] == 0 || !strings.Contains(r.stderr, "add --bare") {
		t.Fatalf("checked run against the bare server: %+v\n%s", rep, r.stderr)
	}
}

// resumes reports whether a second TLS connection to addr resumes the
// session of a first one, with a client session cache as bench --resume
// keeps, and returns the first connection's state and greeting.
func resumes(t *testing.T, addr string) (first tls.ConnectionState, greeting string, resumed bool) {
	t.Helper()
	conf := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{alpnProto},
		ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	for i := range 2 {
		tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
		if err != nil {
			t.Fatal(err)
		}
		// Reading the greeting also reads the session ticket sent after
		// the handshake.
		rc := &rawConn{t: t, nc: tc, r: bufio.NewReader(tc)}
		g := rc.read()
		rc.do("QUIT")
		tc.Close()
		if i == 0 {
			first, greeting = tc.ConnectionState(), g
		} else {
			resumed = tc.ConnectionState().DidResume
		}
	}
	return first, greeting, resumed
}

// TestBareTLSServer checks that the TLS bare reference server is authbox's
// TLS without the server's work: the greeting authbox sends over TLS, TLS
// 1.3 with ALPN, an Ed25519 key with the fingerprint it prints, and the
// same session resumption as authbox; and that "authbox bench" drives it
// with and without --resume, trusting it by --fingerprint.
func TestBareTLSServer(t *testing.T) {
	addr, fp := startBareTLS(t)
	ts := startServer(t, tlsTestConfig(t))

	st, greeting, bareResumed := resumes(t, addr)
	_, authboxGreeting, authboxResumed := resumes(t, ts.addr)
	if greeting != authboxGreeting {
		t.Errorf("bare TLS greeting %q, authbox's over TLS %q", greeting, authboxGreeting)
	}
	if bareResumed != authboxResumed || !bareResumed {
		t.Errorf("second connection resumed: bare %v, authbox %v (both should)", bareResumed, authboxResumed)
	}
	if st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != alpnProto {
		t.Errorf("TLS version %x, ALPN %q", st.Version, st.NegotiatedProtocol)
	}
	leaf := st.PeerCertificates[0]
	if _, ok := leaf.PublicKey.(ed25519.PublicKey); !ok || certFingerprint(leaf) != fp {
		t.Errorf("bare TLS key %T with fingerprint %s, printed %s", leaf.PublicKey, certFingerprint(leaf), fp)
	}

	for _, resume := range []bool{false, true} {
		args := []string{"bench", "--json", "--warmup", "0", "--server", addr, "--fingerprint", fp, "--bare",
			"--users", "5", "--conc", "2", "--duration", "200ms"}
		if resume {
			args = append(args, "--resume")
		}
		r := benchCLI(t, args...)
		var rep benchReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil {
			t.Fatalf("bench --resume=%v against the bare TLS server: %v %+v", resume, err, r)
		}
		if rep.Ops == 0 || rep.Errors != 0 || !rep.Bare {
			t.Fatalf("bench --resume=%v against the bare TLS server: %+v", resume, rep)
		}
	}
}

func TestBenchSourcesAndErrors(t *testing.T) {
	ts := startServer(t, testConfig(t))
	rep := benchJSON(t, "--server", ts.addr, "--users", "3", "--conc", "6", "--sources", "3", "--duration", "200ms")
	if rep.Sources != 3 || rep.Errors != 0 {
		t.Fatalf("sources run: %+v", rep)
	}
	for _, src := range []string{"remote=127.0.0.1:", "remote=127.0.0.2:", "remote=127.0.0.3:"} {
		if !strings.Contains(ts.logs.String(), src) {
			t.Errorf("no connection from %s in the server log", src)
		}
	}
	// An unknown bench user: the run stops at the first failed login.
	_, r := benchJSONFailing(t, "--server", ts.addr, "--users", "50", "--no-setup", "--conc", "2", "--duration", "200ms")
	if !strings.Contains(r.stderr, "bench stopped at the first failed login") {
		t.Fatalf("logins as users that do not exist: %+v", r)
	}

	r = benchCLI(t, "bench", "--mode", "bogus")
	if r.code != 2 || !strings.Contains(r.stderr, "authbox: error: --mode must be login or register") || !strings.Contains(r.stderr, "authbox: hint: ") {
		t.Fatalf("bad mode: %+v", r)
	}
	r = benchCLI(t, "bench", "--server", "192.0.2.1:7886", "--sources", "4")
	if r.code != 2 || !strings.Contains(r.stderr, "--sources needs a loopback") {
		t.Fatalf("sources on a remote server: %+v", r)
	}
	r = benchCLI(t, "bench", "--plain", "--server", "127.0.0.1:1", "--duration", "100ms")
	// No server is no account problem: the hint says to start one.
	// (After bench's notice of what it is about to write.)
	if r.code != 2 || !strings.HasSuffix(r.stderr, "\nauthbox: error: cannot reach 127.0.0.1:1: connection refused\nauthbox: hint: is \"authbox serve\" running there? the address comes from --server, else AUTHBOX_SERVER, else client.server in --config\n") {
		t.Fatalf("no server: %+v", r)
	}
}

// TestBenchFlagErrors checks each refusal of bad settings: exit 2, an
// error naming the setting, and a hint, before any connection is made.
func TestBenchFlagErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "extra"}, `unexpected argument "extra"`},
		{[]string{"bench", "--config", filepath.Join(dir, "none.toml")}, "none.toml"},
		{[]string{"bench", "--conc", "0"}, "--conc must be at least 1"},
		{[]string{"bench", "--users", "0"}, "--users must be at least 1"},
		{[]string{"bench", "--duration", "0s"}, "--duration and --timeout must be positive"},
		{[]string{"bench", "--timeout", "0s"}, "--duration and --timeout must be positive"},
		{[]string{"bench", "--warmup", "-1s"}, "--warmup and --settle not negative"},
		{[]string{"bench", "--sources", "-1"}, "--sources must not be negative"},
		{[]string{"bench", "--pid", "-1"}, "--pid must be a process id"},
		{[]string{"bench", "--pid", "2147483647"}, "--pid 2147483647: no such process on this machine"},
		{[]string{"bench", "--server", "localhost:"}, `invalid server address: "localhost:" has no port after the colon`},
		{[]string{"bench", "--server", "localhost:7886", "--sources", "70000"}, "at most 65024 loopback sources"},
		{[]string{"bench", "populate", "extra"}, `unexpected argument "extra"`},
		{[]string{"bench", "populate"}, "bench populate needs --db"},
		{[]string{"bench", "populate", "--config", filepath.Join(dir, "none.toml")}, "none.toml"},
		{[]string{"bench", "populate", "--db", filepath.Join(dir, "p.db"), "--iterations", "4095"}, "--iterations must be 4096 to"},
		{[]string{"bench", "populate", "--db", filepath.Join(dir, "no", "such", "dir", "p.db")}, "no such file or directory"},
	} {
		r := benchCLI(t, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, "authbox: error: ") || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "authbox: hint: ") || r.stdout != "" {
			t.Errorf("%v: %+v, want exit 2 and %q", tc.args, r, tc.want)
		}
	}
}

// TestBenchBusyServer checks that ERR BUSY is counted under its code, with
// the pause the spec asks for between retries.
func TestBenchBusyServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			io.WriteString(nc, FormatReply(ReplyErr, CodeBusy, "server is busy, retry shortly"))
			nc.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	rep, r := benchJSONFailing(t, "--server", ln.Addr().String(), "--no-setup", "--conc", "2", "--duration", "200ms")
	if rep.Ops != 0 || rep.ErrorsByCode[CodeBusy] == 0 || rep.Errors != int64(rep.ErrorsByCode[CodeBusy]) || !strings.Contains(r.stderr, "no operation succeeded") {
		t.Fatalf("against a busy server: %+v\n%s", rep, r.stderr)
	}
	// Without the pause two clients would make thousands of connections
	// in 200ms; with it, each waits 10 to 20ms between tries.
	if n := conns.Load(); n > 200 {
		t.Fatalf("%d connections in 200ms from 2 clients: no backoff", n)
	}
}

// TestBenchSetupFindsAccounts checks the setup's two paths: register first
// when bench0 is missing (and log in as an account that is there), log in
// first when bench0 is there (and register the missing ones); an account
// with another password stops the run.
func TestBenchSetupFindsAccounts(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "bench1", cliBenchPassword(t))
	if rep := benchJSON(t, "--server", ts.addr, "--users", "3", "--conc", "2", "--duration", "100ms"); rep.Errors != 0 || rep.Ops == 0 {
		t.Fatalf("setup with bench1 there: %+v", rep)
	}
	if rep := benchJSON(t, "--server", ts.addr, "--users", "5", "--conc", "2", "--duration", "100ms"); rep.Errors != 0 || rep.Ops == 0 {
		t.Fatalf("setup with bench0..bench2 there: %+v", rep)
	}
	if n, _ := ts.store.Count(); n != 5 {
		t.Fatalf("%d accounts after setting up 5", n)
	}
	mustRegister(t, ts.addr, "bench5", "Another-password-2")
	r := benchCLI(t, "bench", "--plain", "--server", ts.addr, "--users", "6", "--conc", "1", "--duration", "100ms")
	if r.code != 2 || !strings.Contains(r.stderr, "authbox: error: bench setup: bench5: "+ErrBenchSetup.Error()) {
		t.Fatalf("setup with bench5 of another password: %+v", r)
	}
}

// TestBenchHostileServer checks that a server that greets and then never
// answers, or never greets, cannot make the bench hang: every wait has a
// deadline.
func TestBenchHostileServer(t *testing.T) {
	for _, greet := range []bool{true, false} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var conns sync.WaitGroup
		go func() {
			for {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				conns.Add(1)
				go func() {
					defer conns.Done()
					defer nc.Close()
					if greet {
						io.WriteString(nc, "AUTHBOX 1 SCRAM-SHA-256\n")
					}
					io.Copy(io.Discard, nc) // reads, never answers
				}()
			}
		}()
		start := time.Now()
		rep, _ := benchJSONFailing(t, "--server", ln.Addr().String(), "--no-setup", "--conc", "2", "--duration", "2s", "--timeout", "150ms")
		ln.Close()
		conns.Wait()
		if rep.Ops != 0 || rep.ErrorsByCode["timeout"] == 0 {
			t.Fatalf("greet=%v: %+v", greet, rep)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Fatalf("greet=%v: bench took %v against a silent server", greet, d)
		}
	}
}

func TestBenchPopulate(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pop.db")
	r := benchCLI(t, "bench", "populate", "--db", db, "--users", "2500", "--iterations", "4096")
	if r.code != 0 || !strings.Contains(r.stdout, "wrote 2500 bench accounts (bench0..bench2499, 4096 iterations)") ||
		!strings.Contains(r.stdout, "bytes per bench account") {
		t.Fatalf("populate: %+v", r)
	}
	r = benchCLI(t, "bench", "populate", "--db", db, "--users", "3000", "--iterations", "4096")
	if r.code != 0 || !strings.Contains(r.stdout, "wrote 500 bench accounts") || !strings.Contains(r.stdout, "2500 already there were kept") {
		t.Fatalf("second populate: %+v", r)
	}
	r = benchCLI(t, "bench", "populate", "--db", db, "--users", "0")
	if r.code != 2 || !strings.Contains(r.stderr, "--users must be") {
		t.Fatalf("populate 0 users: %+v", r)
	}

	cfg := testConfig(t)
	cfg.DB = db
	ts := startServer(t, cfg)
	// The server holds the file: the offline loader must refuse it.
	r = benchCLI(t, "bench", "populate", "--db", db, "--users", "10")
	if r.code != 2 || !strings.Contains(r.stderr, "stop the server first") {
		t.Fatalf("populate on a served db: %+v", r)
	}
	if n, _ := ts.store.Count(); n != 3000 {
		t.Fatalf("%d accounts, want 3000", n)
	}
	rep := benchJSON(t, "--server", ts.addr, "--users", "3000", "--no-setup", "--conc", "3", "--duration", "300ms")
	if rep.Ops == 0 || rep.Errors != 0 {
		t.Fatalf("logins as populated accounts: %+v", rep)
	}
}

// loopConn is a net.Conn whose Write hands each line to a function and
// whose Read returns that function's answer: a login through the handler
// without the kernel.
type loopConn struct {
	net.Conn
	handle func(line []byte) []byte
	out    []byte
}

func (l *loopConn) Write(p []byte) (int, error) {
	l.out = append(l.out, l.handle(p)...)
	return len(p), nil
}

func (l *loopConn) Read(p []byte) (int, error) {
	if len(l.out) == 0 {
		return 0, io.EOF
	}
	n := copy(p, l.out)
	l.out = l.out[:copy(l.out, l.out[n:])]
	return n, nil
}

func (l *loopConn) SetReadDeadline(time.Time) error  { return nil }
func (l *loopConn) SetWriteDeadline(time.Time) error { return nil }
func (l *loopConn) SetDeadline(time.Time) error      { return nil }
func (l *loopConn) Close() error                     { return nil }

// writeCapture is the server side's net.Conn: it keeps what the handler
// writes.
type writeCapture struct {
	net.Conn
	buf []byte
}

func (w *writeCapture) Write(p []byte) (int, error)      { w.buf = append(w.buf, p...); return len(p), nil }
func (w *writeCapture) SetWriteDeadline(time.Time) error { return nil }

// benchStore opens a store in a temporary dir holding n populated bench
// accounts at the test iteration count.
// testBenchPassword is the bench accounts' password in the tests that
// build a bench by hand; the CLI's runs read the bench secret (benchsecret.go).
const testBenchPassword = "Bench-test-password-1"

// cliBenchPassword is the password the CLI's bench runs use: the one made
// from the bench secret beside the tests' known_servers file.
func cliBenchPassword(t testing.TB) string {
	t.Helper()
	path, err := benchSecretPath(DefaultConfig().Client)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := benchSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	return pw
}

func benchStore(b testing.TB, n int) *Store {
	b.Helper()
	s, err := OpenStore(filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if _, _, err := populate(s, n, testIterations, testBenchPassword, func(int) {}); err != nil {
		b.Fatal(err)
	}
	return s
}

// handlerLogin sets up one login through the real handler (conn.handleLine
// and conn.reply, as serveConn calls them), driven by the bench client.
// loopHarness connects the bench client to the real handler through an
// in-memory loop, with users bench accounts and the given logger (nil
// discards, after formatting).
func loopHarness(tb testing.TB, users int, log *slog.Logger, change ...func(*Config)) (*bench, *benchConn, *conn) {
	cfg := testConfig(tb)
	for _, f := range change {
		f(&cfg)
	}
	srv := NewServer(cfg, benchStore(tb, users), log)
	capture := &writeCapture{}
	c := &conn{srv: srv, nc: capture, remote: "127.0.0.1:40000", started: time.Now()}
	lc := &loopConn{handle: func(line []byte) []byte {
		capture.buf = capture.buf[:0]
		reply, err := c.handleLine(line)
		c.reply(reply, err)
		return capture.buf
	}}
	bn := &bench{o: benchOptions{timeout: time.Second, maxIter: 1 << 30, password: testBenchPassword}, keys: keyCache{m: map[string]*keyEntry{}}}
	bc := newBenchConn(lc)
	return bn, bc, c
}

func handlerLogin(b *testing.B, users int, change ...func(*Config)) (func(i int), *conn) {
	bn, bc, c := loopHarness(b, users, nil, change...)
	names := make([]string, users)
	for i := range names {
		names[i] = "bench" + strconv.Itoa(i)
	}
	return func(i int) {
		if err := bn.login(bc, names[i%users]); err != nil {
			b.Fatal(err)
		}
		c.user = "" // as LOGOUT does, so the next AUTH is allowed
	}, c
}

// BenchmarkLoginHandler is one complete SCRAM login (AUTH, RESPONSE)
// through the server's real handler and the store, with the bench client's
// work included; BenchmarkLoginClient is that client work alone, so the
// server's share is the difference.
func BenchmarkLoginHandler(b *testing.B) {
	login, _ := handlerLogin(b, 1000)
	login(0) // derives the keys once
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		login(i)
	}
}

// BenchmarkLoginHandlerMetrics is BenchmarkLoginHandler with and without
// metrics (metrics_listen set or not): the difference is what the counters
// cost a login.
func BenchmarkLoginHandlerMetrics(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", on), func(b *testing.B) {
			login, c := handlerLogin(b, 1000, func(cfg *Config) {
				if on {
					cfg.MetricsListen = "127.0.0.1:0"
				}
			})
			if (c.srv.met != nil) != on {
				b.Fatalf("metrics %v, want %v", c.srv.met != nil, on)
			}
			login(0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				login(i)
			}
		})
	}
}

// BenchmarkServeConn is one whole connection with one login as a worker
// serves it (greeting, AUTH, RESPONSE, QUIT, the close and its log line),
// over net.Pipe with the bench client at the other end: "authbox" through
// serveConn and the store, "bare" through the bare reference server's
// loop. Both carry the pipe's and the client's work, so the difference is
// authbox's own per-connection cost with TCP taken out.
func BenchmarkServeConn(b *testing.B) {
	srv := NewServer(testConfig(b), benchStore(b, 1000), nil)
	bl := newBareLines(testIterations, false)
	for _, kind := range []string{"authbox", "bare"} {
		b.Run(kind, func(b *testing.B) {
			bn := &bench{o: benchOptions{timeout: time.Second, maxIter: 1 << 30, password: testBenchPassword, bare: kind == "bare"}, keys: keyCache{m: map[string]*keyEntry{}}}
			one := func(i int) {
				cl, sv := net.Pipe()
				done := make(chan struct{})
				go func() {
					defer close(done)
					if kind == "bare" {
						serveBareConn(sv, bl)
					} else {
						srv.serveConn(sv, "127.0.0.1")
					}
				}()
				bc := newBenchConn(cl)
				if _, err := bc.read(time.Second); err != nil {
					b.Fatal(err)
				}
				if err := bn.login(bc, "bench"+strconv.Itoa(i%1000)); err != nil {
					b.Fatal(err)
				}
				bc.buf = append(bc.buf[:0], "QUIT\n"...)
				if _, err := bc.do(time.Second); err != nil {
					b.Fatal(err)
				}
				cl.Close()
				<-done
			}
			one(0) // the client derives its keys once
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				one(i)
				i++
			}
		})
	}
}

func BenchmarkLoginClient(b *testing.B) {
	bl := newBareLines(testIterations, false)
	lc := &loopConn{handle: func(line []byte) []byte { out, _ := bl.reply(line); return out }}
	bn := &bench{o: benchOptions{timeout: time.Second, maxIter: 1 << 30, bare: true}, keys: keyCache{m: map[string]*keyEntry{}}}
	bc := newBenchConn(lc)
	if err := bn.login(bc, "bench0"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := bn.login(bc, "bench0"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStoreGet is the login's store read with 1,000 and 1,000,000
// accounts (the latter takes a few seconds to load first).
func BenchmarkStoreGet(b *testing.B) {
	for _, n := range []int{1000, 1_000_000} {
		b.Run(fmt.Sprintf("accounts=%d", n), func(b *testing.B) {
			s := benchStore(b, n)
			names := make([]string, 4096)
			for i := range names {
				names[i] = "bench" + strconv.Itoa(int(uint64(i)*2654435761%uint64(n)))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, err := s.Get(names[i%len(names)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// runConc runs b.N calls of fn on exactly conc goroutines.
func runConc(b *testing.B, conc int, fn func(i int64)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkRegister writes new accounts at several concurrencies, through
// Store.Create (db.Batch: concurrent writers share a commit and its fsync)
// and, for comparison, through one transaction per account (CreateMany of
// one record: a commit and its fsync each). ns/op is wall time per account
// across all writers, so 1e9/ns is accounts per second.
func BenchmarkRegister(b *testing.B) {
	salt := make([]byte, SaltLen)
	rec := Record{Kind: KindSCRAM, Iterations: testIterations, Salt: salt, StoredKey: make([]byte, KeyLen), ServerKey: make([]byte, KeyLen)}
	for _, batch := range []bool{true, false} {
		for _, conc := range []int{1, 8, 64} {
			name := fmt.Sprintf("batch=%v/conc=%d", batch, conc)
			b.Run(name, func(b *testing.B) {
				s, err := OpenStore(filepath.Join(b.TempDir(), "reg.db"))
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				b.ReportAllocs()
				b.ResetTimer()
				runConc(b, conc, func(i int64) {
					name := "user" + strconv.FormatInt(i, 10)
					var err error
					if batch {
						err = s.Create(name, rec)
					} else {
						_, _, err = s.CreateMany([]NamedRecord{{Name: name, Record: rec}}, false)
					}
					if err != nil {
						b.Error(err)
					}
				})
			})
		}
	}
}

// BenchmarkParseLine is the line parser on the two lines of a login.
func BenchmarkParseLine(b *testing.B) {
	lines := map[string][]byte{
		"auth":     []byte("AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,,n=bench123,r="+strings.Repeat("x", 32))) + "\n"),
		"response": []byte("RESPONSE " + EncodeB64([]byte("c=biws,r="+strings.Repeat("x", 64)+",p="+EncodeB64(make([]byte, 32)))) + "\n"),
	}
	for _, name := range []string{"auth", "response"} {
		line := lines[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := ParseLine(TrimEOL(line)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("normalize-username", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := NormalizeUsername("bench123"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCLILogin runs "authbox login" against a local "authbox serve" on
// the default 600000 iterations, and alternately the PBKDF2 it needs
// alone; pbkdf2-share is the part of the login's wall time that is PBKDF2.
// Run it with -benchtime 10x or so: each login takes a few tenths of a
// second.
func BenchmarkCLILogin(b *testing.B) {
	dir := b.TempDir()
	srv := startServe(b, dir)
	const pw = "Correct-horse-9"
	mustRegister(b, srv.addr, "alice", pw)
	cfg := DefaultConfig()
	salt := make([]byte, SaltLen)
	var loginWall, kdfWall time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		r := runCLI(b, dir, pw+"\n", nil, "login", "--server", srv.addr, "--user", "alice", "--password-stdin")
		loginWall += time.Since(start)
		if r.code != 0 {
			b.Fatalf("login: %+v", r)
		}
		start = time.Now()
		if _, err := pbkdf2.Key(sha256.New, pw, salt, cfg.Iterations, sha256.Size); err != nil {
			b.Fatal(err)
		}
		kdfWall += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(loginWall.Microseconds())/float64(b.N)/1e3, "login-ms")
	b.ReportMetric(float64(kdfWall.Microseconds())/float64(b.N)/1e3, "pbkdf2-ms")
	b.ReportMetric(float64(kdfWall)/float64(loginWall), "pbkdf2-share")
}

// TestLoopConnLogin keeps the benchmark harness honest: a login through it
// really reaches the handler, which logs the user in, and a wrong key is
// refused.
func TestLoopConnLogin(t *testing.T) {
	logs := &syncBuffer{}
	bn, bc, c := loopHarness(t, 3, slog.New(newLogHandler(logs, false)))
	if err := bn.login(bc, "bench2"); err != nil {
		t.Fatal(err)
	}
	if c.user != "bench2" || !strings.Contains(logs.String(), "msg=login") {
		t.Fatalf("user %q after login; log:\n%s", c.user, logs)
	}
	c.user = ""
	for k := range bn.keys.m {
		bn.keys.m[k].keys.clientKey = make([]byte, KeyLen)
	}
	if err := bn.login(bc, "bench2"); errorClass(err) != CodeAuth {
		t.Fatalf("login with a wrong ClientKey: %v", err)
	}
}

// TestBenchOverTLS runs the load generator against a TLS server, with and
// without session resumption: its logins are bound to the connection
// (PLUS), and a first contact needs a pin as for every client command.
func TestBenchOverTLS(t *testing.T) {
	ts := startServer(t, tlsTestConfig(t))
	fp := ts.fingerprint()
	for _, extra := range [][]string{nil, {"--resume"}, {"--reuse"}} {
		args := append([]string{"bench", "--json", "--warmup", "0", "--server", ts.addr, "--fingerprint", fp,
			"--users", "4", "--conc", "2", "--duration", "200ms"}, extra...)
		r := benchCLI(t, args...)
		var rep benchReport
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil || rep.Ops == 0 || rep.Errors != 0 {
			t.Fatalf("bench over TLS %v: %+v", extra, r)
		}
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "mech=SCRAM-SHA-256-PLUS") || strings.Contains(logs, "mech=SCRAM-SHA-256 ") {
		t.Fatal("bench logins over TLS were not all PLUS")
	}
	// Without a pin it refuses, naming the fingerprint; it never asks.
	r := benchCLI(t, "bench", "--server", ts.addr, "--users", "1", "--duration", "100ms")
	if r.code != 2 || !strings.Contains(r.stderr, "is not a known server") || !strings.Contains(r.stderr, fp) {
		t.Fatalf("bench to an unknown server: %+v", r)
	}
}

// TestBenchIsSafe: the bench accounts' password is no constant of the
// source but made from a secret of this machine (a 0600 file beside
// known_servers); bench says which server it writes to before it writes;
// --cleanup deletes what the run made; register mode's accounts log in to
// nobody; and "users delete --prefix" removes them.
func TestBenchIsSafe(t *testing.T) {
	pins := freshPins(t)
	ts := startServer(t, testConfig(t))
	r := benchCLI(t, "bench", "--plain", "--server", ts.addr, "--users", "4", "--conc", "2", "--duration", "100ms", "--warmup", "0")
	if r.code != 0 || !strings.HasPrefix(r.stderr, "authbox: warning: bench writes to "+ts.addr+": it registers bench0..bench3 where missing") {
		t.Fatalf("bench: %+v", r)
	}
	secret := filepath.Join(filepath.Dir(pins), benchSecretFile)
	if fi, err := os.Stat(secret); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("bench secret: %v, %v", fi, err)
	}
	if err := login(t, ts.addr, "bench0", "Bench-password-1"); code(err) != CodeAuth {
		t.Errorf("bench0 with the password the source once held: %v", err)
	}
	if err := login(t, ts.addr, "bench3", cliBenchPassword(t)); err != nil {
		t.Errorf("bench3 with the password from %s: %v", secret, err)
	}

	// Against a server that is not there, the announcement comes first.
	r = benchCLI(t, "bench", "--plain", "--server", "127.0.0.1:1", "--duration", "100ms")
	if r.code != exitOther || !strings.HasPrefix(r.stderr, "authbox: warning: bench writes to 127.0.0.1:1:") {
		t.Errorf("the announcement: %+v", r)
	}

	r = benchCLI(t, "bench", "--plain", "--server", ts.addr, "--users", "6", "--conc", "2", "--duration", "100ms", "--warmup", "0", "--cleanup")
	if r.code != 0 || !strings.Contains(r.stderr, "authbox: bench deleted 6 bench accounts from "+ts.addr+"\n") {
		t.Fatalf("bench --cleanup: %+v", r)
	}
	if n, _ := ts.store.Count(); n != 0 {
		t.Fatalf("%d accounts left after --cleanup", n)
	}

	rep := benchJSON(t, "--server", ts.addr, "--mode", "register", "--conc", "2", "--duration", "100ms")
	var made []string
	ts.store.Each(func(name string, _ Record) error { made = append(made, name); return nil })
	if rep.Ops == 0 || len(made) == 0 {
		t.Fatalf("register run: %+v, %v", rep, made)
	}
	if err := login(t, ts.addr, made[0], cliBenchPassword(t)); code(err) != CodeAuth {
		t.Errorf("%s, made by register mode, with the bench password: %v", made[0], err)
	}
	if r := benchCLI(t, "bench", "--mode", "register", "--cleanup"); r.code != exitOther || !strings.Contains(r.stderr, "users delete --prefix benchreg-") {
		t.Errorf("register --cleanup: %+v", r)
	}

	// A secret others can read is refused, as ssh refuses such a key.
	os.Chmod(secret, 0o644)
	if r := benchCLI(t, "bench", "--plain", "--server", ts.addr); r.code != exitOther || !strings.Contains(r.stderr, "is readable by group or others") {
		t.Errorf("a 0644 bench secret: %+v", r)
	}
}

// TestUsersDeletePrefix: "users delete --prefix" removes every account
// whose name begins with it, and no other.
func TestUsersDeletePrefix(t *testing.T) {
	dir := t.TempDir()
	var lines string
	for _, name := range []string{"alice", "bench0", "bench1", "benchreg-ab-0-1", "zoe"} {
		lines += name + "," + rfcPGVerifier + "\n"
	}
	mustCLI(t, 0, dir, lines, "users", "import", "--format", "pg", "-")
	if r := mustCLI(t, 0, dir, "", "users", "delete", "--prefix", "bench"); r.stdout != "deleted 3 accounts whose names begin with \"bench\"\n" {
		t.Errorf("delete --prefix: %+v", r)
	}
	if r := mustCLI(t, 0, dir, "", "users", "list"); !strings.Contains(r.stdout, "alice") || !strings.Contains(r.stdout, "zoe") || strings.Contains(r.stdout, "bench") {
		t.Errorf("after delete --prefix bench:\n%s", r.stdout)
	}
	mustCLI(t, exitOther, dir, "", "users", "delete", "--prefix", "")
	mustCLI(t, exitOther, dir, "", "users", "delete", "--prefix", "a", "alice")
}

// TestBenchFailsWhenNothingWorks: a run in which every login fails exits
// 2 with a hint, and stops at the first failure instead of spending the
// address's failed-login allowance, so that the user's own login still
// goes through; a run that meets ERR LIMIT stops and says the address is
// throttled; too many errors fail a run that did log in.
func TestBenchFailsWhenNothingWorks(t *testing.T) {
	cfg := testConfig(t)
	// The address, not the pair, runs out below, and stays out: register
	// mode (a new name each time) meets only the address's allowance. It
	// leaves room for the few failures of the first run's workers.
	cfg.SourceFailures, cfg.SourceFailureRefill = 8, Duration{time.Hour}
	cfg.UserFailures = 100
	ts := startServer(t, cfg)
	mustRegister(t, ts.addr, "alice", "Alice-pw-1")
	start := time.Now()
	rep, r := benchJSONFailing(t, "--server", ts.addr, "--no-setup", "--users", "50", "--conc", "4", "--duration", "5s")
	if !strings.Contains(r.stderr, "no bench accounts on that server") || !strings.Contains(r.stderr, "run without --no-setup") || rep.Ops != 0 {
		t.Errorf("--no-setup without bench accounts: %+v", r)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("the run went on for %v after its logins failed", d)
	}
	if err := login(t, ts.addr, "alice", "Alice-pw-1"); err != nil {
		t.Errorf("the user's own login after the failed bench: %v", err)
	}

	// A throttled address: register mode meets ERR LIMIT and stops.
	for err := error(nil); code(err) != CodeLimit; {
		if err = login(t, ts.addr, "alice", "wrong"); code(err) != CodeAuth && code(err) != CodeLimit {
			t.Fatalf("wrong password: %v", err)
		}
	}
	_, r = benchJSONFailing(t, "--server", ts.addr, "--mode", "register", "--conc", "2", "--duration", "5s")
	if !strings.Contains(r.stderr, "bench stopped: the server throttles this address") || !strings.Contains(r.stderr, "users unthrottle") {
		t.Errorf("register mode from a throttled address: %+v", r)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("the throttled run went on for %v", d)
	}
}

// TestBenchVerdict: the error threshold, BUSY aside.
func TestBenchVerdict(t *testing.T) {
	b := &bench{o: benchOptions{maxErrors: 0.1, users: 3}}
	for _, tc := range []struct {
		ops  int64
		errs map[string]int
		ok   bool
	}{
		{100, nil, true},
		{100, map[string]int{"timeout": 10}, true},
		{100, map[string]int{"timeout": 12}, false},
		{100, map[string]int{CodeBusy: 1000}, true},
		{0, map[string]int{CodeBusy: 5}, false},
		{0, nil, false},
	} {
		rep := &benchReport{Ops: tc.ops, ErrorsByCode: map[string]int{}}
		for k, v := range tc.errs {
			rep.ErrorsByCode[k] = v
			rep.Errors += int64(v)
		}
		if err := b.verdict(rep); (err == nil) != tc.ok {
			t.Errorf("%d ops, errors %v: %v", tc.ops, tc.errs, err)
		}
	}
}

// TestReadmeBenchExample checks the README's bench example as a newcomer
// runs it, right after the quick start: its servers listen on ports other
// than the quick-start server's 7886, log to a file rather than the
// terminal, are waited for before use, and each bench names one of them.
// (The example was run as written, in order, from a fresh directory.)
func TestReadmeBenchExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "## Load testing")
	_, block, _ := strings.Cut(section, "```sh\n")
	block, _, _ = strings.Cut(block, "```")
	if block == "" {
		t.Fatal("no sh block under \"Load testing\" in README.md")
	}
	listenRE := regexp.MustCompile(`--listen (\S+)`)
	serverRE := regexp.MustCompile(`--server (\S+)`)
	started := map[string]bool{} // address: waited for
	var pending []string
	benches := 0
	for _, line := range strings.Split(block, "\n") {
		switch {
		case strings.HasPrefix(line, "./authbox serve "):
			m := listenRE.FindStringSubmatch(line)
			if m == nil || strings.HasSuffix(m[1], ":7886") {
				t.Errorf("the quick-start server holds 7886; this one must listen elsewhere: %s", line)
				continue
			}
			if !strings.Contains(line, " 2> ") {
				t.Errorf("its log would flood the terminal: %s", line)
			}
			started[m[1]] = false
			pending = append(pending, m[1])
		case strings.HasPrefix(line, "until grep -q msg=listening "):
			for _, a := range pending {
				started[a] = true
			}
			pending = nil
		case strings.HasPrefix(line, "./authbox bench ") && !strings.HasPrefix(line, "./authbox bench populate"):
			benches++
			m := serverRE.FindStringSubmatch(line)
			if m == nil || !started[m[1]] {
				t.Errorf("bench against a server the example did not start and wait for: %s", line)
			}
		}
	}
	if benches == 0 || len(started) == 0 {
		t.Errorf("no bench or serve in the example:\n%s", block)
	}
}
