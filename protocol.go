package main

// protocol.go is the wire format of protocol v1: line framing, commands,
// replies, base64, usernames and the legacy SEED-SHA256 arithmetic (the
// SCRAM messages inside AUTH and RESPONSE are scrammsg.go's). It touches no socket and no file, so
// everything here can be fuzzed and tested on plain strings.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/secure/precis"
)

const (
	// ProtocolVersion is the number in the greeting.
	ProtocolVersion = 1
	// MaxLineBytes bounds one line as received, CR and LF included: big
	// enough for any SCRAM message of a 64-byte name, small enough that a
	// connection's buffer stays one page.
	MaxLineBytes = 4096
	// MaxUsernameBytes bounds a normalized username.
	MaxUsernameBytes = 64
	// KeyLen is the size of StoredKey and ServerKey (SHA-256).
	KeyLen = sha256.Size
	// MinIterations is the floor the spec sets for PBKDF2 iteration counts;
	// a client refuses a server that asks for fewer.
	MinIterations = 4096
	// SaltLen is the size of every salt the server makes, real or fake.
	SaltLen = 16
	// MaxNonceLen bounds a SCRAM client nonce. The server echoes it in its
	// CHALLENGE, base64 grows it by a third, and that reply must still fit
	// in one line; real clients send 24 to 32 characters.
	MaxNonceLen = 512
)

// Mechanism names as they appear in the greeting and in AUTH.
const (
	MechSCRAM = "SCRAM-SHA-256"
	MechPlus  = "SCRAM-SHA-256-PLUS"
	MechSeed  = "SEED-SHA256"
)

// Commands.
const (
	CmdRegister = "REGISTER"
	CmdVerifier = "VERIFIER"
	CmdAuth     = "AUTH"
	CmdResponse = "RESPONSE"
	CmdPing     = "PING"
	CmdQuit     = "QUIT"
	CmdWhoami   = "WHOAMI"
	CmdPasswd   = "PASSWD"
	CmdDelete   = "DELETE"
	CmdLogout   = "LOGOUT"
)

// Reply words.
const (
	ReplyGreeting  = "AUTHBOX"
	ReplyOK        = "OK"
	ReplySalt      = "SALT"
	ReplyChallenge = "CHALLENGE"
	ReplyErr       = "ERR"
)

// Error codes, as in the spec's table.
const (
	CodeBadCmd   = "BADCMD"
	CodeBadReq   = "BADREQ"
	CodeTooLong  = "TOOLONG"
	CodeBadName  = "BADNAME"
	CodeExists   = "EXISTS"
	CodeNoMech   = "NOMECH"
	CodeAuth     = "AUTH"
	CodeLocked   = "LOCKED"
	CodeLimit    = "LIMIT"
	CodeDenied   = "DENIED"
	CodeBusy     = "BUSY"
	CodeTimeout  = "TIMEOUT"
	CodeInternal = "INTERNAL"
)

// ProtoError is an error that has a place on the wire. Handlers return it;
// one function, conn.reply in conn.go, writes it. Any other error reaches
// the wire as ERR INTERNAL, its detail only in the log.
type ProtoError struct {
	Code string
	Text string
}

func (e *ProtoError) Error() string { return e.Code + " " + e.Text }

// Line is the wire form: "ERR CODE text".
func (e *ProtoError) Line() string { return FormatReply(ReplyErr, e.Code, e.Text) }

func protoErr(code, format string, args ...any) *ProtoError {
	return &ProtoError{Code: code, Text: fmt.Sprintf(format, args...)}
}

// Command is one parsed request line.
type Command struct {
	Verb string
	Args []string
}

// Errors of framing and parsing.
var (
	// ErrLineTooLong is returned when a line exceeds MaxLineBytes.
	ErrLineTooLong = &ProtoError{Code: CodeTooLong, Text: "line longer than 4096 bytes"}
	// ErrEmptyLine is returned for a line with no command word.
	ErrEmptyLine = &ProtoError{Code: CodeBadCmd, Text: "empty line"}
	// ErrNotGreeting is returned when a server's first line is not an
	// authbox greeting: something else listens there.
	ErrNotGreeting = errors.New("not an authbox greeting")
)

// ReadLine reads one line, its LF included, from r, which must have been
// made with bufio.NewReaderSize(…, MaxLineBytes): a line that does not fit
// is ErrLineTooLong. The slice is r's buffer, valid until the next read; at
// the end of input it is what came before, with io.EOF. Each caller keeps
// its own deadlines and its own wording of the errors.
func ReadLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > MaxLineBytes {
		return nil, ErrLineTooLong
	}
	return line, err
}

// TrimEOL removes the LF and one CR before it, as the framing rules allow.
func TrimEOL(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r"))
}

// ParseLine splits one line (without its end of line) into a command word
// and arguments. It checks only the framing: whether the word is known, and
// whether its arguments are well formed, is the state machine's business,
// because the spec orders state errors before argument errors. (A verb that
// is not valid UTF-8 is simply an unknown command.)
func ParseLine(line []byte) (Command, error) {
	if len(line) == 0 {
		return Command{}, ErrEmptyLine
	}
	fields := strings.Split(string(line), " ")
	return Command{Verb: fields[0], Args: fields[1:]}, nil
}

// ParseLineInto is ParseLine splitting into *fields, grown as needed,
// for a server that parses every line into one slice: the Command's Args
// are then good until the next call.
func ParseLineInto(fields *[]string, line []byte) (Command, error) {
	if len(line) == 0 {
		return Command{}, ErrEmptyLine
	}
	f := (*fields)[:0]
	for s := string(line); ; {
		word, rest, more := strings.Cut(s, " ")
		f = append(f, word)
		if !more {
			break
		}
		s = rest
	}
	*fields = f
	return Command{Verb: f[0], Args: f[1:]}, nil
}

// CheckArgs validates the count of a command's arguments, that none is
// empty (an empty argument means two spaces in a row, or one at the end),
// and that each is valid UTF-8.
func CheckArgs(c Command, min, max int) error {
	n := len(c.Args)
	if n < min || n > max {
		if min == max {
			return protoErr(CodeBadReq, "%s takes %d argument(s), got %d", c.Verb, min, n)
		}
		return protoErr(CodeBadReq, "%s takes %d to %d arguments, got %d", c.Verb, min, max, n)
	}
	for _, a := range c.Args {
		if a == "" {
			return protoErr(CodeBadReq, "arguments are separated by exactly one space")
		}
		if !utf8.ValidString(a) {
			return protoErr(CodeBadReq, "argument is not valid UTF-8")
		}
	}
	return nil
}

// FormatReply joins a reply word and its arguments into one line with LF.
func FormatReply(word string, args ...string) string {
	n := len(word) + 1
	for _, a := range args {
		if a != "" {
			n += 1 + len(a)
		}
	}
	var b strings.Builder
	b.Grow(n) // one allocation, the line's
	b.WriteString(word)
	for _, a := range args {
		if a == "" {
			continue
		}
		b.WriteByte(' ')
		b.WriteString(a)
	}
	b.WriteByte('\n')
	return b.String()
}

// FormatB64Reply is FormatReply(word, EncodeB64(raw)) in one allocation
// instead of three: every SCRAM login sends two such lines.
func FormatB64Reply(word string, raw []byte) string {
	var b strings.Builder
	b.Grow(len(word) + 1 + b64.EncodedLen(len(raw)) + 1)
	b.WriteString(word)
	if len(raw) > 0 {
		b.WriteByte(' ')
	}
	// Whole groups of three bytes encode alone, so the chunks' encodings
	// joined are the whole's.
	var chunk [64]byte
	for len(raw) > 0 {
		n := min(len(raw), 48)
		b64.Encode(chunk[:], raw[:n])
		b.Write(chunk[:b64.EncodedLen(n)])
		raw = raw[n:]
	}
	b.WriteByte('\n')
	return b.String()
}

// Greeting is the first line a served client reads.
func Greeting(mechs []string) string {
	return FormatReply(ReplyGreeting, append([]string{strconv.Itoa(ProtocolVersion)}, mechs...)...)
}

// ParseGreeting returns the mechanisms a greeting offers.
func ParseGreeting(line string) ([]string, error) {
	f := strings.Split(line, " ")
	if len(f) < 3 || f[0] != ReplyGreeting {
		return nil, ErrNotGreeting
	}
	if f[1] != strconv.Itoa(ProtocolVersion) {
		return nil, fmt.Errorf("server speaks protocol version %q, this client speaks %d", f[1], ProtocolVersion)
	}
	return f[2:], nil
}

// Reply is one parsed server line, as a client sees it.
type Reply struct {
	Word string
	Args []string
}

// ParseReply splits a server line. An ERR line becomes a *ProtoError
// carrying the code and the whole text.
func ParseReply(line string) (Reply, error) {
	if line == "" {
		return Reply{}, errors.New("empty reply")
	}
	word, rest, _ := strings.Cut(line, " ")
	if word == ReplyErr {
		code, text, _ := strings.Cut(rest, " ")
		return Reply{}, &ProtoError{Code: code, Text: text}
	}
	var args []string
	if rest != "" {
		args = strings.Split(rest, " ")
	}
	return Reply{Word: word, Args: args}, nil
}

// b64 is the wire encoding of binary values: standard, padded, and strict
// so that each value has exactly one spelling. Decode only with DecodeB64:
// b64.DecodeString alone accepts CR and LF.
var b64 = base64.StdEncoding.Strict()

// EncodeB64 encodes a binary value for the wire.
func EncodeB64(b []byte) string { return b64.EncodeToString(b) }

// AppendB64 appends the wire encoding of src to dst, for a client that
// builds its lines in a reused buffer.
func AppendB64(dst, src []byte) []byte { return b64.AppendEncode(dst, src) }

// DecodeB64 decodes a wire value, whoever sent it; failure is ERR BADREQ
// (a client reading a server's reply words its own error).
func DecodeB64(s string) ([]byte, error) {
	if hasCRLF(s) {
		return nil, protoErr(CodeBadReq, "not standard padded base64")
	}
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, protoErr(CodeBadReq, "not standard padded base64")
	}
	return b, nil
}

// hasCRLF reports whether s holds a CR or an LF, which encoding/base64
// skips even in strict mode: here they would be a second spelling of the
// same value. Two IndexByte scans, not ContainsAny, which tests each byte
// against a set: a tenth of a microsecond for a client-final.
func hasCRLF(s string) bool {
	return strings.IndexByte(s, '\r') >= 0 || strings.IndexByte(s, '\n') >= 0
}

// AppendDecodeB64 is DecodeB64 appending to dst: the same rules, for a
// server that decodes into a reused buffer.
func AppendDecodeB64(dst []byte, s string) ([]byte, error) {
	if hasCRLF(s) {
		return nil, protoErr(CodeBadReq, "not standard padded base64")
	}
	b, err := b64.AppendDecode(dst, []byte(s))
	if err != nil {
		return nil, protoErr(CodeBadReq, "not standard padded base64")
	}
	return b, nil
}

// DecodeKey decodes a base64 StoredKey or ServerKey and checks its length.
func DecodeKey(s string) ([]byte, error) {
	b, err := DecodeB64(s)
	if err != nil {
		return nil, err
	}
	if len(b) != KeyLen {
		return nil, protoErr(CodeBadReq, "key must be %d bytes, got %d", KeyLen, len(b))
	}
	return b, nil
}

// ParseIterations reads an iteration count from the wire: decimal digits
// without a sign or a leading zero, so that each count has one spelling.
// (Checking the first byte rather than re-formatting the number keeps a
// login free of an allocation.)
func ParseIterations(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || s[0] < '1' || s[0] > '9' {
		return 0, protoErr(CodeBadReq, "iteration count is not a positive decimal number")
	}
	return n, nil
}

// badName is the reply for a name outside the username rules. Validity is
// public knowledge, so saying why reveals nothing about who exists.
func badName(why string) error { return protoErr(CodeBadName, "%s", why) }

// NormalizeUsername applies the PRECIS UsernameCasePreserved profile
// (RFC 8265) and the length rule. The result is what is stored and compared.
func NormalizeUsername(name string) (string, error) {
	if name == "" {
		return "", badName("username is empty")
	}
	if printableASCII(name) && len(name) <= MaxUsernameBytes {
		// The profile leaves these as they are (RFC 8264's IdentifierClass
		// takes every ASCII character from ! to ~, and width mapping, NFC
		// and the bidi rule touch none of them): every login normalizes a
		// name, and precis costs a copy and a microsecond.
		return name, nil
	}
	n, err := precis.UsernameCasePreserved.String(name)
	if err != nil {
		return "", badName("username is not valid under PRECIS UsernameCasePreserved (no spaces, no control or symbol characters)")
	}
	if len(n) == 0 || len(n) > MaxUsernameBytes {
		return "", badName(fmt.Sprintf("username must be 1 to %d bytes after normalization", MaxUsernameBytes))
	}
	return n, nil
}

// printableASCII reports whether s has only bytes from '!' to '~'.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// SeedStored is the legacy record value: hex(SHA-256(salt + password)).
func SeedStored(salt, password string) string {
	h := sha256.Sum256([]byte(salt + password))
	return hex.EncodeToString(h[:])
}

// SeedResponse is the legacy answer: hex(SHA-256(nonce + stored)).
func SeedResponse(nonce, stored string) string {
	h := sha256.Sum256([]byte(nonce + stored))
	return hex.EncodeToString(h[:])
}

// IsLowerHex reports whether s is exactly n lower-case hex digits.
func IsLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
