package main

import (
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
		{[]string{"users"}, "authbox: error: users needs a command: list, show, delete, lock, unlock, import or export\n"},
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
