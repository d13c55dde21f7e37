package main

// store.go owns every bbolt call but the consistency check (CheckFile, in
// check.go with the command that runs it). Accounts live in one bucket keyed by the
// normalized username; a small meta bucket holds the server secret, so a
// copied db file answers exactly as the original (same fake salts).

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// dbLockTimeout bounds how long Open waits for another process's lock: a
// second is long enough for a server that is just exiting, short enough that
// a user running a second server gets a clear error instead of a hang.
// A var, not a const, only so that the tests can shorten it.
var dbLockTimeout = time.Second

// batchDelay is how long a group commit (see batch) gathers registrations
// before it commits them in one transaction and one fsync. bbolt's
// db.Batch waits 10 ms by default, longer than an fsync on most disks: a
// lone registration would wait 10 ms, and 64 concurrent ones would be held
// to 64 per 10 ms. A millisecond still lets a burst share its commits.
const batchDelay = time.Millisecond

// maxGroup bounds the registrations one commit takes (db.Batch's default
// MaxBatchSize): a bigger group would hold its first caller longer.
const maxGroup = 1000

var (
	bucketUsers = []byte("users")
	bucketMeta  = []byte("meta")
	keySecret   = []byte("secret")
	keySchema   = []byte("schema")
	// keyTLSCert and keyTLSKey hold the server's self-made TLS identity
	// (DER certificate, PKCS#8 key), so a copied db is the same server.
	keyTLSCert = []byte("tls_cert")
	keyTLSKey  = []byte("tls_key")
	// keyLegacySalts counts the legacy salts by shape (saltTally), so
	// that fake SEED-SHA256 salts can be shaped like the real ones.
	keyLegacySalts = []byte("legacy_salts")
)

// schemaVersion is written once into the meta bucket; a future layout
// change bumps it and migrates.
const schemaVersion = 1

var (
	// ErrExists is returned when creating an account whose name is taken.
	ErrExists = errors.New("account exists")
	// ErrNotFound is returned when an account does not exist.
	ErrNotFound = errors.New("account not found")
	// ErrDBLocked is returned when another process holds the db file.
	ErrDBLocked = errors.New("database is locked by another process")
	// ErrBadRecord is returned when a stored record cannot be decoded.
	ErrBadRecord = errors.New("stored record is corrupt or of an unknown version")
	// ErrBadSchema is returned when the db was written by a newer authbox.
	ErrBadSchema = errors.New("database schema is newer than this authbox")
	// ErrDamaged is returned when the db file is damaged: bbolt met a page
	// that is not what the file's structure says it is (a flipped bit, a
	// torn copy) and panicked, or found both meta pages' checksums wrong.
	// The error is a *DamagedError, which names the file.
	ErrDamaged = errors.New("database file is damaged")
	// errUnchanged is returned by an Update function that has nothing to
	// write, to end the transaction without a commit.
	errUnchanged = errors.New("record unchanged")
)

// Store is the account database.
type Store struct {
	db   *bolt.DB
	path string
	// file is the db file as bbolt opened it, kept to release the file
	// (and its lock) when bbolt cannot be trusted to: after a panic it may
	// still hold its own locks, and db.Close would wait for them forever.
	file *os.File
	// damage is set at the first panic of bbolt's; from then on every
	// call fails with it at once, since a damaged file written to is
	// damaged further.
	damage atomic.Pointer[DamagedError]
	// groupMu guards group, the registrations gathering for one commit.
	groupMu sync.Mutex
	group   *commitGroup
	secret  []byte
	// gets counts account reads once countGets is on; the enumeration
	// test checks that a login for an unknown name reads the store exactly
	// as one for a real name. Off, nothing is written: a counter every
	// login adds to is a cache line the two cores take from each other.
	countGets atomic.Bool
	gets      atomic.Int64
	// writes counts the write transactions that have ended (see Writes).
	writes atomic.Uint64
	// legacyDashed and legacyPlain mirror the meta bucket's saltTally;
	// each committed change adds its delta, in any order.
	legacyDashed, legacyPlain atomic.Int64
}

// OpenStore opens or creates the db file at path, mode 0600; an empty
// file there is made 0600 before it becomes the db.
func OpenStore(path string) (*Store, error) {
	if err := privatizeEmptyDB(path); err != nil {
		return nil, err
	}
	// NoStatistics: bbolt's transaction counters are read by nothing here,
	// and each read transaction would take a lock to add to them.
	s, err := openBolt(path, &bolt.Options{Timeout: dbLockTimeout, NoStatistics: true})
	if err != nil {
		return nil, err
	}
	if err := s.init(); err != nil {
		s.Close()
		if errors.Is(err, ErrDamaged) {
			return nil, err
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return s, nil
}

// openBolt opens the db file with bbolt, guarded: a file whose freelist or
// meta pages are damaged makes bbolt.Open itself panic or fail.
func openBolt(path string, opts *bolt.Options) (*Store, error) {
	s := &Store{path: path}
	opts.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		s.file = f
		return f, err
	}
	err := s.guard(func() error {
		var err error
		s.db, err = bolt.Open(path, 0o600, opts)
		return err
	})
	switch {
	case err == nil:
		return s, nil
	case errors.Is(err, ErrDamaged):
		s.releaseFile() // bbolt.Open panicked with the file open and locked
		return nil, err
	case errors.Is(err, bolt.ErrTimeout):
		return nil, fmt.Errorf("%s: %w", path, ErrDBLocked)
	case errors.Is(err, bolt.ErrChecksum):
		return nil, &DamagedError{Path: path, Detail: "bbolt: both meta pages fail their checksum"}
	}
	return nil, fmt.Errorf("open %s: %w", path, err)
}

// view and update are db.View and db.Update, guarded.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	return s.guard(func() error { return s.db.View(fn) })
}

func (s *Store) update(fn func(*bolt.Tx) error) error {
	// Counted after the transaction ends, committed or not: a count read
	// before a Get that is still the count later means that no write
	// ended after that Get began (see Writes).
	defer s.writes.Add(1)
	return s.guard(func() error { return s.db.Update(fn) })
}

// Writes is the number of write transactions that have ended. Every write
// of the file goes through this Store (the file is locked to one process),
// so if Writes returns the same count before a Get and at some later
// moment, nothing the Get read has changed since: a logged-in session is
// checked again without reading its record (see conn.needLogin).
func (s *Store) Writes() uint64 { return s.writes.Load() }

// commitGroup is the registrations that will share one commit.
type commitGroup struct {
	calls []groupCall
	full  chan struct{} // closed when it holds maxGroup calls
}

type groupCall struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// batch runs fn in a write transaction that it shares with the calls made
// within batchDelay of the first, as db.Batch does; but the commit runs in
// the first caller's goroutine, under guard. db.Batch commits on a timer's
// goroutine, where a panic of bbolt's cannot be recovered and ends the
// process. fn may run more than once, when another call in its group
// fails, so it must report through its own variables, not by side effects.
func (s *Store) batch(fn func(*bolt.Tx) error) error {
	done := make(chan error, 1)
	s.groupMu.Lock()
	g := s.group
	lead := g == nil
	if lead {
		g = &commitGroup{full: make(chan struct{})}
		s.group = g
	}
	g.calls = append(g.calls, groupCall{fn, done})
	if len(g.calls) == maxGroup {
		s.group = nil
		close(g.full)
	}
	s.groupMu.Unlock()
	if lead {
		t := time.NewTimer(batchDelay)
		select {
		case <-t.C:
		case <-g.full:
		}
		t.Stop()
		s.groupMu.Lock()
		if s.group == g {
			s.group = nil
		}
		calls := g.calls
		s.groupMu.Unlock()
		s.commitGroup(calls)
	}
	return <-done
}

// commitGroup commits calls in one transaction. A call whose fn fails gets
// its error and the others are run again without it; a failed commit (or
// a damaged file) fails them all.
func (s *Store) commitGroup(calls []groupCall) {
	for len(calls) > 0 {
		failed := -1
		err := s.update(func(tx *bolt.Tx) error {
			for i, c := range calls {
				if err := c.fn(tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, c := range calls {
				c.done <- err
			}
			return
		}
		calls[failed].done <- err
		calls = append(calls[:failed:failed], calls[failed+1:]...)
	}
}

func (s *Store) init() error {
	return s.update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketUsers); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v == nil {
			if err := meta.Put(keySchema, []byte{schemaVersion}); err != nil {
				return err
			}
		} else if len(v) != 1 || v[0] > schemaVersion {
			return ErrBadSchema
		}
		if err := s.loadTally(tx); err != nil {
			return err
		}
		if v := meta.Get(keySecret); len(v) == sha256.Size {
			s.secret = bytes.Clone(v)
			return nil
		}
		s.secret = make([]byte, sha256.Size)
		if _, err := rand.Read(s.secret); err != nil {
			return err
		}
		return meta.Put(keySecret, s.secret)
	})
}

// loadTally reads the legacy salt counts into memory, counting them first
// in a db made before they were kept (one scan, at its first open by this
// version).
func (s *Store) loadTally(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	t, ok := decodeTally(meta.Get(keyLegacySalts))
	if !ok {
		err := tx.Bucket(bucketUsers).ForEach(func(_, v []byte) error {
			if rec, err := unmarshalRecord(v); err == nil {
				t.add(rec, 1)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := meta.Put(keyLegacySalts, t.encode()); err != nil {
			return err
		}
	}
	s.legacyDashed.Store(t.dashed)
	s.legacyPlain.Store(t.plain)
	return nil
}

// addTally adds d to the counts in the meta bucket, inside the transaction
// that changed the records; applyTally adds it in memory once that
// transaction has committed.
func addTally(tx *bolt.Tx, d saltTally) error {
	if d == (saltTally{}) {
		return nil
	}
	meta := tx.Bucket(bucketMeta)
	t, _ := decodeTally(meta.Get(keyLegacySalts))
	t.dashed += d.dashed
	t.plain += d.plain
	return meta.Put(keyLegacySalts, t.encode())
}

func (s *Store) applyTally(d saltTally) {
	s.legacyDashed.Add(d.dashed)
	s.legacyPlain.Add(d.plain)
}

// LegacySalts is how many legacy accounts have a dashed salt and how many
// another one.
func (s *Store) LegacySalts() saltTally {
	return saltTally{s.legacyDashed.Load(), s.legacyPlain.Load()}
}

// FakeLegacySalt is the salt a SEED-SHA256 challenge shows for a name with
// no legacy account, given that name's FakeSalt("seed", name): see
// fakeLegacySalt.
func (s *Store) FakeLegacySalt(mac []byte) string {
	return fakeLegacySalt(mac, s.LegacySalts())
}

// Path is the db file's path.
func (s *Store) Path() string { return s.path }

// Describe is the db file's path.
func (s *Store) Describe() string { return s.path }

// Ping reports whether the store can be read now: the management
// listener's readiness check.
func (s *Store) Ping() error {
	return s.view(func(*bolt.Tx) error { return nil })
}

// Close closes the db file. After damage it releases the file without
// bbolt, whose locks a panic may have left held (see releaseFile).
func (s *Store) Close() error {
	if s.damage.Load() != nil {
		return s.releaseFile()
	}
	return s.db.Close()
}

// releaseFile unlocks and closes the db file behind bbolt's back, for when
// bbolt panicked and its own Close could wait forever for a lock the panic
// left held. The file lock goes by hand: the mapping of the file that
// bbolt keeps (until the process ends) would otherwise keep it, and the
// file locked for every later open.
func (s *Store) releaseFile() error {
	if s.file == nil {
		return nil
	}
	syscall.Flock(int(s.file.Fd()), syscall.LOCK_UN)
	return s.file.Close()
}

// Get returns the account for a normalized name, or ErrNotFound.
func (s *Store) Get(name string) (Record, error) {
	if s.countGets.Load() {
		s.gets.Add(1)
	}
	var rec Record
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketUsers).Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		var err error
		rec, err = unmarshalRecord(v)
		return err
	})
	return rec, err
}

// Create adds a new account, durably, or returns ErrExists. It goes through
// batch so that concurrent registrations share one commit and one fsync.
func (s *Store) Create(name string, rec Record) error {
	now := time.Now()
	rec.Created, rec.Updated = now, now
	rec.Gen = NewGen()
	val := rec.marshal()
	var d saltTally
	d.add(rec, 1)
	var exists bool
	// batch may run the function more than once (after another function
	// in the group fails), so it reports through exists rather than an
	// error, which would end its call.
	err := s.batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		exists = b.Get([]byte(name)) != nil
		if exists {
			return nil
		}
		if err := b.Put([]byte(name), val); err != nil {
			return err
		}
		return addTally(tx, d)
	})
	if err != nil {
		return err
	}
	if exists {
		return ErrExists
	}
	s.applyTally(d)
	return nil
}

// CreateMany writes accounts in one transaction: all of them or, on error,
// none. An existing name is replaced when replace is set, else left alone
// and counted in skipped. Created and Updated are set to now unless the
// record carries its own.
func (s *Store) CreateMany(recs []NamedRecord, replace bool) (created, skipped int, err error) {
	now := time.Now()
	var d saltTally
	err = s.update(func(tx *bolt.Tx) error {
		created, skipped, d = 0, 0, saltTally{}
		b := tx.Bucket(bucketUsers)
		// Sorted keys fill bbolt's pages densely, but only if a split
		// leaves the left page full: at bbolt's default fill of 50% a
		// million sorted bench accounts took 294 bytes each. Callers that
		// can, sort; this does not reorder.
		b.FillPercent = 1.0
		for _, nr := range recs {
			if old := b.Get([]byte(nr.Name)); old != nil {
				if !replace {
					skipped++
					continue
				}
				if rec, err := unmarshalRecord(old); err == nil {
					d.add(rec, -1)
				}
			}
			rec := nr.Record
			if rec.Created.IsZero() {
				rec.Created = now
			}
			if rec.Updated.IsZero() {
				rec.Updated = now
			}
			// A replaced account is a new identity: its sessions end.
			rec.Gen = NewGen()
			if err := b.Put([]byte(nr.Name), rec.marshal()); err != nil {
				return err
			}
			d.add(rec, 1)
			created++
		}
		return addTally(tx, d)
	})
	if err != nil {
		return 0, 0, err
	}
	s.applyTally(d)
	return created, skipped, nil
}

// Update replaces an account's record atomically through fn, which sees the
// current record and returns the new one. It keeps Created and sets Updated.
func (s *Store) Update(name string, fn func(Record) (Record, error)) error {
	var d saltTally
	err := s.update(func(tx *bolt.Tx) error {
		d = saltTally{}
		b := tx.Bucket(bucketUsers)
		v := b.Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		old, err := unmarshalRecord(v)
		if err != nil {
			return err
		}
		var rec Record
		err = callOut(func() error {
			var err error
			rec, err = fn(old)
			return err
		})
		if err != nil {
			return err
		}
		rec.Created, rec.Updated = old.Created, time.Now()
		if err := b.Put([]byte(name), rec.marshal()); err != nil {
			return err
		}
		d.add(old, -1)
		d.add(rec, 1)
		return addTally(tx, d)
	})
	if err == nil {
		s.applyTally(d)
	}
	return err
}

// SetLocked locks or unlocks an account, or returns ErrNotFound. It
// reports whether the flag changed; an account already in that state is
// left as it is, Updated included.
func (s *Store) SetLocked(name string, locked bool) (changed bool, err error) {
	return setLocked(s, name, locked)
}

// Delete removes an account, or returns ErrNotFound.
func (s *Store) Delete(name string) error {
	return s.DeleteIf(name, nil)
}

// DeleteIf removes an account if ok, given its record inside the delete's
// transaction, approves (ok nil approves any), or returns ok's error.
func (s *Store) DeleteIf(name string, ok func(Record) error) error {
	var d saltTally
	err := s.update(func(tx *bolt.Tx) error {
		d = saltTally{}
		b := tx.Bucket(bucketUsers)
		v := b.Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		rec, err := unmarshalRecord(v)
		if ok != nil {
			if err != nil {
				return err
			}
			if err := callOut(func() error { return ok(rec) }); err != nil {
				return err
			}
		}
		if err == nil {
			d.add(rec, -1)
		}
		if err := b.Delete([]byte(name)); err != nil {
			return err
		}
		return addTally(tx, d)
	})
	if err == nil {
		s.applyTally(d)
	}
	return err
}

// DeletePrefix removes every account whose name begins with prefix, which
// must not be empty, in one transaction, and returns how many it removed.
func (s *Store) DeletePrefix(prefix string) (int, error) {
	if prefix == "" {
		return 0, errors.New("an empty prefix would delete every account")
	}
	n := 0
	var d saltTally
	err := s.update(func(tx *bolt.Tx) error {
		n, d = 0, saltTally{}
		c := tx.Bucket(bucketUsers).Cursor()
		p := []byte(prefix)
		// Deleting at the cursor moves it to the next key.
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Seek(p) {
			if rec, err := unmarshalRecord(v); err == nil {
				d.add(rec, -1)
			}
			if err := c.Delete(); err != nil {
				return err
			}
			n++
		}
		return addTally(tx, d)
	})
	if err == nil {
		s.applyTally(d)
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Count returns the number of accounts.
func (s *Store) Count() (int, error) {
	var n int
	err := s.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketUsers).Stats().KeyN
		return nil
	})
	return n, err
}

// Each calls fn for every account in name order, inside one read
// transaction; the record it gets is a copy.
func (s *Store) Each(fn func(name string, rec Record) error) error {
	return s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			rec, err := unmarshalRecord(v)
			if err != nil {
				return fmt.Errorf("account %q: %w", k, err)
			}
			return callOut(func() error { return fn(string(k), rec) })
		})
	})
}

// digest is a SHA-256 over the db's secret and every account as stored,
// in name order: two dbs with the same digest load the same accounts
// under the same secret (restore uses it to know a load it may finish).
func (s *Store) digest() ([]byte, error) {
	h := sha256.New()
	h.Write(s.secret)
	var n [4]byte
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			for _, b := range [][]byte{k, v} {
				binary.BigEndian.PutUint32(n[:], uint32(len(b)))
				h.Write(n[:])
				h.Write(b)
			}
			return nil
		})
	})
	return h.Sum(nil), err
}

// Backup writes a consistent copy of the whole db to w while readers and
// writers carry on.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Identity returns the TLS certificate and key kept in the db, making them
// with create, once, when the db has none. The private key is as secret as
// the db's verifiers; it lives where they do.
func (s *Store) Identity(create func() (cert, key []byte, err error)) (cert, key []byte, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		cert, key = bytes.Clone(meta.Get(keyTLSCert)), bytes.Clone(meta.Get(keyTLSKey))
		return nil
	})
	if err != nil || (cert != nil && key != nil) {
		return cert, key, err
	}
	newCert, newKey, err := create()
	if err != nil {
		return nil, nil, err
	}
	err = s.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		// Another process may have made one since the read: keep it.
		if c, k := meta.Get(keyTLSCert), meta.Get(keyTLSKey); c != nil && k != nil {
			cert, key = bytes.Clone(c), bytes.Clone(k)
			return nil
		}
		cert, key = newCert, newKey
		if err := meta.Put(keyTLSCert, cert); err != nil {
			return err
		}
		return meta.Put(keyTLSKey, key)
	})
	return cert, key, err
}

// FakeSalt derives the stable salt shown for a name that has no account
// (see fakeSalt), under the secret kept in the db.
func (s *Store) FakeSalt(dst []byte, label, name string) []byte {
	return fakeSalt(dst, s.secret, label, name)
}

// storedIdentity is the TLS identity kept in the db, nil if none: what a
// move to another store carries over.
func (s *Store) storedIdentity() (cert, key []byte, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		cert, key = bytes.Clone(meta.Get(keyTLSCert)), bytes.Clone(meta.Get(keyTLSKey))
		return nil
	})
	return cert, key, err
}

// writeDBFile writes a whole bbolt db to w, made from another store's
// contents: its secret, its TLS identity (nil for none) and the encoded
// records that each hands to put, in any order. It is built in a temporary
// file beside none of the user's: bbolt writes only to files.
func writeDBFile(w io.Writer, secret, cert, key []byte, tally saltTally, each func(put func(name string, val []byte) error) error) (int64, error) {
	dir, err := os.MkdirTemp("", "authbox-backup-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	db, err := bolt.Open(filepath.Join(dir, "backup.db"), 0o600, &bolt.Options{Timeout: dbLockTimeout, NoSync: true})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketUsers); err != nil {
			return err
		}
		// The tally as the source keeps it, so that unknown names' fake
		// legacy salts keep their shape (a cluster's only grows).
		puts := map[string][]byte{string(keySchema): {schemaVersion}, string(keySecret): secret, string(keyLegacySalts): tally.encode()}
		if cert != nil && key != nil {
			puts[string(keyTLSCert)], puts[string(keyTLSKey)] = cert, key
		}
		for k, v := range puts {
			if err := meta.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	// Records go in transactions of backupBatch: one transaction holds
	// every dirty page in memory until it commits.
	const backupBatch = 10000
	var pending []NamedRecord
	flush := func() error {
		err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketUsers)
			for _, nr := range pending {
				if err := b.Put([]byte(nr.Name), nr.Record.marshal()); err != nil {
					return err
				}
			}
			return nil
		})
		pending = pending[:0]
		return err
	}
	err = each(func(name string, val []byte) error {
		rec, err := unmarshalRecord(val)
		if err != nil {
			return fmt.Errorf("account %q: %w", name, err)
		}
		pending = append(pending, NamedRecord{name, rec})
		if len(pending) == backupBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return 0, err
	}
	var n int64
	err = db.View(func(tx *bolt.Tx) error {
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}
