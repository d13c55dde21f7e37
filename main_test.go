package main

import (
	"strings"
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
	} {
		r := runCLI(t, dir, "", nil, tc.args...)
		if want := "authbox: error: " + tc.msg + "\nauthbox: hint: " + tc.hint + "\n"; r.code != 2 || !strings.HasSuffix(r.stderr, want) || r.stdout != "" {
			t.Errorf("authbox %s: exit %d\n%s\nwant exit 2 and\n%s", strings.Join(tc.args, " "), r.code, r.stderr, want)
		}
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
