package main

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/text/secure/precis"
)

// TestFormatB64Reply: the one-allocation SCRAM reply is the line
// FormatReply and EncodeB64 make, at every length around its 48-byte
// chunks.
func TestFormatB64Reply(t *testing.T) {
	for n := range 200 {
		raw := bytes.Repeat([]byte{byte(n), 0xfb, 0xff}, n)[:n]
		if got, want := FormatB64Reply(ReplyChallenge, raw), FormatReply(ReplyChallenge, EncodeB64(raw)); got != want {
			t.Fatalf("%d bytes: %q, want %q", n, got, want)
		}
	}
	raw := bytes.Repeat([]byte{'x'}, 90)
	if n := testing.AllocsPerRun(100, func() { FormatB64Reply(ReplyOK, raw) }); n != 1 {
		t.Fatalf("%v allocations, want 1", n)
	}
}

// TestNormalizeUsernameASCII: the shortcut for printable ASCII names gives
// what the PRECIS profile gives, for every pair of ASCII bytes and for
// names at the length limit, and costs no allocation.
func TestNormalizeUsernameASCII(t *testing.T) {
	viaPrecis := func(s string) (string, bool) {
		n, err := precis.UsernameCasePreserved.String(s)
		return n, err == nil && len(n) > 0 && len(n) <= MaxUsernameBytes
	}
	check := func(s string) {
		t.Helper()
		got, err := NormalizeUsername(s)
		want, ok := viaPrecis(s)
		if (err == nil) != ok || (ok && got != want) {
			t.Fatalf("NormalizeUsername(%q) = %q, %v; the profile gives %q, valid %v", s, got, err, want, ok)
		}
	}
	for a := range 128 {
		check(string(rune(a)))
		for b := range 128 {
			check(string([]byte{byte(a), byte(b)}))
		}
	}
	for _, n := range []int{MaxUsernameBytes - 1, MaxUsernameBytes, MaxUsernameBytes + 1} {
		check(strings.Repeat("Ab~", n)[:n])
	}
	name := "Bench-123_x@example.org"
	if n := testing.AllocsPerRun(100, func() { NormalizeUsername(name) }); n != 0 {
		t.Fatalf("%v allocations for a printable ASCII name, want 0", n)
	}
}
