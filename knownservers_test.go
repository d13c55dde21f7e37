package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Clients making first contact at the same moment must all keep their pins:
// each Add reads the file, appends and renames, so without the lock the last
// rename wins and the others' lines are gone.
func TestKnownServersConcurrentAdds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_servers")
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			k := &KnownServers{Path: path}
			errs <- k.Add(fmt.Sprintf("s%d.example:7886", i), Fingerprint(fmt.Appendf(nil, "key %d", i)))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	k, err := LoadKnownServers(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		addr := fmt.Sprintf("s%d.example:7886", i)
		if e, ok := k.Lookup(addr); !ok || e.Fingerprint != Fingerprint(fmt.Appendf(nil, "key %d", i)) {
			t.Errorf("pin for %s lost (%d entries kept)", addr, len(k.entries))
		}
	}
}

// A known_servers kept elsewhere and linked into place (dotfile managers do
// this) stays a link; the pin lands in its target.
func TestKnownServersThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "dotfiles", "known_servers")
	os.MkdirAll(filepath.Dir(target), 0o700)
	if err := os.WriteFile(target, []byte("# mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "known_servers")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	k := &KnownServers{Path: link}
	fp := Fingerprint([]byte("a"))
	if err := k.Add("a.example:7886", fp); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(target); string(b) != "# mine\na.example:7886 "+fp+"\n" {
		t.Fatalf("target: %q", b)
	}
	if k.Path != link {
		t.Fatalf("Path changed to %s", k.Path)
	}
}

func TestKnownServersFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "known_servers")
	k, err := LoadKnownServers(path)
	if err != nil {
		t.Fatal(err)
	}
	fpA, fpB := Fingerprint([]byte("a")), Fingerprint([]byte("b"))
	if err := k.Add("a.example:7886", fpA); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("known_servers mode: %v, %v", fi, err)
	}
	// A comment and a second pin written meanwhile by another client.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("# the b server\nb.example:7886 " + fpB)
	f.Close()
	if err := k.Add("c.example:7886", fpA); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if want := "a.example:7886 " + fpA + "\n# the b server\nb.example:7886 " + fpB + "\nc.example:7886 " + fpA + "\n"; string(before) != want {
		t.Fatalf("file:\n%s\nwant:\n%s", before, want)
	}
	// A changed key is refused with the line to edit, and nothing is written.
	var fe *FingerprintError
	if err := k.Add("b.example:7886", fpA); !errors.As(err, &fe) || fe.Line != 3 || fe.File != path {
		t.Fatalf("re-pin with another key: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("a refused pin rewrote the file")
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".known_servers.*"))
	if len(matches) != 0 {
		t.Fatalf("temporary files left: %v", matches)
	}
	if e, ok := k.Lookup("b.example:7886"); !ok || e.Fingerprint != fpB {
		t.Fatalf("lookup: %+v %v", e, ok)
	}
	os.WriteFile(path, []byte("a.example:7886 SHA256:short\n"), 0o600)
	if _, err := LoadKnownServers(path); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("malformed file: %v", err)
	}
}
