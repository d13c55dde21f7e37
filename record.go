package main

// record.go is an account as it is stored: its kind, its fields, and the
// versioned byte encoding both stores keep (the bbolt file and etcd).

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"
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
	// One copy of the three length-prefixed values (b may be the db's
	// own memory), sliced with their capacity capped so that an append to
	// one cannot run into the next: one allocation a login, not three.
	b = bytes.Clone(b)
	for _, f := range []*[]byte{&r.Salt, &r.StoredKey, &r.ServerKey} {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return Record{}, ErrBadRecord
		}
		n := int(b[0])
		*f = b[1 : 1+n : 1+n]
		b = b[1+n:]
	}
	if len(b) != 0 || (r.Kind != KindSCRAM && r.Kind != KindLegacy) {
		return Record{}, ErrBadRecord
	}
	return r, nil
}

// NamedRecord is an account with its normalized name, for bulk writes.
type NamedRecord struct {
	Name   string
	Record Record
}

// NewGen returns a fresh identity stamp for a record (see Record.Gen):
// random, so that a re-registered name never gets its old stamp back.
func NewGen() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}
