package main

import (
	"strings"
	"testing"
)

func TestNormalizeServerAddr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"localhost", "localhost:7886"},
		{"localhost:7000", "localhost:7000"},
		{"127.0.0.1", "127.0.0.1:7886"},
		{"auth.example.com", "auth.example.com:7886"},
		{"::1", "[::1]:7886"},
		{"[::1]", "[::1]:7886"},
		{"[::1]:9000", "[::1]:9000"},
		{"fe80::1", "[fe80::1]:7886"},
		{"", ""},
		{"host:", ""},
		{"[::1", ""},
		{"a:b:c", ""},
	} {
		got, err := normalizeServerAddr(tc.in)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("normalizeServerAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestServerWithoutPort: a host alone is the server on the default port,
// for the client commands and bench alike, and it is under that
// host:port that a first contact is refused (so it would be pinned).
func TestServerWithoutPort(t *testing.T) {
	dir := t.TempDir()
	freshPins(t)
	for _, args := range [][]string{
		{"login", "--server", "localhost", "--user", "alice", "--password-stdin"},
		{"bench", "--server", "localhost", "--duration", "1s"},
	} {
		r := runCLI(t, dir, "Secret123\n", nil, args...)
		if strings.Contains(r.stderr, "invalid server address") || !strings.Contains(r.stderr, "localhost:7886") {
			t.Errorf("%v: %+v", args, r)
		}
	}
}
