package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// tlsTestConfig is testConfig with TLS on, as a server runs by default.
func tlsTestConfig(t testing.TB) Config {
	cfg := testConfig(t)
	cfg.TLS = true
	return cfg
}

// fingerprintOf returns the running test server's fingerprint.
func (ts *testServer) fingerprint() string {
	ts.t.Helper()
	id, err := ts.Identity()
	if err != nil || id == nil {
		ts.t.Fatalf("identity: %v, %v", id, err)
	}
	return id.Fingerprint
}

// dialPinned connects over TLS trusting only fp.
func dialPinned(t testing.TB, addr, fp string) *Client {
	t.Helper()
	tr := &Trust{Fingerprint: fp}
	c, err := DialTLS(addr, tr.TLSConfig(addr))
	if err != nil {
		t.Fatalf("DialTLS %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialRawTLS is dialRaw inside TLS, trusting anything: for byte-exact
// protocol tests over TLS.
func dialRawTLS(t testing.TB, addr string) (*rawConn, string, *tls.Conn) {
	t.Helper()
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{alpnProto}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	rc := &rawConn{t: t, nc: tc, r: bufio.NewReader(tc)}
	return rc, rc.read(), tc
}

func TestTLSEndToEnd(t *testing.T) {
	ts := startServer(t, tlsTestConfig(t))
	fp := ts.fingerprint()

	rc, greeting, tc := dialRawTLS(t, ts.addr)
	if greeting != "AUTHBOX 1 SCRAM-SHA-256-PLUS SCRAM-SHA-256" {
		t.Fatalf("greeting over TLS = %q", greeting)
	}
	st := tc.ConnectionState()
	if st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != alpnProto {
		t.Fatalf("TLS version %x, ALPN %q", st.Version, st.NegotiatedProtocol)
	}
	rc.do("QUIT")

	c := dialPinned(t, ts.addr, fp)
	if err := c.Register("alice", "Secret-pw-1"); err != nil {
		t.Fatal(err)
	}
	c2 := dialPinned(t, ts.addr, fp)
	if err := c2.Login("alice", "Secret-pw-1"); err != nil {
		t.Fatal(err)
	}
	if !ts.waitLog("msg=login remote=") || !strings.Contains(ts.logs.String(), "mech=SCRAM-SHA-256-PLUS") {
		t.Fatalf("the login did not use PLUS:\n%s", ts.logs)
	}
	if err := c2.Passwd("alice", "Other-pw-2"); err != nil {
		t.Fatal(err)
	}
	c3 := dialPinned(t, ts.addr, fp)
	if err := c3.Login("alice", "Other-pw-2"); err != nil {
		t.Fatal(err)
	}
	if err := c3.Delete(); err != nil {
		t.Fatal(err)
	}
	c4 := dialPinned(t, ts.addr, fp)
	if err := c4.Login("alice", "Other-pw-2"); code(err) != CodeAuth {
		t.Fatalf("login after delete: %v", err)
	}
}

// waitLog waits for the server's log to contain s; the test server logs
// without batching, so it is there once the reply that caused it is read,
// but a connection's last line comes after its close.
func (ts *testServer) waitLog(s string) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(ts.logs.String(), s) {
		if time.Now().After(deadline) {
			return false
		}
		ts.logs.wait(deadline)
	}
	return true
}

func TestTLSPlainServerHasNoPlus(t *testing.T) {
	ts := startServer(t, testConfig(t))
	rc, greeting := dialRaw(t, ts.addr)
	if greeting != "AUTHBOX 1 SCRAM-SHA-256" {
		t.Fatalf("plain greeting = %q", greeting)
	}
	if got := rc.do("AUTH SCRAM-SHA-256-PLUS " + EncodeB64([]byte("p=tls-exporter,,n=a,r=abc"))); !strings.HasPrefix(got, "ERR NOMECH ") {
		t.Fatalf("PLUS over plain TCP: %q", got)
	}
	// A TLS client meets the plain greeting where a TLS record was due.
	tr := &Trust{}
	if _, err := DialTLS(ts.addr, tr.TLSConfig(ts.addr)); !errors.Is(err, ErrPlainServer) {
		t.Fatalf("TLS client to a plain server: %v", err)
	}
}

func TestTLSGS2Rules(t *testing.T) {
	ts := startServer(t, tlsTestConfig(t))
	mustRegisterTLS(t, ts, "bob", "Secret-pw-1")
	rc, _, _ := dialRawTLS(t, ts.addr)
	for _, tc := range []struct{ mech, first, want string }{
		{"SCRAM-SHA-256-PLUS", "p=tls-unique,,n=bob,r=abc", "ERR BADREQ "},
		{"SCRAM-SHA-256-PLUS", "n,,n=bob,r=abc", "ERR BADREQ "},
		{"SCRAM-SHA-256-PLUS", "y,,n=bob,r=abc", "ERR BADREQ "},
		{"SCRAM-SHA-256", "p=tls-exporter,,n=bob,r=abc", "ERR BADREQ "},
		{"SCRAM-SHA-256", "p=tls-exporter,a=bob,n=bob,r=abc", "ERR BADREQ "},
		// PLUS was offered, so "y" means it was taken out of the greeting.
		{"SCRAM-SHA-256", "y,,n=bob,r=abc", "ERR AUTH "},
		{"SCRAM-SHA-256-PLUS", "p=tls-exporter,,n=bob,r=abc", "CHALLENGE "},
	} {
		if got := rc.do("AUTH " + tc.mech + " " + EncodeB64([]byte(tc.first))); !strings.HasPrefix(got, tc.want) {
			t.Errorf("AUTH %s %q = %q, want %s", tc.mech, tc.first, got, tc.want)
		}
	}
	// At RESPONSE, a c= that does not carry the GS2 header is malformed;
	// one with the header and other bytes is a binding mismatch.
	for _, tc := range []struct{ cbind, want string }{
		{"biws", "ERR BADREQ "},
		{EncodeB64(append([]byte("p=tls-exporter,,"), make([]byte, exporterLen)...)), "ERR AUTH "},
	} {
		ch := rc.do("AUTH SCRAM-SHA-256-PLUS " + EncodeB64([]byte("p=tls-exporter,,n=bob,r=abc")))
		sf, err := DecodeB64(strings.TrimPrefix(ch, "CHALLENGE "))
		if err != nil {
			t.Fatalf("CHALLENGE %q", ch)
		}
		nonce := strings.TrimPrefix(strings.Split(string(sf), ",")[0], "r=")
		final := "c=" + tc.cbind + ",r=" + nonce + ",p=" + EncodeB64(make([]byte, 32))
		if got := rc.do("RESPONSE " + EncodeB64([]byte(final))); !strings.HasPrefix(got, tc.want) {
			t.Errorf("RESPONSE with c=%s: %q, want %s", tc.cbind, got, tc.want)
		}
	}
	// A client without channel binding ("n") logs in over TLS.
	rc2, _, _ := dialRawTLS(t, ts.addr)
	if x := rawSCRAM(t, rc2, "bob", "Secret-pw-1"); !strings.HasPrefix(x.final, "OK ") {
		t.Fatalf("n,, over TLS: %q", x.final)
	}
}

func mustRegisterTLS(t testing.TB, ts *testServer, name, pw string) {
	t.Helper()
	if err := dialPinned(t, ts.addr, ts.fingerprint()).Register(name, pw); err != nil {
		t.Fatal(err)
	}
}

func TestTLSRequireChannelBinding(t *testing.T) {
	cfg := tlsTestConfig(t)
	cfg.RequireChannelBinding = true
	ts := startServer(t, cfg)
	mustRegisterTLS(t, ts, "carol", "Secret-pw-1")
	rc, greeting, _ := dialRawTLS(t, ts.addr)
	if greeting != "AUTHBOX 1 SCRAM-SHA-256-PLUS" {
		t.Fatalf("greeting = %q", greeting)
	}
	if got := rc.do("AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,,n=carol,r=abc"))); !strings.HasPrefix(got, "ERR NOMECH ") || !strings.Contains(got, "channel binding") {
		t.Fatalf("n,, with channel binding required: %q", got)
	}
	if err := dialPinned(t, ts.addr, ts.fingerprint()).Login("carol", "Secret-pw-1"); err != nil {
		t.Fatalf("PLUS login: %v", err)
	}
}

func TestTLSConfigRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		key  string
	}{
		{"cert without key", func(c *Config) { c.TLSCertFile = "x.pem" }, "tls_cert_file"},
		{"binding without TLS", func(c *Config) { c.TLS = false; c.RequireChannelBinding = true }, "require_channel_binding"},
		{"binding without PLUS", func(c *Config) { c.RequireChannelBinding = true; c.Mechanisms = []string{MechSCRAM} }, "require_channel_binding"},
		{"PLUS alone on plain TCP", func(c *Config) { c.TLS = false; c.Mechanisms = []string{MechPlus} }, "mechanisms"},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "key "+tc.key) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if c := DefaultConfig(); !c.TLS || strings.Join(c.Mechanisms, " ") != "SCRAM-SHA-256-PLUS SCRAM-SHA-256" {
		t.Fatalf("defaults: tls %v, mechanisms %v", c.TLS, c.Mechanisms)
	}
}

// TestTLSFingerprintIsSPKIHash checks the fingerprint the server reports
// against the certificate a client is served.
func TestTLSFingerprintIsSPKIHash(t *testing.T) {
	ts := startServer(t, tlsTestConfig(t))
	_, _, tc := dialRawTLS(t, ts.addr)
	leaf := tc.ConnectionState().PeerCertificates[0]
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	want := "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
	if got := ts.fingerprint(); got != want {
		t.Fatalf("fingerprint %s, served key hashes to %s", got, want)
	}
	if len(want) != len("SHA256:")+43 {
		t.Fatalf("fingerprint %q is not 43 base64 characters", want)
	}
}

func TestTLSCopiedDBKeepsFingerprint(t *testing.T) {
	cfg := tlsTestConfig(t)
	ts := startServer(t, cfg)
	fp := ts.fingerprint()
	mustRegisterTLS(t, ts, "dave", "Secret-pw-1")
	ts.stop()

	copyPath := filepath.Join(t.TempDir(), "copy.db")
	data, err := os.ReadFile(cfg.DB)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg2 := tlsTestConfig(t)
	cfg2.DB = copyPath
	ts2 := startServer(t, cfg2)
	if got := ts2.fingerprint(); got != fp {
		t.Fatalf("copied db: fingerprint %s, was %s", got, fp)
	}
	if err := dialPinned(t, ts2.addr, fp).Login("dave", "Secret-pw-1"); err != nil {
		t.Fatal(err)
	}
	// A new db is another server.
	if other := startServer(t, tlsTestConfig(t)).fingerprint(); other == fp {
		t.Fatal("two dbs share a fingerprint")
	}
}

// TestTLSSilentClientIsCut: a client that connects and never starts the
// handshake is closed at the line deadline, and the worker is free again.
func TestTLSSilentClientIsCut(t *testing.T) {
	cfg := tlsTestConfig(t)
	cfg.LineTimeout = Duration{200 * time.Millisecond}
	cfg.Workers = 1
	ts := startServer(t, cfg)
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := nc.Read(make([]byte, 1)); err != io.EOF || n != 0 {
		t.Fatalf("silent TLS client: read %d bytes, %v; want the server to close", n, err)
	}
	if !ts.waitLog("tls handshake failed") {
		t.Fatalf("no handshake failure logged:\n%s", ts.logs)
	}
	// The one worker serves the next client.
	mustRegisterTLS(t, ts, "erin", "Secret-pw-1")
}

// TestTLSQueueFullClosesBeforeHandshake: with the one worker and the one
// queue slot taken, a new connection is closed by the accept loop without
// a byte of TLS, and the client reports busy.
func TestTLSQueueFullClosesBeforeHandshake(t *testing.T) {
	cfg := tlsTestConfig(t)
	cfg.Workers, cfg.Queue = 1, 1
	cfg.QueueTimeout = Duration{time.Minute}
	ts := startServer(t, cfg)
	held := dialPinned(t, ts.addr, ts.fingerprint()) // the worker
	queued, err := net.Dial("tcp", ts.addr)          // the queue slot
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()
	// The queued connection is in the queue once a later one is refused;
	// try until the accept loop has taken it (no sleep: each try is a
	// full round trip to the accept loop).
	var busyErr error
	for range 100 {
		_, busyErr = DialTLS(ts.addr, (&Trust{Fingerprint: ts.fingerprint()}).TLSConfig(ts.addr))
		if errors.Is(busyErr, ErrClosedBeforeHandshake) {
			break
		}
	}
	if !errors.Is(busyErr, ErrClosedBeforeHandshake) {
		t.Fatalf("client on a full server: %v", busyErr)
	}
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := nc.Read(make([]byte, 64)); n != 0 || (err != io.EOF && !isConnReset(err)) {
		t.Fatalf("full queue over TLS: read %d bytes, %v; want a close before any byte", n, err)
	}
	if !ts.waitLog("code=BUSY") {
		t.Fatalf("no BUSY logged:\n%s", ts.logs)
	}
	if _, err := held.Whoami(); code(err) != CodeBadCmd {
		t.Fatalf("the held connection: %v", err)
	}
}

// TestTLSResumedConnectionIsVerified: with a session cache the second
// handshake resumes, and the pin is still checked on it.
func TestTLSResumedConnectionIsVerified(t *testing.T) {
	ts := startServer(t, tlsTestConfig(t))
	cache := tls.NewLRUClientSessionCache(4)
	good := (&Trust{Fingerprint: ts.fingerprint()}).TLSConfig(ts.addr)
	good.ClientSessionCache = cache
	resumed := false
	for range 2 {
		c, err := DialTLS(ts.addr, good)
		if err != nil {
			t.Fatal(err)
		}
		resumed = c.nc.(*tls.Conn).ConnectionState().DidResume
		// The ticket arrives after the handshake; a round trip reads it.
		c.Do(CmdPing)
		c.Close()
	}
	if !resumed {
		t.Fatal("the second connection did not resume")
	}
	bad := (&Trust{Fingerprint: "SHA256:" + strings.Repeat("A", 43)}).TLSConfig(ts.addr)
	bad.ClientSessionCache = cache
	if _, err := DialTLS(ts.addr, bad); !errors.Is(err, ErrFingerprintChanged) {
		t.Fatalf("resumed connection with a wrong pin: %v", err)
	}
}

// relay is a man in the middle: it terminates the client's TLS with its
// own certificate and opens its own TLS to the real server, passing lines
// through, the server's through edit.
type relay struct {
	addr, fingerprint string
}

func startRelay(t testing.TB, upstream string, edit func(line string) string) *relay {
	t.Helper()
	certDER, keyDER, err := newSelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	id, err := newIdentityDER(certDER, keyDER)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLSConfig(id))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer down.Close()
				up, err := tls.Dial("tcp", upstream, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, down); up.CloseWrite() }()
				r := bufio.NewReader(up)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(down, edit(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return &relay{addr: ln.Addr().String(), fingerprint: id.Fingerprint}
}

func newIdentityDER(certDER, keyDER []byte) (*ServerIdentity, error) {
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, err
	}
	return newIdentity(tls.Certificate{Certificate: [][]byte{certDER}, PrivateKey: key})
}

func TestTLSRelayIsRefusedByAPinningClient(t *testing.T) {
	ts := startServer(t, tlsTestConfig(t))
	rl := startRelay(t, ts.addr, func(s string) string { return s })
	_, err := DialTLS(rl.addr, (&Trust{Fingerprint: ts.fingerprint()}).TLSConfig(rl.addr))
	var fe *FingerprintError
	if !errors.As(err, &fe) || fe.Got != rl.fingerprint || fe.Want != ts.fingerprint() {
		t.Fatalf("pinned client through a relay: %v", err)
	}
}

func TestTLSRelayFailsChannelBinding(t *testing.T) {
	ts := startServer(t, tlsTestConfig(t))
	mustRegisterTLS(t, ts, "frank", "Secret-pw-1")
	rl := startRelay(t, ts.addr, func(s string) string { return s })
	// The user was fooled into trusting the relay's key.
	c := dialPinned(t, rl.addr, rl.fingerprint)
	if err := c.Login("frank", "Secret-pw-1"); code(err) != CodeAuth {
		t.Fatalf("PLUS login through a relay: %v", err)
	}
	if !ts.waitLog("channel binding mismatch") {
		t.Fatalf("no channel-binding mismatch logged:\n%s", ts.logs)
	}
	if strings.Contains(ts.logs.String(), "expected ") {
		t.Fatalf("the library's error text (binding bytes) reached the log:\n%s", ts.logs)
	}
}

func TestTLSRelayStrippingPlusIsRefused(t *testing.T) {
	ts := startServer(t, tlsTestConfig(t))
	mustRegisterTLS(t, ts, "grace", "Secret-pw-1")
	rl := startRelay(t, ts.addr, func(s string) string {
		return strings.Replace(s, " SCRAM-SHA-256-PLUS", "", 1)
	})
	c := dialPinned(t, rl.addr, rl.fingerprint)
	if strings.Join(c.Mechs, " ") != "SCRAM-SHA-256" {
		t.Fatalf("relay did not strip PLUS: %v", c.Mechs)
	}
	if err := c.Login("grace", "Secret-pw-1"); code(err) != CodeAuth {
		t.Fatalf("y,, login through a stripping relay: %v", err)
	}
	if !ts.waitLog("was the greeting altered") {
		t.Fatalf("no downgrade logged:\n%s", ts.logs)
	}
}

// TestTLSCertFromFilesAndCA serves a CA-signed chain from files; a client
// given the CA trusts it by name, one given another CA does not.
func TestTLSCertFromFilesAndCA(t *testing.T) {
	dir := t.TempDir()
	caPEM, certPEM, keyPEM, leafSPKI := makeCAChain(t)
	for name, data := range map[string][]byte{"ca.pem": caPEM, "cert.pem": certPEM, "key.pem": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := tlsTestConfig(t)
	cfg.TLSCertFile, cfg.TLSKeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ts := startServer(t, cfg)
	if ts.fingerprint() != Fingerprint(leafSPKI) {
		t.Fatalf("fingerprint %s is not the file's leaf key", ts.fingerprint())
	}
	port := ts.addr[strings.LastIndex(ts.addr, ":"):]
	for _, addr := range []string{"localhost" + port, ts.addr} {
		tr := &Trust{}
		if err := tr.LoadCA(filepath.Join(dir, "ca.pem")); err != nil {
			t.Fatal(err)
		}
		c, err := DialTLS(addr, tr.TLSConfig(addr))
		if err != nil {
			t.Fatalf("CA-verified dial to %s: %v", addr, err)
		}
		if err := c.Register("heidi"+port[1:]+addr[:1], "Secret-pw-1"); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	otherCA, _, _, _ := makeCAChain(t)
	os.WriteFile(filepath.Join(dir, "other.pem"), otherCA, 0o600)
	tr := &Trust{}
	tr.LoadCA(filepath.Join(dir, "other.pem"))
	if _, err := DialTLS(ts.addr, tr.TLSConfig(ts.addr)); !errors.Is(err, ErrCAVerify) {
		t.Fatalf("dial under another CA: %v", err)
	}
}

// makeCAChain makes a CA and a leaf for localhost and 127.0.0.1 signed by
// it (ECDSA P-256, as a CA would issue), as PEM.
func makeCAChain(t testing.TB) (caPEM, certPEM, keyPEM, leafSPKI []byte) {
	t.Helper()
	caKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER := must(x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey))
	ca := must(x509.ParseCertificate(caDER))
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey))
	keyDER := must(x509.MarshalPKCS8PrivateKey(key))
	leaf := must(x509.ParseCertificate(der))
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		leaf.RawSubjectPublicKeyInfo
}

func TestTrustPinnedServerChanged(t *testing.T) {
	ts := startServer(t, tlsTestConfig(t))
	path := filepath.Join(t.TempDir(), "known_servers")
	os.WriteFile(path, []byte("# pins\n"+ts.addr+" SHA256:"+strings.Repeat("A", 43)+"\n"), 0o600)
	k, err := LoadKnownServers(path)
	if err != nil {
		t.Fatal(err)
	}
	// Even a matching --fingerprint does not get past a differing pin.
	tr := &Trust{Known: k, Fingerprint: ts.fingerprint()}
	_, err = DialTLS(ts.addr, tr.TLSConfig(ts.addr))
	var fe *FingerprintError
	if !errors.As(err, &fe) || fe.Line != 2 || fe.Got != ts.fingerprint() {
		t.Fatalf("changed key: %v", err)
	}
	// A matching pin does not excuse a --fingerprint that differs.
	os.WriteFile(path, []byte(ts.addr+" "+ts.fingerprint()+"\n"), 0o600)
	k, _ = LoadKnownServers(path)
	wrong := Fingerprint([]byte("not the server's key"))
	if _, err := DialTLS(ts.addr, (&Trust{Known: k, Fingerprint: wrong}).TLSConfig(ts.addr)); !errors.As(err, &fe) || fe.Want != wrong {
		t.Fatalf("pinned server, wrong --fingerprint: %v", err)
	}
	// An unknown server is a first contact that names its fingerprint.
	var ue *UnknownServerError
	if _, err := DialTLS(ts.addr, (&Trust{}).TLSConfig(ts.addr)); !errors.As(err, &ue) || ue.Fingerprint != ts.fingerprint() {
		t.Fatalf("first contact: %v", err)
	}
}

func TestNormalizeFingerprint(t *testing.T) {
	fp := "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
	for _, in := range []string{fp, " sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU= "} {
		if got, err := NormalizeFingerprint(in); err != nil || got != fp {
			t.Errorf("NormalizeFingerprint(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "MD5:ab", "SHA256:abc", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"} {
		if _, err := NormalizeFingerprint(in); err == nil {
			t.Errorf("NormalizeFingerprint(%q) accepted", in)
		}
	}
}

// BenchmarkTLSHandshake is a full TLS 1.3 handshake, both ends in this
// process over an in-memory pipe, for each key type a self-made identity
// could have: the figures behind newSelfSigned's choice (BENCHMARKS.md).
func BenchmarkTLSHandshake(b *testing.B) {
	for _, kt := range []struct {
		name string
		make func() ([]byte, []byte, error)
	}{{"ed25519", newSelfSigned}, {"p256", newSelfSignedP256}} {
		b.Run(kt.name, func(b *testing.B) {
			certDER, keyDER, err := kt.make()
			if err != nil {
				b.Fatal(err)
			}
			id, err := newIdentityDER(certDER, keyDER)
			if err != nil {
				b.Fatal(err)
			}
			srvConf := serverTLSConfig(id)
			cliConf := (&Trust{Fingerprint: id.Fingerprint}).TLSConfig("127.0.0.1:1")
			b.ReportAllocs()
			for b.Loop() {
				cn, sn := net.Pipe()
				done := make(chan error, 1)
				go func() { done <- tls.Server(sn, srvConf).Handshake() }()
				if err := tls.Client(cn, cliConf).Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				cn.Close()
				sn.Close()
			}
		})
	}
}

func newSelfSignedP256() (certDER, keyDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	return selfSign(&key.PublicKey, key)
}

// BenchmarkIdentitySign is the part of a handshake the key type decides:
// the server signs once (sign), the client verifies once (verify). Key
// exchange and record crypto are the same for both key types.
func BenchmarkIdentitySign(b *testing.B) {
	digest := sha256.Sum256([]byte("transcript"))
	msg := digest[:]
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edSig := ed25519.Sign(edPriv, msg)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecSig, _ := ecdsa.SignASN1(rand.Reader, ecKey, msg)
	for _, bc := range []struct {
		name string
		fn   func() bool
	}{
		{"sign/ed25519", func() bool { return len(ed25519.Sign(edPriv, msg)) > 0 }},
		{"sign/p256", func() bool { s, err := ecdsa.SignASN1(rand.Reader, ecKey, msg); return err == nil && len(s) > 0 }},
		{"verify/ed25519", func() bool { return ed25519.Verify(edPub, msg, edSig) }},
		{"verify/p256", func() bool { return ecdsa.VerifyASN1(&ecKey.PublicKey, msg, ecSig) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if !bc.fn() {
					b.Fatal(bc.name)
				}
			}
		})
	}
}

// TestTLSShutdownCutsAHandshake: a client that connected and never sent a
// ClientHello does not hold Shutdown up for its line deadline.
func TestTLSShutdownCutsAHandshake(t *testing.T) {
	cfg := tlsTestConfig(t)
	cfg.LineTimeout = Duration{time.Hour}
	ts := startServer(t, cfg)
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The handshake is under way once a worker took the connection; a
	// second client's full login proves the first was taken already
	// (workers serve in order from the queue).
	mustRegisterTLS(t, ts, "ivan", "Secret-pw-1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown waited on a silent handshake: %v", err)
	}
}

// A config from before TLS lists only SCRAM-SHA-256: TLS is on by default,
// so its logins run inside TLS without channel binding, and the operator is
// told so once at start.
func TestTLSWithoutPlusIsWarned(t *testing.T) {
	for _, tc := range []struct {
		mechs []string
		warn  bool
	}{
		{[]string{MechSCRAM}, true},
		{[]string{MechPlus, MechSCRAM}, false},
	} {
		cfg := tlsTestConfig(t)
		cfg.Mechanisms = tc.mechs
		ts := startServer(t, cfg)
		if !ts.waitLog("msg=listening") {
			t.Fatal("no listening line")
		}
		if got := strings.Contains(ts.logs.String(), "not bound to the TLS channel"); got != tc.warn {
			t.Errorf("mechanisms %v: warned %v, want %v; log:\n%s", tc.mechs, got, tc.warn, ts.logs)
		}
	}
}

// A TLS connection a worker takes once Shutdown has begun is told ERR BUSY
// inside the handshake it expects: the shutdown must not cut that
// handshake before it carries the answer.
func TestTLSBusyAtShutdownIsDelivered(t *testing.T) {
	ts := startServer(t, tlsTestConfig(t))
	ts.Server.shutting.Store(true)
	srvEnd, cliEnd := net.Pipe()
	done := make(chan struct{})
	go func() { ts.Server.serveConn(srvEnd, "pipe"); close(done) }()
	tc := tls.Client(cliEnd, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{alpnProto}})
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v (no ERR BUSY can reach the client)", err)
	}
	line, err := bufio.NewReader(tc).ReadString('\n')
	if !strings.HasPrefix(line, "ERR BUSY ") {
		t.Fatalf("got %q, %v; want ERR BUSY", line, err)
	}
	<-done
}
