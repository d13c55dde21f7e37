package main

// migrate.go reads and writes the account formats that move accounts in and
// out of authbox: the original system's USERS table as sqlite3 prints it in
// CSV, and PostgreSQL's SCRAM verifier text. It is pure parsing and
// formatting, like protocol.go: no socket, no file, no store, so it can be
// fuzzed on plain bytes.

import (
	"bufio"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Import formats, as named by --format.
const (
	FormatSeedCSV = "seed-csv"
	FormatPG      = "pg"
)

// pgPrefix starts every PostgreSQL SCRAM-SHA-256 verifier.
const pgPrefix = "SCRAM-SHA-256$"

// maxFieldBytes bounds a stored salt: the record keeps its length in one
// byte.
const maxFieldBytes = 255

// seedHeader is the first line sqlite3 prints with -header; it is skipped.
var seedHeader = []string{"login", "password", "salt"}

// Rejection is one input line that cannot become an account, and why. The
// reason never quotes a hash, a key or a salt.
type Rejection struct {
	Line   int
	Reason string
}

// ImportResult is what an input file holds: the accounts to create, in file
// order, and the lines rejected.
type ImportResult struct {
	Accounts []NamedRecord
	Rejected []Rejection
	// Lines is how many records were read, blank and header lines aside.
	Lines int
}

// ParseImport reads a whole input in the given format. Every line that
// cannot become an account is rejected with its line number; a name that
// comes twice (after normalization) is kept at its first line and rejected
// at the others. Only a read error of r itself is returned as an error.
func ParseImport(format string, r io.Reader) (ImportResult, error) {
	var res ImportResult
	first := map[string]int{} // normalized name → line it was first seen
	// add takes one record: its line, its name as written (empty when the
	// line is too broken to have one), and the record or why there is none.
	add := func(line int, name string, rec Record, err error) {
		res.Lines++
		if err == nil {
			n, nerr := NormalizeUsername(name)
			at, dup := first[n]
			switch {
			case nerr != nil:
				err = fmt.Errorf("bad name: %s", nameWhy(nerr))
			case dup:
				err = fmt.Errorf("duplicate in the file: the name is already on line %d", at)
			default:
				first[n] = line
				res.Accounts = append(res.Accounts, NamedRecord{Name: n, Record: rec})
				return
			}
		}
		reason := err.Error()
		if name != "" {
			reason = fmt.Sprintf("%q: %s", name, reason)
		}
		res.Rejected = append(res.Rejected, Rejection{Line: line, Reason: reason})
	}
	switch format {
	case FormatSeedCSV:
		return res, parseSeedCSV(r, add)
	case FormatPG:
		return res, parsePG(r, add)
	}
	return res, fmt.Errorf("unknown format %q (known: %s, %s)", format, FormatSeedCSV, FormatPG)
}

// nameWhy is the reason NormalizeUsername gave, without the wire code.
func nameWhy(err error) string {
	var pe *ProtoError
	if errors.As(err, &pe) {
		return pe.Text
	}
	return err.Error()
}

// parseSeedCSV reads `sqlite3 -csv users.db "SELECT login,password,salt
// FROM USERS"`: RFC 4180 CSV, fields quoted when they hold a comma, a
// quote, a space or a non-ASCII byte, LF or CRLF line ends, NULL as an
// empty field, and a header line only if -header was given.
func parseSeedCSV(r io.Reader, add func(int, string, Record, error)) error {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // counted here, so the reason can say so
	for n := 0; ; n++ {
		fields, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			res := fmt.Errorf("not valid CSV: %s", pe.Err)
			add(pe.StartLine, "", Record{}, res)
			continue
		}
		if err != nil {
			return err
		}
		line, _ := cr.FieldPos(0)
		if n == 0 && equalStrings(fields, seedHeader) {
			continue
		}
		if len(fields) != 3 {
			add(line, fields[0], Record{}, fmt.Errorf("wrong column count: %d, want 3 (login,password,salt)", len(fields)))
			continue
		}
		rec, err := LegacyRecord(fields[1], fields[2])
		add(line, fields[0], rec, err)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// LegacyRecord makes a legacy record from the original system's password
// column, hex(sha256(salt + password)), and its salt text.
func LegacyRecord(hash, salt string) (Record, error) {
	switch {
	case hash == "":
		return Record{}, errors.New("empty password hash (NULL in the database?)")
	case len(hash) != 2*KeyLen:
		return Record{}, fmt.Errorf("password hash has %d characters, want %d hex digits (SHA-256)", len(hash), 2*KeyLen)
	}
	stored, err := hex.DecodeString(hash)
	if err != nil {
		return Record{}, errors.New("password hash is not hex")
	}
	if err := checkSalt(salt); err != nil {
		return Record{}, err
	}
	return Record{Kind: KindLegacy, Salt: []byte(salt), StoredKey: stored}, nil
}

// checkSalt accepts a legacy salt that can travel as one CHALLENGE argument.
func checkSalt(salt string) error {
	switch {
	case salt == "":
		return errors.New("empty salt (NULL in the database?)")
	case len(salt) > maxFieldBytes:
		return fmt.Errorf("salt longer than %d bytes", maxFieldBytes)
	case !utf8.ValidString(salt):
		return errors.New("salt is not valid UTF-8")
	case strings.IndexFunc(salt, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return errors.New("salt contains a space or a control character")
	}
	return nil
}

// parsePG reads `psql -At -F, -c "SELECT rolname, rolpassword FROM
// pg_authid"`: one "name,verifier" a line, unquoted. A verifier has no
// comma, so the line splits at its last one and a name may hold commas.
func parsePG(r io.Reader, add func(int, string, Record, error)) error {
	lr := newLineReader(r)
	for {
		line, n, err := lr.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ',')
		if i < 0 {
			add(n, "", Record{}, errors.New("no comma between the name and the verifier"))
			continue
		}
		rec, err := ParsePGVerifier(line[i+1:])
		add(n, line[:i], rec, err)
	}
}

// lineReader yields lines without their LF or CRLF, counting them.
type lineReader struct {
	r *bufio.Reader
	n int
}

func newLineReader(r io.Reader) *lineReader { return &lineReader{r: bufio.NewReader(r)} }

func (l *lineReader) next() (string, int, error) {
	line, err := l.r.ReadString('\n')
	if line == "" && err != nil {
		return "", 0, err
	}
	l.n++
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	return line, l.n, nil
}

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
	if n < MinIterations || n > 1<<31-1 {
		return Record{}, fmt.Errorf("iteration count %d is outside %d to %d (clients refuse fewer than %d)", n, MinIterations, 1<<31-1, MinIterations)
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
