package main

// fuzz_test.go holds the native fuzz targets (go test -fuzz) of the wire
// protocol. Each one checks properties taken from the protocol v1 contract (PROTOCOL.md describes it), not only
// that nothing panics:
//
//   - FuzzParseLine: the pure parsers and formatters of protocol.go.
//   - FuzzStateMachine: sequences of command lines through conn.handleLine.
//   - FuzzSCRAM: fuzzed SCRAM messages against a real account; only a
//     correct proof may log in.
//   - FuzzLeanSCRAM: scramServer against the SCRAM library's server, the
//     same messages to both, the same answers required.
//
// Seeds are in the f.Add calls below and in testdata/fuzz/<FuzzName>/.

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/xdg-go/scram"
	"github.com/xdg-go/stringprep"
)

// fzSpecCodes is the contract's table of error codes (PROTOCOL.md §3).
var fzSpecCodes = map[string]bool{
	CodeBadCmd: true, CodeBadReq: true, CodeTooLong: true, CodeBadName: true,
	CodeExists: true, CodeNoMech: true, CodeAuth: true, CodeLocked: true,
	CodeLimit: true, CodeDenied: true, CodeBusy: true, CodeTimeout: true,
	CodeInternal: true,
}

// fzConnCodes belong to the connection (framing, queue, deadlines), never to
// the handling of one complete line of at most 4096 bytes.
var fzConnCodes = map[string]bool{CodeTooLong: true, CodeBusy: true, CodeTimeout: true}

// fzMaxLines bounds the lines one FuzzStateMachine input drives.
const fzMaxLines = 64

// ---------------------------------------------------------------------------
// Shared checks

// fzProtoErr asserts that err is a *ProtoError with a code from the spec's
// table and non-empty text, and returns it.
func fzProtoErr(t *testing.T, err error, ctx string) *ProtoError {
	t.Helper()
	var pe *ProtoError
	if !errors.As(err, &pe) {
		t.Fatalf("%s: error %v (%T) is not a *ProtoError", ctx, err, err)
	}
	if !fzSpecCodes[pe.Code] {
		t.Fatalf("%s: error code %q is not in the spec's table", ctx, pe.Code)
	}
	if pe.Text == "" {
		t.Fatalf("%s: ERR %s has no text; the spec says ERR always carries text", ctx, pe.Code)
	}
	return pe
}

// fzWantCode asserts that err is a protocol error with the given code.
func fzWantCode(t *testing.T, err error, code, ctx string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want ERR %s", ctx, code)
	}
	if pe := fzProtoErr(t, err, ctx); pe.Code != code {
		t.Fatalf("%s: ERR %s %q, want ERR %s", ctx, pe.Code, pe.Text, code)
	}
}

// fzCheckErrLine checks a ProtoError's wire form: "ERR <code> <text>\n",
// exactly one line, which the client's parser reads back unchanged. With
// onWire, the error is one the server writes, so it must also fit the line
// limit and carry no CR.
func fzCheckErrLine(t *testing.T, pe *ProtoError, onWire bool, ctx string) {
	t.Helper()
	l := pe.Line()
	if !strings.HasPrefix(l, "ERR "+pe.Code+" ") {
		t.Fatalf("%s: ERR line %q does not start with \"ERR %s \"", ctx, l, pe.Code)
	}
	if !strings.HasSuffix(l, "\n") || strings.Count(l, "\n") != 1 {
		t.Fatalf("%s: ERR line %q is not exactly one line ending in LF", ctx, l)
	}
	if onWire && (len(l) > MaxLineBytes || strings.Contains(l, "\r")) {
		t.Fatalf("%s: ERR line of %d bytes %.200q breaks the framing rules", ctx, len(l), l)
	}
	_, err := ParseReply(strings.TrimSuffix(l, "\n"))
	var back *ProtoError
	if !errors.As(err, &back) || back.Code != pe.Code || back.Text != pe.Text {
		t.Fatalf("%s: ParseReply(%q) = %v, want code %q text %q back", ctx, l, err, pe.Code, pe.Text)
	}
}

// fzCheckReplyLine checks a non-error server reply: one line of at most
// 4096 bytes, valid UTF-8, a reply word of OK/SALT/CHALLENGE, arguments
// separated by exactly one space.
func fzCheckReplyLine(t *testing.T, reply, ctx string) {
	t.Helper()
	if !strings.HasSuffix(reply, "\n") || strings.Count(reply, "\n") != 1 {
		t.Fatalf("%s: reply %.300q is not exactly one line ending in LF", ctx, reply)
	}
	if len(reply) > MaxLineBytes {
		t.Fatalf("%s: reply is %d bytes, over the %d-byte line limit of spec §1 (starts %.80q)", ctx, len(reply), MaxLineBytes, reply)
	}
	if strings.Contains(reply, "\r") || !utf8.ValidString(reply) {
		t.Fatalf("%s: reply %q has a CR or is not UTF-8", ctx, reply)
	}
	body := strings.TrimSuffix(reply, "\n")
	word, rest, hasArgs := strings.Cut(body, " ")
	switch word {
	case ReplyOK, ReplySalt, ReplyChallenge:
	default:
		t.Fatalf("%s: reply %q does not start with OK, SALT or CHALLENGE", ctx, reply)
	}
	if hasArgs && slices.Contains(strings.Split(rest, " "), "") {
		t.Fatalf("%s: reply %q has an empty argument (double or trailing space)", ctx, reply)
	}
	r, err := ParseReply(body)
	if err != nil || r.Word != word {
		t.Fatalf("%s: the client cannot parse reply %q: %v", ctx, reply, err)
	}
}

// fzIsCode reports whether err is a protocol error with the given code.
func fzIsCode(err error, code string) bool {
	var pe *ProtoError
	return errors.As(err, &pe) && pe.Code == code
}

// fzReplyArgs returns a checked reply's arguments.
func fzReplyArgs(reply string) []string {
	_, rest, ok := strings.Cut(strings.TrimSuffix(reply, "\n"), " ")
	if !ok {
		return nil
	}
	return strings.Split(rest, " ")
}

// ---------------------------------------------------------------------------
// FuzzParseLine

// fzSaslNameRE is RFC 5802's saslname as DecodeSaslName accepts it: every
// '=' starts "=2C" or "=3D". Raw commas are the caller's business.
var fzSaslNameRE = regexp.MustCompile(`^(?:[^=]|=2C|=3D)*$`)

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"PING\n",
		"PING\r\n",
		"QUIT",
		"REGISTER alice\n",
		"REGISTER  alice\n",
		"REGISTER alice \n",
		"AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,,n=alice,r=rOprNGfwEbeRWgbNEkqO")) + "\n",
		"AUTH SEED-SHA256 alice\r\n",
		"VERIFIER " + EncodeB64(bytes.Repeat([]byte{1}, 32)) + " " + EncodeB64(bytes.Repeat([]byte{2}, 32)) + "\n",
		"RESPONSE " + strings.Repeat("ab", 32) + "\n",
		"OK PONG",
		"SALT W22ZaJ0SNY7soEsUEjb6gQ== 4096",
		"ERR BADCMD unknown command",
		"ERR",
		"ERR  x",
		"AUTHBOX 1 SCRAM-SHA-256 SEED-SHA256",
		"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
		"y,,n=a=2Cb=3Dc,r=x",
		"n,a=admin,n=user,r=x",
		"p=tls-unique,,n=user,r=x",
		"n,,n=us=er,r=x",
		"n,,n=user,r=x,e=ext",
		"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"r=x,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=04096",
		"=3D2C",
		"Ａｌｉｃｅ",
		"ǅ",
		"\u00a0x",
		"a\u0301",
		"",
		"\n",
		"\r\n",
		"\r",
		" ",
		"\xff\xfe",
		"A\nB\n",
		strings.Repeat("x", 65),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fzCheckFraming(t, data)
		s := string(data)
		fzCheckParseReply(t, s)
		fzCheckSaslName(t, s)
		fzCheckClientFirst(t, s)
		fzCheckServerFirst(t, s)
		fzCheckUsername(t, s)
		fzCheckWireValues(t, s)
	})
}

// fzCheckFraming runs data through TrimEOL, ParseLine, CheckArgs and
// FormatReply as the server does.
func fzCheckFraming(t *testing.T, data []byte) {
	line := TrimEOL(data)
	if !bytes.HasPrefix(data, line) {
		t.Fatalf("TrimEOL(%q) = %q is not a prefix", data, line)
	}
	if bytes.HasSuffix(data, []byte("\n")) {
		// What the server's ReadSlice('\n') hands over always ends so.
		switch string(data[len(line):]) {
		case "\n":
			if bytes.HasSuffix(line, []byte("\r")) {
				t.Fatalf("TrimEOL(%q) = %q kept the CR before the LF", data, line)
			}
		case "\r\n":
		default:
			t.Fatalf("TrimEOL(%q) = %q removed %q", data, line, data[len(line):])
		}
	}
	// onWire: a line the server can receive (no LF inside, within the
	// limit); errors that quote it must then stay one line.
	onWire := bytes.IndexByte(line, '\n') < 0 && len(data) <= MaxLineBytes

	cmd, err := ParseLine(line)
	// The server's own parse, into a slice it reuses, is the same.
	reused := []string{"earlier"}
	if into, ierr := ParseLineInto(&reused, line); (ierr == nil) != (err == nil) || into.Verb != cmd.Verb || !slices.Equal(into.Args, cmd.Args) {
		t.Fatalf("ParseLineInto(%q) = %q %q, %v; ParseLine %q %q, %v", line, into.Verb, into.Args, ierr, cmd.Verb, cmd.Args, err)
	}
	switch {
	case len(line) == 0:
		fzWantCode(t, err, CodeBadCmd, "ParseLine(empty)")
		fzCheckErrLine(t, fzProtoErr(t, err, "ParseLine"), true, "ParseLine(empty)")
		return
	case err != nil:
		t.Fatalf("ParseLine(%q): %v", line, err)
	}
	if got := strings.Join(append([]string{cmd.Verb}, cmd.Args...), " "); got != string(line) {
		t.Fatalf("ParseLine(%q) = %q %q, which joins to %q", line, cmd.Verb, cmd.Args, got)
	}
	if strings.Contains(cmd.Verb, " ") || slices.ContainsFunc(cmd.Args, func(a string) bool { return strings.Contains(a, " ") }) {
		t.Fatalf("ParseLine(%q): a field contains a space: %q %q", line, cmd.Verb, cmd.Args)
	}

	n := len(cmd.Args)
	for _, r := range [][2]int{{0, 0}, {1, 1}, {2, 2}, {1, 2}, {0, 3}} {
		err := CheckArgs(cmd, r[0], r[1])
		want := n < r[0] || n > r[1] || slices.ContainsFunc(cmd.Args, func(a string) bool { return a == "" || !utf8.ValidString(a) })
		if (err != nil) != want {
			t.Fatalf("CheckArgs(%q, %d, %d) = %v, want error: %v", line, r[0], r[1], err, want)
		}
		if err != nil {
			ctx := "CheckArgs(" + strconv.Quote(string(line)) + ")"
			fzWantCode(t, err, CodeBadReq, ctx)
			if onWire {
				fzCheckErrLine(t, fzProtoErr(t, err, ctx), false, ctx)
			}
		}
	}

	if !onWire {
		return
	}
	out := FormatReply(cmd.Verb, cmd.Args...)
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("FormatReply(%q, %q) = %q is not one line ending in LF", cmd.Verb, cmd.Args, out)
	}
	if cmd.Verb != "" && cmd.Verb != ReplyErr {
		nonEmpty := slices.DeleteFunc(slices.Clone(cmd.Args), func(a string) bool { return a == "" })
		r, err := ParseReply(strings.TrimSuffix(out, "\n"))
		if err != nil || r.Word != cmd.Verb || !slices.Equal(r.Args, nonEmpty) {
			t.Fatalf("ParseReply(FormatReply(%q, %q)) = %q %q, %v", cmd.Verb, cmd.Args, r.Word, r.Args, err)
		}
	}
}

// fzCheckParseReply checks the client's reply parser on one line.
func fzCheckParseReply(t *testing.T, s string) {
	r, err := ParseReply(s)
	if s == "" {
		if err == nil {
			t.Fatalf("ParseReply(\"\") accepted an empty line")
		}
		return
	}
	word, rest, found := strings.Cut(s, " ")
	if word == ReplyErr {
		var pe *ProtoError
		if !errors.As(err, &pe) {
			t.Fatalf("ParseReply(%q) = %v, want a *ProtoError", s, err)
		}
		code, text, _ := strings.Cut(rest, " ")
		if pe.Code != code || pe.Text != text {
			t.Fatalf("ParseReply(%q) = code %q text %q, want %q %q", s, pe.Code, pe.Text, code, text)
		}
		if code != "" && text != "" && !strings.Contains(s, "\n") && FormatReply(ReplyErr, code, text) != s+"\n" {
			t.Fatalf("FormatReply does not give back ERR line %q", s)
		}
		return
	}
	if err != nil || r.Word != word {
		t.Fatalf("ParseReply(%q) = %q, %v", s, r.Word, err)
	}
	if rest == "" {
		if len(r.Args) != 0 {
			t.Fatalf("ParseReply(%q) has args %q", s, r.Args)
		}
	} else if strings.Join(r.Args, " ") != rest {
		t.Fatalf("ParseReply(%q) args %q do not join back to %q", s, r.Args, rest)
	}
	if !found || rest != "" && !slices.Contains(r.Args, "") && !strings.Contains(s, "\n") {
		if out := FormatReply(r.Word, r.Args...); out != s+"\n" {
			t.Fatalf("FormatReply(ParseReply(%q)) = %q", s, out)
		}
	}
}

// fzCheckSaslName checks the saslname escaping of RFC 5802 §5.1.
func fzCheckSaslName(t *testing.T, s string) {
	enc := EncodeSaslName(s)
	if strings.Contains(enc, ",") {
		t.Fatalf("EncodeSaslName(%q) = %q contains a comma", s, enc)
	}
	if dec, ok := DecodeSaslName(enc); !ok || dec != s {
		t.Fatalf("DecodeSaslName(EncodeSaslName(%q)) = %q, %v", s, dec, ok)
	}
	dec, ok := DecodeSaslName(s)
	if ok != fzSaslNameRE.MatchString(s) {
		t.Fatalf("DecodeSaslName(%q) ok=%v, but the saslname grammar says %v", s, ok, !ok)
	}
	if !ok {
		return
	}
	if len(dec) > len(s) {
		t.Fatalf("DecodeSaslName(%q) = %q grew", s, dec)
	}
	if !strings.Contains(s, ",") {
		if back := EncodeSaslName(dec); back != s {
			t.Fatalf("EncodeSaslName(DecodeSaslName(%q)) = %q", s, back)
		}
	}
}

// fzDummyCreds lets the SCRAM library answer a client-first-message.
var fzDummyCreds = scram.StoredCredentials{
	KeyFactors: scram.KeyFactors{Salt: "0123456789abcdef", Iters: MinIterations},
	StoredKey:  make([]byte, KeyLen),
	ServerKey:  make([]byte, KeyLen),
}

// fzCheckClientFirst checks ParseClientFirst against the message's grammar
// and against the SCRAM library, which the server hands the same message
// to next: whatever name the server looks up must be the name the library
// reads.
func fzCheckClientFirst(t *testing.T, s string) {
	cf, err := ParseClientFirst(s)
	if err != nil {
		ctx := "ParseClientFirst(" + strconv.Quote(s) + ")"
		fzWantCode(t, err, CodeBadReq, ctx)
		fzCheckErrLine(t, fzProtoErr(t, err, ctx), true, ctx)
		return
	}
	hdr := cf.GS2Header
	okHdr := hdr == "n,," || hdr == "y,,"
	if typ, ok := strings.CutPrefix(hdr, "p="); ok {
		typ, ok = strings.CutSuffix(typ, ",,")
		okHdr = ok && typ == cf.CBType && isCBName(typ) && cf.CBFlag == 'p'
	}
	if !okHdr || !strings.HasPrefix(s, hdr) {
		t.Fatalf("ParseClientFirst(%q) accepted GS2 header %q", s, hdr)
	}
	fields := strings.Split(s[len(hdr):], ",")
	if len(fields) != 2 || !strings.HasPrefix(fields[0], "n=") || !strings.HasPrefix(fields[1], "r=") || !printableNonce(fields[1][2:]) {
		t.Fatalf("ParseClientFirst(%q) accepted a message outside the v1 grammar", s)
	}
	if name, ok := DecodeSaslName(fields[0][2:]); !ok || name != cf.Username {
		t.Fatalf("ParseClientFirst(%q) username %q, saslname decodes to %q, %v", s, cf.Username, name, ok)
	}
	rebuilt := hdr + "n=" + EncodeSaslName(cf.Username) + "," + fields[1]
	if cf2, err := ParseClientFirst(rebuilt); err != nil || cf2.Username != cf.Username {
		t.Fatalf("ParseClientFirst(%q) = %q, %v; want %q", rebuilt, cf2.Username, err, cf.Username)
	}

	if cf.CBFlag == 'p' && cf.CBType != cbTLSExporter {
		// The server refuses any other type at checkGS2, before the
		// library sees the message; the library, for its part, refuses
		// types it does not know ("p=0"). Nothing to compare.
		return
	}
	var seen []string
	srv, err := scram.SHA256.NewServer(func(u string) (scram.StoredCredentials, error) {
		seen = append(seen, u)
		return fzDummyCreds, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	conv := srv.NewConversation()
	if cf.CBFlag == 'p' {
		// The server binds only to its own type; the library, told that
		// type, must read the same message the same way.
		conv = srv.NewConversationWithChannelBinding(scram.ChannelBinding{Type: scram.ChannelBindingType(cf.CBType), Data: make([]byte, exporterLen)})
	}
	if _, err := conv.Step(s); err != nil {
		t.Fatalf("ParseClientFirst accepted %q but the SCRAM library rejects it: %v", s, err)
	}
	if len(seen) != 1 || seen[0] != cf.Username {
		t.Fatalf("client-first %q: ParseClientFirst reads user %q, the SCRAM library %q", s, cf.Username, seen)
	}
}

// fzCheckServerFirst checks ParseServerFirst's reading of salt and count.
func fzCheckServerFirst(t *testing.T, s string) {
	sf, err := ParseServerFirst(s)
	if err != nil {
		return
	}
	f := strings.Split(s, ",")
	if len(f) < 3 || !strings.HasPrefix(f[0], "r=") || !strings.HasPrefix(f[1], "s=") || !strings.HasPrefix(f[2], "i=") {
		t.Fatalf("ParseServerFirst(%q) accepted a malformed message", s)
	}
	if EncodeB64(sf.Salt) != f[1][2:] {
		t.Fatalf("ParseServerFirst(%q): salt %x does not re-encode to %q", s, sf.Salt, f[1][2:])
	}
	if sf.Iterations <= 0 || strconv.Itoa(sf.Iterations) != f[2][2:] {
		t.Fatalf("ParseServerFirst(%q): iterations %d from %q", s, sf.Iterations, f[2][2:])
	}
}

// fzCheckUsername checks the username rules of spec §6.
func fzCheckUsername(t *testing.T, s string) {
	n, err := NormalizeUsername(s)
	if err != nil {
		ctx := "NormalizeUsername(" + strconv.Quote(s) + ")"
		fzWantCode(t, err, CodeBadName, ctx)
		fzCheckErrLine(t, fzProtoErr(t, err, ctx), true, ctx)
		return
	}
	if len(n) < 1 || len(n) > MaxUsernameBytes || !utf8.ValidString(n) {
		t.Fatalf("NormalizeUsername(%q) = %q (%d bytes), want 1 to %d bytes of UTF-8", s, n, len(n), MaxUsernameBytes)
	}
	for _, r := range n {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			t.Fatalf("NormalizeUsername(%q) = %q contains %U, which breaks the line framing", s, n, r)
		}
	}
	if n2, err := NormalizeUsername(n); err != nil || n2 != n {
		t.Fatalf("NormalizeUsername is not idempotent: %q -> %q -> %q, %v", s, n, n2, err)
	}
	// A normalized name is one protocol argument and one SCRAM saslname.
	if cmd, err := ParseLine([]byte(CmdRegister + " " + n)); err != nil || len(cmd.Args) != 1 || cmd.Args[0] != n {
		t.Fatalf("REGISTER %q does not parse back: %q, %v", n, cmd.Args, err)
	}
	if cf, err := ParseClientFirst("n,,n=" + EncodeSaslName(n) + ",r=abc"); err != nil || cf.Username != n {
		t.Fatalf("normalized name %q does not survive a client-first-message: %q, %v", n, cf.Username, err)
	}
}

// fzCheckWireValues checks base64, keys, iteration counts, hex and the
// greeting.
func fzCheckWireValues(t *testing.T, s string) {
	b, err := DecodeB64(s)
	if err == nil {
		if EncodeB64(b) != s {
			t.Fatalf("DecodeB64 accepted %q, a second spelling of %q", s, EncodeB64(b))
		}
	} else {
		fzWantCode(t, err, CodeBadReq, "DecodeB64")
	}
	if got, want := FormatB64Reply(ReplyOK, []byte(s)), FormatReply(ReplyOK, EncodeB64([]byte(s))); got != want {
		t.Fatalf("FormatB64Reply(%q) = %q, want %q", s, got, want)
	}
	// The server's reused-buffer decode keeps what it appends to.
	if a, aerr := AppendDecodeB64([]byte("kept"), s); (aerr == nil) != (err == nil) || err == nil && (string(a[:4]) != "kept" || !bytes.Equal(a[4:], b)) {
		t.Fatalf("AppendDecodeB64(%q) = %q, %v; DecodeB64 %x, %v", s, a, aerr, b, err)
	} else if aerr != nil {
		fzWantCode(t, aerr, CodeBadReq, "AppendDecodeB64")
	}
	if k, err := DecodeKey(s); (err == nil) != (b != nil && len(b) == KeyLen) || err == nil && !bytes.Equal(k, b) {
		t.Fatalf("DecodeKey(%q) = %x, %v (base64 gives %d bytes)", s, k, err, len(b))
	} else if err != nil {
		fzWantCode(t, err, CodeBadReq, "DecodeKey")
	}
	if n, err := ParseIterations(s); err == nil && (n <= 0 || strconv.Itoa(n) != s) {
		t.Fatalf("ParseIterations(%q) = %d", s, n)
	}
	allHex := !strings.ContainsFunc(s, func(r rune) bool { return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') })
	if IsLowerHex(s, len(s)) != allHex || IsLowerHex(s, len(s)+1) {
		t.Fatalf("IsLowerHex(%q) is wrong", s)
	}
	if mechs, err := ParseGreeting(s); err == nil && !slices.Contains(mechs, "") {
		if g := Greeting(mechs); g != s+"\n" {
			t.Fatalf("Greeting(ParseGreeting(%q)) = %q", s, g)
		}
	}
}

// ---------------------------------------------------------------------------
// A server for handleLine, without a network

// fzAccount is an account the harness knows the password of.
type fzAccount struct {
	name     string
	password string
	rec      Record
	// client logs in with the right password, wrong with a wrong one;
	// each caches its PBKDF2 result for the fixed salt.
	client, wrong *scram.Client
}

// fzWorld is one server and its store, made once per fuzz target.
type fzWorld struct {
	srv      *Server
	store    *Store
	accounts map[string]*fzAccount
}

// fzNewWorld opens a store in f's temp dir and makes a server with both
// mechanisms, open registration and the minimum iteration count.
func fzNewWorld(f *testing.F) *fzWorld {
	f.Helper()
	cfg := testConfig(f)
	cfg.Iterations = MinIterations
	cfg.Mechanisms = []string{MechSCRAM, MechSeed}
	cfg.OpenRegistration = true
	store, err := OpenStore(cfg.DB)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	// A throwaway store: skip the fsync, and run each Batch (REGISTER) at
	// once instead of after bbolt's 10 ms batching pause. Durability is not
	// what these targets check; speed per input is.
	store.db.NoSync = true
	store.db.MaxBatchSize = 1
	return &fzWorld{srv: NewServer(cfg, store, nil), store: store, accounts: map[string]*fzAccount{}}
}

// addSCRAM adds a fixture SCRAM account, computing its verifier once.
func (w *fzWorld) addSCRAM(f *testing.F, name, password string, locked bool) {
	f.Helper()
	salt := []byte("fuzz-fixed-salt!")
	stored, server, err := Verifier(name, password, salt, MinIterations)
	if err != nil {
		f.Fatal(err)
	}
	client, err := scramClient(name, password)
	if err != nil {
		f.Fatal(err)
	}
	wrong, err := scramClient(name, password+"-wrong")
	if err != nil {
		f.Fatal(err)
	}
	w.accounts[name] = &fzAccount{
		name: name, password: password,
		rec: Record{Kind: KindSCRAM, Locked: locked, Iterations: MinIterations,
			Salt: salt, StoredKey: stored, ServerKey: server},
		client: client.WithMinIterations(MinIterations),
		wrong:  wrong.WithMinIterations(MinIterations),
	}
}

// addLegacy adds a fixture SEED-SHA256 account.
func (w *fzWorld) addLegacy(name, salt, password string) {
	d := sha256.Sum256([]byte(salt + password))
	w.accounts[name] = &fzAccount{
		name: name, password: password,
		rec: Record{Kind: KindLegacy, Salt: []byte(salt), StoredKey: d[:]},
	}
}

func fzSameRecord(a, b Record) bool {
	return a.Kind == b.Kind && a.Locked == b.Locked && a.Iterations == b.Iterations &&
		bytes.Equal(a.Salt, b.Salt) && bytes.Equal(a.StoredKey, b.StoredKey) && bytes.Equal(a.ServerKey, b.ServerKey)
}

// intact reports whether name's stored record is its fixture record.
func (w *fzWorld) intact(t *testing.T, name string) bool {
	acc := w.accounts[name]
	rec, err := w.store.Get(name)
	if errors.Is(err, ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return acc != nil && fzSameRecord(rec, acc.rec)
}

// reset puts the store back to exactly the fixture accounts and makes a
// fresh server (so a fresh login throttle), so that each input starts from
// the same state whatever the previous one did.
func (w *fzWorld) reset(t *testing.T) {
	w.srv = NewServer(w.srv.cfg, w.store, nil)
	var drop []string
	err := w.store.Each(func(name string, rec Record) error {
		if acc := w.accounts[name]; acc == nil || !fzSameRecord(rec, acc.rec) {
			drop = append(drop, name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range drop {
		if err := w.store.Delete(name); err != nil {
			t.Fatal(err)
		}
	}
	for name, acc := range w.accounts {
		if _, err := w.store.Get(name); errors.Is(err, ErrNotFound) {
			if err := w.store.Create(name, acc.rec); err != nil {
				t.Fatal(err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

func (w *fzWorld) count(t *testing.T) int {
	n, err := w.store.Count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// ---------------------------------------------------------------------------
// FuzzStateMachine

// fzSession drives one conn line by line and checks every step.
type fzSession struct {
	t      *testing.T
	w      *fzWorld
	c      *conn
	closed bool // the server would have hung up
}

// step runs one line (without its LF) through handleLine and checks the
// outcome against the spec. It reports false once the connection is over.
func (s *fzSession) step(line string) (reply string, alive bool, err error) {
	t, c, w := s.t, s.c, s.w
	if s.closed {
		return "", false, nil
	}
	raw := []byte(line + "\n")
	if len(raw) > MaxLineBytes {
		// readLine answers ERR TOOLONG and closes; handleLine never sees it.
		s.closed = true
		return "", false, nil
	}
	ctx := "line " + strconv.Quote(line)
	trimmed := TrimEOL(raw)
	cmd, parseErr := ParseLine(trimmed)
	prevUser, prevPending, prevCount := c.user, c.pending, w.count(t)

	reply, err = c.handleLine(raw)

	// The form of the outcome.
	var pe *ProtoError
	switch {
	case err == nil:
		fzCheckReplyLine(t, reply, ctx)
	case errors.Is(err, errQuit):
		if reply != "OK BYE\n" {
			t.Fatalf("%s: QUIT replied %q", ctx, reply)
		}
		s.closed = true
	case errors.As(err, &pe):
		fzProtoErr(t, err, ctx)
		if fzConnCodes[pe.Code] {
			t.Fatalf("%s: handleLine returned connection-level ERR %s %q", ctx, pe.Code, pe.Text)
		}
		fzCheckErrLine(t, pe, true, ctx)
	default:
		t.Fatalf("%s: handleLine returned %v (%T), which reaches the client as ERR INTERNAL", ctx, err, err)
	}

	// An exchange is pending exactly after SALT or CHALLENGE.
	word, _, _ := strings.Cut(strings.TrimSuffix(reply, "\n"), " ")
	switch p := c.pending.(type) {
	case nil:
		if err == nil && (word == ReplySalt || word == ReplyChallenge) {
			t.Fatalf("%s: replied %q but no exchange is pending", ctx, reply)
		}
	case *registerEx, *passwdEx:
		if err != nil || word != ReplySalt {
			t.Fatalf("%s: exchange %T pending after %q, %v", ctx, p, reply, err)
		}
	case *scramEx, *seedEx:
		if err != nil || word != ReplyChallenge {
			t.Fatalf("%s: exchange %T pending after %q, %v", ctx, p, reply, err)
		}
	}

	// Which reply or error each command gets (spec §4, §5, §8).
	isCont := parseErr == nil && prevPending != nil && cmd.Verb == prevPending.next()
	if parseErr == nil && !isCont {
		s.checkFresh(ctx, cmd, prevUser, reply, err)
	}
	if len(trimmed) == 0 {
		fzWantCode(t, err, CodeBadCmd, ctx)
	}

	// Who is logged in changes only by a RESPONSE answered OK (login) and
	// by LOGOUT or DELETE answered OK.
	if c.user != prevUser {
		switch {
		case c.user != "":
			if prevUser != "" || !isCont || cmd.Verb != CmdResponse || err != nil || word != ReplyOK {
				t.Fatalf("%s: user became %q (was %q) without an OK to RESPONSE: %q, %v", ctx, c.user, prevUser, reply, err)
			}
			rec, gerr := w.store.Get(c.user)
			if gerr != nil || rec.Locked {
				t.Fatalf("%s: logged in as %q, whose record is %+v, %v", ctx, c.user, rec, gerr)
			}
		default:
			if err != nil || reply != "OK\n" || cmd.Verb != CmdLogout && cmd.Verb != CmdDelete {
				t.Fatalf("%s: user %q logged out by %q, %v", ctx, prevUser, reply, err)
			}
		}
	}
	if err == nil && (cmd.Verb == CmdLogout || cmd.Verb == CmdDelete) && c.user != "" {
		t.Fatalf("%s: still logged in as %q after %q", ctx, c.user, reply)
	}

	// Accounts change only by VERIFIER and DELETE answered OK.
	count := w.count(t)
	switch p := prevPending.(type) {
	case *registerEx:
		if isCont && err == nil {
			s.checkStored(ctx, p.name, cmd, p.salt, p.iterations)
			if count != prevCount+1 {
				t.Fatalf("%s: registered %q, but there are %d accounts, were %d", ctx, p.name, count, prevCount)
			}
			return reply, !s.closed, err
		}
	case *passwdEx:
		if isCont && err == nil {
			s.checkStored(ctx, prevUser, cmd, p.salt, p.iterations)
		}
	}
	if cmd.Verb == CmdDelete && err == nil && prevUser != "" {
		if _, gerr := w.store.Get(prevUser); !errors.Is(gerr, ErrNotFound) {
			t.Fatalf("%s: DELETE answered OK but %q is still there: %v", ctx, prevUser, gerr)
		}
		if count != prevCount-1 {
			t.Fatalf("%s: DELETE left %d accounts, were %d", ctx, count, prevCount)
		}
	} else if count != prevCount {
		t.Fatalf("%s: the number of accounts went from %d to %d", ctx, prevCount, count)
	}
	return reply, !s.closed, err
}

// checkStored checks that an OK to VERIFIER stored exactly the keys sent.
func (s *fzSession) checkStored(ctx, name string, cmd Command, salt []byte, iterations int) {
	t := s.t
	rec, err := s.w.store.Get(name)
	if err != nil {
		t.Fatalf("%s: VERIFIER answered OK but %q is not stored: %v", ctx, name, err)
	}
	stored, _ := DecodeKey(cmd.Args[0])
	server, _ := DecodeKey(cmd.Args[1])
	if rec.Kind != KindSCRAM || !bytes.Equal(rec.Salt, salt) || rec.Iterations != iterations ||
		!bytes.Equal(rec.StoredKey, stored) || !bytes.Equal(rec.ServerKey, server) {
		t.Fatalf("%s: stored record for %q is %+v, not what SALT and VERIFIER said", ctx, name, rec)
	}
}

// checkFresh checks the outcome of a line that is not the continuation of
// a pending exchange, by the spec's order: state, mechanism, arguments.
func (s *fzSession) checkFresh(ctx string, cmd Command, prevUser, reply string, err error) {
	t, cfg := s.t, &s.w.srv.cfg
	authed := prevUser != ""
	nargs := len(cmd.Args)
	argsOK := func(n int) bool {
		return nargs == n && !slices.ContainsFunc(cmd.Args, func(a string) bool { return a == "" || !utf8.ValidString(a) })
	}
	switch cmd.Verb {
	case CmdPing:
		if argsOK(0) {
			if err != nil || reply != "OK PONG\n" {
				t.Fatalf("%s: PING got %q, %v", ctx, reply, err)
			}
		} else {
			fzWantCode(t, err, CodeBadReq, ctx)
		}
	case CmdQuit:
		if argsOK(0) != errors.Is(err, errQuit) {
			t.Fatalf("%s: QUIT got %q, %v", ctx, reply, err)
		}
		if !argsOK(0) {
			fzWantCode(t, err, CodeBadReq, ctx)
		}
	case CmdWhoami, CmdPasswd, CmdDelete, CmdLogout:
		switch {
		case !authed:
			fzWantCode(t, err, CodeBadCmd, ctx)
		case !argsOK(0):
			fzWantCode(t, err, CodeBadReq, ctx)
		case err != nil:
			t.Fatalf("%s: logged in as %q, got %v", ctx, prevUser, err)
		case cmd.Verb == CmdWhoami && reply != FormatReply(ReplyOK, prevUser):
			t.Fatalf("%s: WHOAMI for %q answered %q", ctx, prevUser, reply)
		case cmd.Verb == CmdPasswd:
			s.checkSalt(ctx, reply)
		}
	case CmdRegister:
		switch {
		case authed:
			fzWantCode(t, err, CodeBadCmd, ctx)
		case !argsOK(1):
			fzWantCode(t, err, CodeBadReq, ctx)
		case fzIsCode(err, CodeLimit):
			// Spec §4 allows ERR LIMIT for REGISTER.
		default:
			name, nerr := NormalizeUsername(cmd.Args[0])
			if nerr != nil {
				fzWantCode(t, err, CodeBadName, ctx)
				return
			}
			if _, gerr := s.w.store.Get(name); gerr == nil {
				fzWantCode(t, err, CodeExists, ctx)
				return
			}
			if err != nil {
				t.Fatalf("%s: REGISTER of free name %q got %v", ctx, name, err)
			}
			s.checkSalt(ctx, reply)
		}
	case CmdAuth:
		switch {
		case authed:
			fzWantCode(t, err, CodeBadCmd, ctx)
		case nargs == 0:
			fzWantCode(t, err, CodeBadReq, ctx)
		case !cfg.HasMech(cmd.Args[0]):
			fzWantCode(t, err, CodeNoMech, ctx)
		case !argsOK(2):
			fzWantCode(t, err, CodeBadReq, ctx)
		case err == nil:
			s.checkChallenge(ctx, cmd, reply)
		default:
			// Malformed SCRAM or name, or throttled (spec §8: LIMIT may
			// come at AUTH).
			if pe := fzProtoErr(t, err, ctx); pe.Code != CodeBadReq && pe.Code != CodeBadName && pe.Code != CodeLimit {
				t.Fatalf("%s: AUTH got ERR %s %q", ctx, pe.Code, pe.Text)
			}
		}
	default: // VERIFIER and RESPONSE out of turn, unknown words
		fzWantCode(t, err, CodeBadCmd, ctx)
	}
}

// checkSalt checks a SALT reply: a fresh salt of SaltLen bytes and the
// configured iteration count.
func (s *fzSession) checkSalt(ctx, reply string) {
	args := fzReplyArgs(reply)
	if len(args) != 2 || !strings.HasPrefix(reply, ReplySalt+" ") {
		s.t.Fatalf("%s: want SALT <salt> <iterations>, got %q", ctx, reply)
	}
	salt, err := DecodeB64(args[0])
	if err != nil || len(salt) < SaltLen || args[1] != strconv.Itoa(s.w.srv.cfg.Iterations) {
		s.t.Fatalf("%s: bad SALT reply %q", ctx, reply)
	}
}

// checkChallenge checks a CHALLENGE to AUTH: an unknown user's looks like
// a real one's (same count, salt of the same length; spec §4, §8).
func (s *fzSession) checkChallenge(ctx string, cmd Command, reply string) {
	t := s.t
	args := fzReplyArgs(reply)
	if cmd.Args[0] == MechSeed {
		if len(args) != 2 || !IsLowerHex(args[1], 32) {
			t.Fatalf("%s: SEED-SHA256 CHALLENGE %q", ctx, reply)
		}
		name, _ := NormalizeUsername(cmd.Args[1])
		rec, err := s.w.store.Get(name)
		if err == nil && rec.Kind == KindLegacy {
			if args[0] != string(rec.Salt) {
				t.Fatalf("%s: legacy user %q challenged with salt %q, stored %q", ctx, name, args[0], rec.Salt)
			}
		} else if !IsLowerHex(args[0], 32) {
			t.Fatalf("%s: fake legacy salt %q is not 32 lower-case hex digits", ctx, args[0])
		}
		return
	}
	if len(args) != 1 {
		t.Fatalf("%s: SCRAM CHALLENGE %q", ctx, reply)
	}
	serverFirst, err := DecodeB64(args[0])
	if err != nil {
		t.Fatalf("%s: CHALLENGE %q is not base64", ctx, reply)
	}
	sf, err := ParseServerFirst(string(serverFirst))
	if err != nil {
		t.Fatalf("%s: CHALLENGE carries a malformed server-first-message %q: %v", ctx, serverFirst, err)
	}
	clientFirst, _ := DecodeB64(cmd.Args[1])
	cf, _ := ParseClientFirst(string(clientFirst))
	clientNonce := strings.Split(string(clientFirst), ",r=")[1]
	if !strings.HasPrefix(string(serverFirst), "r="+clientNonce) || len(serverFirst) <= len("r="+clientNonce+",") {
		t.Fatalf("%s: server nonce in %q does not extend the client's %q", ctx, serverFirst, clientNonce)
	}
	name, _ := NormalizeUsername(cf.Username)
	rec, err := s.w.store.Get(name)
	if err == nil && rec.Kind == KindSCRAM {
		if !bytes.Equal(sf.Salt, rec.Salt) || sf.Iterations != rec.Iterations {
			t.Fatalf("%s: user %q challenged with salt %x i=%d, stored %x i=%d", ctx, name, sf.Salt, sf.Iterations, rec.Salt, rec.Iterations)
		}
	} else if len(sf.Salt) != SaltLen || sf.Iterations != s.w.srv.cfg.Iterations {
		t.Fatalf("%s: unknown user %q challenged with a %d-byte salt and i=%d; a real one gets %d bytes, i=%d",
			ctx, name, len(sf.Salt), sf.Iterations, SaltLen, s.w.srv.cfg.Iterations)
	}
}

// login runs a whole login for a fixture account, as the real client does,
// and checks its outcome when the account is intact and nobody is logged
// in. Macro lines in the fuzz input call it: "~alice" logs in with the
// right password, "~!alice" with a wrong one.
func (s *fzSession) login(acc *fzAccount, rightPassword bool) {
	t, c := s.t, s.c
	wasUser := c.user
	intact := s.w.intact(t, acc.name)
	var reply string
	var err error
	var alive bool
	if acc.rec.Kind == KindLegacy {
		reply, alive, err = s.step(CmdAuth + " " + MechSeed + " " + acc.name)
		if !alive || err != nil {
			return
		}
		args := fzReplyArgs(reply)
		password := acc.password
		if !rightPassword {
			password += "-wrong"
		}
		reply, alive, err = s.step(CmdResponse + " " + SeedResponse(args[1], SeedStored(args[0], password)))
	} else {
		client := acc.client
		if !rightPassword {
			client = acc.wrong
		}
		conv := client.NewConversation()
		first, cerr := conv.Step("")
		if cerr != nil {
			t.Fatal(cerr)
		}
		reply, alive, err = s.step(CmdAuth + " " + MechSCRAM + " " + EncodeB64([]byte(first)))
		if !alive || err != nil {
			return
		}
		serverFirst, _ := DecodeB64(fzReplyArgs(reply)[0])
		if sf, _ := ParseServerFirst(string(serverFirst)); !bytes.Equal(sf.Salt, acc.rec.Salt) {
			// Deleted or changed in this input: leave it pending rather than
			// spend a PBKDF2 (and a cache entry) on a salt seen once.
			return
		}
		final, cerr := conv.Step(string(serverFirst))
		if cerr != nil {
			t.Fatalf("the real client rejects our server-first-message %q: %v", serverFirst, cerr)
		}
		reply, alive, err = s.step(CmdResponse + " " + EncodeB64([]byte(final)))
		if alive && err == nil {
			serverFinal, _ := DecodeB64(fzReplyArgs(reply)[0])
			if _, cerr := conv.Step(string(serverFinal)); cerr != nil || !conv.Valid() {
				t.Fatalf("login of %q: the client rejects the server's signature %q: %v", acc.name, serverFinal, cerr)
			}
		}
	}
	if !alive || wasUser != "" || !intact {
		return
	}
	ctx := "login of fixture " + strconv.Quote(acc.name)
	switch {
	case fzIsCode(err, CodeLimit):
		// Spec §8: LIMIT may also come at RESPONSE.
	case !rightPassword:
		fzWantCode(t, err, CodeAuth, ctx+" with a wrong password")
	case acc.rec.Locked:
		fzWantCode(t, err, CodeLocked, ctx)
	case err != nil || c.user != acc.name:
		t.Fatalf("%s: %q, %v; logged in as %q", ctx, reply, err, c.user)
	}
}

// fzStateWorld is FuzzStateMachine's server with its fixture accounts.
func fzStateWorld(f *testing.F) *fzWorld {
	w := fzNewWorld(f)
	w.addSCRAM(f, "alice", "Correct-Horse-7", false)
	w.addSCRAM(f, "mallory", "Locked-Out-7", true)
	w.addLegacy("legacy", "5f1d7a2c9e3b4a6d8c0e2f4a6b8d0c1e", "Old-Secret-7")
	return w
}

func FuzzStateMachine(f *testing.F) {
	w := fzStateWorld(f)
	key1 := EncodeB64(bytes.Repeat([]byte{0x11}, KeyLen))
	key2 := EncodeB64(bytes.Repeat([]byte{0x22}, KeyLen))
	scramFirst := func(name string) string {
		return EncodeB64([]byte("n,,n=" + EncodeSaslName(name) + ",r=rOprNGfwEbeRWgbNEkqO"))
	}
	for _, lines := range [][]string{
		{"PING", "WHOAMI", "QUIT", "PING"},
		{"REGISTER bob", "VERIFIER " + key1 + " " + key2, "REGISTER bob", "AUTH SCRAM-SHA-256 " + scramFirst("bob"), "RESPONSE " + EncodeB64([]byte("c=biws,r=rOprNGfwEbeRWgbNEkqOxyz,p="+key1))},
		{"REGISTER bob", "PING", "VERIFIER " + key1 + " " + key2, "WHOAMI"},
		{"REGISTER carol", "VERIFIER " + key1, "VERIFIER " + key1 + " " + key2 + " x", "REGISTER carol", "VERIFIER AAAA " + key2},
		{"~alice", "WHOAMI", "REGISTER x", "AUTH SCRAM-SHA-256 " + scramFirst("alice"), "PASSWD", "VERIFIER " + key1 + " " + key2, "LOGOUT", "WHOAMI", "~alice"},
		{"~alice", "DELETE", "WHOAMI", "~alice", "REGISTER alice", "VERIFIER " + key2 + " " + key1},
		{"~!alice", "~mallory", "~legacy", "WHOAMI", "LOGOUT", "~!legacy", "LOGOUT"},
		{"AUTH SCRAM-SHA-256 " + scramFirst("nobody"), "RESPONSE " + EncodeB64([]byte("c=biws,r=x,p="+key1))},
		{"AUTH SEED-SHA256 legacy", "RESPONSE " + strings.Repeat("0", 64), "AUTH SEED-SHA256 nobody", "RESPONSE " + strings.Repeat("A", 64)},
		{"AUTH FOO x", "AUTH", "AUTH SCRAM-SHA-256", "AUTH SCRAM-SHA-256 !!!", "AUTH SCRAM-SHA-256 " + EncodeB64([]byte("p=tls-unique,,n=a,r=b"))},
		{"WHOAMI x", "LOGOUT", "VERIFIER", "RESPONSE", "", "ping", "PING ", " PING", "PING\r", "\xff\xfe", "REGISTER a b", "REGISTER " + strings.Repeat("x", 65)},
	} {
		f.Add([]byte(strings.Join(lines, "\n") + "\n"))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w.reset(t)
		s := &fzSession{t: t, w: w, c: &conn{srv: w.srv, remote: "fuzz"}}
		for i, line := range strings.Split(string(data), "\n") {
			if i >= fzMaxLines || s.closed {
				break
			}
			if name, ok := strings.CutPrefix(line, "~"); ok {
				wrong := strings.HasPrefix(name, "!")
				if acc := w.accounts[strings.TrimPrefix(name, "!")]; acc != nil {
					s.login(acc, !wrong)
					continue
				}
			}
			s.step(line)
		}
	})
}

// ---------------------------------------------------------------------------
// FuzzSCRAM

// fzOracle knows one account's keys and computes, independently of the
// server and of the SCRAM library, what RFC 5802 says a right client-final
// is.
type fzOracle struct {
	clientKey, storedKey, serverKey []byte
}

func fzHMAC(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// fzKeys derives the RFC 5802 keys from a password.
func fzKeys(t testing.TB, password string, salt []byte, iterations int) *fzOracle {
	prepped, err := stringprep.SASLprep.Prepare(password)
	if err != nil {
		t.Fatal(err)
	}
	salted, err := pbkdf2.Key(sha256.New, prepped, salt, iterations, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	ck := fzHMAC(salted, "Client Key")
	sk := sha256.Sum256(ck)
	return &fzOracle{clientKey: ck, storedKey: sk[:], serverKey: fzHMAC(salted, "Server Key")}
}

// proof is ClientKey XOR HMAC(StoredKey, AuthMessage).
func (o *fzOracle) proof(authMsg string) []byte {
	p := fzHMAC(o.storedKey, authMsg)
	for i := range p {
		p[i] ^= o.clientKey[i]
	}
	return p
}

// judge reports whether final is a client-final a holder of the password
// would send: channel binding of the GS2 header, the server's nonce, and a
// p= that decodes to the right proof over the message actually sent.
// fzHasControl reports a control character, which RFC 5802 messages never
// hold and the server refuses in client-final.
func fzHasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

func (o *fzOracle) judge(bare, serverFirst, final, gs2, nonce string) (genuine bool, authMsg string) {
	// RFC 5802's messages are printable UTF-8 (UTF8-1 is %x01-7F, and the
	// server refuses control characters): such a message is never genuine.
	if fzHasControl(final) {
		return false, ""
	}
	f := strings.Split(final, ",")
	if len(f) < 3 || !strings.HasPrefix(f[0], "c=") || f[1] != "r="+nonce || !strings.HasPrefix(f[len(f)-1], "p=") {
		return false, ""
	}
	if cb, err := base64.StdEncoding.DecodeString(f[0][2:]); err != nil || string(cb) != gs2 {
		return false, ""
	}
	p, err := base64.StdEncoding.DecodeString(f[len(f)-1][2:])
	if err != nil {
		return false, ""
	}
	authMsg = bare + "," + serverFirst + "," + final[:strings.LastIndexByte(final, ',')]
	return hmac.Equal(p, o.proof(authMsg)), authMsg
}

// fzRegister registers name through handleLine with the real client's
// Verifier and returns the salt the server chose.
func fzRegister(f *testing.F, srv *Server, name, password string) []byte {
	f.Helper()
	c := &conn{srv: srv, remote: "fuzz-setup"}
	reply, err := c.handleLine([]byte("REGISTER " + name + "\n"))
	args := fzReplyArgs(reply)
	if err != nil || len(args) != 2 || !strings.HasPrefix(reply, "SALT ") {
		f.Fatalf("REGISTER %s: %q, %v", name, reply, err)
	}
	salt, _ := DecodeB64(args[0])
	it, _ := ParseIterations(args[1])
	stored, server, err := Verifier(name, password, salt, it)
	if err != nil {
		f.Fatal(err)
	}
	reply, err = c.handleLine([]byte("VERIFIER " + EncodeB64(stored) + " " + EncodeB64(server) + "\n"))
	if err != nil || reply != "OK\n" {
		f.Fatalf("VERIFIER for %s: %q, %v", name, reply, err)
	}
	return salt
}

// fzSelfTest checks the oracle on RFC 7677's example, and then against a
// real login by the xdg-go/scram client through handleLine.
func fzSelfTest(f *testing.F, srv *Server, o *fzOracle, name, password string) {
	f.Helper()
	const (
		bare        = "n=user,r=rOprNGfwEbeRWgbNEkqO"
		serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
		final       = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
		verifier    = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
	)
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	rfc := fzKeys(f, "pencil", salt, 4096)
	ok, authMsg := rfc.judge(bare, serverFirst, final, "n,,", "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
	if !ok || "v="+EncodeB64(fzHMAC(rfc.serverKey, authMsg)) != verifier {
		f.Fatal("the fuzz oracle disagrees with RFC 7677's example")
	}

	sc, err := scramClient(name, password)
	if err != nil {
		f.Fatal(err)
	}
	conv := sc.WithMinIterations(MinIterations).NewConversation()
	first, _ := conv.Step("")
	c := &conn{srv: srv, remote: "fuzz-setup"}
	reply, err := c.handleLine([]byte("AUTH SCRAM-SHA-256 " + EncodeB64([]byte(first)) + "\n"))
	if err != nil {
		f.Fatalf("AUTH: %v", err)
	}
	sfirst, _ := DecodeB64(fzReplyArgs(reply)[0])
	cfinal, err := conv.Step(string(sfirst))
	if err != nil {
		f.Fatal(err)
	}
	nonce := strings.TrimPrefix(strings.Split(string(sfirst), ",")[0], "r=")
	if ok, _ := o.judge(first[3:], string(sfirst), cfinal, first[:3], nonce); !ok {
		f.Fatalf("the fuzz oracle rejects the real client's client-final %q", cfinal)
	}
	reply, err = c.handleLine([]byte("RESPONSE " + EncodeB64([]byte(cfinal)) + "\n"))
	if err != nil || c.user != name {
		f.Fatalf("the real client cannot log in: %q, %v", reply, err)
	}
	sfinal, _ := DecodeB64(fzReplyArgs(reply)[0])
	if _, err := conv.Step(string(sfinal)); err != nil || !conv.Valid() {
		f.Fatalf("the real client rejects the server's signature: %v", err)
	}
}

func FuzzSCRAM(f *testing.F) {
	const name, password = "alice", "Tr0ub4dor&3"
	w := fzNewWorld(f)
	salt := fzRegister(f, w.srv, name, password)
	fzRegister(f, w.srv, "bob", "Other-Passw0rd")
	o := fzKeys(f, password, salt, MinIterations)
	if rec, err := w.store.Get(name); err != nil || !bytes.Equal(rec.StoredKey, o.storedKey) || !bytes.Equal(rec.ServerKey, o.serverKey) {
		f.Fatalf("the fuzz oracle's keys differ from what Verifier registered: %v", err)
	}
	fzSelfTest(f, w.srv, o, name, password)

	// final is a template: {c} is the base64 GS2 header of first, {r} the
	// server's nonce, {p} the right proof over everything before the last
	// comma, XORed with flip.
	const good = "c={c},r={r},p={p}"
	for _, s := range []struct {
		first, final string
		flip         []byte
	}{
		{"n,,n=alice,r=rOprNGfwEbeRWgbNEkqO", good, nil},
		{"n,,n=alice,r=rOprNGfwEbeRWgbNEkqO", good, []byte{1}},
		{"n,,n=alice,r=x", good, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80}},
		{"y,,n=alice,r=x", good, nil},
		{"n,,n=ａｌｉｃｅ,r=x", good, nil},
		{"n,,n=bob,r=x", good, nil},
		{"n,,n=nobody,r=x", good, nil},
		{"n,,n=ALICE,r=x", good, nil},
		{"n,,n=alice,r=x", "c=eSws,r={r},p={p}", nil},
		{"n,,n=alice,r=x", "c={c},r={r}x,p={p}", nil},
		{"n,,n=alice,r=x", "c={c},r={r},e=ext,p={p}", nil},
		{"n,,n=alice,r=x", "c={c},r={r},p={p}x", nil},
		{"n,,n=alice,r=x", "c={c},r={r},p=" + EncodeB64(make([]byte, KeyLen)), nil},
		{"n,,n=alice,r=x", "c={c},r={r},p=", nil},
		{"n,,n=alice,r=x", "c={c},r={r}", nil},
		{"n,,n=alice,r=x", "c={c},p={p},r={r}", nil},
		{"n,a=alice,n=alice,r=x", good, nil},
		{"p=tls-unique,,n=alice,r=x", good, nil},
		{"n,,n=al=ice,r=x", good, nil},
		{"n,,n=alice,r=x,e=1", good, nil},
		// A client nonce long enough to push CHALLENGE past 4096 bytes
		// once did; now it is refused.
		{"n,,n=alice,r=" + strings.Repeat("A", 3000), good, nil},
		{"n,,n=alice,r=" + strings.Repeat("A", MaxNonceLen), good, nil},
		{"", "", nil},
	} {
		f.Add(s.first, s.final, s.flip)
	}

	f.Fuzz(func(t *testing.T, first, final string, flip []byte) {
		fzSCRAMOne(t, w, o, MechSCRAM, nil, first, final, flip)
	})
}

// fzSCRAMOne runs one fuzzed login, AUTH then RESPONSE, under mech on a
// connection whose channel binding is cb (nil: plain TCP), and checks the
// outcome against the oracle. final is a template: {c} is the base64 of
// what c= must carry (the GS2 header, and under PLUS the binding), {x} the
// same header with another connection's 32 bytes, {r} the server's nonce,
// {p} the right proof over everything before the last comma, XORed with
// flip.
func fzSCRAMOne(t *testing.T, w *fzWorld, o *fzOracle, mech string, cb []byte, first, final string, flip []byte) {
	const name = "alice"
	// A fresh server per input: its login throttle starts empty.
	c := &conn{srv: NewServer(w.srv.cfg, w.store, nil), remote: "fuzz", overTLS: cb != nil, cb: cb}
	line := "AUTH " + mech + " " + EncodeB64([]byte(first))
	if len(line)+1 > MaxLineBytes {
		return
	}
	reply, err := c.handleLine([]byte(line + "\n"))
	ctx := "AUTH with client-first " + strconv.Quote(first)
	if err != nil {
		fzProtoErr(t, err, ctx)
		if c.pending != nil || c.user != "" {
			t.Fatalf("%s: ERR %v left pending %T, user %q", ctx, err, c.pending, c.user)
		}
		return
	}
	fzCheckReplyLine(t, reply, ctx)
	args := fzReplyArgs(reply)
	if !strings.HasPrefix(reply, ReplyChallenge+" ") || len(args) != 1 || c.user != "" {
		t.Fatalf("%s: %q, user %q", ctx, reply, c.user)
	}
	sfRaw, err := DecodeB64(args[0])
	if err != nil {
		t.Fatalf("%s: CHALLENGE is not base64: %q", ctx, reply)
	}
	serverFirst := string(sfRaw)
	nonce := strings.TrimPrefix(strings.Split(serverFirst, ",")[0], "r=")
	cf, err := ParseClientFirst(first)
	if err != nil {
		t.Fatalf("%s: CHALLENGE for a client-first ParseClientFirst rejects: %v", ctx, err)
	}
	gs2, bare := cf.GS2Header, first[len(cf.GS2Header):]
	// c= carries the GS2 header and, under PLUS, this connection's binding.
	cbind := gs2
	if cf.CBFlag == 'p' {
		cbind += string(cb)
	}
	forUs := false
	if n, err := NormalizeUsername(cf.Username); err == nil && n == name {
		forUs = true
	}

	msg := strings.NewReplacer("{c}", EncodeB64([]byte(cbind)), "{x}", EncodeB64([]byte(gs2+strings.Repeat("x", exporterLen))), "{r}", nonce).Replace(final)
	altered := false
	if strings.Contains(msg, "{p}") {
		wop := msg
		if i := strings.LastIndexByte(msg, ','); i >= 0 {
			wop = msg[:i]
		}
		p := o.proof(bare + "," + serverFirst + "," + wop)
		for i := 0; i < len(flip) && i < len(p); i++ {
			altered = altered || flip[i] != 0
			p[i] ^= flip[i]
		}
		msg = strings.ReplaceAll(msg, "{p}", EncodeB64(p))
	}
	line = "RESPONSE " + EncodeB64([]byte(msg))
	if len(line)+1 > MaxLineBytes {
		return
	}
	reply, err = c.handleLine([]byte(line + "\n"))
	ctx += ", client-final " + strconv.Quote(msg)
	if err == nil {
		fzCheckReplyLine(t, reply, ctx)
	} else {
		fzProtoErr(t, err, ctx)
	}

	genuine, authMsg := o.judge(bare, serverFirst, msg, cbind, nonce)
	switch {
	case c.user == "":
		if err == nil {
			t.Fatalf("%s: %q without a login", ctx, reply)
		}
		if forUs && genuine {
			t.Fatalf("%s: a right proof for %q was refused: %v", ctx, name, err)
		}
		if pe := fzProtoErr(t, err, ctx); pe.Code != CodeAuth && pe.Code != CodeBadReq && pe.Code != CodeLimit {
			t.Fatalf("%s: RESPONSE got ERR %s, want AUTH, BADREQ or LIMIT", ctx, pe.Code)
		}
		// Spec §8: a well-formed client-final with a wrong proof is AUTH.
		// (A control character anywhere makes it malformed: BADREQ.)
		// Spec §9.3: under PLUS, the header with another connection's
		// 32 bytes is a relay's login: AUTH, not BADREQ.
		if f := strings.Split(msg, ","); cf.CBFlag == 'p' && len(f) > 0 && !fzHasControl(msg) {
			if v, derr := DecodeB64(strings.TrimPrefix(f[0], "c=")); derr == nil && strings.HasPrefix(f[0], "c=") &&
				len(v) == len(gs2)+exporterLen && string(v[:len(gs2)]) == gs2 && string(v[len(gs2):]) != string(cb) {
				fzWantCode(t, err, CodeAuth, ctx)
			}
		}
		if f := strings.Split(msg, ","); len(f) == 3 && f[0] == "c="+EncodeB64([]byte(cbind)) && f[1] == "r="+nonce && !fzHasControl(msg) {
			if p, perr := b64.DecodeString(strings.TrimPrefix(f[2], "p=")); perr == nil && len(p) == KeyLen && strings.HasPrefix(f[2], "p=") {
				fzWantCode(t, err, CodeAuth, ctx)
			}
		}
	case altered:
		t.Fatalf("%s: logged in as %q with a proof altered by %x", ctx, c.user, flip)
	case !forUs || !genuine || c.user != name:
		t.Fatalf("%s: logged in as %q (client-first names %q, genuine proof: %v)", ctx, c.user, cf.Username, genuine)
	default:
		// Mutual authentication: the server's signature is the one the
		// client will check.
		want := FormatReply(ReplyOK, EncodeB64([]byte("v="+EncodeB64(fzHMAC(o.serverKey, authMsg)))))
		if reply != want {
			t.Fatalf("%s: login reply %q, want server-final %q", ctx, reply, want)
		}
	}
	if c.pending != nil {
		t.Fatalf("%s: exchange still pending after RESPONSE", ctx)
	}
}

// FuzzSCRAMPlus is FuzzSCRAM under SCRAM-SHA-256-PLUS on a TLS connection
// with a fixed tls-exporter binding: only a proof over this connection's
// binding logs in, a foreign binding is AUTH, a header that is not
// p=tls-exporter is refused before any challenge.
func FuzzSCRAMPlus(f *testing.F) {
	const name, password = "alice", "Tr0ub4dor&3"
	w := fzNewWorld(f)
	salt := fzRegister(f, w.srv, name, password)
	fzRegister(f, w.srv, "bob", "Other-Passw0rd")
	o := fzKeys(f, password, salt, MinIterations)
	cb := bytes.Repeat([]byte{0xb7}, exporterLen)
	cfg := w.srv.cfg
	cfg.TLS, cfg.Mechanisms = true, []string{MechPlus, MechSCRAM, MechSeed}
	w.srv = NewServer(cfg, w.store, nil)
	// The target must reach RESPONSE: a real client's PLUS login over this
	// binding logs in.
	sc, _ := scramClient(name, password)
	conv := sc.NewConversationWithChannelBinding(scram.ChannelBinding{Type: scram.ChannelBindingTLSExporter, Data: cb})
	c := &conn{srv: w.srv, remote: "fuzz-setup", overTLS: true, cb: cb}
	c1, _ := conv.Step("")
	ch, err := c.handleLine([]byte("AUTH " + MechPlus + " " + EncodeB64([]byte(c1)) + "\n"))
	s1, derr := DecodeB64(strings.TrimSuffix(strings.TrimPrefix(ch, "CHALLENGE "), "\n"))
	if err != nil || derr != nil {
		f.Fatalf("PLUS self-test AUTH: %q, %v", ch, err)
	}
	c2, _ := conv.Step(string(s1))
	if reply, err := c.handleLine([]byte("RESPONSE " + EncodeB64([]byte(c2)) + "\n")); err != nil || c.user != name {
		f.Fatalf("PLUS self-test RESPONSE: %q, %v", reply, err)
	}
	const good = "c={c},r={r},p={p}"
	for _, s := range []struct {
		first, final string
		flip         []byte
	}{
		{"p=tls-exporter,,n=alice,r=rOprNGfwEbeRWgbNEkqO", good, nil},
		{"p=tls-exporter,,n=alice,r=x", good, []byte{1}},
		{"p=tls-exporter,,n=alice,r=x", "c={x},r={r},p={p}", nil},
		{"p=tls-exporter,,n=alice,r=x", "c=cD10bHMtZXhwb3J0ZXIsLA==,r={r},p={p}", nil},
		{"p=tls-exporter,,n=bob,r=x", good, nil},
		{"p=tls-exporter,,n=nobody,r=x", good, nil},
		{"p=tls-unique,,n=alice,r=x", good, nil},
		{"p=tls-exporter,a=alice,n=alice,r=x", good, nil},
		{"n,,n=alice,r=x", good, nil},
		{"y,,n=alice,r=x", good, nil},
		{"", "", nil},
	} {
		f.Add(s.first, s.final, s.flip)
	}
	f.Fuzz(func(t *testing.T, first, final string, flip []byte) {
		fzSCRAMOne(t, w, o, MechPlus, cb, first, final, flip)
	})
}

// FuzzLeanSCRAM holds scramServer to xdg-go/scram's ServerConversation:
// the same client-first and client-final, the same credentials and server
// nonce, on a connection without binding and on one with a tls-exporter
// binding; both must accept or refuse alike at each step (with the same
// RFC 5802 server-error value) and send byte-identical server messages.
// final is a template as in fzSCRAMOne: {c} the base64 of what c= must
// carry, {x} the GS2 header with another connection's binding, {r} the
// combined nonce, {p} the right proof XORed with flip.
func FuzzLeanSCRAM(f *testing.F) {
	creds := rfc7677Creds(f)
	o := fzKeys(f, rfc7677.password, creds.salt, creds.iters)
	cb := bytes.Repeat([]byte{0xb7}, exporterLen)
	const snonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	lib, _ := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) {
		return scram.StoredCredentials{
			KeyFactors: scram.KeyFactors{Salt: string(creds.salt), Iters: creds.iters},
			StoredKey:  creds.storedKey, ServerKey: creds.serverKey,
		}, nil
	})
	lib.WithNonceGenerator(func() string { return snonce })

	// one runs one exchange through both and reports whether they agreed
	// on a login.
	one := func(t *testing.T, bind bool, first, final string, flip []byte) bool {
		ctx := "client-first " + strconv.Quote(first)
		if bind {
			ctx = "with binding, " + ctx
		}
		conv := lib.NewConversation()
		lean := newSCRAMServer("", nil)
		if bind {
			conv = lib.NewConversationWithChannelBinding(scram.ChannelBinding{Type: scram.ChannelBindingTLSExporter, Data: cb})
			lean = newSCRAMServer(cbTLSExporter, cb)
		}
		defer lean.release()
		want, wantErr := conv.Step(first)
		got, err := lean.firstWithNonce([]byte(first), creds, []byte(snonce))
		fzSameStep(t, ctx, want, wantErr, got, err)
		if err != nil {
			return false
		}
		gs2 := first[:len(first)-len(strings.SplitN(first, ",", 3)[2])]
		cbind := gs2
		if first[0] == 'p' {
			cbind += string(cb)
		}
		nonce := strings.TrimPrefix(strings.Split(want, ",")[0], "r=")
		msg := strings.NewReplacer("{c}", EncodeB64([]byte(cbind)), "{x}", EncodeB64([]byte(gs2+strings.Repeat("x", exporterLen))), "{r}", nonce).Replace(final)
		if strings.Contains(msg, "{p}") {
			wop := msg
			if i := strings.LastIndexByte(msg, ','); i >= 0 {
				wop = msg[:i]
			}
			p := o.proof(first[len(gs2):] + "," + want + "," + wop)
			for i := 0; i < len(flip) && i < len(p); i++ {
				p[i] ^= flip[i]
			}
			msg = strings.ReplaceAll(msg, "{p}", EncodeB64(p))
		}
		ctx += ", client-final " + strconv.Quote(msg)
		want, wantErr = conv.Step(msg)
		got, err = lean.final([]byte(msg))
		fzSameStep(t, ctx, want, wantErr, got, err)
		if conv.Valid() != (err == nil) {
			t.Fatalf("%s: library valid %v, lean %v", ctx, conv.Valid(), err)
		}
		return err == nil
	}

	// The target reaches a login: the real client's, both ways.
	for _, bind := range []bool{false, true} {
		sc, _ := scram.SHA256.NewClient("user", rfc7677.password, "")
		cc := sc.NewConversation()
		lean := newSCRAMServer("", nil)
		if bind {
			cc = sc.NewConversationWithChannelBinding(scram.ChannelBinding{Type: scram.ChannelBindingTLSExporter, Data: cb})
			lean = newSCRAMServer(cbTLSExporter, cb)
		}
		c1, _ := cc.Step("")
		s1, err := lean.firstWithNonce([]byte(c1), creds, []byte(snonce))
		if err != nil {
			f.Fatalf("binding %v: the real client's client-first %q: %v", bind, c1, err)
		}
		c2, _ := cc.Step(string(s1))
		s2, err := lean.final([]byte(c2))
		if err != nil {
			f.Fatalf("binding %v: the real client's client-final %q: %v", bind, c2, err)
		}
		if _, err := cc.Step(string(s2)); err != nil || !cc.Valid() {
			f.Fatalf("binding %v: the real client rejects server-final %q: %v", bind, s2, err)
		}
		lean.release()
	}

	const good = "c={c},r={r},p={p}"
	for _, s := range []struct {
		first, final string
		flip         []byte
	}{
		{rfc7677.clientFirst, good, nil},
		{rfc7677.clientFirst, good, []byte{1}},
		{"p=tls-exporter,,n=user,r=x", good, nil},
		{"p=tls-exporter,,n=user,r=x", "c={x},r={r},p={p}", nil},
		{"p=tls-unique,,n=user,r=x", good, nil},
		{"p=tls-server-end-point,,n=user,r=x", good, nil},
		{"p=,,n=user,r=x", good, nil},
		{"y,,n=user,r=x", good, nil},
		{"n,a=user,n=user,r=x", good, nil},
		{"n,a=us=3Der,n=user,r=x", good, nil},
		{"n,a=us=3er,n=user,r=x", good, nil},
		{"n,b=user,n=user,r=x", good, nil},
		{"n,,n=us=2Cer,r=x", good, nil},
		{"n,,n=us=2cer,r=x", good, nil},
		{"n,,n=us=,r=x", good, nil},
		{"n,,n=,r=", good, nil},
		{"n,,m=ext,n=user,r=x", good, nil},
		{"n,,n=user,r=x,ext=1,,", good, nil},
		{"n,,n=user", good, nil},
		{"n,,n=user,r=x", "c={c},r={r},e=ext,p={p}", nil},
		{"n,,n=user,r=x", "c={c},r={r},,p={p}", nil},
		{"n,,n=user,r=x", "c=biws,r={r}x,p={p}", nil},
		{"n,,n=user,r=x", "c=biwt,r={r},p={p}", nil},
		{"n,,n=user,r=x", "c=bi\r\nws,r={r},p={p}", nil},
		{"n,,n=user,r=x", "c=biws,r={r},p=" + EncodeB64(make([]byte, KeyLen-1)), nil},
		{"n,,n=user,r=x", "c=biws,r={r},p=", nil},
		{"n,,n=user,r=x", "c=biws,r={r}", nil},
		{"n,,n=user,r=x", "c=biws,p={p},r={r}", nil},
		{"n,,n=user,r=x", "r={r},c=biws,p={p}", nil},
		{"", "", nil},
	} {
		f.Add(s.first, s.final, s.flip)
	}
	f.Fuzz(func(t *testing.T, first, final string, flip []byte) {
		for _, bind := range []bool{false, true} {
			one(t, bind, first, final, flip)
		}
	})
}

// fzSameStep requires scramServer's answer to one message to be the
// library's: both refuse with the same server-error value, or both answer
// the same bytes.
func fzSameStep(t *testing.T, ctx, want string, wantErr error, got []byte, err error) {
	t.Helper()
	switch {
	case (wantErr == nil) != (err == nil):
		t.Fatalf("%s: library %q, %v; lean %q, %v", ctx, want, wantErr, got, err)
	case err != nil:
		var se *scramError
		if !errors.As(err, &se) || se.value != want {
			t.Fatalf("%s: library refuses with %q (%v), lean with %v", ctx, want, wantErr, err)
		}
	case string(got) != want:
		t.Fatalf("%s: library answers %q, lean %q", ctx, want, got)
	}
}
