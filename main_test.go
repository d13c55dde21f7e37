package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCLIHints checks the error and the hint of each kind of usage
// mistake: the hint names the whole command path, "users list" and not
// "list".
func TestCLIHints(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args      []string
		msg, hint string
	}{
		{[]string{"users", "list", "extra"}, `unexpected argument "extra"`, `run "authbox users list --help" for usage`},
		{[]string{"users", "list", "--bogus"}, "unknown flag --bogus", `run "authbox users list --help" for usage`},
		{[]string{"users", "show"}, "missing NAME", `run "authbox users show --help" for usage`},
		{[]string{"users", "show", "a", "--json"}, `unexpected argument "--json" after NAME`, `flags go before NAME; run "authbox users show --help" for usage`},
		{[]string{"users"}, "users needs a command: list, show, delete, lock, unlock, passwd, unthrottle, import or export", `run "authbox users --help" for its commands`},
		{[]string{"users", "nope"}, `unknown command "users nope"`, `run "authbox users --help" for its commands`},
		{[]string{"backup"}, "missing FILE", `run "authbox backup --help" for usage`},
		{[]string{"bench", "populate", "x"}, `unexpected argument "x"`, `run "authbox bench populate --help" for usage`},
		{[]string{"bench", "populate", "--db", "unused.db", "--users", "0"}, "--users must be 1 to 100000000, got 0", `run "authbox bench populate --help" for usage`},
		{[]string{"bench", "--conc", "0"}, "--conc must be at least 1", `run "authbox bench --help" for usage`},
		{[]string{"bench", "--bogus"}, "unknown flag --bogus", `run "authbox bench --help" for usage`},
		{[]string{"login", "extra"}, `unexpected argument "extra"`, `run "authbox login --help" for usage`},
		{[]string{"register", "--bogus"}, "unknown flag --bogus", `run "authbox register --help" for usage`},
		{[]string{"serve", "--listen"}, "flag needs an argument: -listen", `run "authbox serve --help" for usage`},
		{[]string{"pw", "x"}, `unexpected argument "x"`, `run "authbox pw --help" for usage`},
		{[]string{"nope"}, `unknown command "nope"`, `run "authbox --help" for the commands`},
		{[]string{"--bogus"}, "unknown flag --bogus", `run "authbox --help" for usage`},
		{nil, "no command given", `run "authbox COMMAND --help" for a command's flags`},
		{[]string{"bench", "--duration", "5"}, `--duration "5" is not a duration: use a unit, e.g. 5s (also ms, m, h)`, `run "authbox bench --help" for usage`},
		{[]string{"bench", "--conc", "many"}, `--conc "many" is not a whole number`, `run "authbox bench --help" for usage`},
	} {
		r := runCLI(t, dir, "", nil, tc.args...)
		if want := "authbox: error: " + tc.msg + "\nauthbox: hint: " + tc.hint + "\n"; r.code != 2 || !strings.HasSuffix(r.stderr, want) || r.stdout != "" {
			t.Errorf("authbox %s: exit %d\n%s\nwant exit 2 and\n%s", strings.Join(tc.args, " "), r.code, r.stderr, want)
		}
	}
}

// TestCLIFileMessages checks the messages for files that cannot be used:
// each names the file once and says what it is, with a hint that fits.
func TestCLIFileMessages(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return name
	}
	sqlite := write("users.db", sqliteMagic+strings.Repeat("\x00", 8192))
	junk := write("junk.db", strings.Repeat("not a db ", 1000))
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	write("empty.pem", "no certificates here\n")
	for _, tc := range []struct {
		args      []string
		msg, hint string
	}{
		{[]string{"users", "list", "--db", sqlite}, "users.db is an SQLite database, not an authbox database (a bbolt file)", `give the authbox db (made by "authbox serve" or "users import"); to bring in the accounts of the original system, export them with sqlite3 -csv users.db`},
		{[]string{"serve", "--listen", "127.0.0.1:0", "--db", sqlite}, "users.db is an SQLite database, not an authbox database (a bbolt file)", "give the authbox db"},
		{[]string{"bench", "populate", "--db", sqlite, "--iterations", "4096", "--users", "1"}, "users.db is an SQLite database, not an authbox database (a bbolt file)", "give the authbox db"},
		{[]string{"users", "list", "--db", junk}, "junk.db is not an authbox database (not a bbolt file)", "check the path given to --db or db in the config"},
		{[]string{"users", "list", "--db", "adir"}, "cannot open the database adir: it is a directory", "give the path of a file"},
		{[]string{"users", "import", "--db", "new.db", "--format", "pg", "missing.txt"}, "cannot read missing.txt: no such file or directory", ""},
		{[]string{"login", "--user", "a", "--ca", "missing.pem"}, "cannot read the CA certificates in missing.pem: no such file or directory", "give a PEM file"},
		{[]string{"login", "--user", "a", "--ca", "empty.pem"}, "empty.pem holds no PEM certificate", "give a PEM file"},
	} {
		r := runCLI(t, dir, "", nil, tc.args...)
		want := "authbox: error: " + tc.msg
		if tc.hint != "" {
			want = "authbox: error: " + tc.msg + "\nauthbox: hint: " + tc.hint
		}
		if r.code != 2 || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "permissions") {
			t.Errorf("authbox %s: exit %d\n%s\nwant exit 2 and\n%s", strings.Join(tc.args, " "), r.code, r.stderr, want)
		}
	}
	// No test process can be refused a file when it runs as root, so the
	// permission case is checked on the error OpenStore returns.
	err := fmt.Errorf("open %s: %w", "locked.db", &fs.PathError{Op: "open", Path: "locked.db", Err: syscall.EACCES})
	if msg, hint := dbOpenFailure("locked.db", err); msg != "cannot open the database locked.db: permission denied" || !strings.Contains(hint, "owner and mode") {
		t.Errorf("permission denied: %q, %q", msg, hint)
	}
}

// TestCLINotAuthbox checks the message for a server that is something
// else: the address once, and a hint to check it.
func TestCLINotAuthbox(t *testing.T) {
	addr := hostileServer(t, "SSH-2.0-OpenSSH_9.6\n", func(string) string { return "" })
	r := runCLI(t, t.TempDir(), "Secret123\n", nil, "login", "--plain", "--server", addr, "--user", "a", "--password-stdin")
	want := "authbox: error: " + addr + " is not an authbox server: its first line is not an authbox greeting\nauthbox: hint: check the address"
	if r.code != 2 || !strings.HasPrefix(r.stderr, want) || strings.Count(r.stderr, addr) != 1 {
		t.Fatalf("a server that is not authbox: exit %d\n%s\nwant\n%s", r.code, r.stderr, want)
	}
}

// TestCLIHelp checks that --help goes to standard output with exit 0, and
// that a bare "authbox" puts the help on standard error, as a mistake.
func TestCLIHelp(t *testing.T) {
	dir := t.TempDir()
	r := runCLI(t, dir, "", nil)
	if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "COMMANDS:") {
		t.Fatalf("bare authbox: %+v", r)
	}
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"pw", "--help"}, {"users", "--help"}, {"users", "list", "--help"}, {"bench", "populate", "--help"}} {
		if r := runCLI(t, dir, "", nil, args...); r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "authbox") {
			t.Errorf("%v: %+v", args, r)
		}
	}
	// A flag whose usage names its default shows that one only, not
	// also urfave/cli's "(default: 0)".
	for _, args := range [][]string{{"pw"}, {"bench"}, {"bench", "populate"}, {"users", "import"}, {"serve"}, {"login"}} {
		r := runCLI(t, dir, "", nil, append(args, "--help")...)
		for _, l := range strings.Split(r.stdout, "\n") {
			if strings.Count(l, "(default:") > 1 {
				t.Errorf("%v --help: two defaults: %s", args, l)
			}
		}
		if args[0] == "pw" && !strings.Contains(r.stdout, "PBKDF2 iterations N (default: iterations from the config, 600000)\n") {
			t.Errorf("pw --help:\n%s", r.stdout)
		}
	}
	// Every client command takes the client flags, with one usage text.
	for _, cmd := range []string{"register", "login", "passwd", "delete", "bench"} {
		r := runCLI(t, dir, "", nil, cmd, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "--server HOST[:PORT]") || !strings.Contains(r.stdout, "(default: AUTHBOX_SERVER, else client.server from --config, else 127.0.0.1:7886) [$AUTHBOX_SERVER]") ||
			!strings.Contains(r.stdout, "--config FILE") || !strings.Contains(r.stdout, "in the format of auth.toml (default: the built-in defaults)") {
			t.Errorf("%s --help: %+v", cmd, r)
		}
		if cmd != "bench" && (!strings.Contains(r.stdout, "--user NAME") || !strings.Contains(r.stdout, "--password-stdin")) {
			t.Errorf("%s --help lacks --user or --password-stdin:\n%s", cmd, r.stdout)
		}
	}
}

// TestVersionAndHelpCommand: --version prints the version, and "help CMD"
// is "CMD --help".
func TestVersionAndHelpCommand(t *testing.T) {
	dir := t.TempDir()
	if r := runCLI(t, dir, "", nil, "--version"); r.code != 0 || r.stdout != "authbox version "+version()+"\n" {
		t.Errorf("--version: %+v", r)
	}
	for _, args := range [][]string{{"serve"}, {"users", "list"}, {"bench", "populate"}, {}} {
		want := runCLI(t, dir, "", nil, append(args, "--help")...)
		got := runCLI(t, dir, "", nil, append([]string{"help"}, args...)...)
		if got.code != 0 || got.stdout != want.stdout || got.stderr != "" || want.code != 0 {
			t.Errorf("help %v: %+v\nwant %+v", args, got, want)
		}
	}
	if r := runCLI(t, dir, "", nil, "help", "frob"); r.code != exitOther || !strings.Contains(r.stderr, `unknown command "frob"`) {
		t.Errorf("help frob: %+v", r)
	}
}
