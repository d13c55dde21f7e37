package main

import (
	"bytes"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestRestoreDoesNotBringBackDeletedAccounts: a backup taken from the
// cluster carries the cluster's secret, but restoring it into the live
// prefix is refused: it would add every name the prefix lacks, an account
// deleted since the backup among them, with its old verifier.
func TestRestoreDoesNotBringBackDeletedAccounts(t *testing.T) {
	c := startEtcd(t, 1)
	s := c.open(t, "/resurrect/")
	for i, n := range []string{"ann", "bob"} {
		if err := s.Create(n, testRecord(byte(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	path := backupFile(t, s)
	// The administrator deletes a compromised account.
	if err := s.Delete("ann"); err != nil {
		t.Fatal(err)
	}
	src, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	res, err := s.Load(src)
	if _, gerr := s.Get("ann"); gerr == nil {
		t.Fatalf("restore of a backup into the live prefix (%+v, err %v) brought the deleted account back", res, err)
	}
	if !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("restore of a backup into the live prefix: %v, want ErrNotEmpty", err)
	}
}

// TestRestoreFinishesOnlyItsOwnRun: a restore cut short is finished by
// running it again (the accounts it wrote are kept, the rest added); a
// name registered in the cluster meanwhile keeps the cluster's account
// and is reported; once finished, the same restore is refused, as is
// another db.
func TestRestoreFinishesOnlyItsOwnRun(t *testing.T) {
	c := startEtcd(t, 1)
	s := c.open(t, "/rerun/")
	srcPath := filepath.Join(t.TempDir(), "src.db")
	src := OpenStoreForTest(t, srcPath)
	var recs []NamedRecord
	for i, n := range []string{"ada", "ben", "cy"} {
		r := testRecord(byte(i + 1))
		r.Gen = NewGen()
		recs = append(recs, NamedRecord{n, r})
	}
	if _, _, err := src.CreateMany(recs, false); err != nil {
		t.Fatal(err)
	}
	// What a run cut short after its first write leaves: the marker, the
	// db's secret, and one account as the db holds it.
	digest, err := src.digest()
	if err != nil {
		t.Fatal(err)
	}
	ada, err := src.Get("ada")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	if _, err := s.cli.Txn(ctx).Then(
		clientv3.OpPut(s.metaKey("restore"), string(digest)),
		clientv3.OpPut(s.metaKey("secret"), string(src.secret)),
		clientv3.OpPut(s.userKey("ada"), string(ada.marshal()))).Commit(); err != nil {
		t.Fatal(err)
	}
	s.setSecret(src.secret)
	// Meanwhile a server registers "ben" in the cluster.
	if err := s.Create("ben", testRecord(9)); err != nil {
		t.Fatal(err)
	}
	res, err := s.Load(src)
	if err != nil {
		t.Fatalf("finishing the restore: %v", err)
	}
	if res.Loaded != 1 || res.Kept != 1 || !slices.Equal(res.Clashed, []string{"ben"}) {
		t.Fatalf("finishing the restore: %+v, want 1 loaded (cy), 1 kept (ada), ben clashed", res)
	}
	if ben, err := s.Get("ben"); err != nil || !bytes.Equal(ben.StoredKey, testRecord(9).StoredKey) {
		t.Fatalf("ben after the restore: %v %v, want the cluster's account", ben, err)
	}
	if _, err := s.Get("cy"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(src); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("the same restore once finished: %v, want ErrNotEmpty", err)
	}
	other := OpenStoreForTest(t, filepath.Join(t.TempDir(), "other.db"))
	if _, err := s.Load(other); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("another db into the prefix: %v, want ErrNotEmpty", err)
	}
}
