package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	in := Record{Kind: KindSCRAM, Locked: true, Iterations: 600000, Salt: []byte("0123456789abcdef"),
		StoredKey: make([]byte, 32), ServerKey: make([]byte, 32),
		Created: time.Unix(1700000000, 0).UTC(), Updated: time.Unix(1700000100, 0).UTC()}
	b := in.marshal()
	out, err := unmarshalRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(in) != fmt.Sprint(out) {
		t.Fatalf("round trip:\n%+v\n%+v", in, out)
	}
	for i := range b {
		if _, err := unmarshalRecord(b[:i]); err == nil {
			t.Fatalf("truncated record (%d of %d bytes) decoded", i, len(b))
		}
	}
	b[0] = 99
	if _, err := unmarshalRecord(b); !errors.Is(err, ErrBadRecord) {
		t.Fatal("unknown record version decoded")
	}
}

func TestStoreLockedByAnotherHandle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("db mode %v, want 0600", fi.Mode().Perm())
	}
	start := time.Now()
	_, err = OpenStore(path)
	if !errors.Is(err, ErrDBLocked) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second open: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second open took %v", d)
	}
}

// OpenStoreForTest opens a db file and closes it at cleanup.
func OpenStoreForTest(t testing.TB, path string) *Store {
	t.Helper()
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestRecordValuesApart: the three values a record decodes to share one
// copy of the encoding, so appending to one must not change the next.
func TestRecordValuesApart(t *testing.T) {
	want := Record{Kind: KindSCRAM, Iterations: 4096, Salt: bytes.Repeat([]byte{1}, SaltLen),
		StoredKey: bytes.Repeat([]byte{2}, KeyLen), ServerKey: bytes.Repeat([]byte{3}, KeyLen)}
	rec, err := unmarshalRecord(want.marshal())
	if err != nil {
		t.Fatal(err)
	}
	_ = append(rec.Salt, 9, 9)
	_ = append(rec.StoredKey, 9, 9)
	if !bytes.Equal(rec.StoredKey, want.StoredKey) || !bytes.Equal(rec.ServerKey, want.ServerKey) {
		t.Fatalf("an append to one value changed the next: %x %x", rec.StoredKey, rec.ServerKey)
	}
}
