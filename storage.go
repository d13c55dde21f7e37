package main

// storage.go is the one interface both stores keep: the bbolt file
// (store.go, the default) and an etcd cluster (etcdstore.go). The server,
// the admin commands and the tests see only this; storage_test.go is the
// conformance suite every store passes.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// Storage is an account store.
type Storage interface {
	// Describe names the store for logs and messages: a file path, or
	// the etcd endpoints and prefix.
	Describe() string
	// Ping reports whether the store can be read now.
	Ping() error
	Close() error

	// Get returns the account for a normalized name, or ErrNotFound.
	Get(name string) (Record, error)
	// Create adds a new account, durably, or returns ErrExists.
	Create(name string, rec Record) error
	// CreateMany writes accounts in bulk; see each store for how much of
	// it is one transaction.
	CreateMany(recs []NamedRecord, replace bool) (created, skipped int, err error)
	// Update replaces an account's record atomically through fn, which
	// sees the current record; it keeps Created and sets Updated. fn may
	// run more than once (a store that compares and retries).
	Update(name string, fn func(Record) (Record, error)) error
	// SetLocked locks or unlocks an account; it reports whether the flag
	// changed.
	SetLocked(name string, locked bool) (changed bool, err error)
	// Delete removes an account, or returns ErrNotFound.
	Delete(name string) error
	// DeleteIf removes an account if ok approves its current record.
	DeleteIf(name string, ok func(Record) error) error
	// DeletePrefix removes, at once, every account whose name begins with
	// prefix (not empty), and says how many.
	DeletePrefix(prefix string) (int, error)
	// Count is the number of accounts.
	Count() (int, error)
	// Each calls fn for every account in name order, from one consistent
	// view of the store.
	Each(fn func(name string, rec Record) error) error

	// Backup writes the whole store as a bbolt db file, which
	// "authbox serve --db" serves as it is: same accounts, same fake
	// salts, same TLS identity.
	Backup(w io.Writer) (int64, error)
	// Identity returns the TLS certificate and key kept in the store,
	// making them with create, once for all who share the store.
	Identity(create func() (cert, key []byte, err error)) (cert, key []byte, err error)
	// FakeSalt appends to dst the stable value shown for a name with no
	// account (dst, not a new slice: every login makes one).
	FakeSalt(dst []byte, label, name string) []byte
	// FakeLegacySalt shapes a name's FakeSalt("seed", name) as the
	// store's real legacy salts are shaped (see fakeLegacySalt).
	FakeLegacySalt(mac []byte) string
}

// openStorage opens the store the config names.
func openStorage(cfg Config) (Storage, error) {
	if cfg.Store == "etcd" {
		return OpenEtcd(cfg.Etcd)
	}
	return OpenStore(cfg.DB)
}

// setLocked is SetLocked in terms of Update, for every store.
func setLocked(s Storage, name string, locked bool) (bool, error) {
	err := s.Update(name, func(rec Record) (Record, error) {
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

// fakeSalt is an HMAC under the store's secret, so it differs from name to
// name, never changes for one name, is the same wherever the secret is
// (a copied file, every server of a cluster), and cannot be told from a
// random real salt.
func fakeSalt(dst, secret []byte, label, name string) []byte {
	m := lastSaltMAC.Load()
	if m == nil || !hmac.Equal(m.secret, secret) {
		m = newSaltMAC(secret)
		lastSaltMAC.Store(m)
	}
	h := m.hashes.Get().(*saltHash)
	h.msg = append(append(append(h.msg[:0], label...), 0), name...)
	h.mac.Reset()
	h.mac.Write(h.msg)
	dst = h.mac.Sum(dst)
	m.hashes.Put(h)
	return dst
}

// saltMAC is HMAC-SHA-256 under one secret, kept between logins: an HMAC
// once reset starts from the hash states of its padded key, which saves
// two of the four SHA-256 blocks a fake salt takes (0.14 against 0.27 µs).
// A process serves one store, so the secret last used is the one kept;
// another (a restore on etcd, tests) replaces it.
type saltMAC struct {
	secret []byte
	hashes sync.Pool // of *saltHash
}

type saltHash struct {
	mac hash.Hash
	msg []byte // label 0 name: a buffer of the hash's, as Write's argument escapes
}

var lastSaltMAC atomic.Pointer[saltMAC]

func newSaltMAC(secret []byte) *saltMAC {
	m := &saltMAC{secret: bytes.Clone(secret)}
	m.hashes.New = func() any { return &saltHash{mac: hmac.New(sha256.New, m.secret), msg: make([]byte, 0, 64)} }
	return m
}
