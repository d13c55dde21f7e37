package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// seedConfig is a test config that also offers the legacy mechanism, as a
// server does while its imported users are being upgraded.
const seedConfig = `mechanisms = ["SCRAM-SHA-256", "SEED-SHA256"]` + "\n"

// cliInProcess runs the CLI in this process, in dir, through run(): under
// -race and in the coverage, which the binary that runCLI starts is not. A
// command that may want a terminal still needs runCLI, whose child has no
// controlling terminal to open. The working directory is the process's:
// it is dir only while the command runs (so a test that calls this must not
// be parallel), and back before anything else, say a go build, needs it.
func cliInProcess(t *testing.T, dir, stdin string, args ...string) result {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	var out, errb bytes.Buffer
	code := run(append([]string{"authbox"}, args...), strings.NewReader(stdin), &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// mustCLI runs the CLI in process and fails the test unless it exits with
// code.
func mustCLI(t *testing.T, code int, dir, stdin string, args ...string) result {
	t.Helper()
	return mustExit(t, code, args, cliInProcess(t, dir, stdin, args...))
}

// mustExit fails the test unless r, the run of args, exited with code.
func mustExit(t *testing.T, code int, args []string, r result) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("authbox %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	return r
}

func writeFile(t testing.TB, path, body string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// stop ends a served process with SIGTERM and checks it stopped cleanly.
func (p *serveProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	if err := p.cmd.Wait(); err != nil || !strings.Contains(p.log.String(), "stopped cleanly") {
		t.Fatalf("serve did not stop cleanly: %v\n%s", err, p.log)
	}
}

// dbKind reads an account's kind straight from a db no server holds.
func dbKind(t *testing.T, db, name string) Kind {
	t.Helper()
	s, err := OpenStore(db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec, err := s.Get(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return rec.Kind
}

var timeRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)

// TestUsersCommandsSameOnlineAndOffline runs every admin command twice on
// two copies of one db: through a running server's admin socket, and on
// the file with no server. What the user sees must be the same.
func TestUsersCommandsSameOnlineAndOffline(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, seedConfig)
	on, off := filepath.Join(dir, "on"), filepath.Join(dir, "off")
	os.Mkdir(on, 0o700)
	os.Mkdir(off, 0o700)
	users := []legacyUser{newLegacyUser(t, "alice", "Alice-pw1"), newLegacyUser(t, "bob", "Bob-pw1"), newLegacyUser(t, "émile", "Émile-pw1")}
	writeFile(t, filepath.Join(dir, "users.csv"), legacyCSV(users))
	writeFile(t, filepath.Join(dir, "rfc.pg"), "user,"+rfcPGVerifier+"\n")
	base := []string{"--db", "authbox.db", "--config", "../auth.toml"}
	with := func(args ...string) []string {
		// Flags go between the command words and the positional argument.
		i := 1
		if args[0] == "users" {
			i = 2
		}
		return append(append(append([]string{}, args[:i]...), base...), args[i:]...)
	}
	r := mustCLI(t, 0, on, "", with("users", "import", "--format", "seed-csv", "../users.csv")...)
	if r.stdout != "imported 3, skipped 0 (name exists), rejected 0\n" {
		t.Fatalf("import: %+v", r)
	}
	mustCLI(t, 0, on, "", with("users", "import", "--format", "pg", "../rfc.pg")...)
	copyFile(t, filepath.Join(on, "authbox.db"), filepath.Join(off, "authbox.db"))
	srv := startServe(t, on, "--config", "../auth.toml")

	cases := []struct {
		args []string
		code int
		want string // in stdout or stderr
	}{
		{[]string{"users", "list"}, 0, "alice  legacy  -"},
		{[]string{"users", "list", "--json"}, 0, `"kind": "scram"`},
		{[]string{"users", "show", "alice"}, 0, "kind        legacy"},
		{[]string{"users", "show", "--json", "user"}, 0, `"iterations": 4096`},
		{[]string{"users", "show", "nobody"}, 1, `no account named "nobody"`},
		{[]string{"users", "show", "has space"}, 1, `invalid username "has space"`},
		{[]string{"users", "show", "alice", "--json"}, 2, "flags go before NAME"},
		{[]string{"users", "lock", "bob"}, 0, `locked account "bob"`},
		{[]string{"users", "lock", "bob"}, 0, `account "bob" was already locked`},
		{[]string{"users", "unlock", "bob"}, 0, `unlocked account "bob"`},
		{[]string{"users", "unlock", "bob"}, 0, `account "bob" was already unlocked`},
		{[]string{"users", "lock", "émile"}, 0, `locked account "émile"`},
		{[]string{"users", "lock", "nobody"}, 1, `no account named "nobody"`},
		{[]string{"users", "delete", "alice"}, 0, `deleted account "alice"`},
		{[]string{"users", "delete", "alice"}, 1, `no account named "alice"`},
		{[]string{"users", "export", "--format", "pg", "export.pg"}, 0, "exported 1 account to export.pg\nleft out 2 legacy accounts: they have"},
		{[]string{"users", "export", "--format", "pg", "export.pg"}, 2, "export.pg exists"},
		{[]string{"users", "export", "--format", "csv", "other.pg"}, 2, `cannot export in format "csv"`},
		{[]string{"backup", "backup.db"}, 0, "wrote a backup of "},
		{[]string{"backup", "backup.db"}, 2, "backup.db exists"},
		{[]string{"users", "import", "--format", "pg", "../rfc.pg"}, 0, "imported 0, skipped 1 (name exists), rejected 0"},
		{[]string{"users", "import", "--format", "pg", "--replace", "../rfc.pg"}, 0, "imported 1, skipped 0 (name exists), rejected 0"},
		{[]string{"users", "import", "--format", "pg", "missing.pg"}, 2, "cannot read missing.pg"},
		{[]string{"users", "import", "--format", "pg", "."}, 2, "authbox: error: reading .: is a directory\n"},
		{[]string{"users", "list"}, 0, "émile  legacy  -"},
	}
	// both runs args on each copy and returns what each printed.
	both := func(code int, args []string) (online, offline string) {
		t.Helper()
		a := mustCLI(t, code, on, "", with(args...)...)
		b := mustCLI(t, code, off, "", with(args...)...)
		return a.stdout + "|" + a.stderr, b.stdout + "|" + b.stderr
	}
	// Before anything changes, the two copies are the same to the byte,
	// and so is what the read-only commands print, times included.
	for _, args := range [][]string{{"users", "list"}, {"users", "list", "--json"}, {"users", "show", "alice"}, {"users", "show", "--json", "user"}} {
		if a, b := both(0, args); a != b {
			t.Errorf("%v differs before any change:\nthrough the server:\n%s\non the file:\n%s", args, a, b)
		}
	}
	// Each command sees what the ones before it did, on both copies alike;
	// only an update time may have fallen in another second.
	for _, tc := range cases {
		a, b := both(tc.code, tc.args)
		if !strings.Contains(a, tc.want) {
			t.Errorf("%v: output does not contain %q:\n%s", tc.args, tc.want, a)
		}
		if a, b := timeRE.ReplaceAllString(a, "TIME"), timeRE.ReplaceAllString(b, "TIME"); a != b {
			t.Errorf("%v differs:\nthrough the server:\n%s\non the file:\n%s", tc.args, a, b)
		}
	}
	// The server did the online half: its log has every request, and the
	// file was its own all along (an offline run could not have opened it).
	for _, op := range []string{"list", "show", "lock", "unlock", "delete", "export", "backup", "import"} {
		if !srv.waitLog(t, "msg=admin op="+op) {
			t.Errorf("the server's log has no admin %s:\n%s", op, srv.log)
		}
	}
	// Files written through the server are the user's: 0600, same bytes.
	for _, f := range []string{"export.pg", "backup.db"} {
		fi, err := os.Stat(filepath.Join(on, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", f, fi, err)
		}
	}
	exOn, _ := os.ReadFile(filepath.Join(on, "export.pg"))
	exOff, _ := os.ReadFile(filepath.Join(off, "export.pg"))
	if string(exOn) != "user,"+rfcPGVerifier+"\n" || string(exOn) != string(exOff) {
		t.Errorf("exports:\n%s\n%s", exOn, exOff)
	}
	if _, err := os.Stat(filepath.Join(on, "other.pg")); err == nil {
		t.Error("a failed export left its file behind")
	}
	// The backups hold the state at their time: alice deleted, émile locked.
	srv.stop(t)
	for _, d := range []string{on, off} {
		r := mustCLI(t, 0, d, "", "users", "list", "--json", "--db", "backup.db")
		var list []AccountInfo
		if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, a := range list {
			got += fmt.Sprintf("%s:%s:%v ", a.Name, a.Kind, a.Locked)
		}
		if got != "bob:legacy:false user:scram:false émile:legacy:true " {
			t.Errorf("%s backup holds %s", d, got)
		}
	}
}

// TestLegacyUsersUpgradeOnLogin is the migration from the original system:
// its USERS table as sqlite3 prints it, imported, then logged into with
// `authbox login`, which upgrades each account to SCRAM on first use.
func TestLegacyUsersUpgradeOnLogin(t *testing.T) {
	dir := t.TempDir()
	seedCfg := writeConfig(t, dir, seedConfig)
	scramCfg := filepath.Join(dir, "scram.toml")
	writeFile(t, scramCfg, fmt.Sprintf("iterations = %d\n", testIterations))
	pw := map[string]string{"alice": "Alice-pw1", "émile": "Émile-pw1", "o'brien": "short", "a,b": "Comma-pw1", "dave": "Dave-pw1", "erin": "Erin-pw1"}
	var users []legacyUser
	for _, name := range []string{"alice", "émile", "o'brien", "a,b", "dave", "erin"} {
		users = append(users, newLegacyUser(t, name, pw[name]))
	}
	csv := legacyCSV(users)
	if !strings.Contains(csv, `"émile",`) || !strings.Contains(csv, `"a,b",`) {
		t.Fatalf("the CSV is not quoted as sqlite3 quotes:\n%s", csv)
	}
	writeFile(t, filepath.Join(dir, "users.csv"), csv)
	r := mustCLI(t, 0, dir, "", "users", "import", "--format", "seed-csv", "users.csv")
	if r.stdout != "imported 6, skipped 0 (name exists), rejected 0\n" {
		t.Fatalf("import: %+v", r)
	}
	db := filepath.Join(dir, "authbox.db")

	// Without SEED-SHA256 a legacy user cannot log in: the server must
	// offer it while the migration lasts.
	srv := startServe(t, dir, "--config", scramCfg)
	r = mustCLI(t, 1, dir, "Alice-pw1\n", "login", "--server", srv.addr, "--user", "alice", "--password-stdin")
	srv.stop(t)

	srv = startServe(t, dir, "--config", seedCfg)
	server := "--server=" + srv.addr
	// A wrong password fails as any wrong password does and upgrades nothing.
	r = mustCLI(t, 1, dir, "Alice-pw2\n", "login", server, "--user", "alice", "--password-stdin")
	if !strings.Contains(r.stderr, "login failed: wrong username or password") {
		t.Fatalf("wrong password: %+v", r)
	}
	for _, name := range []string{"alice", "émile", "o'brien", "a,b"} {
		r = mustCLI(t, 0, dir, pw[name]+"\n", "login", server, "--user", name, "--password-stdin")
		if !strings.Contains(r.stderr, "authbox: warning: this login used the legacy SEED-SHA256 scheme") {
			t.Errorf("legacy login of %s without the warning: %q", name, r.stderr)
		}
		if r.stdout != fmt.Sprintf("logged in as %q on %s; upgraded the account from the legacy scheme to SCRAM-SHA-256\n", name, srv.addr) {
			t.Fatalf("first login of %s: %+v", name, r)
		}
		r = mustCLI(t, 0, dir, "", "users", "show", "--json", name)
		var a AccountInfo
		if err := json.Unmarshal([]byte(r.stdout), &a); err != nil || a.Kind != "scram" || a.Iterations != testIterations {
			t.Fatalf("%s after the upgrade: %+v %v", name, a, err)
		}
		// From now on it is a plain SCRAM login, with the server's proof.
		r = mustCLI(t, 0, dir, pw[name]+"\n", "login", server, "--user", name, "--password-stdin")
		if !strings.Contains(r.stdout, "the server proved it holds your verifier") {
			t.Fatalf("second login of %s: %+v", name, r)
		}
	}
	// A legacy user may also change the password first: that upgrades too.
	r = mustCLI(t, 0, dir, "Dave-pw1\nDave-New-pw2\n", "passwd", server, "--user", "dave", "--password-stdin")
	if !strings.Contains(r.stdout, `changed the password of "dave"`) || !strings.Contains(r.stdout, "the account now uses SCRAM-SHA-256") {
		t.Fatalf("passwd of a legacy user: %+v", r)
	}
	mustCLI(t, 0, dir, "Dave-New-pw2\n", "login", server, "--user", "dave", "--password-stdin")
	// Or delete the account.
	mustCLI(t, 0, dir, "Erin-pw1\n", "delete", server, "--user", "erin", "--password-stdin", "--yes")
	mustCLI(t, 1, dir, "Erin-pw1\n", "login", server, "--user", "erin", "--password-stdin")

	logs := srv.log.String()
	srv.stop(t)
	for _, u := range users {
		for _, secret := range []string{u.password, u.salt, pw[u.login]} {
			if strings.Contains(logs, secret) {
				t.Errorf("the server's log holds a secret of %s", u.login)
			}
		}
	}
	for _, name := range []string{"alice", "émile", "o'brien", "a,b", "dave"} {
		if k := dbKind(t, db, name); k != KindSCRAM {
			t.Errorf("%s is still %v in the db", name, k)
		}
	}
}

// TestImportRejectsBadLines: each bad line is named with its number and
// reason, and without --partial nothing at all is imported.
func TestImportRejectsBadLines(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, "")
	a, b, c := newLegacyUser(t, "alice", "Alice-pw1"), newLegacyUser(t, "bob", "Bob-pw1"), newLegacyUser(t, "carol", "Carol-pw1")
	body := legacyCSV([]legacyUser{a}) +
		"mallory," + b.password + "\n" + // 2: two columns
		legacyCSV([]legacyUser{b}) + // 3: ok
		"trent," + strings.Repeat("g", 64) + "," + b.salt + "\n" + // 4: not hex
		`"has space",` + c.password + "," + c.salt + "\n" + // 5: bad name
		legacyCSV([]legacyUser{{login: "alice", password: c.password, salt: c.salt}}) // 6: duplicate
	writeFile(t, filepath.Join(dir, "users.csv"), body)
	wantErr := "users.csv:2: \"mallory\": wrong column count: 2, want 3 (login,password,salt)\n" +
		"users.csv:4: \"trent\": password hash is not hex\n" +
		"users.csv:5: \"has space\": bad name: username is not valid under PRECIS UsernameCasePreserved (no spaces, no control or symbol characters)\n" +
		"users.csv:6: \"alice\": lines 1 and 6 name the same account \"alice\" once normalized, so none of them is imported\n"
	wantErr = "users.csv:1: \"alice\": lines 1 and 6 name the same account \"alice\" once normalized, so none of them is imported\n" + wantErr

	check := func(where string) {
		t.Helper()
		r := mustCLI(t, 2, dir, "", "users", "import", "--config", "auth.toml", "--format", "seed-csv", "users.csv")
		if r.stdout != "imported 0, skipped 0 (name exists), rejected 5\n" || r.stderr != wantErr+"authbox: error: nothing imported: 5 of 6 lines rejected\n"+
			"authbox: hint: fix the lines above and import again, or import the other lines with --partial\n" {
			t.Fatalf("%s: %+v", where, r)
		}
		if where == "offline" {
			if _, err := os.Stat(filepath.Join(dir, "authbox.db")); err == nil {
				t.Fatal("offline: an import that imported nothing created the db")
			}
			return
		}
		if r := mustCLI(t, 0, dir, "", "users", "list", "--config", "auth.toml"); r.stdout != "no accounts\n" {
			t.Fatalf("%s: half imported: %+v", where, r)
		}
	}
	check("offline")
	srv := startServe(t, dir, "--config", "auth.toml")
	check("online")

	r := mustCLI(t, 0, dir, "", "users", "import", "--config", "auth.toml", "--format", "seed-csv", "--partial", "users.csv")
	if r.stdout != "imported 1, skipped 0 (name exists), rejected 5\n" || !strings.HasPrefix(r.stderr, wantErr) ||
		!strings.Contains(r.stderr, `authbox: hint: legacy accounts can log in only while the server's mechanisms include "SEED-SHA256"`) {
		t.Fatalf("--partial: %+v", r)
	}
	r = mustCLI(t, 0, dir, "", "users", "import", "--config", "auth.toml", "--format", "seed-csv", "--partial", "users.csv")
	if r.stdout != "imported 0, skipped 1 (name exists), rejected 5\n" || !strings.Contains(r.stderr, "--replace overwrites them") {
		t.Fatalf("again: %+v", r)
	}
	r = mustCLI(t, 0, dir, "", "users", "list", "--config", "auth.toml")
	if strings.Contains(r.stdout, "alice") || !strings.Contains(r.stdout, "bob   legacy") || strings.Count(r.stdout, "\n") != 2 {
		t.Fatalf("after --partial: %s", r.stdout)
	}
	srv.stop(t)
}

// TestExportImportBetweenServers moves accounts from one running server
// to another as PostgreSQL verifiers; the passwords work on the second.
func TestExportImportBetweenServers(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	cfgA := writeConfig(t, dirA, seedConfig)
	cfgB := writeConfig(t, dirB, "")
	writeFile(t, filepath.Join(dirA, "legacy.csv"), legacyCSV([]legacyUser{newLegacyUser(t, "old", "Old-pw1")}))
	mustCLI(t, 0, dirA, "", "users", "import", "--format", "seed-csv", "legacy.csv")
	srvA := startServe(t, dirA, "--config", cfgA)
	srvB := startServe(t, dirB, "--config", cfgB)
	names := []string{"alice", "bob", "a,b", "Ünïcode"}
	for _, n := range names {
		mustCLI(t, 0, dirA, "Pass-"+n+"-1\n", "register", "--server", srvA.addr, "--user", n, "--password-stdin")
	}
	export := filepath.Join(dirA, "accounts.pg")
	r := mustCLI(t, 0, dirA, "", "users", "export", "--format", "pg", export)
	if r.stdout != fmt.Sprintf("exported 4 accounts to %s\nleft out 1 legacy account: it has no SCRAM verifier until its first login\n", export) {
		t.Fatalf("export: %+v", r)
	}
	body, _ := os.ReadFile(export)
	for _, secret := range []string{"Pass-"} {
		if strings.Contains(string(body), secret) {
			t.Fatal("the export holds a password")
		}
	}
	r = mustCLI(t, 0, dirB, "", "users", "import", "--format", "pg", export)
	if r.stdout != "imported 4, skipped 0 (name exists), rejected 0\n" {
		t.Fatalf("import on B: %+v", r)
	}
	for _, n := range names {
		r = mustCLI(t, 0, dirB, "Pass-"+n+"-1\n", "login", "--server", srvB.addr, "--user", n, "--password-stdin")
		if !strings.Contains(r.stdout, "the server proved it holds your verifier") {
			t.Fatalf("%s on B: %+v", n, r)
		}
	}
	mustCLI(t, 1, dirB, "Wrong-pw-1\n", "login", "--server", srvB.addr, "--user", "alice", "--password-stdin")
	mustCLI(t, 1, dirB, "Old-pw1\n", "login", "--server", srvB.addr, "--user", "old", "--password-stdin")
	if !srvB.waitLog(t, "msg=admin op=import") || !srvA.waitLog(t, "msg=admin op=export") {
		t.Fatal("export or import did not go through the running servers")
	}
}

// TestImportRFC7677Verifier: the RFC's user/pencil, as PostgreSQL would
// hold it, imported and logged into with the real client.
func TestImportRFC7677Verifier(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	srv := startServe(t, dir, "--config", cfg)
	writeFile(t, filepath.Join(dir, "pg.txt"), "user,"+rfcPGVerifier+"\n")
	r := mustCLI(t, 0, dir, "", "users", "import", "--format", "pg", "pg.txt")
	if r.stdout != "imported 1, skipped 0 (name exists), rejected 0\n" {
		t.Fatalf("import: %+v", r)
	}
	r = mustCLI(t, 0, dir, "pencil\n", "login", "--server", srv.addr, "--user", "user", "--password-stdin")
	if !strings.Contains(r.stdout, `logged in as "user"`) || !strings.Contains(r.stdout, "the server proved it holds your verifier") {
		t.Fatalf("login: %+v", r)
	}
	mustCLI(t, 1, dir, "pen\n", "login", "--server", srv.addr, "--user", "user", "--password-stdin")
}

func TestLockUnlock(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, seedConfig)
	writeFile(t, filepath.Join(dir, "legacy.csv"), legacyCSV([]legacyUser{newLegacyUser(t, "old", "Old-pw1")}))
	writeFile(t, filepath.Join(dir, "pg.txt"), "alice,"+rfcPGVerifier+"\n")
	mustCLI(t, 0, dir, "", "users", "import", "--format", "seed-csv", "legacy.csv")
	mustCLI(t, 0, dir, "", "users", "import", "--format", "pg", "pg.txt")
	// Locked with no server running; the server then refuses the login.
	mustCLI(t, 0, dir, "", "users", "lock", "alice")
	mustCLI(t, 0, dir, "", "users", "lock", "old")
	srv := startServe(t, dir, "--config", cfg)
	login := func(code int, name, pw string) result {
		return mustCLI(t, code, dir, pw+"\n", "login", "--server", srv.addr, "--user", name, "--password-stdin")
	}
	if r := login(1, "alice", "pencil"); !strings.Contains(r.stderr, `account "alice" is locked`) {
		t.Fatalf("locked: %+v", r)
	}
	if r := login(1, "alice", "wrong"); !strings.Contains(r.stderr, "login failed: wrong username or password") {
		t.Fatalf("locked, wrong password: %+v", r)
	}
	// A locked legacy account is refused too, and not upgraded.
	if r := login(1, "old", "Old-pw1"); !strings.Contains(r.stderr, `account "old" is locked`) {
		t.Fatalf("locked legacy: %+v", r)
	}
	if r := mustCLI(t, 0, dir, "", "users", "show", "old"); !strings.Contains(r.stdout, "kind        legacy") || !strings.Contains(r.stdout, "locked      yes") {
		t.Fatalf("locked legacy account changed: %s", r.stdout)
	}
	// Unlocked through the running server.
	mustCLI(t, 0, dir, "", "users", "unlock", "alice")
	login(0, "alice", "pencil")
	mustCLI(t, 0, dir, "", "users", "lock", "alice")
	login(1, "alice", "pencil")
	// passwd keeps the flag.
	mustCLI(t, 0, dir, "", "users", "unlock", "old")
	login(0, "old", "Old-pw1")
	if r := mustCLI(t, 0, dir, "", "users", "show", "old"); !strings.Contains(r.stdout, "kind        scram") || !strings.Contains(r.stdout, "locked      no") {
		t.Fatalf("after upgrade: %s", r.stdout)
	}
}

// TestBackupUnderLoad takes a backup through the running server while
// clients log in and register, and checks that logins went on while the
// backup was under way, then serves the backup. The backup is run by the
// admin client in this process, with an output file that holds its first
// write until enough logins have ended: the db is a few MB, far more than
// the socket buffers hold, so the server is inside its backup all along.
func TestBackupUnderLoad(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	db := filepath.Join(dir, "authbox.db")
	store, err := OpenStore(db)
	if err != nil {
		t.Fatal(err)
	}
	const populated = 40000
	if _, _, err := populate(store, populated, testIterations, testBenchPassword, func(int) {}); err != nil {
		t.Fatal(err)
	}
	store.Close()
	fi, err := os.Stat(db)
	if err != nil || fi.Size() < 4<<20 {
		t.Fatalf("the db is %v bytes, want a few MB: %v", fi.Size(), err)
	}
	srv := startServe(t, dir, "--config", cfg)
	const pw = "Load-pw-1"

	var mu sync.Mutex
	var registered []string
	var logins, regs atomic.Int64
	tick := make(chan struct{}, 1) // some operation ended
	failed := make(chan struct{})  // some worker failed
	var failOnce sync.Once
	stop := make(chan struct{})
	var wg sync.WaitGroup
	worker := func(op func(i int) error, n *atomic.Int64) {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := op(i); err != nil {
				t.Errorf("under load: %v", err)
				failOnce.Do(func() { close(failed) })
				return
			}
			n.Add(1)
			select {
			case tick <- struct{}{}:
			default:
			}
		}
	}
	for g := range 2 {
		wg.Add(2)
		go worker(func(i int) error {
			return login(t, srv.addr, fmt.Sprintf("bench%d", (g*7919+i*104729)%populated), testBenchPassword)
		}, &logins)
		go worker(func(i int) error {
			name := fmt.Sprintf("load%d-%d", g, i)
			c, err := testDial(t, srv.addr)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.Register(name, pw); err != nil {
				return err
			}
			mu.Lock()
			registered = append(registered, name)
			mu.Unlock()
			return nil
		}, &regs)
	}
	stopped := false
	stopLoad := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	t.Cleanup(stopLoad)
	// waitFor waits until n reaches target, or a worker fails.
	deadline := time.After(2 * time.Minute)
	waitFor := func(n *atomic.Int64, target int64, what string) {
		t.Helper()
		for n.Load() < target {
			select {
			case <-tick:
			case <-failed:
				t.Fatalf("a worker failed %s", what)
			case <-deadline:
				t.Fatalf("%d of %d operations %s", n.Load(), target, what)
			}
		}
	}
	waitFor(&logins, 20, "before the backup")
	waitFor(&regs, 5, "before the backup")
	mu.Lock()
	before := append([]string(nil), registered...)
	mu.Unlock()

	f, err := os.OpenFile(filepath.Join(dir, "backup.db"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hold := &holdingWriter{w: f, started: make(chan struct{}), resume: make(chan struct{})}
	t.Cleanup(hold.release)
	var stdout bytes.Buffer
	ac := &adminClient{db: db, out: adminOut{Stdout: &stdout, Stderr: io.Discard, File: hold}}
	backup := make(chan error, 1)
	go func() { backup <- ac.run(adminRequest{Op: opBackup, File: "backup.db"}, nil, false) }()
	select {
	case <-hold.started:
	case err := <-backup:
		t.Fatalf("the backup ended before it wrote: %v", err)
	case <-deadline:
		t.Fatal("the backup wrote nothing")
	}
	// The server is inside its backup, which cannot end until the file
	// takes its first write: the logins from here on happen during it.
	waitFor(&logins, logins.Load()+20, "during the backup")
	hold.release()
	select {
	case err = <-backup:
	case <-deadline:
		t.Fatal("the backup did not end")
	}
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	waitFor(&logins, logins.Load()+20, "after the backup")
	stopLoad()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	written, _ := f.Seek(0, io.SeekCurrent)
	if want := fmt.Sprintf("wrote a backup of %d bytes to backup.db", written); !strings.HasPrefix(stdout.String(), want) || written < 4<<20 {
		t.Fatalf("backup printed %q, want %q (and a few MB)", stdout.String(), want)
	}
	if !srv.waitLog(t, "msg=admin op=backup") {
		t.Fatal("the backup did not go through the server")
	}

	restored := startServe(t, dir, "--config", cfg, "--db", "backup.db")
	for _, name := range append(before, "bench0", fmt.Sprint("bench", populated-1)) {
		p := pw
		if strings.HasPrefix(name, "bench") {
			p = testBenchPassword
		}
		if err := login(t, restored.addr, name, p); err != nil {
			t.Errorf("%s on the restored server: %v", name, err)
		}
	}
	// Every account in the backup is whole, including those registered
	// while it was taken.
	r := mustCLI(t, 0, dir, "", "users", "list", "--json", "--db", "backup.db")
	var list []AccountInfo
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) < populated+len(before) {
		t.Fatalf("%d accounts in the backup, want at least %d: %v", len(list), populated+len(before), err)
	}
	for _, a := range list {
		if strings.HasPrefix(a.Name, "load") {
			if err := login(t, restored.addr, a.Name, pw); err != nil {
				t.Errorf("%s from the backup: %v", a.Name, err)
			}
		}
	}
}

// holdingWriter holds its first write until release: it shows when a
// backup has started, and keeps it under way.
type holdingWriter struct {
	w       io.Writer
	first   sync.Once
	started chan struct{}
	once    sync.Once
	resume  chan struct{}
}

func (h *holdingWriter) Write(p []byte) (int, error) {
	h.first.Do(func() { close(h.started); <-h.resume })
	return h.w.Write(p)
}

func (h *holdingWriter) release() { h.once.Do(func() { close(h.resume) }) }

func TestPasswdAndDeleteCLI(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	srv := startServe(t, dir, "--config", cfg)
	server := "--server=" + srv.addr
	do := func(code int, stdin string, args ...string) result {
		return mustCLI(t, code, dir, stdin, append(args, server, "--user", "alice", "--password-stdin")...)
	}
	do(0, "Old-pass1\n", "register")

	r := do(0, "Old-pass1\nNew-pass2\n", "passwd")
	if r.stdout != fmt.Sprintf("changed the password of \"alice\" on %s\n", srv.addr) {
		t.Fatalf("passwd: %+v", r)
	}
	do(1, "Old-pass1\n", "login")
	do(0, "New-pass2\n", "login")
	if r := do(1, "Old-pass1\nOther-pass3\n", "passwd"); !strings.Contains(r.stderr, "wrong username or password") {
		t.Fatalf("passwd with a wrong current password: %+v", r)
	}
	if r := do(2, "New-pass2\nweak\n", "passwd"); !strings.Contains(r.stderr, "the password is too weak") || strings.Contains(r.stderr, "weak\n") {
		t.Fatalf("passwd to a weak password: %+v", r)
	}
	if r := do(2, "New-pass2\n", "passwd"); !strings.Contains(r.stderr, "--password-stdin: no new password on line 2 of standard input") {
		t.Fatalf("passwd with one line: %+v", r)
	}
	do(0, "New-pass2\n", "login") // none of the failures changed it

	// No terminal to confirm on, and no --yes: nothing happens. In a
	// child, which has no terminal to open.
	if r := mustExit(t, 2, []string{"delete"}, runCLI(t, dir, "New-pass2\n", nil, "delete", server, "--user", "alice", "--password-stdin")); !strings.Contains(r.stderr, "cannot ask for a confirmation") || !strings.Contains(r.stderr, "--yes") {
		t.Fatalf("delete without --yes: %+v", r)
	}
	do(1, "Wrong-pass9\n", "delete", "--yes")
	do(0, "New-pass2\n", "login")
	r = do(0, "New-pass2\n", "delete", "--yes")
	if r.stdout != fmt.Sprintf("deleted the account \"alice\" on %s\n", srv.addr) {
		t.Fatalf("delete: %+v", r)
	}
	do(1, "New-pass2\n", "login")
	if r := mustCLI(t, 0, dir, "", "users", "list"); r.stdout != "no accounts\n" {
		t.Fatalf("after delete: %s", r.stdout)
	}
	// The name is free again.
	do(0, "Third-pass3\n", "register")
}

func TestPwCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	r := mustCLI(t, 0, dir, "Provision-pw1\n", "pw", "--config", cfg, "--password-stdin")
	v := strings.TrimSuffix(r.stdout, "\n")
	rec, err := ParsePGVerifier(v)
	if err != nil || rec.Iterations != testIterations || len(rec.Salt) != SaltLen {
		t.Fatalf("pw printed %q: %+v %v", r.stdout, rec, err)
	}
	if stored, _, _ := Verifier("", "Provision-pw1", rec.Salt, rec.Iterations); EncodeB64(stored) != EncodeB64(rec.StoredKey) {
		t.Fatal("the verifier does not match the password")
	}
	if r2 := mustCLI(t, 0, dir, "Provision-pw1\n", "pw", "--config", cfg, "--password-stdin"); r2.stdout == r.stdout {
		t.Fatal("two verifiers of one password share a salt")
	}
	if r := mustCLI(t, 0, dir, "Provision-pw1\n", "pw", "--iterations", "5000", "--password-stdin"); !strings.HasPrefix(r.stdout, "SCRAM-SHA-256$5000:") {
		t.Fatalf("--iterations: %+v", r)
	}
	mustCLI(t, 2, dir, "Provision-pw1\n", "pw", "--iterations", "100", "--password-stdin")
	mustCLI(t, 2, dir, "weak\n", "pw", "--config", cfg, "--password-stdin")
	mustExit(t, 2, []string{"pw"}, runCLI(t, dir, "", nil, "pw", "--config", cfg)) // no terminal: a child, which has none
	// What it prints provisions an account.
	writeFile(t, filepath.Join(dir, "new.pg"), "carl,"+v+"\n")
	mustCLI(t, 0, dir, "", "users", "import", "--format", "pg", "new.pg")
	srv := startServe(t, dir, "--config", cfg)
	mustCLI(t, 0, dir, "Provision-pw1\n", "login", "--server", srv.addr, "--user", "carl", "--password-stdin")
}

func TestAdminSocketLifecycle(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	db := filepath.Join(dir, "authbox.db")
	sock := db + ".sock"
	if r := mustCLI(t, 2, dir, "", "users", "list"); !strings.Contains(r.stderr, "no database at authbox.db") {
		t.Fatalf("no db: %+v", r)
	}
	if _, err := os.Stat(db); err == nil {
		t.Fatal("users list created a db")
	}

	srv := startServe(t, dir, "--config", cfg)
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v %v", fi, err)
	}
	srv.stop(t)
	if _, err := os.Lstat(sock); err == nil {
		t.Fatal("the admin socket is still there after a clean stop")
	}

	// A server that died leaves its socket: nobody answers on it, so the
	// commands open the db, and the next server replaces it.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	mustCLI(t, 0, dir, "", "users", "list")
	srv = startServe(t, dir, "--config", cfg)
	if !srv.waitLog(t, "removed a stale admin socket") {
		t.Fatalf("stale socket not replaced:\n%s", srv.log)
	}
	mustCLI(t, 0, dir, "", "users", "list")
	if !srv.waitLog(t, "msg=admin op=list") {
		t.Fatal("users list did not use the new socket")
	}
	srv.stop(t)

	// Something else holds the db and answers on no socket.
	s, err := OpenStore(db)
	if err != nil {
		t.Fatal(err)
	}
	r := mustCLI(t, 2, dir, "", "users", "list")
	s.Close()
	if !strings.Contains(r.stderr, "database authbox.db is locked by another process, and no authbox server answers on its admin socket authbox.db.sock") {
		t.Fatalf("locked db: %+v", r)
	}

	// A file that is not a socket is not removed: the server refuses.
	writeFile(t, sock, "mine")
	r = cliInProcess(t, dir, "", "serve", "--config", cfg, "--listen", "127.0.0.1:0")
	if r.code != 2 || !strings.Contains(r.stderr, "authbox.db.sock exists and is not a socket") {
		t.Fatalf("serve over a regular file: %+v", r)
	}
	if b, _ := os.ReadFile(sock); string(b) != "mine" {
		t.Fatal("the file was touched")
	}
}

// TestImportCutOffImportsNothing is an import through a running server
// whose client dies half way through its input (kill -9 while it reads a
// FIFO): the server must not take the half it got for the whole file.
func TestImportCutOffImportsNothing(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	srv := startServe(t, dir, "--config", cfg)
	fifo := filepath.Join(dir, "in.pg")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	client := command(t, dir, nil, "users", "import", "--format", "pg", "in.pg")
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Process.Kill(); client.Wait() })
	// Opened read-write, the FIFO never blocks the open; the writes block
	// once the pipe is full until the client reads, so when they return
	// the client has read all but the last pipe-full and sent it on.
	f, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.SetWriteDeadline(time.Now().Add(30 * time.Second)) // a client that never reads fails the test
	var body strings.Builder
	for i := range 4000 {
		fmt.Fprintf(&body, "user%d,%s\n", i, rfcPGVerifier)
	}
	if _, err := io.WriteString(f, body.String()); err != nil {
		t.Fatalf("writing to the client: %v", err)
	}
	client.Process.Signal(syscall.SIGKILL)
	client.Wait()
	if !srv.waitLog(t, "the upload was cut off") {
		t.Errorf("the server did not see the upload cut off:\n%s", srv.log)
	}
	if r := mustCLI(t, 0, dir, "", "users", "list"); r.stdout != "no accounts\n" {
		t.Fatalf("a cut-off upload was imported:\n%s", r.stdout)
	}
}

// TestOfflineCommandsCreateNoDB: with no server, only an import that
// imports something makes a db, and an empty file is no db.
func TestOfflineCommandsCreateNoDB(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, "")
	empty := writeFile(t, filepath.Join(dir, "empty.db"), "")
	for _, args := range [][]string{{"users", "list", "--config", "auth.toml", "--db", "empty.db"},
		{"users", "show", "--config", "auth.toml", "--db", "empty.db", "alice"}, {"backup", "--config", "auth.toml", "--db", "empty.db", "copy.db"}} {
		r := mustCLI(t, 2, dir, "", args...)
		if !strings.Contains(r.stderr, "authbox: error: empty.db is an empty file, not an authbox database\n") {
			t.Errorf("%v: %+v", args, r)
		}
	}
	if fi, err := os.Stat(empty); err != nil || fi.Size() != 0 {
		t.Fatalf("the empty file was made a db: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "copy.db")); err == nil {
		t.Error("a failed backup left its file")
	}

	writeFile(t, filepath.Join(dir, "bad.pg"), "pg_monitor,\nold,md5a3556571e93b0d20722ba62be61e8c2d\n")
	os.Mkdir(filepath.Join(dir, "adir"), 0o700)
	for _, tc := range []struct {
		code int
		args []string
		want string
	}{
		{2, []string{"bad.pg"}, "nothing imported: 2 of 2 lines rejected"},
		{0, []string{"--partial", "bad.pg"}, "imported 0, skipped 0 (name exists), rejected 2"},
		{2, []string{"adir"}, "reading adir: is a directory"},
	} {
		r := mustCLI(t, tc.code, dir, "", append([]string{"users", "import", "--config", "auth.toml", "--format", "pg"}, tc.args...)...)
		if !strings.Contains(r.stdout+r.stderr, tc.want) {
			t.Errorf("%v: %+v", tc.args, r)
		}
		if _, err := os.Stat(filepath.Join(dir, "authbox.db")); err == nil {
			t.Fatalf("%v created the db", tc.args)
		}
	}
	// An import into an empty file may make it a db: that is its job.
	writeFile(t, filepath.Join(dir, "one.pg"), "user,"+rfcPGVerifier+"\n")
	mustCLI(t, 0, dir, "", "users", "import", "--config", "auth.toml", "--db", "empty.db", "--format", "pg", "one.pg")
	if r := mustCLI(t, 0, dir, "", "users", "list", "--config", "auth.toml", "--db", "empty.db"); !strings.Contains(r.stdout, "user  scram") {
		t.Fatalf("after the import: %+v", r)
	}
}

// TestImportWrongFormat imports each format under the other --format:
// every line is rejected, and the import says which format the file looks
// like instead of listing each line and suggesting --partial.
func TestImportWrongFormat(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, seedConfig)
	writeFile(t, filepath.Join(dir, "users.csv"), legacyCSV([]legacyUser{newLegacyUser(t, "alice", "Alice-pw1"), newLegacyUser(t, "bob", "Bob-pw1")}))
	writeFile(t, filepath.Join(dir, "rfc.pg"), "user,"+rfcPGVerifier+"\n")
	for _, tc := range []struct{ file, format, other string }{
		{"users.csv", "pg", "seed-csv"},
		{"rfc.pg", "seed-csv", "pg"},
	} {
		for _, partial := range [][]string{nil, {"--partial"}} {
			args := append([]string{"users", "import", "--config", "auth.toml", "--db", "new.db", "--format", tc.format}, append(partial, tc.file)...)
			r := mustCLI(t, 2, dir, "", args...)
			want := "authbox: error: nothing imported: no line of " + tc.file + " is in the " + tc.format + " format, and the file looks like " + tc.other +
				"\nauthbox: hint: run the import again with --format " + tc.other + "\n"
			if r.stderr != want {
				t.Errorf("%v: stderr\n%s\nwant\n%s", args, r.stderr, want)
			}
		}
	}
	// A file of the right format with a bad line is no wrong format.
	writeFile(t, filepath.Join(dir, "bad.pg"), "user,SCRAM-SHA-256$broken\n")
	if r := mustCLI(t, 2, dir, "", "users", "import", "--config", "auth.toml", "--db", "new.db", "--format", "pg", "bad.pg"); !strings.Contains(r.stderr, "or import the other lines with --partial") {
		t.Errorf("a bad line: %+v", r)
	}
}

// TestImportNotesOddIterations: imported verifiers whose iteration count is
// not the config's can be told from unknown names; the import says so,
// online and offline alike.
func TestImportNotesOddIterations(t *testing.T) {
	dir := t.TempDir()
	same := writeConfig(t, dir, "") // iterations = 4096, as the RFC verifier
	other := writeFile(t, filepath.Join(dir, "other.toml"), "iterations = 8192\n")
	writeFile(t, filepath.Join(dir, "a.pg"), "a,"+rfcPGVerifier+"\nb,"+rfcPGVerifier+"\n")
	writeFile(t, filepath.Join(dir, "c.pg"), "c,"+rfcPGVerifier+"\n")
	// The note explains itself: a user with only the binary has no README.
	const note = "authbox: note: 2 accounts in the file have an iteration count other than the config's iterations (8192); a login shows the account's count, and an unknown name is shown 8192, so anyone can tell them from unknown names (and a lower count is cheaper to attack offline) until their users change their passwords, which gives the config's count\n"
	r := mustCLI(t, 0, dir, "", "users", "import", "--config", other, "--format", "pg", "a.pg")
	if !strings.Contains(r.stderr, note) || strings.Contains(r.stderr, "README") {
		t.Fatalf("offline, other count: %+v", r)
	}
	srv := startServe(t, dir, "--config", same)
	r = mustCLI(t, 0, dir, "", "users", "import", "--config", other, "--format", "pg", "--replace", "a.pg")
	if !strings.Contains(r.stderr, note) {
		t.Fatalf("online, other count: %+v", r)
	}
	if r := mustCLI(t, 0, dir, "", "users", "import", "--config", same, "--format", "pg", "c.pg"); strings.Contains(r.stderr, "note") {
		t.Fatalf("same count: %+v", r)
	}
	srv.stop(t)
}

// TestImportNameClash: "ｆrank" (fullwidth f) and "frank" are one account;
// an import that holds both cannot know whose password is the real one, so
// it imports neither and names both lines, with --partial too. A line that
// is rejected for another reason still claims its name.
func TestImportNameClash(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, "")
	mallory, frank, gina := newLegacyUser(t, "ｆrank", "Mallory-pw1"), newLegacyUser(t, "frank", "Frank-pw1"), newLegacyUser(t, "gina", "Gina-pw1")
	ivan := newLegacyUser(t, "ivan", "Ivan-pw1")
	body := legacyCSV([]legacyUser{mallory, gina, frank}) + // 1-3
		"ivan," + strings.Repeat("g", 64) + "," + ivan.salt + "\n" + // 4: not hex, still claims ivan
		legacyCSV([]legacyUser{{login: "IVAN", password: ivan.password, salt: ivan.salt}, ivan}) // 5-6: IVAN is not ivan (case kept); 6 clashes with 4
	writeFile(t, filepath.Join(dir, "users.csv"), body)
	clash := "users.csv:1: \"ｆrank\": lines 1 and 3 name the same account \"frank\" once normalized, so none of them is imported\n" +
		"users.csv:3: \"frank\": lines 1 and 3 name the same account \"frank\" once normalized, so none of them is imported\n" +
		"users.csv:4: \"ivan\": password hash is not hex\n" +
		"users.csv:6: \"ivan\": lines 4 and 6 name the same account \"ivan\" once normalized, so none of them is imported\n"

	r := mustCLI(t, 2, dir, "", "users", "import", "--format", "seed-csv", "users.csv")
	if r.stdout != "imported 0, skipped 0 (name exists), rejected 4\n" || !strings.HasPrefix(r.stderr, clash+"authbox: error: nothing imported: 4 of 6 lines rejected\n") {
		t.Fatalf("without --partial: %+v", r)
	}
	r = mustCLI(t, 0, dir, "", "users", "import", "--format", "seed-csv", "--partial", "users.csv")
	if r.stdout != "imported 2, skipped 0 (name exists), rejected 4\n" || !strings.HasPrefix(r.stderr, clash) {
		t.Fatalf("--partial: %+v", r)
	}
	r = mustCLI(t, 0, dir, "", "users", "list")
	if !strings.Contains(r.stdout, "gina") || !strings.Contains(r.stdout, "IVAN") || strings.Contains(r.stdout, "frank") || strings.Contains(r.stdout, "ivan ") {
		t.Fatalf("after --partial: %s", r.stdout)
	}
}

// TestUsersPasswd: an administrator sets a password, through the running
// server and on the file; the account keeps its created time and its lock
// state, the old password stops working, the new one works, and a session
// logged in before the change is ended, as after a user's PASSWD.
func TestUsersPasswd(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	srv := serveInProcess(t, dir, "--config", cfg)
	mustRegister(t, srv.addr, "alice", "Alice-pw-1")
	created := func() string {
		t.Helper()
		var a AccountInfo
		if err := json.Unmarshal([]byte(mustCLI(t, 0, dir, "", "users", "show", "--json", "--config", cfg, "alice").stdout), &a); err != nil {
			t.Fatal(err)
		}
		return timeText(a.Created)
	}
	before := created()
	session, err := testDial(t, srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	if err := session.Login("alice", "Alice-pw-1"); err != nil {
		t.Fatal(err)
	}

	r := mustCLI(t, 0, dir, "Alice-pw-2\n", "users", "passwd", "--password-stdin", "--config", cfg, "alice")
	if r.stdout != "changed the password of account \"alice\"; its sessions were ended\n" {
		t.Errorf("users passwd: %+v", r)
	}
	if _, err := session.Whoami(); code(err) != CodeAuth {
		t.Errorf("the session from before the change: WHOAMI %v, want ERR AUTH", err)
	}
	if err := login(t, srv.addr, "alice", "Alice-pw-1"); code(err) != CodeAuth {
		t.Errorf("the old password: %v", err)
	}
	if err := login(t, srv.addr, "alice", "Alice-pw-2"); err != nil {
		t.Errorf("the new password: %v", err)
	}
	if got := created(); got != before {
		t.Errorf("created changed from %s to %s", before, got)
	}
	if !srv.log.waitFor(t, "msg=admin op=passwd user=alice") || strings.Contains(srv.log.String(), "Alice-pw-2") {
		t.Errorf("server log:\n%s", srv.log)
	}
	// An unknown name is refused before any password is asked for.
	if r := mustCLI(t, exitRefused, dir, "", "users", "passwd", "--config", cfg, "nobody"); !strings.Contains(r.stderr, `no account named "nobody"`) {
		t.Errorf("unknown name: %+v", r)
	}

	// Offline, on the file, the same; a locked account stays locked.
	srv.stop(t)
	mustCLI(t, 0, dir, "", "users", "lock", "--config", cfg, "alice")
	mustCLI(t, 0, dir, "Alice-pw-3\n", "users", "passwd", "--password-stdin", "--config", cfg, "alice")
	store, err := OpenStore(filepath.Join(dir, "authbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := store.Get("alice")
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	stored, _, _ := Verifier("alice", "Alice-pw-3", rec.Salt, rec.Iterations)
	if !bytes.Equal(stored, rec.StoredKey) || !rec.Locked || timeText(rec.Created) != before || rec.Iterations != testIterations {
		t.Errorf("offline passwd: %+v", rec)
	}
}

// TestUsersUnthrottle: a throttled login goes ahead, without a restart,
// once the administrator clears its name, its address, or everything; a
// name other than the throttled one clears nothing.
func TestUsersUnthrottle(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "user_failures = 2\nuser_failure_refill = \"1h\"\nsource_failures = 1000\n")
	srv := serveInProcess(t, dir, "--config", cfg)
	mustRegister(t, srv.addr, "alice", "Alice-pw-1")
	throttled := func() {
		t.Helper()
		for i := 0; ; i++ {
			err := login(t, srv.addr, "alice", "wrong-password")
			if code(err) == CodeLimit {
				break
			}
			if code(err) != CodeAuth || i > 5 {
				t.Fatalf("wrong password: %v", err)
			}
		}
		if err := login(t, srv.addr, "alice", "Alice-pw-1"); code(err) != CodeLimit {
			t.Fatalf("throttled, the right password: %v, want ERR LIMIT", err)
		}
	}
	throttled()
	if r := mustCLI(t, 0, dir, "", "users", "unthrottle", "--config", cfg, "bob"); r.stdout != "nothing to clear: no failed logins on record for \"bob\"\n" {
		t.Errorf("unthrottle bob: %+v", r)
	}
	if err := login(t, srv.addr, "alice", "Alice-pw-1"); code(err) != CodeLimit {
		t.Fatalf("after clearing another name: %v, want ERR LIMIT", err)
	}
	for _, target := range [][]string{{"alice"}, {"127.0.0.1"}, {}} {
		args := append([]string{"users", "unthrottle", "--config", cfg}, target...)
		if r := mustCLI(t, 0, dir, "", args...); !strings.HasPrefix(r.stdout, "cleared the failed logins on record for ") {
			t.Errorf("%v: %+v", args, r)
		}
		if err := login(t, srv.addr, "alice", "Alice-pw-1"); err != nil {
			t.Fatalf("after unthrottle %v: %v", target, err)
		}
		throttled()
	}
	if r := mustCLI(t, exitRefused, dir, "", "users", "unthrottle", "--config", cfg, "has space"); !strings.Contains(r.stderr, "neither an IP address nor a valid username") {
		t.Errorf("unthrottle of a bad name: %+v", r)
	}
	// Offline there is no throttle: it lives in the server's memory.
	srv.stop(t)
	if r := mustCLI(t, 0, dir, "", "users", "unthrottle", "--config", cfg); !strings.Contains(r.stdout, "no server is running on this db, so nothing is throttled") {
		t.Errorf("offline unthrottle: %+v", r)
	}
}

// waitFor waits until the log holds s, or a deadline passes.
func (l *logWatch) waitFor(t testing.TB, s string) bool {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !strings.Contains(l.String(), s) {
		select {
		case <-l.wrote:
		case <-deadline:
			return false
		}
	}
	return true
}

// TestUsersPasswdAtTerminal: at a terminal the new password is asked
// twice, without echo, and then set.
func TestUsersPasswdAtTerminal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	mustCLI(t, 0, dir, "user,"+rfcPGVerifier+"\n", "users", "import", "--format", "pg", "--config", cfg, "-")
	p := startPTY(t, dir, "users", "passwd", "--config", cfg, "user")
	p.expect("new password: ")
	p.typeLine("Typed-pass-1")
	p.expect("new password (again): ")
	p.typeLine("Typed-pass-1")
	code, out := p.wait()
	if code != 0 || !strings.Contains(out, `changed the password of account "user"`) || strings.Contains(out, "Typed-pass-1") {
		t.Fatalf("exit %d; the terminal shows:\n%s", code, out)
	}
	store, err := OpenStore(filepath.Join(dir, "authbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rec, err := store.Get("user")
	if err != nil {
		t.Fatal(err)
	}
	if stored, _, _ := Verifier("user", "Typed-pass-1", rec.Salt, rec.Iterations); !bytes.Equal(stored, rec.StoredKey) {
		t.Error("the typed password is not the account's")
	}
}
