package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// dashedUUID writes a uuid4Hex as str(uuid.uuid4()) does.
func dashedUUID(h string) string {
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// uuid4Shape says what is wrong with salt as a lower-case uuid4, dashed or
// not, or "" when nothing is.
func uuid4Shape(salt string) string {
	h := salt
	if len(salt) == 36 {
		if salt[8] != '-' || salt[13] != '-' || salt[18] != '-' || salt[23] != '-' {
			return "36 characters without the dashes of a UUID"
		}
		h = strings.ReplaceAll(salt, "-", "")
	}
	switch {
	case !IsLowerHex(h, 32):
		return "not 32 lower-case hex digits"
	case h[12] != '4':
		return "character 13 is not 4"
	case !strings.ContainsRune("89ab", rune(h[16])):
		return "character 17 is not one of 89ab"
	}
	return ""
}

// legacyAccounts makes dashed accounts with dashed uuid4 salts and plain
// ones with undashed, named prefix0…
func legacyAccounts(t *testing.T, prefix string, dashed, plain int) []NamedRecord {
	t.Helper()
	var recs []NamedRecord
	for i := range dashed + plain {
		u := newLegacyUser(t, "", "pw")
		if i < dashed {
			u.salt = dashedUUID(u.salt)
		}
		rec, err := LegacyRecord(u.password, u.salt)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, NamedRecord{Name: fmt.Sprintf("%s%d", prefix, i), Record: rec})
	}
	return recs
}

// TestFakeLegacySaltShape: over many unknown names, the fake SEED salts
// are uuid4s as the real ones are (character 13 "4", character 17 one of
// "89ab"), dashed in the proportion of the db's real salts, and each name
// keeps its own.
func TestFakeLegacySaltShape(t *testing.T) {
	s := OpenStoreForTest(t, filepath.Join(t.TempDir(), "t.db"))
	if _, _, err := s.CreateMany(legacyAccounts(t, "real", 30, 70), false); err != nil {
		t.Fatal(err)
	}
	if got := s.LegacySalts(); got != (saltTally{30, 70}) {
		t.Fatalf("tally %+v, want 30 dashed, 70 plain", got)
	}
	const n = 4000
	dashed := 0
	for i := range n {
		name := fmt.Sprintf("nobody%d", i)
		salt := s.FakeLegacySalt(s.FakeSalt(nil, "seed", name))
		if why := uuid4Shape(salt); why != "" {
			t.Fatalf("fake salt %q for %s: %s", salt, name, why)
		}
		if again := s.FakeLegacySalt(s.FakeSalt(nil, "seed", name)); again != salt {
			t.Fatalf("%s: %q then %q", name, salt, again)
		}
		if len(salt) == 36 {
			dashed++
		}
	}
	// 30% of 4000 is 1200, with a standard deviation of 29: ±150 is more
	// than five of them.
	if dashed < 1050 || dashed > 1350 {
		t.Fatalf("%d of %d fake salts dashed, want about 1200 (30%%, as the real ones)", dashed, n)
	}
	// Where the real salts are all plain, so are the fakes.
	plain := OpenStoreForTest(t, filepath.Join(t.TempDir(), "p.db"))
	if _, _, err := plain.CreateMany(legacyAccounts(t, "real", 0, 5), false); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if salt := plain.FakeLegacySalt(plain.FakeSalt(nil, "seed", fmt.Sprint("x", i))); len(salt) != 32 {
			t.Fatalf("a dashed fake salt %q in a db with only plain ones", salt)
		}
	}
}

// TestLegacySaltTally: the counts follow every change to legacy records
// (import, replace, delete, upgrade), survive a reopen, and are made by a
// scan for a db written before they were kept.
func TestLegacySaltTally(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	want := func(where string, dashed, plain int64) {
		t.Helper()
		if got := s.LegacySalts(); got != (saltTally{dashed, plain}) {
			t.Fatalf("%s: tally %+v, want %d dashed, %d plain", where, got, dashed, plain)
		}
	}
	want("empty", 0, 0)
	if _, _, err := s.CreateMany(legacyAccounts(t, "a", 4, 6), false); err != nil {
		t.Fatal(err)
	}
	want("import", 4, 6)
	// Replacing a0…a3 (dashed) with plain ones moves them over.
	if _, _, err := s.CreateMany(legacyAccounts(t, "a", 0, 4), true); err != nil {
		t.Fatal(err)
	}
	want("replace", 0, 10)
	if _, _, err := s.CreateMany(legacyAccounts(t, "a", 3, 0), false); err != nil {
		t.Fatal(err)
	}
	want("skipped", 0, 10)
	if err := s.Delete("a5"); err != nil {
		t.Fatal(err)
	}
	want("delete", 0, 9)
	upgrade := func(Record) (Record, error) {
		stored, server, _ := Verifier("a6", "pw", make([]byte, SaltLen), MinIterations)
		return Record{Kind: KindSCRAM, Iterations: MinIterations, Salt: make([]byte, SaltLen), StoredKey: stored, ServerKey: server}, nil
	}
	if err := s.Update("a6", upgrade); err != nil {
		t.Fatal(err)
	}
	want("upgrade", 0, 8)
	if err := s.Create("d", legacyAccounts(t, "d", 1, 0)[0].Record); err != nil {
		t.Fatal(err)
	}
	want("create", 1, 8)
	s.Close()

	s = OpenStoreForTest(t, path)
	want("reopened", 1, 8)
	s.Close()

	// A db from before the counts: they are made at its first open.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyLegacySalts) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = OpenStoreForTest(t, path)
	want("counted", 1, 8)
}

// TestFakeSeedChallengeShape: on the wire, an unknown name's SEED
// challenge shows a salt shaped as the imported ones.
func TestFakeSeedChallengeShape(t *testing.T) {
	cfg := testConfig(t)
	cfg.Mechanisms = []string{MechSCRAM, MechSeed}
	ts := startServer(t, cfg)
	if _, _, err := ts.store.CreateMany(legacyAccounts(t, "real", 1, 0), false); err != nil {
		t.Fatal(err)
	}
	rc, _ := dialRaw(t, ts.addr)
	for _, name := range []string{"real0", "nobody"} {
		ch := strings.Fields(rc.do("AUTH SEED-SHA256 " + name))
		if len(ch) != 3 || ch[0] != "CHALLENGE" || len(ch[1]) != 36 || uuid4Shape(ch[1]) != "" {
			t.Fatalf("%s: %q", name, ch)
		}
		rc.do("RESPONSE " + strings.Repeat("0", 64))
	}
}

// TestAbandonedSeedChallengeIsCharged: a SEED challenge left unanswered,
// by another command or by closing the connection, costs the source a
// failed login, so that listing names by their salts meets ERR LIMIT; a
// SCRAM challenge left so is not charged (its fake salts tell nothing).
func TestAbandonedSeedChallengeIsCharged(t *testing.T) {
	cfg := testConfig(t)
	cfg.Mechanisms = []string{MechSCRAM, MechSeed}
	cfg.SourceFailures = 4
	cfg.SourceFailureRefill = Duration{time.Hour}
	ts := startServer(t, cfg)

	// Another command instead of RESPONSE, each time for a fresh name.
	rc, _ := rawFrom(t, ts.addr, "127.0.0.21")
	for i := 0; ; i++ {
		ch := rc.do(fmt.Sprintf("AUTH SEED-SHA256 probe%d", i))
		if strings.HasPrefix(ch, "ERR LIMIT ") {
			if i != cfg.SourceFailures {
				t.Fatalf("ERR LIMIT after %d abandoned challenges, want %d", i, cfg.SourceFailures)
			}
			break
		}
		if !strings.HasPrefix(ch, "CHALLENGE ") || i > 10 {
			t.Fatalf("probe %d: %q", i, ch)
		}
		if r := rc.do("PING"); r != "OK PONG" {
			t.Fatal(r)
		}
	}

	// A connection closed after its CHALLENGE, from another source.
	for i := 0; ; i++ {
		rc, _ := rawFrom(t, ts.addr, "127.0.0.22")
		ch := rc.do(fmt.Sprintf("AUTH SEED-SHA256 probe%d", i))
		if strings.HasPrefix(ch, "ERR LIMIT ") {
			if i != cfg.SourceFailures {
				t.Fatalf("ERR LIMIT after %d closed challenges, want %d", i, cfg.SourceFailures)
			}
			break
		}
		if !strings.HasPrefix(ch, "CHALLENGE ") || i > 10 {
			t.Fatalf("probe %d: %q", i, ch)
		}
		rc.nc.Close()
		// The next AUTH must find this one charged: wait for the log.
		deadline := time.Now().Add(10 * time.Second)
		for !closedCharged(ts.logs.String(), i+1) {
			if time.Now().After(deadline) {
				t.Fatalf("closed challenge %d not charged:\n%s", i, ts.logs)
			}
			ts.logs.wait(deadline)
		}
	}

	// SCRAM challenges left the same way stay free.
	rc, _ = rawFrom(t, ts.addr, "127.0.0.23")
	for i := range 2 * cfg.SourceFailures {
		ch := rc.do("AUTH SCRAM-SHA-256 " + EncodeB64([]byte(fmt.Sprintf("n,,n=probe%d,r=abcdefgh", i))))
		if !strings.HasPrefix(ch, "CHALLENGE ") {
			t.Fatalf("SCRAM probe %d: %q", i, ch)
		}
		rc.do("PING")
	}
}

// closedCharged reports whether n SEED challenges from 127.0.0.22 were
// charged as abandoned.
func closedCharged(logs string, n int) bool {
	count := 0
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "login abandoned") && strings.Contains(l, "remote=127.0.0.22") {
			count++
		}
	}
	return count >= n
}
