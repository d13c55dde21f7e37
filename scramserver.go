package main

// scramserver.go is the server's side of SCRAM-SHA-256 and
// SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677), for the login hot path. It
// accepts and refuses exactly what github.com/xdg-go/scram's
// ServerConversation does (FuzzLeanSCRAM holds it to that), but works in
// buffers kept from login to login: a login through the library cost the
// server some forty allocations of its own.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strconv"
	"sync"
)

// scramCreds is what the server keeps of an account for SCRAM. The slices
// are read, never written, and not kept past the login.
type scramCreds struct {
	salt                 []byte
	iters                int
	storedKey, serverKey []byte
}

// scramError is a refusal, with the RFC 5802 server-error value the
// library answers it with ("" where it answers none). Only errSCRAMProof
// is a wrong password; the rest are malformed or misbound messages.
type scramError struct{ value, why string }

func (e *scramError) Error() string { return "SCRAM: " + e.why }

var (
	errSCRAMMalformed   = &scramError{"", "malformed message"}
	errSCRAMAuthzID     = &scramError{"e=invalid-encoding", "authzid has '=' not followed by 2C or 3D"}
	errSCRAMUsername    = &scramError{"e=invalid-username-encoding", "username has '=' not followed by 2C or 3D"}
	errSCRAMDowngrade   = &scramError{"e=server-does-support-channel-binding", "client flag y, but this connection offers binding"}
	errSCRAMNoBinding   = &scramError{"e=channel-binding-not-supported", "client flag p on a connection without binding"}
	errSCRAMBindingType = &scramError{"e=unsupported-channel-binding-type", "channel-binding type not this connection's"}
	errSCRAMBinding     = &scramError{"e=channel-bindings-dont-match", "c= does not match"}
	errSCRAMNonce       = &scramError{"e=other-error", "nonce does not match"}
	errSCRAMProofLen    = &scramError{"e=other-error", "proof is not 32 bytes"}
	errSCRAMProof       = &scramError{"e=invalid-proof", "wrong proof"}
)

// hmacBlock is SHA-256's block size: HMAC pads its key to it.
const hmacBlock = 64

// scramNonceRaw is how many random bytes make the server's nonce; base64
// makes them 32 printable characters without a comma, the library's size.
const scramNonceRaw = 24

// scramServer is one login's conversation. Get one with newSCRAMServer,
// call first then final, and release it.
type scramServer struct {
	cbType string // the channel-binding type this connection offers, "" for none
	cbData []byte
	creds  scramCreds

	state   int // 0: awaiting client-first, 1: client-final, 2: done
	flag    byte
	gs2     []byte // the GS2 header, as c= must repeat it
	nonce   []byte // client nonce and server nonce, as r= must repeat them
	firstAt int    // where server-first starts in msg
	// msg is hmacBlock bytes of room for the padded HMAC key, then the
	// AuthMessage (client-first-bare "," server-first "," client-final
	// without its proof), so that an HMAC over it copies nothing.
	msg    []byte
	dec    []byte // base64 decodes of c= and p=
	rnd    [scramNonceRaw]byte
	snonce [32]byte
	out    [2 + 44]byte // "v=" and a base64 HMAC-SHA-256
}

var scramServers = sync.Pool{New: func() any {
	return &scramServer{msg: make([]byte, 0, 512), dec: make([]byte, 0, 128), gs2: make([]byte, 0, 32), nonce: make([]byte, 0, 64)}
}}

// newSCRAMServer starts a conversation on a connection that binds with
// cbType and cbData ("" and nil: it offers no binding, so -PLUS is out).
func newSCRAMServer(cbType string, cbData []byte) *scramServer {
	s := scramServers.Get().(*scramServer)
	s.cbType, s.cbData, s.state = cbType, cbData, 0
	return s
}

// release hands s back for another login; what first and final returned
// is then no longer valid.
func (s *scramServer) release() {
	s.cbData, s.creds = nil, scramCreds{}
	// The proof, beside the AuthMessage, is ClientKey to whoever holds
	// StoredKey: the decoded copy is cleared rather than left in the pool.
	// This narrows, not closes, the window: the line it came in (the
	// reader's buffer, the argument string) holds it in base64 until
	// overwritten or collected, as Go gives no way to wipe a string.
	clear(s.dec)
	// A long client nonce grew the buffers: let those go.
	if cap(s.msg) > 4096 || cap(s.dec) > 4096 || cap(s.gs2) > 4096 || cap(s.nonce) > 4096 {
		return
	}
	scramServers.Put(s)
}

// first takes client-first-message and answers server-first-message.
func (s *scramServer) first(c1 []byte, creds scramCreds) ([]byte, error) {
	rand.Read(s.rnd[:]) // it does not fail (Go 1.24+)
	base64.StdEncoding.Encode(s.snonce[:], s.rnd[:])
	return s.firstWithNonce(c1, creds, s.snonce[:])
}

// firstWithNonce is first with the server's nonce given (tests fix it).
func (s *scramServer) firstWithNonce(c1 []byte, creds scramCreds, snonce []byte) ([]byte, error) {
	if s.state != 0 {
		return nil, errSCRAMMalformed
	}
	s.state = 2 // until it succeeds
	// gs2-cbind-flag "," [authzid] "," username "," nonce ["," extensions]
	var f [4][]byte
	rest := c1
	for i := range f {
		var ok bool
		f[i], rest, ok = bytes.Cut(rest, []byte{','})
		if !ok && i < 3 {
			return nil, errSCRAMMalformed
		}
	}
	switch cb := f[0]; {
	case len(cb) == 1 && (cb[0] == 'n' || cb[0] == 'y'):
		s.flag = cb[0]
	case bytes.HasPrefix(cb, []byte("p=")) && isSCRAMBindingType(cb[2:]):
		s.flag = 'p'
	default:
		return nil, errSCRAMMalformed
	}
	if len(f[1]) > 0 {
		if !bytes.HasPrefix(f[1], []byte("a=")) {
			return nil, errSCRAMMalformed
		}
		if !validSaslName(f[1][2:]) {
			return nil, errSCRAMAuthzID
		}
	}
	if !bytes.HasPrefix(f[2], []byte("n=")) { // m= (an extension) too
		return nil, errSCRAMMalformed
	}
	if !validSaslName(f[2][2:]) {
		return nil, errSCRAMUsername
	}
	if !bytes.HasPrefix(f[3], []byte("r=")) {
		return nil, errSCRAMMalformed
	}
	offered := s.cbType != "" && len(s.cbData) > 0
	switch {
	case s.flag == 'y' && offered:
		return nil, errSCRAMDowngrade
	case s.flag == 'p' && !offered:
		return nil, errSCRAMNoBinding
	case s.flag == 'p' && string(f[0][2:]) != s.cbType:
		return nil, errSCRAMBindingType
	}

	gs2Len := len(f[0]) + 1 + len(f[1]) + 1
	s.gs2 = append(s.gs2[:0], c1[:gs2Len]...)
	s.creds = creds
	s.nonce = append(append(s.nonce[:0], f[3][2:]...), snonce...)
	m := append(s.msg[:0], make([]byte, hmacBlock)...)
	m = append(m, c1[gs2Len:]...)
	m = append(m, ',')
	s.firstAt = len(m)
	m = append(m, "r="...)
	m = append(m, s.nonce...)
	m = append(m, ",s="...)
	m = base64.StdEncoding.AppendEncode(m, creds.salt)
	m = append(m, ",i="...)
	m = strconv.AppendInt(m, int64(creds.iters), 10)
	s.msg = m
	s.state = 1
	return m[s.firstAt:], nil
}

// final takes client-final-message and, if its proof is right, answers
// server-final-message.
func (s *scramServer) final(c2 []byte) ([]byte, error) {
	if s.state != 1 {
		return nil, errSCRAMMalformed
	}
	s.state = 2
	// "c=" cbind "," "r=" nonce ["," extensions] "," "p=" proof: the
	// proof is the last attribute, whatever comes between.
	cAttr, rest, ok := bytes.Cut(c2, []byte{','})
	if !ok {
		return nil, errSCRAMMalformed
	}
	rAttr, _, ok := bytes.Cut(rest, []byte{','})
	if !ok {
		return nil, errSCRAMMalformed
	}
	wopLen := bytes.LastIndexByte(c2, ',')
	pAttr := c2[wopLen+1:]
	if !bytes.HasPrefix(cAttr, []byte("c=")) || !bytes.HasPrefix(rAttr, []byte("r=")) || !bytes.HasPrefix(pAttr, []byte("p=")) {
		return nil, errSCRAMMalformed
	}
	// The library decodes with encoding/base64's StdEncoding, which skips
	// CR and LF and does not insist on zero padding bits; so do we.
	cb, ok := s.decode(cAttr[2:], 0)
	if !ok {
		return nil, errSCRAMMalformed
	}
	proof, ok := s.decode(pAttr[2:], len(cb))
	if !ok {
		return nil, errSCRAMMalformed
	}
	cb = s.dec[:len(cb)]

	// c= is the GS2 header, and the binding's bytes if the client bound.
	bound := len(cb) == len(s.gs2)
	if s.flag == 'p' {
		bound = len(cb) == len(s.gs2)+len(s.cbData) && subtle.ConstantTimeCompare(cb[len(s.gs2):], s.cbData) == 1
	}
	if !bound || subtle.ConstantTimeCompare(cb[:len(s.gs2)], s.gs2) != 1 {
		return nil, errSCRAMBinding
	}
	if subtle.ConstantTimeCompare(rAttr[2:], s.nonce) != 1 {
		return nil, errSCRAMNonce
	}

	s.msg = append(append(s.msg, ','), c2[:wopLen]...)
	// ClientKey is the proof XOR ClientSignature; its hash must be StoredKey.
	sig := s.hmac(s.creds.storedKey)
	if len(proof) != len(sig) {
		return nil, errSCRAMProofLen
	}
	for i := range sig {
		sig[i] ^= proof[i]
	}
	if stored := sha256.Sum256(sig[:]); subtle.ConstantTimeCompare(stored[:], s.creds.storedKey) != 1 {
		return nil, errSCRAMProof
	}
	sig = s.hmac(s.creds.serverKey)
	copy(s.out[:], "v=")
	base64.StdEncoding.Encode(s.out[2:], sig[:])
	return s.out[:], nil
}

// decode appends the base64 value of src to s.dec[:at] and returns it.
func (s *scramServer) decode(src []byte, at int) ([]byte, bool) {
	s.dec = append(s.dec[:at], make([]byte, base64.StdEncoding.DecodedLen(len(src)))...)
	n, err := base64.StdEncoding.Decode(s.dec[at:], src)
	if err != nil {
		return nil, false
	}
	s.dec = s.dec[:at+n]
	return s.dec[at:], true
}

// hmac is HMAC-SHA-256 of the AuthMessage under key.
func (s *scramServer) hmac(key []byte) [sha256.Size]byte { return hmacPadded(key, s.msg) }

// hmacPadded is HMAC-SHA-256 (RFC 2104) under key of buf[hmacBlock:]. The
// first hmacBlock bytes of buf are room for the padded key, so that the
// inner hash is one SHA-256 over buf and no hmac.New is made; they are
// cleared again.
func hmacPadded(key, buf []byte) [sha256.Size]byte {
	var k [hmacBlock]byte
	if len(key) > hmacBlock {
		h := sha256.Sum256(key)
		key = h[:]
	}
	copy(k[:], key)
	pad := buf[:hmacBlock]
	for i := range pad {
		pad[i] = k[i] ^ 0x36
	}
	inner := sha256.Sum256(buf)
	clear(pad)
	var outer [hmacBlock + sha256.Size]byte
	for i := range k {
		outer[i] = k[i] ^ 0x5c
	}
	copy(outer[hmacBlock:], inner[:])
	return sha256.Sum256(outer[:])
}

// isSCRAMBindingType reports the channel-binding types the library knows
// (it refuses any other name in a GS2 header as malformed).
func isSCRAMBindingType(t []byte) bool {
	switch string(t) {
	case "tls-unique", "tls-server-end-point", cbTLSExporter:
		return true
	}
	return false
}

// validSaslName reports whether every '=' in an encoded saslname starts
// "=2C" or "=3D" (RFC 5802 §5.1: the server must refuse anything else).
func validSaslName(s []byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			continue
		}
		if i+3 > len(s) {
			return false
		}
		if e := string(s[i+1 : i+3]); e != "2C" && e != "3D" {
			return false
		}
		i += 2
	}
	return true
}
