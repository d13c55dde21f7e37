package main

import (
	"net"
	"strings"
	"testing"
	"time"
)

// scripted is a bench client whose server answers each request with the
// next of replies, from a function of the request line; when they run out
// the server has closed the connection.
func scripted(t *testing.T, maxIter int, replies ...func(req string) string) (*bench, *benchConn) {
	t.Helper()
	lc := &loopConn{handle: func(line []byte) []byte {
		if len(replies) == 0 {
			return nil
		}
		r := replies[0]
		replies = replies[1:]
		return []byte(r(string(line)))
	}}
	return &bench{o: benchOptions{timeout: time.Second, maxIter: maxIter, password: testBenchPassword}, keys: keyCache{m: map[string]*keyEntry{}}}, newBenchConn(lc)
}

func line(s string) func(string) string { return func(string) string { return s } }

// challengeFor answers an AUTH with a server-first-message made by sf from
// the client's nonce.
func challengeFor(t *testing.T, sf func(nonce string) string) func(string) string {
	return func(req string) string {
		arg, ok := strings.CutPrefix(strings.TrimSuffix(req, "\n"), "AUTH SCRAM-SHA-256 ")
		cf, err := DecodeB64(arg)
		_, nonce, found := strings.Cut(string(cf), ",r=")
		if !ok || err != nil || !found {
			t.Errorf("not a SCRAM AUTH: %q", req)
		}
		return "CHALLENGE " + EncodeB64([]byte(sf(nonce))) + "\n"
	}
}

// TestBenchLoginRefusesBadReplies walks a login through every reply it
// must refuse, and checks the class each failure is reported under.
func TestBenchLoginRefusesBadReplies(t *testing.T) {
	salt := EncodeB64(make([]byte, SaltLen))
	first := func(i string) func(string) string {
		return func(n string) string { return "r=" + n + "server-part,s=" + salt + ",i=" + i }
	}
	good := challengeFor(t, first("4096"))
	crInside := func(string) string {
		enc := EncodeB64([]byte("r=abc,s=" + salt + ",i=4096"))
		return "CHALLENGE " + enc[:8] + "\r" + enc[8:] + "\n"
	}
	for _, tc := range []struct {
		name    string
		replies []func(string) string
		class   string
		text    string
	}{
		{"an ERR reply", []func(string) string{line("ERR LOCKED try later\n")}, CodeLocked, "try later"},
		{"no CHALLENGE", []func(string) string{line("OK\n")}, "protocol", "to AUTH"},
		{"CHALLENGE not base64", []func(string) string{line("CHALLENGE %%%%\n")}, "protocol", "not base64"},
		{"CR inside the base64", []func(string) string{crInside}, "protocol", "not base64"},
		{"server-first without i=", []func(string) string{challengeFor(t, func(n string) string { return "r=" + n + "x,s=" + salt })}, "protocol", "malformed SCRAM server-first"},
		{"iteration count with a sign", []func(string) string{challengeFor(t, first("+4096"))}, "protocol", "iteration count"},
		{"iteration count with a leading zero", []func(string) string{challengeFor(t, first("04096"))}, "protocol", "iteration count"},
		{"too few iterations", []func(string) string{challengeFor(t, first("4095"))}, "protocol", "4095 iterations"},
		{"too many iterations", []func(string) string{challengeFor(t, first("10001"))}, "protocol", "10001 iterations"},
		{"nonce not extended", []func(string) string{challengeFor(t, func(n string) string { return "r=" + n + ",s=" + salt + ",i=4096" })}, "protocol", "nonce"},
		{"another nonce", []func(string) string{challengeFor(t, func(n string) string { return "r=x" + n + ",s=" + salt + ",i=4096" })}, "protocol", "nonce"},
		{"closed after the challenge", []func(string) string{good}, "closed", "EOF"},
		{"no OK to RESPONSE", []func(string) string{good, line("CHALLENGE again\n")}, "protocol", "to RESPONSE"},
		{"signature not base64", []func(string) string{good, line("OK v=%%%%\n")}, "signature", ""},
		{"wrong signature", []func(string) string{good, line("OK " + EncodeB64([]byte("v="+EncodeB64(make([]byte, KeyLen)))) + "\n")}, "signature", ""},
		{"a line over 4096 bytes", []func(string) string{line(strings.Repeat("A", MaxLineBytes) + "\n")}, "protocol", "line over 4096 bytes"},
	} {
		b, c := scripted(t, 10000, tc.replies...)
		err := b.login(c, "bench0")
		if errorClass(err) != tc.class || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v (class %q), want class %q with %q", tc.name, err, errorClass(err), tc.class, tc.text)
		}
	}
}

func TestBenchRegisterRefusesBadReplies(t *testing.T) {
	salt := EncodeB64(make([]byte, SaltLen))
	for _, tc := range []struct {
		name    string
		replies []string
		class   string
	}{
		{"name taken", []string{"ERR EXISTS name taken\n"}, CodeExists},
		{"no SALT", []string{"OK\n"}, "protocol"},
		{"SALT without a count", []string{"SALT " + salt + "\n"}, "protocol"},
		{"salt not base64", []string{"SALT %%%% 4096\n"}, "protocol"},
		{"count with a sign", []string{"SALT " + salt + " +4096\n"}, "protocol"},
		{"too few iterations", []string{"SALT " + salt + " 1000\n"}, "protocol"},
		{"verifier refused", []string{"SALT " + salt + " 4096\n", "ERR BADREQ bad key\n"}, CodeBadReq},
		{"no OK to VERIFIER", []string{"SALT " + salt + " 4096\n", "OK PONG\n"}, "protocol"},
	} {
		var replies []func(string) string
		for _, r := range tc.replies {
			replies = append(replies, line(r))
		}
		b, c := scripted(t, 10000, replies...)
		if err := b.register(c, "bench0", &benchKeys{storedKey: make([]byte, KeyLen), serverKey: make([]byte, KeyLen)}); errorClass(err) != tc.class {
			t.Errorf("%s: %v (class %q), want class %q", tc.name, err, errorClass(err), tc.class)
		}
	}

	// Without keys, the verifier is derived from the server's salt and the
	// bench password, and the count is noted for the report.
	var verifier string
	b, c := scripted(t, 10000, line("SALT "+salt+" 4096\n"), func(req string) string { verifier = req; return "OK\n" })
	if err := b.register(c, "bench0", nil); err != nil {
		t.Fatal(err)
	}
	keys, err := deriveBenchKeys(testBenchPassword, make([]byte, SaltLen), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if want := "VERIFIER " + EncodeB64(keys.storedKey) + " " + EncodeB64(keys.serverKey) + "\n"; verifier != want || b.iters.Load() != 4096 {
		t.Fatalf("verifier %q, iterations %d; want %q", verifier, b.iters.Load(), want)
	}
}

func TestBenchSimpleAndQuit(t *testing.T) {
	b, c := scripted(t, 10000, line("OK\n"), line("OK PONG\n"), line("OK BYE\n"), line("OK\n"))
	if err := b.simple(c, CmdLogout); err != nil {
		t.Fatal(err)
	}
	if err := b.simple(c, CmdLogout); errorClass(err) != "protocol" {
		t.Fatalf("OK PONG to LOGOUT: %v", err)
	}
	if err := b.quit(c); err != nil {
		t.Fatal(err)
	}
	if err := b.quit(c); errorClass(err) != "protocol" {
		t.Fatalf("OK without BYE to QUIT: %v", err)
	}
	if err := b.quit(c); errorClass(err) != "closed" {
		t.Fatalf("QUIT on a closed connection: %v", err)
	}
}

// TestBenchDialChecksGreeting checks that a connection is used only after
// an authbox greeting of this protocol version.
func TestBenchDialChecksGreeting(t *testing.T) {
	for _, tc := range []struct{ greeting, class string }{
		{"AUTHBOX 1 SCRAM-SHA-256\n", ""},
		{"ERR BUSY server is busy\n", CodeBusy},
		{"SSH-2.0-OpenSSH_9.6\n", "protocol"},
		{"AUTHBOX 2 SCRAM-SHA-256\n", "protocol"},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				nc.Write([]byte(tc.greeting))
				nc.Close()
			}
		}()
		b := &bench{o: benchOptions{server: ln.Addr().String(), timeout: 5 * time.Second}, sources: []net.IP{net.IPv4(127, 0, 0, 3)}}
		c, err := b.dial(7)
		if c != nil {
			if la := c.nc.LocalAddr().String(); !strings.HasPrefix(la, "127.0.0.3:") {
				t.Errorf("connection from %s, not the worker's source", la)
			}
			c.close()
		}
		if (tc.class == "") != (err == nil) || (err != nil && errorClass(err) != tc.class) {
			t.Errorf("greeting %q: %v (class %q), want class %q", tc.greeting, err, errorClass(err), tc.class)
		}
		ln.Close()
		<-done
	}
}
