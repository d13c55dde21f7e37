package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdg-go/scram"
)

// RFC 7677 §3: the SCRAM-SHA-256 example exchange for user "user",
// password "pencil".
const (
	rfcClientNonce = "rOprNGfwEbeRWgbNEkqO"
	rfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	rfcSalt        = "W22ZaJ0SNY7soEsUEjb6gQ=="
	rfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
	// The verifier PostgreSQL would store for the same account.
	rfcStoredKey = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
	rfcServerKey = "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
)

func TestRFC7677Vector(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString(rfcSalt)
	stored, server, err := Verifier("user", "pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if got := EncodeB64(stored); got != rfcStoredKey {
		t.Errorf("StoredKey = %s, want %s", got, rfcStoredKey)
	}
	if got := EncodeB64(server); got != rfcServerKey {
		t.Errorf("ServerKey = %s, want %s", got, rfcServerKey)
	}

	// The whole exchange, with our verifier on the server side and the
	// RFC's nonces, must reproduce the RFC's messages byte for byte.
	sc, err := scramClient("user", "pencil")
	if err != nil {
		t.Fatal(err)
	}
	cconv := sc.WithNonceGenerator(func() string { return rfcClientNonce }).NewConversation()
	srv, _ := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) {
		return scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(salt), Iters: 4096}, StoredKey: stored, ServerKey: server}, nil
	})
	sconv := srv.WithNonceGenerator(func() string { return rfcServerNonce }).NewConversation()
	c1, _ := cconv.Step("")
	if c1 != rfcClientFirst {
		t.Fatalf("client-first = %q", c1)
	}
	s1, err := sconv.Step(c1)
	if err != nil || s1 != rfcServerFirst {
		t.Fatalf("server-first = %q, %v", s1, err)
	}
	c2, err := cconv.Step(s1)
	if err != nil || c2 != rfcClientFinal {
		t.Fatalf("client-final = %q, %v", c2, err)
	}
	s2, err := sconv.Step(c2)
	if err != nil || s2 != rfcServerFinal {
		t.Fatalf("server-final = %q, %v", s2, err)
	}
	if _, err := cconv.Step(s2); err != nil || !cconv.Valid() {
		t.Fatalf("client rejected the RFC's server signature: %v", err)
	}
}

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

func TestWrongPasswordAndUnknownUser(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "Secret123")
	if err := login(t, ts.addr, "alice", "Wrong1234"); code(err) != CodeAuth {
		t.Fatalf("wrong password: %v, want ERR AUTH", err)
	}
	if err := login(t, ts.addr, "nobody", "Secret123"); code(err) != CodeAuth {
		t.Fatalf("unknown user: %v, want ERR AUTH", err)
	}
	// Case matters: names are case-preserved, not folded.
	if err := login(t, ts.addr, "Alice", "Secret123"); code(err) != CodeAuth {
		t.Fatalf("other case: %v, want ERR AUTH", err)
	}
	if err := login(t, ts.addr, "alice", "Secret123"); err != nil {
		t.Fatalf("the right password after failures: %v", err)
	}
}

// challenge sends AUTH SCRAM-SHA-256 for name and returns the decoded
// server-first-message.
func challenge(t *testing.T, rc *rawConn, name string) (string, ServerFirst) {
	t.Helper()
	first := "n,,n=" + EncodeSaslName(name) + ",r=abcdefghijklmnop"
	reply := rc.do("AUTH SCRAM-SHA-256 " + EncodeB64([]byte(first)))
	arg, ok := strings.CutPrefix(reply, "CHALLENGE ")
	if !ok {
		t.Fatalf("AUTH %s: %q", name, reply)
	}
	raw, err := DecodeB64(arg)
	if err != nil {
		t.Fatal(err)
	}
	sf, err := ParseServerFirst(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw), sf
}

func TestUnknownUserLooksLikeARealOne(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "Secret123")
	rc, _ := dialRaw(t, ts.addr)

	_, real := challenge(t, rc, "alice")
	_, ghost1 := challenge(t, rc, "ghost") // abandons the previous exchange
	_, ghost2 := challenge(t, rc, "ghost")
	_, other := challenge(t, rc, "phantom")

	if ghost1.Iterations != real.Iterations {
		t.Errorf("unknown user iterations %d, real user %d", ghost1.Iterations, real.Iterations)
	}
	if len(ghost1.Salt) != len(real.Salt) {
		t.Errorf("unknown user salt is %d bytes, real user %d", len(ghost1.Salt), len(real.Salt))
	}
	if string(ghost1.Salt) != string(ghost2.Salt) {
		t.Error("unknown user got a different salt the second time")
	}
	if string(ghost1.Salt) == string(other.Salt) {
		t.Error("two unknown users got the same salt")
	}
	// The fake salt comes from the secret in the db: a restarted server on
	// the same file gives the same one. (Shutdown would wait for the
	// exchange rc has under way, so hang up first.)
	rc.nc.Close()
	ts.stop()
	ts2 := startServer(t, func() Config { c := testConfig(t); c.DB = ts.store.Path(); return c }())
	rc2, _ := dialRaw(t, ts2.addr)
	if _, again := challenge(t, rc2, "ghost"); string(again.Salt) != string(ghost1.Salt) {
		t.Error("fake salt changed across a restart on the same db")
	}

	// The exchange then fails at RESPONSE, as a wrong password does.
	if x := rawSCRAM(t, rc2, "ghost", "Secret123"); !strings.HasPrefix(x.final, "ERR AUTH ") {
		t.Fatalf("unknown user RESPONSE: %q", x.final)
	}
}

func TestDuplicateRegistration(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "Secret123")
	c, err := Dial(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Register("alice", "Other1234"); code(err) != CodeExists {
		t.Fatalf("duplicate: %v, want ERR EXISTS", err)
	}
	// The first password still works; the second never took.
	if err := login(t, ts.addr, "alice", "Secret123"); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentDuplicateRegistration(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = 32
	ts := startServer(t, cfg)
	const n = 16
	// Every client gets its SALT first, then all send VERIFIER together:
	// they race inside the store, where exactly one may win.
	conns := make([]*rawConn, n)
	salts := make([]string, n)
	for i := range conns {
		conns[i], _ = dialRaw(t, ts.addr)
		reply := conns[i].do("REGISTER carol")
		f := strings.Fields(reply)
		if len(f) != 3 || f[0] != "SALT" {
			t.Fatalf("REGISTER: %q", reply)
		}
		salts[i] = f[1]
	}
	var wg sync.WaitGroup
	replies := make([]string, n)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			salt, _ := DecodeB64(salts[i])
			st, sv, _ := Verifier("carol", fmt.Sprintf("Password%d", i), salt, testIterations)
			conns[i].send("VERIFIER " + EncodeB64(st) + " " + EncodeB64(sv) + "\n")
		}()
	}
	wg.Wait()
	ok, winner := 0, -1
	for i, rc := range conns {
		replies[i] = rc.read()
		switch {
		case replies[i] == "OK":
			ok++
			winner = i
		case strings.HasPrefix(replies[i], "ERR EXISTS "):
		default:
			t.Errorf("client %d: %q", i, replies[i])
		}
	}
	if ok != 1 {
		t.Fatalf("%d registrations won, want exactly 1: %q", ok, replies)
	}
	if err := login(t, ts.addr, "carol", fmt.Sprintf("Password%d", winner)); err != nil {
		t.Fatalf("the winner cannot log in: %v", err)
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

func TestQueuedConnectionIsAnsweredInTime(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = 1
	cfg.Queue = 4
	cfg.QueueTimeout = Duration{200 * time.Millisecond}
	cfg.LineTimeout = Duration{time.Minute}
	ts := startServer(t, cfg)
	held, _ := dialRaw(t, ts.addr) // holds the only worker, silently
	// The next one waits in the queue, and is told BUSY rather than left
	// hanging until the worker frees up.
	waiting, first := dialRaw(t, ts.addr)
	if !strings.HasPrefix(first, "ERR BUSY ") {
		t.Fatalf("queued connection got %q", first)
	}
	waiting.expectClosed()
	if got := held.do("PING"); got != "OK PONG" {
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

func TestLockedAccount(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "Secret123")
	if err := ts.store.Update("alice", func(r Record) (Record, error) { r.Locked = true; return r, nil }); err != nil {
		t.Fatal(err)
	}
	if err := login(t, ts.addr, "alice", "Secret123"); code(err) != CodeLocked {
		t.Fatalf("right password on a locked account: %v, want LOCKED", err)
	}
	if err := login(t, ts.addr, "alice", "Wrong1234"); code(err) != CodeAuth {
		t.Fatalf("wrong password on a locked account: %v, want AUTH", err)
	}
}

func TestRegistrationDenied(t *testing.T) {
	cfg := testConfig(t)
	cfg.OpenRegistration = false
	ts := startServer(t, cfg)
	rc, _ := dialRaw(t, ts.addr)
	if got := rc.do("REGISTER alice"); !strings.HasPrefix(got, "ERR DENIED ") {
		t.Fatalf("REGISTER with registration off: %q", got)
	}
	if got := rc.do("PING"); got != "OK PONG" {
		t.Fatalf("after DENIED: %q", got)
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

func TestBusyWhenQueueFull(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = 1
	cfg.Queue = 1
	ts := startServer(t, cfg)
	held, greeting := dialRaw(t, ts.addr) // the only worker is now serving it
	if !strings.HasPrefix(greeting, "AUTHBOX 1 ") {
		t.Fatal(greeting)
	}
	queued, err := net.DialTimeout("tcp", ts.addr, 5*time.Second) // accepted, waits in the queue
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()
	busy, line := dialRaw(t, ts.addr)
	if !strings.HasPrefix(line, "ERR BUSY ") {
		t.Fatalf("third connection got %q, want ERR BUSY", line)
	}
	busy.expectClosed()
	// When the worker is free, the queued connection is served.
	if got := held.do("QUIT"); got != "OK BYE" {
		t.Fatal(got)
	}
	rq := &rawConn{t: t, nc: queued, r: bufio.NewReader(queued)}
	if got := rq.read(); !strings.HasPrefix(got, "AUTHBOX 1 ") {
		t.Fatalf("queued connection: %q", got)
	}
	if got := rq.do("PING"); got != "OK PONG" {
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

func TestRestartKeepsAccounts(t *testing.T) {
	cfg := testConfig(t)
	ts := startServer(t, cfg)
	names := []string{"alice", "bob", "Ünïcode", "a=b,c"}
	for _, n := range names {
		mustRegister(t, ts.addr, n, "Secret123")
	}
	ts.stop()
	ts2 := startServer(t, cfg)
	for _, n := range names {
		if err := login(t, ts2.addr, n, "Secret123"); err != nil {
			t.Errorf("%s after restart: %v", n, err)
		}
	}
}

func TestShutdownLetsExchangeFinish(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "Secret123")
	idle, _ := dialRaw(t, ts.addr)
	idle.do("PING")
	inflight, _ := dialRaw(t, ts.addr)

	sc, _ := scramClient("alice", "Secret123")
	conv := sc.NewConversation()
	c1, _ := conv.Step("")
	reply := inflight.do("AUTH SCRAM-SHA-256 " + EncodeB64([]byte(c1)))
	s1, _ := DecodeB64(strings.TrimPrefix(reply, "CHALLENGE "))

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- ts.Shutdown(ctx)
	}()
	// The idle connection is told and closed.
	if got := idle.read(); !strings.HasPrefix(got, "ERR BUSY ") {
		t.Fatalf("idle connection at shutdown: %q", got)
	}
	// The exchange under way still completes.
	c2, _ := conv.Step(string(s1))
	got := inflight.do("RESPONSE " + EncodeB64([]byte(c2)))
	if !strings.HasPrefix(got, "OK ") {
		t.Fatalf("in-flight login at shutdown: %q", got)
	}
	if got := inflight.read(); !strings.HasPrefix(got, "ERR BUSY ") {
		t.Fatalf("after the exchange: %q", got)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestConfigErrorsNameKeyAndFile(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ body, want string }{
		{"listn = \"x\"\n", "unknown key listn"},
		{"[client]\nmax_iteration = 5\n", "unknown key client.max_iteration"},
		{"iterations = 100\n", "key iterations"},
		{"iterations = \"many\"\n", "iterations"},
		{"mechanisms = [\"MD5\"]\n", "key mechanisms"},
		{"line_timeout = \"soon\"\n", "line_timeout"},
		{"queue = 0\n", "key queue"},
		{"listen = \"nope\"\n", "key listen"},
		{"this is not toml\n", "config"},
	}
	for i, tc := range cases {
		path := filepath.Join(dir, fmt.Sprintf("c%d.toml", i))
		os.WriteFile(path, []byte(tc.body), 0o600)
		_, err := LoadConfig(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: error %v, want it to name %q and the file", tc.body, err, tc.want)
		}
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("a missing config file is not an error")
	}
	// A file that sets one key keeps every other default.
	path := filepath.Join(dir, "ok.toml")
	os.WriteFile(path, []byte("queue = 3\n"), 0o600)
	cfg, err := LoadConfig(path)
	if err != nil || cfg.Queue != 3 || cfg.Iterations != 600000 || cfg.Listen != "127.0.0.1:7886" {
		t.Fatalf("overlay: %+v, %v", cfg, err)
	}
}

func TestDefaultsAreDocumented(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7886" || cfg.Queue != 8 || cfg.Iterations != 600000 ||
		strings.Join(cfg.Mechanisms, " ") != "SCRAM-SHA-256-PLUS SCRAM-SHA-256" || !cfg.OpenRegistration || cfg.Client.MaxIterations != 10000000 ||
		!cfg.TLS || cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" || cfg.RequireChannelBinding || !cfg.Client.TLS {
		t.Fatalf("defaults drifted from the issue: %+v", cfg)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	in := Record{Kind: KindSCRAM, Locked: true, Iterations: 600000, Salt: []byte("0123456789abcdef"),
		StoredKey: make([]byte, 32), ServerKey: make([]byte, 32),
		Created: time.Unix(1700000000, 0).UTC(), Updated: time.Unix(1700000100, 0).UTC()}
	b := in.marshal()
	out, err := unmarshalRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(in) != fmt.Sprint(out) {
		t.Fatalf("round trip:\n%+v\n%+v", in, out)
	}
	for i := range b {
		if _, err := unmarshalRecord(b[:i]); err == nil {
			t.Fatalf("truncated record (%d of %d bytes) decoded", i, len(b))
		}
	}
	b[0] = 99
	if _, err := unmarshalRecord(b); !errors.Is(err, ErrBadRecord) {
		t.Fatal("unknown record version decoded")
	}
}

func TestStoreLockedByAnotherHandle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("db mode %v, want 0600", fi.Mode().Perm())
	}
	start := time.Now()
	_, err = OpenStore(path)
	if !errors.Is(err, ErrDBLocked) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second open: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second open took %v", d)
	}
}
