package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsersUsageErrors: the users commands' own usage errors, before any
// db is opened (the hints are another test's).
func TestUsersUsageErrors(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, "")
	writeFile(t, filepath.Join(dir, "in.pg"), "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"users"}, "authbox: error: users needs a command: list, show, delete, lock, unlock, passwd, unthrottle, import or export\n"},
		{[]string{"users", "frob"}, "authbox: error: unknown command \"users frob\"\n"},
		{[]string{"users", "show"}, "authbox: error: missing NAME\n"},
		{[]string{"users", "delete", "a", "b"}, "authbox: error: unexpected argument \"b\" after NAME\n"},
		{[]string{"users", "import", "in.pg"}, "authbox: error: missing or unknown --format \"\"\n"},
		{[]string{"users", "import", "--format", "xml", "in.pg"}, "authbox: error: missing or unknown --format \"xml\"\n"},
		{[]string{"backup"}, "authbox: error: missing FILE\n"},
	} {
		r := mustCLI(t, exitOther, dir, "", tc.args...)
		if r.stdout != "" || !strings.HasPrefix(r.stderr, tc.want) {
			t.Errorf("%v: %+v, want stderr from %q", tc.args, r, tc.want)
		}
	}
}

// TestUsersStdio: "-" is standard input for an import and standard output
// for an export and a backup, through a running server and on the file
// alike; what the commands say about the file then goes to standard error.
func TestUsersStdio(t *testing.T) {
	for _, online := range []bool{false, true} {
		t.Run(map[bool]string{false: "offline", true: "online"}[online], func(t *testing.T) {
			dir := t.TempDir()
			cfg := writeConfig(t, dir, "")
			if online {
				serveInProcess(t, dir, "--config", cfg)
			}
			line := "user," + rfcPGVerifier + "\n"
			r := mustCLI(t, 0, dir, line, "users", "import", "--format", "pg", "--config", cfg, "-")
			if r.stdout != "imported 1, skipped 0 (name exists), rejected 0\n" {
				t.Errorf("import -: %+v", r)
			}
			r = mustCLI(t, exitOther, dir, "not a line\n", "users", "import", "--format", "pg", "--config", cfg, "-")
			if !strings.HasPrefix(r.stderr, "standard input:1: ") {
				t.Errorf("a rejected line from standard input: %+v", r)
			}
			r = mustCLI(t, 0, dir, "", "users", "export", "--config", cfg, "-")
			if r.stdout != line || r.stderr != "exported 1 account to standard output\n" {
				t.Errorf("export -: %+v", r)
			}
			r = mustCLI(t, 0, dir, "", "backup", "--config", cfg, "-")
			if !strings.HasPrefix(r.stderr, "wrote a backup of ") || !strings.HasSuffix(r.stderr, " bytes to standard output\n") {
				t.Errorf("backup -: stderr %q", r.stderr)
			}
			writeFile(t, filepath.Join(dir, "copy.db"), r.stdout)
			if r := mustCLI(t, 0, dir, "", "users", "list", "--db", "copy.db"); !strings.Contains(r.stdout, "user  scram") {
				t.Errorf("the backup written to standard output does not hold the account:\n%s", r.stdout)
			}
			if _, err := os.Stat(filepath.Join(dir, "-")); err == nil {
				t.Error(`a file named "-" was made`)
			}
		})
	}
}

// TestBackupRefusesTerminal: a binary db is not for a terminal's eyes.
func TestBackupRefusesTerminal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	mustCLI(t, 0, dir, "user,"+rfcPGVerifier+"\n", "users", "import", "--format", "pg", "--config", cfg, "-")
	p := startPTY(t, dir, "backup", "--config", cfg, "-")
	if code, out := p.wait(); code != exitOther || !strings.Contains(out, "refusing to write a binary database to a terminal") {
		t.Fatalf("backup - at a terminal: exit %d\n%s", code, out)
	}
}
