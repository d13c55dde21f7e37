package main

// legacysalt.go shapes the salt a SEED-SHA256 challenge shows for a name
// with no legacy account. The original system made its salts with uuid4
// and stored them as hex, dashed or not; a fake salt of uniform hex stood
// out against them (character 13 of a uuid4 is always "4", character 17
// one of "89ab"), so that a prober could list the legacy accounts. A fake
// salt is therefore a uuid4 too, dashed as often as the db's real legacy
// salts are, and derived from the server secret so that a name shows the
// same one at every probe.

import (
	"encoding/binary"
	"encoding/hex"
	"math/bits"
)

// saltTally counts the db's legacy salts by shape: dashed is the 36-byte
// "8-4-4-4-12" form, plain every other (32 hex digits as a rule). The store
// keeps it in the meta bucket, changed in the transaction that changes a
// legacy record, so that choosing a fake salt's shape needs no scan.
type saltTally struct {
	dashed, plain int64
}

// add counts rec, if it is legacy, sign times (1 to count it, -1 to uncount).
func (t *saltTally) add(rec Record, sign int64) {
	if rec.Kind != KindLegacy {
		return
	}
	if isDashedUUID(rec.Salt) {
		t.dashed += sign
	} else {
		t.plain += sign
	}
}

func (t saltTally) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(t.dashed))
	return binary.BigEndian.AppendUint64(b, uint64(t.plain))
}

// decodeTally reads what encode wrote; ok is false for anything else.
func decodeTally(b []byte) (t saltTally, ok bool) {
	if len(b) != 16 {
		return saltTally{}, false
	}
	return saltTally{int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))}, true
}

// isDashedUUID reports whether salt has the dashes of a textual UUID.
func isDashedUUID(salt []byte) bool {
	return len(salt) == 36 && salt[8] == '-' && salt[13] == '-' && salt[18] == '-' && salt[23] == '-'
}

// fakeLegacySalt shapes mac, at least 24 bytes of an HMAC that is stable
// for a name, into a lower-case uuid4: its first 16 bytes are the UUID,
// with the version and variant bits set as uuid4 sets them; the next 8
// choose the dashed form with the probability t gives it (never when the
// db holds no legacy salt, plain hex being what the original system
// stored).
func fakeLegacySalt(mac []byte, t saltTally) string {
	var u [16]byte
	copy(u[:], mac[:16])
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	plain := hex.EncodeToString(u[:])
	dashed, total := max(t.dashed, 0), max(t.dashed, 0)+max(t.plain, 0)
	if total == 0 {
		return plain
	}
	// The high word of a uniform 64-bit value times total is uniform in
	// [0, total), without modulo bias worth the name.
	if pick, _ := bits.Mul64(binary.BigEndian.Uint64(mac[16:24]), uint64(total)); pick >= uint64(dashed) {
		return plain
	}
	return plain[:8] + "-" + plain[8:12] + "-" + plain[12:16] + "-" + plain[16:20] + "-" + plain[20:]
}
