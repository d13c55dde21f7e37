package main

import (
	"bytes"
	"testing"
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
