package main

// scrammsg.go is the syntax of the SCRAM messages (RFC 5802) that AUTH,
// CHALLENGE and RESPONSE carry in base64: usernames as saslnames, the
// client-first-message the server checks before any store read, and the
// server-first-message a client checks before its PBKDF2. Pure, as
// protocol.go is: no socket, no file.

import (
	"errors"
	"strings"
)

// saslNameEscaper is built once: a Replacer builds its tables on first use.
var saslNameEscaper = strings.NewReplacer("=", "=3D", ",", "=2C")

// EncodeSaslName escapes a username for a SCRAM message (RFC 5802 §5.1).
func EncodeSaslName(s string) string { return saslNameEscaper.Replace(s) }

// DecodeSaslName reverses EncodeSaslName; any other use of '=' is invalid.
func DecodeSaslName(s string) (string, bool) {
	if !strings.Contains(s, "=") {
		return s, true // nothing to decode, nothing to copy
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '=')
		if i < 0 {
			b.WriteString(s)
			return b.String(), true
		}
		b.WriteString(s[:i])
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", false
		}
		s = s[i+3:]
	}
}

// ClientFirst is what the server needs from a SCRAM client-first-message
// before it hands the message to the SCRAM library.
type ClientFirst struct {
	Username string // decoded saslname, not yet normalized
	// CBFlag is the GS2 channel-binding flag: 'n' (the client cannot
	// bind), 'y' (it can, but saw no -PLUS offered) or 'p' (it binds, with
	// CBType).
	CBFlag byte
	CBType string
	// GS2Header is the header as sent, e.g. "p=tls-exporter,,".
	GS2Header string
}

// ParseClientFirst checks the parts of client-first-message that protocol
// v1 restricts further than RFC 5802: the GS2 header must be "n,,", "y,,"
// or "p=<type>,," (no authzid; which of them a mechanism allows is the
// caller's rule), and extensions are not supported.
func ParseClientFirst(msg string) (ClientFirst, error) {
	var cf ClientFirst
	var rest string
	switch {
	case strings.HasPrefix(msg, "n,,"), strings.HasPrefix(msg, "y,,"):
		cf.CBFlag, cf.GS2Header, rest = msg[0], msg[:3], msg[3:]
	case strings.HasPrefix(msg, "p="):
		i := strings.Index(msg, ",")
		if i < 3 || !strings.HasPrefix(msg[i:], ",,") || !isCBName(msg[2:i]) {
			return ClientFirst{}, protoErr(CodeBadReq, "SCRAM GS2 header must be \"p=tls-exporter,,\" (no authzid) in protocol v1")
		}
		cf.CBFlag, cf.CBType, cf.GS2Header, rest = 'p', msg[2:i], msg[:i+2], msg[i+2:]
	default:
		return ClientFirst{}, protoErr(CodeBadReq, "SCRAM GS2 header must be \"n,,\", \"y,,\" or \"p=tls-exporter,,\" in protocol v1")
	}
	// n= "," r= and nothing after: cut, not split, which would allocate.
	user, tail, ok := strings.Cut(rest, ",")
	nonce, _, more := strings.Cut(tail, ",")
	if !ok || !strings.HasPrefix(user, "n=") || !strings.HasPrefix(nonce, "r=") {
		return ClientFirst{}, protoErr(CodeBadReq, "SCRAM client-first-message needs n= and r= attributes")
	}
	if more {
		return ClientFirst{}, protoErr(CodeBadReq, "SCRAM extensions are not supported")
	}
	if len(nonce) > 2+MaxNonceLen {
		return ClientFirst{}, protoErr(CodeBadReq, "SCRAM nonce longer than %d characters", MaxNonceLen)
	}
	if !printableNonce(nonce[2:]) {
		return ClientFirst{}, protoErr(CodeBadReq, "SCRAM nonce must be printable ASCII without commas")
	}
	name, ok := DecodeSaslName(user[2:])
	if !ok {
		return ClientFirst{}, protoErr(CodeBadReq, "SCRAM username has '=' not followed by 2C or 3D")
	}
	cf.Username = name
	return cf, nil
}

// isCBName is RFC 5802's cb-name: 1*(ALPHA / DIGIT / "." / "-").
func isCBName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return s != ""
}

func printableNonce(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}

// ServerFirst is what a client checks in server-first-message before it
// spends PBKDF2 time on it.
type ServerFirst struct {
	Nonce      string // the client's nonce and the server's part after it
	Salt       []byte
	Iterations int
}

// ParseServerFirst reads the nonce, the salt and the iteration count.
func ParseServerFirst(msg string) (ServerFirst, error) {
	f := strings.Split(msg, ",")
	if len(f) < 3 || !strings.HasPrefix(f[0], "r=") || !strings.HasPrefix(f[1], "s=") || !strings.HasPrefix(f[2], "i=") {
		return ServerFirst{}, errors.New("malformed SCRAM server-first-message")
	}
	salt, err := DecodeB64(f[1][2:])
	if err != nil {
		return ServerFirst{}, errors.New("malformed salt in SCRAM server-first-message")
	}
	it, err := ParseIterations(f[2][2:])
	if err != nil {
		return ServerFirst{}, errors.New("malformed iteration count in SCRAM server-first-message")
	}
	return ServerFirst{Nonce: f[0][2:], Salt: salt, Iterations: it}, nil
}
