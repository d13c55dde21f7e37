package main

// trust.go is how a client decides to trust a server (spec §9.2), the way
// SSH trusts host keys: a fingerprint the user gave, one pinned in the
// known_servers file at an earlier contact, or a chain valid under CA roots
// the user chose. The check runs in tls.Config.VerifyConnection, which
// crypto/tls calls on resumed connections too.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
)

var (
	// ErrUnknownServer is returned (inside *UnknownServerError) when no
	// fingerprint, pin or CA vouches for the server: a first contact.
	ErrUnknownServer = errors.New("the server is not known")
	// ErrFingerprintChanged is returned (inside *FingerprintError) when
	// the server's key is not the one pinned or given.
	ErrFingerprintChanged = errors.New("the server's fingerprint is not the expected one")
	// ErrCAVerify is returned (inside *CAError) when the server's chain is
	// not valid for its name under the --ca roots.
	ErrCAVerify = errors.New("the server's certificate is not valid under the given CA")
)

// UnknownServerError is a first contact: the server presented Fingerprint,
// and nothing the user set vouches for it.
type UnknownServerError struct {
	Addr, Fingerprint string
}

func (e *UnknownServerError) Error() string {
	return fmt.Sprintf("%s is not a known server (fingerprint %s)", e.Addr, e.Fingerprint)
}
func (e *UnknownServerError) Unwrap() error { return ErrUnknownServer }

// FingerprintError is a server whose key differs from the expected one:
// from the known_servers file (File and Line set) or from --fingerprint.
type FingerprintError struct {
	Addr, Want, Got string
	File            string
	Line            int
}

func (e *FingerprintError) Error() string {
	return fmt.Sprintf("%s presented %s, expected %s", e.Addr, e.Got, e.Want)
}
func (e *FingerprintError) Unwrap() error { return ErrFingerprintChanged }

// CAError is a chain that does not verify under the --ca roots.
type CAError struct {
	Addr, CAFile string
	Err          error
}

func (e *CAError) Error() string {
	return fmt.Sprintf("%s: certificate not valid under %s: %v", e.Addr, e.CAFile, e.Err)
}
func (e *CAError) Unwrap() error { return ErrCAVerify }

// Trust is what a client trusts. The zero value trusts nothing, so every
// server is a first contact.
type Trust struct {
	// Fingerprint is a fingerprint the user gave (canonical form).
	Fingerprint string
	// Known is the known_servers file; nil when none is used.
	Known *KnownServers
	// Group are the addresses of one service (a --server list): their
	// servers share one key, so a pin for any of them covers them all.
	Group []string
	// Roots and CAFile are the CA roots the user chose, if any.
	Roots  *x509.CertPool
	CAFile string
}

// ErrNoPEMCertificate is returned when a CA file holds no PEM certificate.
var ErrNoPEMCertificate = errors.New("no PEM certificate")

// LoadCA reads a PEM file of CA certificates into t.
func (t *Trust) LoadCA(path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%w: %s", ErrNoPEMCertificate, path)
	}
	t.Roots, t.CAFile = pool, path
	return nil
}

// TLSConfig is the client's TLS for one server address: TLS 1.3, ALPN
// authbox/1, and the trust decision in VerifyConnection. crypto/tls's own
// chain check is off because a pinned self-signed certificate has no chain;
// verify does the CA check itself when the user gave roots.
func (t *Trust) TLSConfig(addr string) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpnProto},
		InsecureSkipVerify: true,
		VerifyConnection:   func(cs tls.ConnectionState) error { return t.verify(addr, host, cs) },
	}
	if net.ParseIP(host) == nil {
		conf.ServerName = host
	}
	return conf
}

// verify applies spec §9.2: a pin that differs is always fatal; else a
// matching pin, a matching --fingerprint or a chain valid under the roots
// is trusted; else the server is unknown.
func (t *Trust) verify(addr, host string, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	got := certFingerprint(leaf)
	pinned := false
	if t.Known != nil {
		e, ok := t.Known.Lookup(addr)
		for _, other := range t.Group {
			if ok {
				break
			}
			e, ok = t.Known.Lookup(other)
		}
		if ok {
			if e.Fingerprint != got {
				return &FingerprintError{Addr: addr, Want: e.Fingerprint, Got: got, File: t.Known.Path, Line: e.Line}
			}
			pinned = true
		}
	}
	// A fingerprint the user gave must match even when a pin does: it may
	// be how the user checks a pin made on a first contact.
	if t.Fingerprint != "" {
		if t.Fingerprint != got {
			return &FingerprintError{Addr: addr, Want: t.Fingerprint, Got: got}
		}
		return nil
	}
	if pinned {
		return nil
	}
	if t.Roots != nil {
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := leaf.Verify(x509.VerifyOptions{Roots: t.Roots, Intermediates: inter, DNSName: host})
		if err != nil {
			return &CAError{Addr: addr, CAFile: t.CAFile, Err: err}
		}
		return nil
	}
	return &UnknownServerError{Addr: addr, Fingerprint: got}
}
