package main

// store.go owns every bbolt call. Accounts live in one bucket keyed by the
// normalized username; a small meta bucket holds the server secret, so a
// copied db file answers exactly as the original (same fake salts).

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// dbLockTimeout bounds how long Open waits for another process's lock: a
// second is long enough for a server that is just exiting, short enough that
// a user running a second server gets a clear error instead of a hang.
// A var, not a const, only so that the tests can shorten it.
var dbLockTimeout = time.Second

// batchDelay is how long db.Batch gathers registrations before it commits
// them in one transaction and one fsync. bbolt's default, 10 ms, is longer
// than an fsync on most disks: a lone registration would wait 10 ms, and 64
// concurrent ones would be held to 64 per 10 ms. A millisecond still lets a
// burst share its commits.
const batchDelay = time.Millisecond

var (
	bucketUsers = []byte("users")
	bucketMeta  = []byte("meta")
	keySecret   = []byte("secret")
	keySchema   = []byte("schema")
	// keyTLSCert and keyTLSKey hold the server's self-made TLS identity
	// (DER certificate, PKCS#8 key), so a copied db is the same server.
	keyTLSCert = []byte("tls_cert")
	keyTLSKey  = []byte("tls_key")
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
	// errUnchanged is returned by an Update function that has nothing to
	// write, to end the transaction without a commit.
	errUnchanged = errors.New("record unchanged")
)

// Kind tells how an account proves its password.
type Kind byte

const (
	// KindSCRAM holds SCRAM-SHA-256 StoredKey and ServerKey.
	KindSCRAM Kind = 1
	// KindLegacy holds the original design's hex(sha256(salt+password)).
	KindLegacy Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindSCRAM:
		return "scram"
	case KindLegacy:
		return "legacy"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// Record is one account. For KindSCRAM, Salt is the binary PBKDF2 salt and
// StoredKey/ServerKey the RFC 5802 values. For KindLegacy, Salt is the salt
// text and StoredKey the 32-byte SHA-256 digest; ServerKey is empty and
// Iterations zero.
type Record struct {
	Kind       Kind
	Locked     bool
	Iterations int
	Salt       []byte
	StoredKey  []byte
	ServerKey  []byte
	Created    time.Time
	Updated    time.Time
	// Gen stamps the account's identity: a fresh random value when it is
	// made and at each password change. A session remembers the Gen it
	// logged in to; a record with another Gen (or none) has ended it.
	// Records of version 1 have none and read as 0.
	Gen uint64
}

// recordVersion is the first byte of every encoded record; version 1
// (without Gen) is still read.
const recordVersion = 2

const flagLocked = 1 << 0

// Record layout, version 2 (about 120 bytes for a SCRAM account):
//
//	version u8 | kind u8 | flags u8 | iterations u32 | created i64 | updated i64
//	| gen u64 | saltLen u8 | salt | storedLen u8 | storedKey | serverLen u8 | serverKey
//
// Version 1 is the same without gen.
//
// Times are Unix seconds; byte order is big-endian.
func (r *Record) marshal() []byte {
	b := make([]byte, 0, 3+4+16+8+3+len(r.Salt)+len(r.StoredKey)+len(r.ServerKey))
	var flags byte
	if r.Locked {
		flags |= flagLocked
	}
	b = append(b, recordVersion, byte(r.Kind), flags)
	b = binary.BigEndian.AppendUint32(b, uint32(r.Iterations))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Created.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Updated.Unix()))
	b = binary.BigEndian.AppendUint64(b, r.Gen)
	for _, f := range [][]byte{r.Salt, r.StoredKey, r.ServerKey} {
		b = append(b, byte(len(f)))
		b = append(b, f...)
	}
	return b
}

// unmarshalRecord decodes b, copying every slice: b belongs to a bbolt
// transaction and is invalid once it ends.
func unmarshalRecord(b []byte) (Record, error) {
	if len(b) < 3+4+16+3 || (b[0] != 1 && b[0] != recordVersion) {
		return Record{}, ErrBadRecord
	}
	r := Record{
		Kind:       Kind(b[1]),
		Locked:     b[2]&flagLocked != 0,
		Iterations: int(binary.BigEndian.Uint32(b[3:])),
		Created:    time.Unix(int64(binary.BigEndian.Uint64(b[7:])), 0).UTC(),
		Updated:    time.Unix(int64(binary.BigEndian.Uint64(b[15:])), 0).UTC(),
	}
	version := b[0]
	b = b[23:]
	if version >= 2 {
		if len(b) < 8+3 {
			return Record{}, ErrBadRecord
		}
		r.Gen = binary.BigEndian.Uint64(b)
		b = b[8:]
	}
	for _, f := range []*[]byte{&r.Salt, &r.StoredKey, &r.ServerKey} {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return Record{}, ErrBadRecord
		}
		n := int(b[0])
		*f = bytes.Clone(b[1 : 1+n])
		b = b[1+n:]
	}
	if len(b) != 0 || (r.Kind != KindSCRAM && r.Kind != KindLegacy) {
		return Record{}, ErrBadRecord
	}
	return r, nil
}

// Store is the account database.
type Store struct {
	db     *bolt.DB
	path   string
	secret []byte
	// gets counts account reads; the enumeration test checks that a login
	// for an unknown name reads the store exactly as one for a real name.
	gets atomic.Int64
}

// OpenStore opens or creates the db file at path, mode 0600.
func OpenStore(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: dbLockTimeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%s: %w", path, ErrDBLocked)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.MaxBatchDelay = batchDelay
	s := &Store{db: db, path: path}
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
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

// Path is the db file's path.
func (s *Store) Path() string { return s.path }

// Close closes the db file.
func (s *Store) Close() error { return s.db.Close() }

// Get returns the account for a normalized name, or ErrNotFound.
func (s *Store) Get(name string) (Record, error) {
	s.gets.Add(1)
	var rec Record
	err := s.db.View(func(tx *bolt.Tx) error {
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
// db.Batch so that concurrent registrations share one commit and one fsync.
func (s *Store) Create(name string, rec Record) error {
	now := time.Now()
	rec.Created, rec.Updated = now, now
	rec.Gen = NewGen()
	val := rec.marshal()
	var exists bool
	// Batch may run the function more than once (after another function in
	// the batch fails), so it reports through exists rather than an error,
	// which would force a solo retry.
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		exists = b.Get([]byte(name)) != nil
		if exists {
			return nil
		}
		return b.Put([]byte(name), val)
	})
	if err != nil {
		return err
	}
	if exists {
		return ErrExists
	}
	return nil
}

// NamedRecord is an account with its normalized name, for bulk writes.
type NamedRecord struct {
	Name   string
	Record Record
}

// CreateMany writes accounts in one transaction: all of them or, on error,
// none. An existing name is replaced when replace is set, else left alone
// and counted in skipped. Created and Updated are set to now unless the
// record carries its own.
func (s *Store) CreateMany(recs []NamedRecord, replace bool) (created, skipped int, err error) {
	now := time.Now()
	err = s.db.Update(func(tx *bolt.Tx) error {
		created, skipped = 0, 0
		b := tx.Bucket(bucketUsers)
		// Sorted keys fill bbolt's pages densely, but only if a split
		// leaves the left page full: at bbolt's default fill of 50% a
		// million sorted bench accounts took 294 bytes each. Callers that
		// can, sort; this does not reorder.
		b.FillPercent = 1.0
		for _, nr := range recs {
			if !replace && b.Get([]byte(nr.Name)) != nil {
				skipped++
				continue
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
			created++
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return created, skipped, nil
}

// Update replaces an account's record atomically through fn, which sees the
// current record and returns the new one. It keeps Created and sets Updated.
func (s *Store) Update(name string, fn func(Record) (Record, error)) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		v := b.Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		old, err := unmarshalRecord(v)
		if err != nil {
			return err
		}
		rec, err := fn(old)
		if err != nil {
			return err
		}
		rec.Created, rec.Updated = old.Created, time.Now()
		return b.Put([]byte(name), rec.marshal())
	})
}

// SetLocked locks or unlocks an account, or returns ErrNotFound. It
// reports whether the flag changed; an account already in that state is
// left as it is, Updated included.
func (s *Store) SetLocked(name string, locked bool) (changed bool, err error) {
	err = s.Update(name, func(rec Record) (Record, error) {
		if rec.Locked == locked {
			return rec, errUnchanged
		}
		rec.Locked = locked
		return rec, nil
	})
	if errors.Is(err, errUnchanged) {
		return false, nil
	}
	return err == nil, err
}

// Delete removes an account, or returns ErrNotFound.
func (s *Store) Delete(name string) error {
	return s.DeleteIf(name, nil)
}

// DeleteIf removes an account if ok, given its record inside the delete's
// transaction, approves (ok nil approves any), or returns ok's error.
func (s *Store) DeleteIf(name string, ok func(Record) error) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		v := b.Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		if ok != nil {
			rec, err := unmarshalRecord(v)
			if err != nil {
				return err
			}
			if err := ok(rec); err != nil {
				return err
			}
		}
		return b.Delete([]byte(name))
	})
}

// DeletePrefix removes every account whose name begins with prefix, which
// must not be empty, in one transaction, and returns how many it removed.
func (s *Store) DeletePrefix(prefix string) (int, error) {
	if prefix == "" {
		return 0, errors.New("an empty prefix would delete every account")
	}
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketUsers).Cursor()
		p := []byte(prefix)
		// Deleting at the cursor moves it to the next key.
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Seek(p) {
			if err := c.Delete(); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// NewGen returns a fresh identity stamp for a record (see Record.Gen):
// random, so that a re-registered name never gets its old stamp back.
func NewGen() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// Count returns the number of accounts.
func (s *Store) Count() (int, error) {
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketUsers).Stats().KeyN
		return nil
	})
	return n, err
}

// Each calls fn for every account in name order, inside one read
// transaction; the record it gets is a copy.
func (s *Store) Each(fn func(name string, rec Record) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			rec, err := unmarshalRecord(v)
			if err != nil {
				return fmt.Errorf("account %q: %w", k, err)
			}
			return fn(string(k), rec)
		})
	})
}

// Backup writes a consistent copy of the whole db to w while readers and
// writers carry on.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
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
	err = s.db.View(func(tx *bolt.Tx) error {
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
	err = s.db.Update(func(tx *bolt.Tx) error {
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

// FakeSalt derives the stable salt shown for a name that has no account:
// an HMAC under the server secret, so it differs from name to name, never
// changes for one name, and cannot be told from a random real salt.
func (s *Store) FakeSalt(label, name string) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write([]byte(name))
	return m.Sum(nil)
}
