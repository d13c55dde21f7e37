package main

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"path/filepath"
	"strings"
	"testing"
)

// TestPreparePasswordAsPostgreSQL: what pg_saslprep and its callers hash,
// case by case (src/common/saslprep.c): SASLprep's result where it
// succeeds, the raw bytes where it fails.
func TestPreparePasswordAsPostgreSQL(t *testing.T) {
	for _, c := range []struct{ in, want, why string }{
		{"pencil", "pencil", "plain ASCII"},
		{"tab\there", "tab\there", "ASCII is used as it is, controls included"},
		{"I\u00adX", "IX", "B.1 maps to nothing"},
		{"\u2168", "IX", "NFKC"},
		{"a\u00a0b\u00e9", "a b\u00e9", "a non-ASCII space maps to a space"},
		{"a\u200bb\u00e9", "a b\u00e9", "U+200B is a non-ASCII space to pg_saslprep, mapped before B.1"},
		{"x\xff\xfe", "x\xff\xfe", "invalid UTF-8: raw bytes"},
		{"caf\u00e9\u0007", "caf\u00e9\u0007", "prohibited (C.2.1) in non-ASCII: raw bytes"},
		{"s\u00e9cret\u0085", "s\u00e9cret\u0085", "prohibited (C.2.2): raw bytes"},
		{"smile\U0001F600", "smile\U0001F600", "unassigned in Unicode 3.2: raw bytes"},
		{"\u00ad\u200d", "\u00ad\u200d", "maps to nothing at all: raw bytes"},
		{"\u0627\u0031", "\u0627\u0031", "right-to-left not at both ends: raw bytes"},
		{"\u0627a\u0628", "\u0627a\u0628", "right-to-left with left-to-right: raw bytes"},
		{"\u0627\u0031\u0628", "\u0627\u0031\u0628", "a valid right-to-left string"},
	} {
		if got := preparePassword(c.in); got != c.want {
			t.Errorf("%s: preparePassword(%q) = %q, want %q", c.why, c.in, got, c.want)
		}
	}
}

// pgVerifierKeys is PostgreSQL's scram_build_secret for a password
// SASLprep refuses, computed without our SCRAM code: PBKDF2 of the raw
// bytes.
func pgVerifierKeys(t *testing.T, password string, rec Record) (stored, server []byte) {
	t.Helper()
	salted, err := pbkdf2.Key(sha256.New, password, rec.Salt, rec.Iterations, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	sk := sha256.Sum256(mac(salted, "Client Key"))
	return sk[:], mac(salted, "Server Key")
}

// TestPostgreSQLFallbackImportAndLogin: a role whose password SASLprep
// refuses (a tab; an emoji, unassigned in Unicode 3.2), its verifier made
// as PostgreSQL makes it, imported with --format pg, then logged into.
// `authbox pw` refused such a password, and login could never succeed.
func TestPostgreSQLFallbackImportAndLogin(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	passwords := map[string]string{"tabby": "Pass\tword1", "emoji": "S\u00e9same1\U0001F600"}
	var file strings.Builder
	for name, pw := range passwords {
		r := mustCLI(t, 0, dir, pw+"\n", "pw", "--config", cfg, "--password-stdin")
		rec, err := ParsePGVerifier(strings.TrimSpace(r.stdout))
		if err != nil {
			t.Fatalf("pw for %s: %v", name, err)
		}
		stored, server := pgVerifierKeys(t, pw, rec)
		if !hmac.Equal(stored, rec.StoredKey) || !hmac.Equal(server, rec.ServerKey) {
			t.Fatalf("pw for %s: not the verifier PostgreSQL computes from the raw bytes", name)
		}
		file.WriteString(FormatPGLine(name, rec))
	}
	writeFile(t, filepath.Join(dir, "roles.pg"), file.String())
	mustCLI(t, 0, dir, "", "users", "import", "--config", cfg, "--format", "pg", "roles.pg")
	srv := serveInProcess(t, dir, "--config", cfg)
	for name, pw := range passwords {
		r := mustCLI(t, 0, dir, pw+"\n", "login", "--server", srv.addr, "--user", name, "--password-stdin")
		if !strings.Contains(r.stdout, "logged in as") {
			t.Fatalf("login %s: %+v", name, r)
		}
		mustCLI(t, 1, dir, strings.ReplaceAll(pw, "\t", " ")+"x\n", "login", "--server", srv.addr, "--user", name, "--password-stdin")
	}
}

// TestFallbackPasswordRegisterPasswd: register, login and passwd take a
// password SASLprep refuses, as PostgreSQL's clients do.
func TestFallbackPasswordRegisterPasswd(t *testing.T) {
	ts := startServer(t, testConfig(t))
	addr := ts.addr
	mustRegister(t, addr, "tabby", "old\tpass")
	c := must(testDial(t, addr))
	defer c.Close()
	if err := c.Login("tabby", "old\tpass"); err != nil {
		t.Fatal(err)
	}
	if err := c.Passwd("tabby", "new\u00e9\U0001F600"); err != nil {
		t.Fatal(err)
	}
	if err := login(t, addr, "tabby", "new\u00e9\U0001F600"); err != nil {
		t.Fatal(err)
	}
	if code(login(t, addr, "tabby", "old\tpass")) != CodeAuth {
		t.Fatal("the old password still works")
	}
}
