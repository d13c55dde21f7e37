package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// metaPages reads the db file's current meta page (the one with the
// higher transaction id) and returns its page size, the root page and the
// freelist page.
func metaPages(t *testing.T, path string) (pageSize, root, freelist int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// meta: 16-byte page header, then magic u32 | version u32 | pageSize
	// u32 | flags u32 | root u64 | sequence u64 | freelist u64 | pgid u64
	// | txid u64, little-endian.
	best := uint64(0)
	for _, off := range []int64{0, int64(binary.LittleEndian.Uint32(b[16+8:]))} {
		m := b[off+16:]
		if txid := binary.LittleEndian.Uint64(m[48:]); txid >= best {
			best = txid
			pageSize = int64(binary.LittleEndian.Uint32(m[8:]))
			root = int64(binary.LittleEndian.Uint64(m[16:]))
			freelist = int64(binary.LittleEndian.Uint64(m[32:]))
		}
	}
	return pageSize, root, freelist
}

// flipHeader overwrites 8 bytes of page id's 16-byte header: at 0 its page
// number, at 8 its type, count and overflow.
func flipHeader(t *testing.T, path string, pageSize, id, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef}, id*pageSize+at); err != nil {
		t.Fatal(err)
	}
}

// damagedDB makes a db with a few accounts, and a copy with 8 bytes of the
// header of one of its pages overwritten: pick chooses the page and where
// in its header.
func damagedDB(t *testing.T, dir string, pick func(root, freelist int64) (int64, int64)) (good, bad string) {
	t.Helper()
	good = filepath.Join(dir, "good.db")
	s, err := OpenStore(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateMany(legacyAccounts(t, "user", 2, 3), false); err != nil {
		t.Fatal(err)
	}
	s.Close()
	bad = filepath.Join(dir, "bad.db")
	copyFile(t, good, bad)
	size, root, freelist := metaPages(t, bad)
	id, at := pick(root, freelist)
	flipHeader(t, bad, size, id, at)
	return good, bad
}

// TestDamagedDBIsAnErrorNotAPanic: a page header overwritten (the root
// page's number, or the freelist's type, which bbolt.Open itself reads)
// makes serve, users list and the store give a
// clear error naming the file and saying how to restore it; check says
// what is wrong and exits 2, and passes the undamaged file.
func TestDamagedDBIsAnErrorNotAPanic(t *testing.T) {
	for _, c := range []struct {
		name string
		pick func(root, freelist int64) (int64, int64)
	}{
		{"root", func(root, _ int64) (int64, int64) { return root, 0 }},
		{"freelist", func(_, freelist int64) (int64, int64) { return freelist, 8 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeConfig(t, dir, "")
			good, bad := damagedDB(t, dir, c.pick)

			_, err := OpenStore(bad)
			var de *DamagedError
			if !errors.As(err, &de) || !errors.Is(err, ErrDamaged) || de.Path != bad || !strings.Contains(err.Error(), "database "+bad+" is damaged") {
				t.Fatalf("OpenStore: %v", err)
			}
			hint := "authbox: hint: stop the server and copy a backup over the file (cp BACKUP bad.db), or serve the backup as it is (authbox serve --db BACKUP); authbox check --db bad.db lists the damage\n"
			// Twice: the first failure must not leave the file locked.
			for range 2 {
				r := mustCLI(t, 2, dir, "", "users", "list", "--db", "bad.db")
				if !strings.HasPrefix(r.stderr, "authbox: error: database bad.db is damaged (bbolt: ") || !strings.HasSuffix(r.stderr, hint) || r.stdout != "" {
					t.Fatalf("users list: %+v", r)
				}
			}
			r := mustCLI(t, 2, dir, "", "serve", "--config", "auth.toml", "--listen", "127.0.0.1:0", "--db", "bad.db")
			if !strings.Contains(r.stderr, "authbox: error: database bad.db is damaged (bbolt: ") || !strings.HasSuffix(r.stderr, hint) {
				t.Fatalf("serve: %+v", r)
			}

			r = mustCLI(t, 2, dir, "", "check", "--db", "bad.db")
			if !strings.HasPrefix(r.stdout, "bad.db: ") || strings.Contains(r.stdout, "ok") || !strings.Contains(r.stderr, "authbox: error: database bad.db is damaged: 1 problem found\n") ||
				!strings.Contains(r.stderr, "authbox serve --db BACKUP") {
				t.Fatalf("check: %+v", r)
			}
			if r := mustCLI(t, 0, dir, "", "check", "--db", filepath.Base(good)); r.stdout != "good.db: ok\n" {
				t.Fatalf("check of the good file: %+v", r)
			}
			// The good copy still serves as the backup the hint names.
			if r := mustCLI(t, 0, dir, "", "users", "list", "--db", "good.db"); strings.Count(r.stdout, "\n") != 6 {
				t.Fatalf("list of the good file: %+v", r)
			}
		})
	}
}

// bucketPage returns the page that holds the top-level bucket name, from
// the root leaf page of db file b (0 if the bucket is inline).
func bucketPage(t *testing.T, b []byte, pageSize, root int64, name string) int64 {
	t.Helper()
	p := b[root*pageSize:]
	// leaf element: flags u32 | pos u32 | ksize u32 | vsize u32, pos
	// counted from the element; a bucket's value starts with its root page.
	for i := range int(binary.LittleEndian.Uint16(p[10:])) {
		e := p[16+16*i:]
		pos, ksize := binary.LittleEndian.Uint32(e[4:]), binary.LittleEndian.Uint32(e[8:])
		if string(e[pos:pos+ksize]) == name {
			return int64(binary.LittleEndian.Uint64(e[pos+ksize:]))
		}
	}
	t.Fatalf("no bucket %q in the root page", name)
	return 0
}

// TestDamageWhileOpen: a db whose freelist also lists the users bucket's
// page opens and reads fine, but bbolt panics ("already freed") in the
// commit that rewrites that page. db.Batch would commit on its timer's
// goroutine, where the panic ends the process; the store's own group
// commit runs under the guard, so every registration in the group fails
// with ErrDamaged, and so does everything after. The store still closes,
// and the file is free.
func TestDamageWhileOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 { // each commit frees the pages it rewrites
		if _, _, err := s.CreateMany(legacyAccounts(t, fmt.Sprint("user", i), 3, 3), false); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	size, root, freelist := metaPages(t, path)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	users := bucketPage(t, b, size, root, string(bucketUsers))
	fl := b[freelist*size:]
	n := int(binary.LittleEndian.Uint16(fl[10:]))
	if n == 0 || n > 100 || users == 0 || binary.LittleEndian.Uint64(fl[16:]) > uint64(users) {
		t.Fatalf("layout: %d free pages starting at %d, users bucket at page %d", n, binary.LittleEndian.Uint64(fl[16:]), users)
	}
	// One more free page, the users bucket's: opening takes a lower one
	// for its own commit, so only a write to the bucket meets it.
	binary.LittleEndian.PutUint16(fl[10:], uint16(n+1))
	binary.LittleEndian.PutUint64(fl[16+8*n:], uint64(users))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}

	if s, err = OpenStore(path); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("user00"); err != nil {
		t.Fatalf("get before the damage is met: %v", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Create(fmt.Sprint("new", i), Record{Kind: KindLegacy, Salt: []byte("s"), StoredKey: make([]byte, KeyLen)})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "already freed") {
			t.Fatalf("create %d: %v, want ErrDamaged (already freed)", i, err)
		}
	}
	if _, err := s.Get("user00"); !errors.Is(err, ErrDamaged) {
		t.Fatalf("get after the damage: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := CheckFile(path); err != nil {
		t.Fatalf("check after close: %v (the file is still locked?)", err)
	}
}
