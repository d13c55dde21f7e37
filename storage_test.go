package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testRecord is a SCRAM record whose keys are made of b.
func testRecord(b byte) Record {
	return Record{Kind: KindSCRAM, Iterations: 4096, Salt: bytes.Repeat([]byte{b}, SaltLen),
		StoredKey: bytes.Repeat([]byte{b}, KeyLen), ServerKey: bytes.Repeat([]byte{b ^ 0xff}, KeyLen)}
}

// storeKind opens a fresh store of one kind; reopen opens a second handle
// on the same data (another server of the cluster, or the same file after
// the first handle was closed).
type storeKind struct {
	name string
	open func(t *testing.T) (s Storage, reopen func() Storage)
}

// TestStorageConformance runs every case against every store.
func TestStorageConformance(t *testing.T) {
	var cluster *etcdCluster
	kinds := []storeKind{
		{name: "bbolt", open: func(t *testing.T) (Storage, func() Storage) {
			path := filepath.Join(t.TempDir(), "c.db")
			s, err := OpenStore(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s, func() Storage {
				s.Close()
				r, err := OpenStore(path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				return r
			}
		}},
		{name: "etcd"},
		{name: "etcd with the servers' cache"},
	}
	n := 0
	outer := t
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			open := k.open
			if strings.HasPrefix(k.name, "etcd") {
				if cluster == nil {
					cluster = startEtcd(outer, 3) // shared by both etcd kinds
				}
				cached := k.name != "etcd"
				open = func(t *testing.T) (Storage, func() Storage) {
					n++
					prefix := fmt.Sprintf("/conformance/%d/", n)
					handle := func() Storage {
						s := cluster.open(t, prefix)
						if cached {
							s.startCache()
							waitCacheFresh(t, s)
						}
						return s
					}
					return handle(), handle
				}
			}
			for _, c := range conformanceCases {
				t.Run(c.name, func(t *testing.T) {
					s, reopen := open(t)
					c.run(t, s, reopen)
				})
			}
		})
	}
}

// waitCacheFresh waits until s's cache is known complete, as a server's
// first logins would (they read etcd until then).
func waitCacheFresh(t *testing.T, s *EtcdStore) {
	t.Helper()
	c := s.cache.Load()
	deadline := time.After(10 * time.Second)
	for {
		if _, _, ok := c.get("x"); ok {
			return
		}
		select {
		case <-c.confirmed:
		case <-deadline:
			t.Fatal("the cache never became current")
		}
	}
}

var conformanceCases = []struct {
	name string
	run  func(t *testing.T, s Storage, reopen func() Storage)
}{
	{"create once", func(t *testing.T, s Storage, _ func() Storage) {
		if _, err := s.Get("ann"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get before create: %v", err)
		}
		if err := s.Create("ann", testRecord(1)); err != nil {
			t.Fatal(err)
		}
		if err := s.Create("ann", testRecord(2)); !errors.Is(err, ErrExists) {
			t.Fatalf("second create: %v", err)
		}
		rec, err := s.Get("ann")
		if err != nil || !bytes.Equal(rec.StoredKey, testRecord(1).StoredKey) || rec.Gen == 0 || rec.Created.IsZero() {
			t.Fatalf("get: %+v %v", rec, err)
		}
	}},
	{"concurrent creates of one name: one wins", func(t *testing.T, s Storage, _ func() Storage) {
		var wg sync.WaitGroup
		errs := make([]error, 16)
		for i := range errs {
			wg.Go(func() { errs[i] = s.Create("race", testRecord(byte(i))) })
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrExists):
				t.Fatal(err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d creates succeeded", ok)
		}
	}},
	{"updates are atomic", func(t *testing.T, s Storage, _ func() Storage) {
		if err := s.Create("counter", testRecord(3)); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		const n = 20
		for range n {
			wg.Go(func() {
				err := s.Update("counter", func(r Record) (Record, error) {
					r.Iterations++
					return r, nil
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		rec, err := s.Get("counter")
		if err != nil || rec.Iterations != 4096+n {
			t.Fatalf("after %d increments: %d %v", n, rec.Iterations, err)
		}
		if err := s.Update("nobody", func(r Record) (Record, error) { return r, nil }); !errors.Is(err, ErrNotFound) {
			t.Fatalf("update of a missing account: %v", err)
		}
	}},
	{"update keeps created, its error aborts", func(t *testing.T, s Storage, _ func() Storage) {
		s.Create("bea", testRecord(4))
		before, _ := s.Get("bea")
		stop := errors.New("no")
		if err := s.Update("bea", func(r Record) (Record, error) { r.Iterations = 1; return r, stop }); !errors.Is(err, stop) {
			t.Fatalf("update returning an error: %v", err)
		}
		if err := s.Update("bea", func(r Record) (Record, error) { r.Locked = true; return r, nil }); err != nil {
			t.Fatal(err)
		}
		after, _ := s.Get("bea")
		if !after.Locked || after.Iterations != before.Iterations || !after.Created.Equal(before.Created) || after.Gen != before.Gen {
			t.Fatalf("before %+v after %+v", before, after)
		}
	}},
	{"lock and unlock", func(t *testing.T, s Storage, _ func() Storage) {
		s.Create("cat", testRecord(5))
		for _, step := range []struct{ lock, changed bool }{{true, true}, {true, false}, {false, true}, {false, false}} {
			changed, err := s.SetLocked("cat", step.lock)
			if err != nil || changed != step.changed {
				t.Fatalf("SetLocked(%v): %v %v, want changed %v", step.lock, changed, err, step.changed)
			}
		}
		if _, err := s.SetLocked("nobody", true); !errors.Is(err, ErrNotFound) {
			t.Fatalf("lock of a missing account: %v", err)
		}
	}},
	{"delete and delete-if", func(t *testing.T, s Storage, _ func() Storage) {
		s.Create("dan", testRecord(6))
		no := errors.New("refused")
		if err := s.DeleteIf("dan", func(Record) error { return no }); !errors.Is(err, no) {
			t.Fatalf("a refused delete: %v", err)
		}
		if _, err := s.Get("dan"); err != nil {
			t.Fatalf("refused delete removed it: %v", err)
		}
		if err := s.Delete("dan"); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete("dan"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
	}},
	{"bulk create, count, each in order", func(t *testing.T, s Storage, _ func() Storage) {
		s.Create("m02", testRecord(7))
		var recs []NamedRecord
		for _, name := range []string{"m03", "m01", "m02", "m00"} {
			recs = append(recs, NamedRecord{name, testRecord(8)})
		}
		created, skipped, err := s.CreateMany(recs, false)
		if err != nil || created != 3 || skipped != 1 {
			t.Fatalf("CreateMany: %d %d %v", created, skipped, err)
		}
		if rec, _ := s.Get("m02"); rec.StoredKey[0] != 7 {
			t.Fatal("CreateMany without replace replaced an account")
		}
		created, skipped, err = s.CreateMany(recs[2:3], true)
		if err != nil || created != 1 || skipped != 0 {
			t.Fatalf("CreateMany with replace: %d %d %v", created, skipped, err)
		}
		if rec, _ := s.Get("m02"); rec.StoredKey[0] != 8 {
			t.Fatal("CreateMany with replace kept the old account")
		}
		if n, err := s.Count(); err != nil || n != 4 {
			t.Fatalf("count %d %v", n, err)
		}
		var names []string
		if err := s.Each(func(name string, rec Record) error {
			names = append(names, name)
			rec.StoredKey[0] = 99 // a copy: the store must not see this
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(names, []string{"m00", "m01", "m02", "m03"}) {
			t.Fatalf("each: %v", names)
		}
		if rec, _ := s.Get("m00"); rec.StoredKey[0] != 8 {
			t.Fatal("Each handed out the store's own bytes")
		}
	}},
	{"one identity, one secret, for every handle", func(t *testing.T, s Storage, reopen func() Storage) {
		made := 0
		create := func() ([]byte, []byte, error) {
			made++
			return []byte(fmt.Sprint("cert", made)), []byte(fmt.Sprint("key", made)), nil
		}
		cert, key, err := s.Identity(create)
		if err != nil || string(cert) != "cert1" || string(key) != "key1" {
			t.Fatalf("identity: %q %q %v", cert, key, err)
		}
		fake := s.FakeSalt(nil, "scram", "nobody")
		if bytes.Equal(fake, s.FakeSalt(nil, "scram", "somebody")) || bytes.Equal(fake, s.FakeSalt(nil, "seed", "nobody")) {
			t.Fatal("fake salts do not depend on the name and label")
		}
		other := reopen()
		cert2, key2, err := other.Identity(create)
		if err != nil || string(cert2) != "cert1" || string(key2) != "key1" || made != 1 {
			t.Fatalf("second handle's identity: %q %q %v (made %d)", cert2, key2, err, made)
		}
		if !bytes.Equal(other.FakeSalt(nil, "scram", "nobody"), fake) {
			t.Fatal("a second handle gives unknown names other salts")
		}
	}},
	{"backup is a db serve can open", func(t *testing.T, s Storage, _ func() Storage) {
		s.Create("eve", testRecord(9))
		s.SetLocked("eve", true)
		s.Identity(func() ([]byte, []byte, error) { return []byte("c"), []byte("k"), nil })
		var buf bytes.Buffer
		if _, err := s.Backup(&buf); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "backup.db")
		if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := OpenStore(path)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		want, _ := s.Get("eve")
		got, err := b.Get("eve")
		if err != nil || got.Gen != want.Gen || !got.Locked || !bytes.Equal(got.ServerKey, want.ServerKey) || !got.Created.Equal(want.Created) {
			t.Fatalf("backup's record %+v %v, want %+v", got, err, want)
		}
		if !bytes.Equal(b.FakeSalt(nil, "scram", "x"), s.FakeSalt(nil, "scram", "x")) {
			t.Fatal("the backup gives unknown names other salts")
		}
		cert, key, err := b.Identity(func() ([]byte, []byte, error) { return nil, nil, errors.New("made anew") })
		if err != nil || string(cert) != "c" || string(key) != "k" {
			t.Fatalf("backup's identity: %q %q %v", cert, key, err)
		}
	}},
	{"ping", func(t *testing.T, s Storage, _ func() Storage) {
		if err := s.Ping(); err != nil {
			t.Fatal(err)
		}
		if s.Describe() == "" {
			t.Fatal("no description")
		}
	}},
	{"fake legacy salts take the imported shape", func(t *testing.T, s Storage, reopen func() Storage) {
		if salt := s.FakeLegacySalt(s.FakeSalt(nil, "seed", "nobody")); len(salt) != 32 {
			t.Fatalf("with no legacy account a fake salt is plain hex, got %q", salt)
		}
		legacy := Record{Kind: KindLegacy, Salt: []byte("0a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"), StoredKey: bytes.Repeat([]byte{1}, 32)}
		if _, _, err := s.CreateMany([]NamedRecord{{"old", legacy}}, false); err != nil {
			t.Fatal(err)
		}
		for _, h := range []Storage{s, reopen()} {
			if salt := h.FakeLegacySalt(h.FakeSalt(nil, "seed", "nobody")); !isDashedUUID([]byte(salt)) {
				t.Fatalf("with only dashed legacy salts a fake one is %q", salt)
			}
		}
	}},
}
