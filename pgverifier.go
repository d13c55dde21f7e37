package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// pgverifier.go is PostgreSQL's text form of a SCRAM-SHA-256 verifier,
// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, which import,
// export, pw and users passwd read and write.

// ParsePGVerifier reads a PostgreSQL verifier
// "SCRAM-SHA-256$<iterations>:<salt-b64>$<StoredKey-b64>:<ServerKey-b64>"
// into a SCRAM record.
func ParsePGVerifier(v string) (Record, error) {
	switch {
	case v == "":
		return Record{}, errors.New("no password (NULL rolpassword)")
	case strings.HasPrefix(v, "md5"):
		return Record{}, errors.New("an MD5 password, not a SCRAM-SHA-256 verifier")
	case !strings.HasPrefix(v, pgPrefix):
		return Record{}, errors.New("not a SCRAM-SHA-256 verifier")
	}
	factors, keys, ok := strings.Cut(v[len(pgPrefix):], "$")
	it, salt, ok1 := strings.Cut(factors, ":")
	stored, server, ok2 := strings.Cut(keys, ":")
	if !ok || !ok1 || !ok2 {
		return Record{}, errors.New("malformed verifier: want SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")
	}
	n, err := strconv.Atoi(it)
	if err != nil || strconv.Itoa(n) != it {
		return Record{}, errors.New("malformed verifier: the iteration count is not a decimal number")
	}
	// Clients refuse counts outside this range (client.max_iterations, at
	// its default): such an account could never log in.
	if n < MinIterations || n > defaultMaxIterations() {
		return Record{}, fmt.Errorf("iteration count %d is outside %d to %d, which clients accept", n, MinIterations, defaultMaxIterations())
	}
	rec := Record{Kind: KindSCRAM, Iterations: n}
	for _, f := range []struct {
		what string
		s    string
		to   *[]byte
	}{{"salt", salt, &rec.Salt}, {"StoredKey", stored, &rec.StoredKey}, {"ServerKey", server, &rec.ServerKey}} {
		if *f.to, err = base64.StdEncoding.Strict().DecodeString(f.s); err != nil {
			return Record{}, fmt.Errorf("malformed verifier: the %s is not base64", f.what)
		}
	}
	switch {
	case len(rec.Salt) == 0 || len(rec.Salt) > maxFieldBytes:
		return Record{}, fmt.Errorf("the salt is %d bytes, want 1 to %d", len(rec.Salt), maxFieldBytes)
	case len(rec.StoredKey) != KeyLen || len(rec.ServerKey) != KeyLen:
		return Record{}, fmt.Errorf("the keys are %d and %d bytes, want %d (SHA-256)", len(rec.StoredKey), len(rec.ServerKey), KeyLen)
	}
	return rec, nil
}

// FormatPGVerifier writes a SCRAM record as PostgreSQL stores it.
func FormatPGVerifier(rec Record) string {
	return fmt.Sprintf("%s%d:%s$%s:%s", pgPrefix, rec.Iterations, EncodeB64(rec.Salt), EncodeB64(rec.StoredKey), EncodeB64(rec.ServerKey))
}

// FormatPGLine is one line of an export: "name,verifier" and LF.
func FormatPGLine(name string, rec Record) string {
	return name + "," + FormatPGVerifier(rec) + "\n"
}

// sniffSampleBytes is how much of an import the format sniffer looks at.
const sniffSampleBytes = 16 << 10
