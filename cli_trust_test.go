package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freshPins points the client commands at a known_servers file of their
// own, in which no server is pinned yet.
func freshPins(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "cfg", "known_servers")
	t.Setenv(knownServersEnv, path)
	return path
}

// ptyRun runs the built binary with a pseudo-terminal as its controlling
// terminal and standard streams, as a person at a terminal does.
type ptyRun struct {
	t      *testing.T
	master *os.File
	cmd    *exec.Cmd
	out    bytes.Buffer
}

func startPTY(t *testing.T, dir string, args ...string) *ptyRun {
	t.Helper()
	return startPTYCommand(t, dir, authboxBin(t), args...)
}

// startPTYCommand is startPTY for any program: a shell running a README
// line, say.
func startPTYCommand(t *testing.T, dir, program string, args ...string) *ptyRun {
	t.Helper()
	master, slavePath := openPTY(t)
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	cmd := exec.Command(program, args...)
	cmd.Dir = dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &ptyRun{t: t, master: master, cmd: cmd}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return p
}

// expect reads the terminal until it shows s, within a deadline.
func (p *ptyRun) expect(s string) {
	p.t.Helper()
	p.master.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 4096)
	for !strings.Contains(p.out.String(), s) {
		n, err := p.master.Read(buf)
		p.out.Write(buf[:n])
		if err != nil {
			p.t.Fatalf("waiting for %q: %v; the terminal shows:\n%s", s, err, p.out.String())
		}
	}
}

func (p *ptyRun) typeLine(s string) {
	p.t.Helper()
	if _, err := p.master.WriteString(s + "\n"); err != nil {
		p.t.Fatal(err)
	}
}

// wait returns the exit code once the program ends, and all it printed.
func (p *ptyRun) wait() (int, string) {
	p.t.Helper()
	err := p.cmd.Wait()
	// Drain what is left; the slave is closed, so the read ends.
	p.master.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		n, rerr := p.master.Read(buf)
		p.out.Write(buf[:n])
		if rerr != nil {
			break
		}
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), p.out.String()
	}
	if err != nil {
		p.t.Fatal(err)
	}
	return 0, p.out.String()
}

// TestCLIFirstContactPrompt drives the built binary at a terminal: on first
// contact it shows the fingerprint and asks before any password; yes pins
// it, and the next command asks nothing; no refuses and pins nothing.
func TestCLIFirstContactPrompt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	authboxBin(t) // built from the package directory, before serve moves into dir
	dir := t.TempDir()
	srv := serveInProcess(t, dir, "--config", writeConfig(t, dir, ""))
	fp := runCLI(t, dir, "", nil, "fingerprint", "--config", "auth.toml").stdout
	fp = strings.TrimSpace(fp)
	pins := freshPins(t)
	const pw = "Typed-pass-1"

	p := startPTY(t, dir, "register", "--server", srv.addr, "--user", "alice")
	p.expect("trust it and remember it? [y/N] ")
	if !strings.Contains(p.out.String(), "its key fingerprint is "+fp) || strings.Contains(p.out.String(), "password") {
		t.Fatalf("first contact, before the answer:\n%s", p.out.String())
	}
	p.typeLine("y")
	p.expect("password: ")
	p.typeLine(pw)
	p.expect("password (again): ")
	p.typeLine(pw)
	code, out := p.wait()
	if code != 0 || !strings.Contains(out, "pinned "+srv.addr+" as "+fp+" in "+pins) || !strings.Contains(out, `registered "alice"`) {
		t.Fatalf("register after yes: exit %d\n%s", code, out)
	}
	if strings.Contains(out, pw) {
		t.Fatalf("the password was echoed:\n%s", out)
	}
	data, err := os.ReadFile(pins)
	fi, _ := os.Stat(pins)
	if err != nil || string(data) != srv.addr+" "+fp+"\n" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("known_servers after yes: %q, %v, %v", data, fi.Mode(), err)
	}

	p = startPTY(t, dir, "login", "--server", srv.addr, "--user", "alice")
	p.expect("password: ")
	p.typeLine(pw)
	code, out = p.wait()
	if code != 0 || strings.Contains(out, "trust it") || !strings.Contains(out, `logged in as "alice"`) {
		t.Fatalf("login of a pinned server: exit %d\n%s", code, out)
	}

	other := freshPins(t)
	p = startPTY(t, dir, "login", "--server", srv.addr, "--user", "alice")
	p.expect("trust it and remember it? [y/N] ")
	p.typeLine("n")
	code, out = p.wait()
	if code != 2 || !strings.Contains(out, "not trusted; nothing was sent to "+srv.addr) || strings.Contains(out, "password:") {
		t.Fatalf("login after no: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Fatalf("a refused server was pinned: %v", err)
	}
}

// TestCLITrustWithoutTerminal covers the scripted ways: a first contact
// without a terminal is refused with the fingerprint and the flags that
// help; --fingerprint and --accept-new work; a changed key is refused and
// the file is left as it was.
func TestCLITrustWithoutTerminal(t *testing.T) {
	dir := t.TempDir()
	srv := serveInProcess(t, dir, "--config", writeConfig(t, dir, ""))
	fp := strings.TrimSpace(runCLI(t, dir, "", nil, "fingerprint", "--config", "auth.toml").stdout)
	pins := freshPins(t)
	const pw = "Some-pass-1\n"
	server := "--server=" + srv.addr

	r := runCLI(t, dir, pw, nil, "register", server, "--user", "alice", "--password-stdin")
	if r.code != 2 || !strings.Contains(r.stderr, "authbox: error: "+srv.addr+" is not a known server; it presented the key "+fp) ||
		!strings.Contains(r.stderr, "--fingerprint "+fp) || !strings.Contains(r.stderr, "--accept-new") {
		t.Fatalf("first contact without a terminal: %+v", r)
	}
	if _, err := os.Stat(pins); !os.IsNotExist(err) {
		t.Fatal("a refused first contact wrote the file")
	}
	r = runCLI(t, dir, pw, nil, "register", server, "--user", "alice", "--password-stdin", "--fingerprint", fp)
	if r.code != 0 {
		t.Fatalf("register with --fingerprint: %+v", r)
	}
	r = runCLI(t, dir, pw, []string{"AUTHBOX_FINGERPRINT=" + fp}, "login", server, "--user", "alice", "--password-stdin")
	if r.code != 0 {
		t.Fatalf("login with AUTHBOX_FINGERPRINT: %+v", r)
	}
	if _, err := os.Stat(pins); !os.IsNotExist(err) {
		t.Fatal("--fingerprint pinned the server")
	}
	r = runCLI(t, dir, pw, nil, "login", server, "--user", "alice", "--password-stdin", "--fingerprint", "SHA256:"+strings.Repeat("A", 43))
	if r.code != 2 || !strings.Contains(r.stderr, "does not match --fingerprint") {
		t.Fatalf("login with a wrong --fingerprint: %+v", r)
	}
	r = runCLI(t, dir, pw, nil, "login", server, "--user", "alice", "--password-stdin", "--accept-new")
	if r.code != 0 || !strings.Contains(r.stderr, "authbox: pinned "+srv.addr+" as "+fp) {
		t.Fatalf("login with --accept-new: %+v", r)
	}
	// The key changes (here: the pin does); the client refuses loudly,
	// names the line, and writes nothing.
	changed := []byte("# ours\n" + srv.addr + " " + Fingerprint([]byte("another key")) + "\n")
	os.WriteFile(pins, changed, 0o600)
	for _, extra := range [][]string{nil, {"--accept-new"}, {"--fingerprint", fp}} {
		r = runCLI(t, dir, pw, nil, append([]string{"login", server, "--user", "alice", "--password-stdin"}, extra...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "THE SERVER'S KEY HAS CHANGED") || !strings.Contains(r.stderr, pins+" line 2") ||
			!strings.Contains(r.stderr, "presented "+fp) {
			t.Fatalf("changed key %v: %+v", extra, r)
		}
		if data, _ := os.ReadFile(pins); !bytes.Equal(data, changed) {
			t.Fatalf("a changed key rewrote the file: %q", data)
		}
	}
	if r := runCLI(t, dir, pw, nil, "login", server, "--user", "alice", "--password-stdin", "--plain", "--accept-new"); r.code != 2 || !strings.Contains(r.stderr, "--accept-new needs TLS") {
		t.Fatalf("--plain with --accept-new: %+v", r)
	}
}

// TestCLITransportMismatch: each side of a TLS/plain mix says what is wrong.
func TestCLITransportMismatch(t *testing.T) {
	dir := t.TempDir()
	plain := startServer(t, testConfig(t))
	r := runCLI(t, dir, "Some-pass-1\n", nil, "login", "--server", plain.addr, "--user", "alice", "--password-stdin")
	if r.code != 2 || !strings.Contains(r.stderr, plain.addr+" speaks plain TCP, not TLS") || !strings.Contains(r.stderr, "--plain") {
		t.Fatalf("TLS client, plain server: %+v", r)
	}
	if r := runCLI(t, dir, "", nil, "fingerprint", "--config", writeConfig(t, dir, "tls = false\n")); r.code != 2 || !strings.Contains(r.stderr, "speaks plain TCP (tls = false)") {
		t.Fatalf("fingerprint of a plain server: %+v", r)
	}
}

// TestCLIFingerprint: "authbox fingerprint" prints the same line through
// the running server and offline, and it is the SHA-256 of the served
// certificate's SubjectPublicKeyInfo.
func TestCLIFingerprint(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	srv := serveInProcess(t, dir, "--config", cfg)
	online := runCLI(t, dir, "", nil, "fingerprint", "--config", cfg)
	_, _, tc := dialRawTLS(t, srv.addr)
	sum := sha256.Sum256(tc.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	want := "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:]) + "\n"
	if online.code != 0 || online.stdout != want || online.stderr != "" {
		t.Fatalf("fingerprint online: %+v, want %q", online, want)
	}
	tc.Close()
	srv.stop(t)
	if offline := runCLI(t, dir, "", nil, "fingerprint", "--config", cfg); offline != online {
		t.Fatalf("offline %+v, online %+v", offline, online)
	}
	if r := runCLI(t, dir, "", nil, "fingerprint", "--db", filepath.Join(dir, "none.db")); r.code != 2 || !strings.Contains(r.stderr, "no database at") {
		t.Fatalf("fingerprint of no db: %+v", r)
	}
}

// TestCLICAFile: a server with a CA-issued certificate from files, and a
// client that trusts that CA by name, with nothing pinned.
func TestCLICAFile(t *testing.T) {
	dir := t.TempDir()
	caPEM, certPEM, keyPEM, _ := makeCAChain(t)
	for name, data := range map[string][]byte{"ca.pem": caPEM, "cert.pem": certPEM, "key.pem": keyPEM} {
		os.WriteFile(filepath.Join(dir, name), data, 0o600)
	}
	srv := serveInProcess(t, dir, "--config", writeConfig(t, dir, "tls_cert_file = \"cert.pem\"\ntls_key_file = \"key.pem\"\n"))
	pins := freshPins(t)
	server := "--server=localhost" + srv.addr[strings.LastIndex(srv.addr, ":"):]
	r := runCLI(t, dir, "Some-pass-1\n", nil, "register", server, "--user", "carol", "--password-stdin", "--ca", "ca.pem")
	if r.code != 0 {
		t.Fatalf("register with --ca: %+v", r)
	}
	if _, err := os.Stat(pins); !os.IsNotExist(err) {
		t.Fatal("--ca pinned the server")
	}
	otherCA, _, _, _ := makeCAChain(t)
	os.WriteFile(filepath.Join(dir, "other.pem"), otherCA, 0o600)
	r = runCLI(t, dir, "Some-pass-1\n", nil, "login", server, "--user", "carol", "--password-stdin", "--config", writeConfig(t, t.TempDir(), "[client]\nca_file = \""+filepath.Join(dir, "other.pem")+"\"\n"))
	if r.code != 2 || !strings.Contains(r.stderr, "is not valid under "+filepath.Join(dir, "other.pem")) {
		t.Fatalf("login under another CA (client.ca_file): %+v", r)
	}
}
