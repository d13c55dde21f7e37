package main

// tls.go is the server's side of spec §9: its TLS identity (a key and a
// self-signed certificate kept in the db, or a chain and key from files),
// the fingerprint clients pin, the TLS 1.3 configuration, and the
// tls-exporter channel binding that SCRAM-SHA-256-PLUS proves.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

const (
	// alpnProto is the ALPN name the client offers; the server selects it
	// when offered and does not require it (spec §9.1).
	alpnProto = "authbox/1"
	// exporterLabel and exporterLen are RFC 9266's tls-exporter channel
	// binding: 32 bytes, empty context.
	exporterLabel = "EXPORTER-Channel-Binding"
	exporterLen   = 32
	// cbTLSExporter is the only channel-binding type protocol v1 knows.
	cbTLSExporter = "tls-exporter"
	// selfSignedLifetime is how long a self-made certificate is valid.
	// Clients pin its key, not its dates, so an expiry would only break
	// clients that check dates (a CA-verifying client cannot verify a
	// self-signed certificate anyway); a century means never in practice.
	selfSignedLifetime = 100 * 365 * 24 * time.Hour
)

var (
	// ErrTLSKeyType is returned when a configured key is not one crypto/tls
	// signs TLS 1.3 handshakes with (Ed25519, ECDSA, RSA).
	ErrTLSKeyType = errors.New("the key type cannot be used for TLS 1.3")
	// ErrBadIdentity is returned when the identity stored in the db does
	// not decode: the db is damaged or was written by another program.
	ErrBadIdentity = errors.New("the TLS identity stored in the db is damaged")
)

// Fingerprint names a public key as spec §9.2 does: "SHA256:" and the
// unpadded standard base64 of SHA-256 over its DER SubjectPublicKeyInfo.
func Fingerprint(spki []byte) string {
	sum := sha256.Sum256(spki)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// certFingerprint is the fingerprint of a certificate's key.
func certFingerprint(c *x509.Certificate) string { return Fingerprint(c.RawSubjectPublicKeyInfo) }

// NormalizeFingerprint checks a fingerprint a person gave and returns it in
// its canonical form: "SHA256:" (the prefix in any case) and 43 characters
// of unpadded base64 (trailing "=" tolerated, as some tools print them).
func NormalizeFingerprint(s string) (string, error) {
	s = strings.TrimSpace(s)
	body, ok := cutPrefixFold(s, "SHA256:")
	if !ok {
		return "", fmt.Errorf("a fingerprint starts with SHA256:, got %q", s)
	}
	body = strings.TrimRight(body, "=")
	raw, err := base64.RawStdEncoding.DecodeString(body)
	if err != nil || len(raw) != sha256.Size {
		return "", fmt.Errorf("%q is not a SHA256 fingerprint (43 characters of base64 after SHA256:)", s)
	}
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(raw), nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// ServerIdentity is what the server presents: its certificate chain and
// key, and the fingerprint of the leaf's key.
type ServerIdentity struct {
	Cert        tls.Certificate
	Fingerprint string
}

// LoadIdentity returns the server's identity: the chain and key from the
// configured files, or else the one kept in the store, made on first use.
func LoadIdentity(cfg Config, store Storage) (*ServerIdentity, error) {
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls_cert_file %s / tls_key_file %s: %w", cfg.TLSCertFile, cfg.TLSKeyFile, err)
		}
		return newIdentity(cert)
	}
	certDER, keyDER, err := store.Identity(newSelfSigned)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	id, err := newIdentity(tls.Certificate{Certificate: [][]byte{certDER}, PrivateKey: key})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	return id, nil
}

func newIdentity(cert tls.Certificate) (*ServerIdentity, error) {
	if len(cert.Certificate) == 0 {
		return nil, errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, err
	}
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, ErrTLSKeyType
	}
	switch signer.Public().(type) {
	case ed25519.PublicKey, *ecdsa.PublicKey, *rsa.PublicKey:
	default:
		return nil, ErrTLSKeyType
	}
	if !signerMatches(signer, leaf) {
		return nil, errors.New("the key does not belong to the certificate")
	}
	cert.Leaf = leaf
	return &ServerIdentity{Cert: cert, Fingerprint: certFingerprint(leaf)}, nil
}

func signerMatches(s crypto.Signer, leaf *x509.Certificate) bool {
	pub, ok := s.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(leaf.PublicKey)
}

// newSelfSigned makes a key and a self-signed certificate for it, both
// DER (the key PKCS#8). Ed25519: BenchmarkHandshake measures a full TLS
// 1.3 handshake with it against ECDSA P-256 (BENCHMARKS.md); Ed25519 signs
// for less and its keys and signatures are smaller, and every TLS 1.3
// client we serve (crypto/tls) verifies it.
func newSelfSigned() (certDER, keyDER []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	return selfSign(pub, priv)
}

func selfSign(pub crypto.PublicKey, priv crypto.Signer) (certDER, keyDER []byte, err error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "authbox server"},
		NotBefore:             now.Add(-time.Hour), // clocks of clients a little behind
		NotAfter:              now.Add(selfSignedLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if certDER, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv); err != nil {
		return nil, nil, err
	}
	if keyDER, err = x509.MarshalPKCS8PrivateKey(priv); err != nil {
		return nil, nil, err
	}
	return certDER, keyDER, nil
}

// serverTLSConfig is the server's TLS: 1.3 only, the identity, ALPN.
// Session tickets stay on (crypto/tls's default): a resumed handshake
// costs the server less, and the client's pin is checked on resumed
// connections too (VerifyConnection).
func serverTLSConfig(id *ServerIdentity) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		NextProtos:   []string{alpnProto},
	}
}

// exporterBinding is the tls-exporter channel binding of a connection.
func exporterBinding(cs *tls.ConnectionState) ([]byte, error) {
	return cs.ExportKeyingMaterial(exporterLabel, nil, exporterLen)
}
