package main

// migrate.go reads and writes the account formats that move accounts in and
// out of authbox: the original system's USERS table as sqlite3 prints it in
// CSV, and PostgreSQL's SCRAM verifier text. It is parsing and formatting
// only, like protocol.go: no socket, no file, no store, so it can be fuzzed
// on plain bytes. The one outside value it reads is the embedded default
// config's client.max_iterations (defaultMaxIterations), so that it
// refuses verifiers our own clients would refuse.

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
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

// maxImportLine bounds one input line, line end included (and a CSV
// record, which may span lines inside quotes), so that a file with no
// newline cannot make the server buffer all of it. The longest useful
// line is a few hundred bytes; a longer one is rejected and skipped.
const maxImportLine = 64 << 10

// maxQuotedName bounds a name field quoted in a rejection: a longer one is
// no valid username anyway, and may be a whole line gone wrong.
const maxQuotedName = MaxUsernameBytes

// seedHeader is the first line sqlite3 prints with -header; it is skipped.
var seedHeader = []string{"login", "password", "salt"}

// Rejection is one input line that cannot become an account, and why. The
// reason never quotes a hash, a key or a salt, nor a name field that may
// hold one (see nameShown).
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
// cannot become an account is rejected with its line number. Lines whose
// names normalize to the same account (fullwidth "ｆrank" and "frank", or
// the same name twice) are all rejected, each naming the others: which of
// them is the account's real owner is not for the import to guess, and
// keeping the first would hand the account to whoever came first. Only a
// read error of r itself is returned as an error.
func ParseImport(format string, r io.Reader) (ImportResult, error) {
	var res ImportResult
	claims := map[string][]int{} // normalized name → the lines that name it
	var written []writtenAt      // where each of res.Accounts was read
	// add takes one record: its line, its name as written (empty when the
	// line is too broken to have one), and the record or why there is none.
	add := func(line int, name string, rec Record, err error) {
		res.Lines++
		n, nerr := NormalizeUsername(name)
		if name != "" && nerr == nil {
			// A broken line still claims its name: its owner's account
			// must not go to another line that names it too.
			claims[n] = append(claims[n], line)
		}
		if err == nil && nerr != nil {
			err = fmt.Errorf("bad name: %s", nameWhy(nerr))
		}
		if err == nil {
			written = append(written, writtenAt{line, name})
			res.Accounts = append(res.Accounts, NamedRecord{Name: n, Record: rec})
			return
		}
		res.Rejected = append(res.Rejected, Rejection{Line: line, Reason: rejectionReason(name, err)})
	}
	var err error
	switch format {
	case FormatSeedCSV:
		err = parseSeedCSV(r, add)
	case FormatPG:
		err = parsePG(r, add)
	default:
		return res, fmt.Errorf("unknown format %q (known: %s, %s)", format, FormatSeedCSV, FormatPG)
	}
	res.rejectClashes(claims, written)
	// A CSV record too long to parse is rejected as it is read, ahead of
	// the records before it that the CSV reader still buffers.
	slices.SortStableFunc(res.Rejected, func(a, b Rejection) int { return a.Line - b.Line })
	return res, err
}

// writtenAt is an account's line and its name as the line spells it.
type writtenAt struct {
	line int
	name string
}

// rejectClashes moves every account whose name another line also claims
// from Accounts to Rejected.
func (res *ImportResult) rejectClashes(claims map[string][]int, written []writtenAt) {
	kept := res.Accounts[:0]
	for i, a := range res.Accounts {
		lines := claims[a.Name]
		if len(lines) < 2 {
			kept = append(kept, a)
			continue
		}
		account := "the same account"
		if nameShown(a.Name) {
			account = fmt.Sprintf("the same account %q", a.Name)
		}
		err := fmt.Errorf("lines %s name %s once normalized, so none of them is imported", lineList(lines), account)
		res.Rejected = append(res.Rejected, Rejection{Line: written[i].line, Reason: rejectionReason(written[i].name, err)})
	}
	res.Accounts = kept
}

// lineList writes line numbers as "1 and 6" or "1, 6 and 7".
func lineList(lines []int) string {
	parts := make([]string, len(lines))
	for i, l := range lines {
		parts[i] = strconv.Itoa(l)
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

// rejectionReason is why a line was rejected, with its name field quoted
// when that is safe.
func rejectionReason(name string, err error) string {
	switch {
	case name == "":
		return err.Error()
	case len(name) > maxQuotedName:
		return fmt.Sprintf("the name field is not a valid username (%d bytes, at most %d), not shown: %s", len(name), maxQuotedName, err)
	case !nameShown(name):
		return fmt.Sprintf("the name field is not a valid username (it holds a dollar sign or looks like a hash: an extra column, or columns swapped?), not shown: %s", err)
	}
	return fmt.Sprintf("%q: %s", name, err)
}

// nameShown reports whether a name field may be quoted. A pg line split
// at the wrong comma (an extra column, as psql prints for a NULL one) or
// swapped columns put a verifier or a hash where the name should be, and
// a rejection must not print it: every verifier holds a "$", and a hash
// is a long run of hex or base64.
func nameShown(name string) bool {
	if strings.ContainsRune(name, '$') {
		return false
	}
	hexRun := strings.TrimPrefix(name, "md5")
	if len(hexRun) >= 32 && strings.Trim(hexRun, "0123456789abcdefABCDEF") == "" {
		return false
	}
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
	return len(name) < 40 || strings.Trim(name, b64) != ""
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
	cr := csv.NewReader(&csvRecords{lines: newLineReader(r), add: add})
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

// csvRecords hands encoding/csv the input one whole record at a time, each
// at most maxImportLine bytes: csv.Reader keeps no limit of its own. A
// record that is too long is rejected here and replaced by as many empty
// lines, which csv.Reader skips, so that its line numbers stay right.
// Record ends are found as csv.Reader (without LazyQuotes) finds them: a
// quote opens a field only at its start, and a quoted field may span
// lines; a stray quote ends the record at the end of its line.
type csvRecords struct {
	lines   *lineReader
	add     func(int, string, Record, error)
	pending []byte // what Read has yet to hand out
	rec     []byte // the record being read
	err     error
}

func (c *csvRecords) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		c.fill()
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// fill reads the next record into pending.
func (c *csvRecords) fill() {
	c.rec = c.rec[:0]
	start, nlines, tooLong := 0, 0, false
	inQuote := false
	for {
		line, n, long, err := c.lines.nextRaw()
		if err != nil {
			c.err = err
			break
		}
		if nlines == 0 {
			start = n
		}
		nlines++
		if long || len(c.rec)+len(line) > maxImportLine {
			tooLong = true
			c.rec = c.rec[:0]
		}
		if !tooLong {
			c.rec = append(c.rec, line...)
		}
		if inQuote = csvQuoteOpen(line, inQuote); !inQuote || tooLong {
			break
		}
	}
	if tooLong {
		c.add(start, "", Record{}, fmt.Errorf("longer than %d bytes (a line, or a quoted field over several)", maxImportLine))
		c.rec = c.rec[:0]
		for range nlines {
			c.rec = append(c.rec, '\n')
		}
	}
	c.pending = c.rec
}

// csvQuoteOpen reports whether a quoted field is still open at the end of
// line, given whether one was open at its start.
func csvQuoteOpen(line []byte, inQuote bool) bool {
	fieldStart := !inQuote
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inQuote && c == '"' && i+1 < len(line) && line[i+1] == '"':
			i++ // an escaped quote
		case inQuote && c == '"':
			inQuote = false
			if i+1 < len(line) && line[i+1] != ',' && line[i+1] != '\r' && line[i+1] != '\n' {
				return false // csv.Reader rejects the record at this line
			}
		case inQuote:
		case c == '"' && fieldStart:
			inQuote = true
		case c == '"':
			return false // a bare quote: rejected at this line
		default:
			fieldStart = c == ','
		}
	}
	return inQuote
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
		if line == lineTooLong {
			add(n, "", Record{}, fmt.Errorf("line longer than %d bytes", maxImportLine))
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

// lineReader yields lines, counting them, each at most maxImportLine
// bytes: the rest of a longer one is read and dropped.
type lineReader struct {
	r *bufio.Reader
	n int
}

// lineTooLong is what next returns for a line over maxImportLine; no line
// holds a NUL.
const lineTooLong = "\x00too long"

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, maxImportLine)}
}

// next returns a line without its LF or CRLF, or lineTooLong.
func (l *lineReader) next() (string, int, error) {
	line, n, long, err := l.nextRaw()
	if err != nil {
		return "", 0, err
	}
	if long {
		return lineTooLong, n, nil
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r"), n, nil
}

// nextRaw returns a line with its line end, valid until the next call, or
// long if it is over maxImportLine (and then no bytes).
func (l *lineReader) nextRaw() (line []byte, n int, long bool, err error) {
	line, err = l.r.ReadSlice('\n')
	for errors.Is(err, bufio.ErrBufferFull) {
		long = true
		_, err = l.r.ReadSlice('\n')
	}
	if len(line) == 0 && err != nil {
		return nil, 0, false, err
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, false, err
	}
	l.n++
	if long {
		line = nil
	}
	return line, l.n, long, nil
}

// SniffFormat names the import format other than format under which the
// whole lines of sample (an input's first bytes) all parse, or returns ""
// when there is none: an import whose every line was rejected under one
// format can then say the file looks like the other.
func SniffFormat(format string, sample []byte) string {
	if i := bytes.LastIndexByte(sample, '\n'); i >= 0 {
		sample = sample[:i+1]
	}
	for _, other := range []string{FormatSeedCSV, FormatPG} {
		if other == format {
			continue
		}
		res, err := ParseImport(other, bytes.NewReader(sample))
		if err == nil && len(res.Accounts) > 0 && len(res.Rejected) == 0 {
			return other
		}
	}
	return ""
}

// headWriter keeps the first max bytes written to it and drops the rest:
// the sample SniffFormat reads, taken as an import streams by.
type headWriter struct {
	buf []byte
	max int
}

func (h *headWriter) Write(p []byte) (int, error) {
	if room := h.max - len(h.buf); room > 0 {
		h.buf = append(h.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}
