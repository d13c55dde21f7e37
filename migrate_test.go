package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The RFC 7677 account (user "user", password "pencil") as PostgreSQL
// stores its verifier.
const rfcPGVerifier = "SCRAM-SHA-256$4096:" + rfcSalt + "$" + rfcStoredKey + ":" + rfcServerKey

// legacyUser is a row of the original system's USERS table.
type legacyUser struct{ login, password, salt string }

// uuid4Hex is what the original system used as a salt: uuid.uuid4().hex.
func uuid4Hex(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return hex.EncodeToString(b)
}

// newLegacyUser makes a row the way the original system did:
// password column = hex(sha256(salt + password)).
func newLegacyUser(t testing.TB, login, password string) legacyUser {
	salt := uuid4Hex(t)
	h := sha256.Sum256([]byte(salt + password))
	return legacyUser{login: login, password: hex.EncodeToString(h[:]), salt: salt}
}

// sqliteCSV prints rows as `sqlite3 -csv users.db "SELECT
// login,password,salt FROM USERS"` does: a field is quoted when it is
// empty or holds a byte up to and including space, a double or single
// quote, a comma, DEL or any non-ASCII byte; quotes are doubled; rows end
// in LF. TestSqliteCSVMatchesSqlite3 checks this against sqlite3 itself.
func sqliteCSV(rows [][]string) string {
	var b strings.Builder
	for _, row := range rows {
		for i, f := range row {
			if i > 0 {
				b.WriteByte(',')
			}
			quote := f == ""
			for j := 0; j < len(f); j++ {
				if c := f[j]; c <= ' ' || c == '"' || c == '\'' || c == ',' || c >= 0x7f {
					quote = true
				}
			}
			if quote {
				f = `"` + strings.ReplaceAll(f, `"`, `""`) + `"`
			}
			b.WriteString(f)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func legacyCSV(users []legacyUser) string {
	rows := make([][]string, len(users))
	for i, u := range users {
		rows[i] = []string{u.login, u.password, u.salt}
	}
	return sqliteCSV(rows)
}

// TestSqliteCSVMatchesSqlite3 checks the test's CSV writer against the
// real sqlite3, where it is installed, on names that need quoting.
func TestSqliteCSVMatchesSqlite3(t *testing.T) {
	sqlite, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Skip("sqlite3 is not installed; the CSV writer is checked where it is")
	}
	users := []legacyUser{
		newLegacyUser(t, "alice", "Alice-pw1"), newLegacyUser(t, "émile", "x"),
		newLegacyUser(t, "o'brien", "y"), newLegacyUser(t, "a,b", "z"), newLegacyUser(t, `q"t`, "w"),
		newLegacyUser(t, "has space", "v"),
	}
	db := filepath.Join(t.TempDir(), "users.db")
	var sql strings.Builder
	sql.WriteString("CREATE TABLE USERS(login TEXT PRIMARY KEY, password TEXT, salt TEXT);\n")
	for _, u := range users {
		sql.WriteString("INSERT INTO USERS VALUES('" + strings.ReplaceAll(u.login, "'", "''") + "','" + u.password + "','" + u.salt + "');\n")
	}
	cmd := exec.Command(sqlite, db)
	cmd.Stdin = strings.NewReader(sql.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sqlite3: %v\n%s", err, out)
	}
	got, err := exec.Command(sqlite, "-csv", db, "SELECT login,password,salt FROM USERS").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := legacyCSV(users); string(got) != want {
		t.Fatalf("sqlite3 printed\n%s\nthe test's writer printed\n%s", got, want)
	}
}

func TestParseSeedCSV(t *testing.T) {
	users := []legacyUser{newLegacyUser(t, "alice", "Alice-pw1"), newLegacyUser(t, "émile", "Émile-pw1"), newLegacyUser(t, "a,b", "Comma-pw1")}
	input := "login,password,salt\r\n" + strings.ReplaceAll(legacyCSV(users), "\n", "\r\n") // -header, and CRLF
	res, err := ParseImport(FormatSeedCSV, strings.NewReader(input))
	if err != nil || len(res.Rejected) != 0 || len(res.Accounts) != len(users) || res.Lines != len(users) {
		t.Fatalf("%+v, %v", res, err)
	}
	for i, u := range users {
		a := res.Accounts[i]
		if a.Name != u.login || a.Record.Kind != KindLegacy || string(a.Record.Salt) != u.salt ||
			hex.EncodeToString(a.Record.StoredKey) != u.password || a.Record.Iterations != 0 || a.Record.ServerKey != nil {
			t.Errorf("row %d: %+v", i, a)
		}
		// What the server will answer SEED-SHA256 with is what the
		// original system held.
		if got := SeedStored(string(a.Record.Salt), "nope"); got == u.password {
			t.Fatal("a wrong password matches")
		}
	}
	if SeedStored(users[1].salt, "Émile-pw1") != hex.EncodeToString(res.Accounts[1].Record.StoredKey) {
		t.Fatal("the stored hash does not match the formula")
	}
}

func TestParseSeedCSVRejections(t *testing.T) {
	good := newLegacyUser(t, "alice", "Alice-pw1")
	other := newLegacyUser(t, "bob", "Bob-pw1")
	lines := []string{
		"alice," + good.password + "," + good.salt,                     // 1 ok
		"bob," + other.password,                                        // 2 two columns
		"carol," + strings.Repeat("zz", 32) + "," + good.salt,          // 3 not hex
		"dave," + good.password[:40] + "," + good.salt,                 // 4 short hash
		`"has space",` + good.password + "," + good.salt,               // 5 bad name
		"alice," + other.password + "," + other.salt,                   // 6 duplicate
		"\"ａlice\"," + other.password + "," + other.salt,               // 7 duplicate after normalization
		"erin," + good.password + ",",                                  // 8 NULL salt
		"frank,," + good.salt,                                          // 9 NULL hash
		"\"gina\nx\"," + good.password + "," + good.salt,               // 10-11 a name over two lines
		"hal," + strings.ToUpper(other.password) + "," + other.salt,    // 12 ok: upper-case hex
		`ivan,` + good.password + `,"with space"`,                      // 13 salt with a space
		`jo"e,` + good.password + "," + good.salt,                      // 14 bare quote
		"kim," + good.password + "," + good.salt + ",extra",            // 15 four columns
		"\"unterminated," + good.password + "," + good.salt + "\nlast", // 16 quote never closed
	}
	res, err := ParseImport(FormatSeedCSV, strings.NewReader(strings.Join(lines, "\n")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{
		2:  `"bob": wrong column count: 2, want 3`,
		3:  `"carol": password hash is not hex`,
		4:  `"dave": password hash has 40 characters, want 64`,
		5:  `"has space": bad name`,
		1:  `"alice": lines 1, 6 and 7 name the same account "alice" once normalized, so none of them is imported`,
		6:  `"alice": lines 1, 6 and 7 name the same account "alice"`,
		7:  `"ａlice": lines 1, 6 and 7 name the same account "alice"`,
		8:  `"erin": empty salt`,
		9:  `"frank": empty password hash`,
		10: `bad name`,
		13: `"ivan": salt contains a space`,
		14: `not valid CSV`,
		15: `"kim": wrong column count: 4`,
		16: `not valid CSV`,
	}
	checkRejected(t, res, want)
	var names []string
	for _, a := range res.Accounts {
		names = append(names, a.Name)
	}
	if strings.Join(names, " ") != "hal" {
		t.Errorf("accepted %v, want only hal", names)
	}
	for _, r := range res.Rejected {
		for _, secret := range []string{good.password, other.password, good.salt, strings.ToUpper(other.password)} {
			if strings.Contains(r.Reason, secret) {
				t.Errorf("line %d: the reason quotes a hash or salt: %q", r.Line, r.Reason)
			}
		}
	}
}

// checkRejected checks that exactly the lines in want were rejected, each
// for a reason that contains want's text.
func checkRejected(t *testing.T, res ImportResult, want map[int]string) {
	t.Helper()
	got := map[int]string{}
	for _, r := range res.Rejected {
		got[r.Line] = r.Reason
	}
	for line, w := range want {
		if !strings.Contains(got[line], w) {
			t.Errorf("line %d: reason %q, want it to contain %q", line, got[line], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("rejected %v, want lines %v", got, want)
	}
}

func TestPGVerifierRoundTrip(t *testing.T) {
	rec, err := ParsePGVerifier(rfcPGVerifier)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Kind != KindSCRAM || rec.Iterations != 4096 || EncodeB64(rec.Salt) != rfcSalt ||
		EncodeB64(rec.StoredKey) != rfcStoredKey || EncodeB64(rec.ServerKey) != rfcServerKey {
		t.Fatalf("%+v", rec)
	}
	if got := FormatPGVerifier(rec); got != rfcPGVerifier {
		t.Fatalf("formatted back as %s", got)
	}
	// The verifier is the one our client computes for user/pencil.
	stored, server, _ := Verifier("user", "pencil", rec.Salt, rec.Iterations)
	if !bytes.Equal(stored, rec.StoredKey) || !bytes.Equal(server, rec.ServerKey) {
		t.Fatal("the RFC verifier does not match Verifier()")
	}
}

func TestParsePGRejections(t *testing.T) {
	lines := []string{
		"user," + rfcPGVerifier,                   // 1 ok
		"pg_monitor,",                             // 2 NULL password
		"old,md5a3556571e93b0d20722ba62be61e8c2d", // 3 md5
		"noverifier",                              // 4 no comma
		"few," + strings.Replace(rfcPGVerifier, "4096", "1000", 1), // 5 iterations
		"short," + strings.Replace(rfcPGVerifier, rfcServerKey, "AAAA", 1),
		"bad64," + strings.Replace(rfcPGVerifier, rfcSalt, "!!!!", 1),
		"broken,SCRAM-SHA-256$4096:abc",
		"",                                                              // 9: blank, ignored
		"a,b," + rfcPGVerifier,                                          // 10 ok: a name with a comma
		"user," + rfcPGVerifier + "\r",                                  // 11 duplicate (CRLF)
		"many," + strings.Replace(rfcPGVerifier, "4096", "20000000", 1), // 12: more than clients accept
	}
	res, err := ParseImport(FormatPG, strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{
		2: `"pg_monitor": no password`, 3: `"old": an MD5 password`, 4: "no comma",
		5: `"few": iteration count 1000`, 6: `"short": the keys are 32 and 3 bytes`,
		7: `"bad64": malformed verifier: the salt is not base64`, 8: `"broken": malformed verifier`,
		1:  `"user": lines 1 and 11 name the same account "user"`,
		11: `"user": lines 1 and 11 name the same account "user"`,
		12: `"many": iteration count 20000000 is outside 4096 to 10000000`,
	}
	checkRejected(t, res, want)
	if len(res.Accounts) != 1 || res.Accounts[0].Name != "a,b" {
		t.Errorf("accepted %+v", res.Accounts)
	}
	if res.Lines != 11 {
		t.Errorf("%d lines counted, want 11 (the blank one is not a record)", res.Lines)
	}
}

func TestParseImportUnknownFormat(t *testing.T) {
	if _, err := ParseImport("xml", strings.NewReader("")); err == nil {
		t.Fatal("unknown format accepted")
	}
}

// FuzzParseImport: any input is taken apart into accounts and rejections
// without a panic; every account has a valid name and a usable record,
// and names are never repeated.
func FuzzParseImport(f *testing.F) {
	u := newLegacyUser(f, "alice", "pw")
	f.Add(FormatSeedCSV, "alice,"+u.password+","+u.salt+"\n\"a\"\"b\",x,y\n")
	f.Add(FormatSeedCSV, "\"unterminated\n,,\n")
	f.Add(FormatPG, "user,"+rfcPGVerifier+"\na,b,"+rfcPGVerifier+"\n,\n")
	f.Fuzz(func(t *testing.T, format, input string) {
		res, err := ParseImport(format, strings.NewReader(input))
		if err != nil {
			if format == FormatSeedCSV || format == FormatPG {
				t.Fatalf("reading from memory failed: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, a := range res.Accounts {
			if n, err := NormalizeUsername(a.Name); err != nil || n != a.Name || seen[a.Name] {
				t.Fatalf("account name %q", a.Name)
			}
			seen[a.Name] = true
			r := a.Record
			switch r.Kind {
			case KindLegacy:
				if len(r.StoredKey) != KeyLen || checkSalt(string(r.Salt)) != nil {
					t.Fatalf("legacy record %+v", r)
				}
			case KindSCRAM:
				if len(r.StoredKey) != KeyLen || len(r.ServerKey) != KeyLen || r.Iterations < MinIterations {
					t.Fatalf("scram record %+v", r)
				}
				if back, err := ParsePGVerifier(FormatPGVerifier(r)); err != nil || FormatPGVerifier(back) != FormatPGVerifier(r) {
					t.Fatalf("verifier does not round-trip: %v", err)
				}
			default:
				t.Fatalf("kind %v", r.Kind)
			}
			// A record that goes into the store comes out the same.
			if back, err := unmarshalRecord(r.marshal()); err != nil || !bytes.Equal(back.Salt, r.Salt) {
				t.Fatalf("record does not survive the store's encoding: %v", err)
			}
		}
		if len(res.Accounts)+len(res.Rejected) != res.Lines {
			t.Fatalf("%d accounts + %d rejected != %d lines", len(res.Accounts), len(res.Rejected), res.Lines)
		}
	})
}

// TestRejectionsNeverQuoteAVerifier: a pg line split at the wrong comma (a
// trailing one, as psql prints for an extra NULL column) or with swapped
// columns puts the verifier or a hash in the name field; the reason must
// not print it, and a quoted name is never longer than a username.
func TestRejectionsNeverQuoteAVerifier(t *testing.T) {
	u := newLegacyUser(t, "alice", "Alice-pw1")
	long := strings.Repeat("n", 65)
	pg := []string{
		"alice," + rfcPGVerifier + ",",           // 1 trailing comma: name "alice,SCRAM…"
		rfcPGVerifier + ",alice",                 // 2 swapped columns
		long + "," + rfcPGVerifier + "",          // 3 a 65-byte name
		"ok,md5a3556571e93b0d20722ba62be61e8c2d", // 4 a short name is quoted
	}
	res, err := ParseImport(FormatPG, strings.NewReader(strings.Join(pg, "\n")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	checkRejected(t, res, map[int]string{
		1: "the name field is not a valid username", 2: "the name field is not a valid username",
		3: "the name field is not a valid username (65 bytes, at most 64)", 4: `"ok": an MD5 password`,
	})
	csvLines := []string{
		u.password + ",alice," + u.salt,          // 1 hash and name swapped
		"md5" + u.password[:32] + ",x," + u.salt, // 2 an md5-looking hash as the name
		u.salt + "," + u.password,                // 3 the salt first, two columns
	}
	res2, err := ParseImport(FormatSeedCSV, strings.NewReader(strings.Join(csvLines, "\n")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	checkRejected(t, res2, map[int]string{1: "not shown", 2: "not shown", 3: "not shown: wrong column count"})
	for _, r := range append(res.Rejected, res2.Rejected...) {
		for _, secret := range []string{rfcStoredKey, rfcServerKey, rfcSalt, u.password, u.password[:32], u.salt, long} {
			if strings.Contains(r.Reason, secret) {
				t.Errorf("line %d quotes a secret or a long name: %q", r.Line, r.Reason)
			}
		}
		if strings.Contains(r.Reason, "$") {
			t.Errorf("line %d quotes a verifier: %q", r.Line, r.Reason)
		}
	}
}

// TestImportLinesAreBounded: a line over maxImportLine is rejected with
// its number and skipped, and the lines after it are read as usual, in
// both formats; parsing it does not buffer it.
func TestImportLinesAreBounded(t *testing.T) {
	u := newLegacyUser(t, "bob", "Bob-pw1")
	huge := strings.Repeat("x", maxImportLine)
	fits := strings.Repeat("y", maxImportLine-1) // with its LF: exactly the cap
	pg := "user," + rfcPGVerifier + "\n" + huge + "\n" + fits + "\n" + "a,b," + rfcPGVerifier + "\n" + huge
	res, err := ParseImport(FormatPG, strings.NewReader(pg))
	if err != nil {
		t.Fatal(err)
	}
	checkRejected(t, res, map[int]string{2: "line longer than 65536 bytes", 3: "no comma", 5: "line longer than 65536 bytes"})
	if len(res.Accounts) != 2 || res.Accounts[1].Name != "a,b" {
		t.Errorf("accepted %+v", res.Accounts)
	}

	ok := legacyCSV([]legacyUser{u})
	csvIn := `"quoted` + "\n" + huge + "\n" + `end",x,y` + "\n" + // 1-3: one record over the cap
		ok + // 4
		huge + "," + u.password + "," + u.salt + "\n" + // 5
		"\"g\nx\"," + u.password + "," + u.salt + "\n" + // 6-7: under the cap
		legacyCSV([]legacyUser{{login: "carol", password: u.password, salt: u.salt}}) // 8
	res, err = ParseImport(FormatSeedCSV, strings.NewReader(csvIn))
	if err != nil {
		t.Fatal(err)
	}
	checkRejected(t, res, map[int]string{1: "longer than 65536 bytes", 3: "not valid CSV", 5: "longer than 65536 bytes", 6: "bad name"})
	if len(res.Accounts) != 2 || res.Accounts[0].Name != "bob" || res.Accounts[1].Name != "carol" {
		t.Errorf("accepted %+v", res.Accounts)
	}
	if res.Rejected[0].Line != 1 {
		t.Errorf("rejections out of line order: %+v", res.Rejected)
	}

	// A 64 MiB line with no newline is read through, not held.
	const size = 64 << 20
	for _, format := range []string{FormatPG, FormatSeedCSV} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		res, err := ParseImport(format, io.LimitReader(zeroReader{}, size))
		runtime.ReadMemStats(&after)
		if err != nil || len(res.Rejected) != 1 || res.Rejected[0].Line != 1 {
			t.Fatalf("%s: %+v %v", format, res, err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/8 {
			t.Errorf("%s: a %d-byte line allocated %d bytes", format, size, alloc)
		}
	}
}

// zeroReader is an endless line of 'z'.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'z'
	}
	return len(p), nil
}
