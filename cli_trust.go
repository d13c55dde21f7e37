package main

// cli_trust.go is how the client commands reach a server over TLS and
// decide to trust it (spec §9.2, trust.go): the TLS flags, the first-contact
// question, pinning, and the messages for each way it can go wrong.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/urfave/cli/v2"
)

// newTrustFlags are the TLS flags of every command that dials a server.
func newTrustFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "fingerprint", Usage: "trust the server whose key has fingerprint `SHA256:…` (as \"authbox fingerprint\" prints it on the server)", EnvVars: []string{"AUTHBOX_FINGERPRINT"}},
		&cli.BoolFlag{Name: "accept-new", Usage: "pin a server seen for the first time without asking (like ssh's StrictHostKeyChecking=accept-new); a changed key is still refused", DisableDefaultText: true},
		&cli.StringFlag{Name: "ca", Usage: "trust a server whose certificate chain is valid for its name under the CA certificates in `FILE` (PEM; default: client.ca_file)"},
		&cli.BoolFlag{Name: "plain", Usage: "speak plain TCP instead of TLS, to a server with tls = false (default: client.tls)", DisableDefaultText: true},
	}
}

// connector dials a server for a client command: plain TCP, or TLS under
// the user's trust, asking on first contact.
type connector struct {
	plain     bool
	trust     Trust
	acceptNew bool
	term      *terminal // for the first-contact question; nil: never ask
	stderr    io.Writer
}

// newConnector reads the TLS flags and settings. term may be nil for
// commands that must never ask (bench).
func newConnector(ctx *cli.Context, cfg ClientConfig, term *terminal) (*connector, error) {
	cn := &connector{plain: ctx.Bool("plain") || !cfg.TLS, acceptNew: ctx.Bool("accept-new"), term: term, stderr: ctx.App.ErrWriter}
	if cn.plain {
		for _, f := range []string{"fingerprint", "accept-new", "ca"} {
			if ctx.IsSet(f) {
				return nil, fail(exitOther, "drop --"+f+", or drop --plain (and client.tls = false) to speak TLS", "--%s needs TLS, and --plain (or client.tls = false) turns it off", f)
			}
		}
		return cn, nil
	}
	if v := ctx.String("fingerprint"); v != "" {
		fp, err := NormalizeFingerprint(v)
		if err != nil {
			return nil, fail(exitOther, "copy the fingerprint as \"authbox fingerprint\" prints it on the server: SHA256: and 43 characters", "--fingerprint: %s", err)
		}
		cn.trust.Fingerprint = fp
	}
	ca := ctx.String("ca")
	if ca == "" {
		ca = cfg.CAFile
	}
	if ca != "" {
		if err := cn.trust.LoadCA(ca); errors.Is(err, ErrNoPEMCertificate) {
			return nil, fail(exitOther, "give a PEM file of CA certificates (-----BEGIN CERTIFICATE-----) with --ca or client.ca_file", "%s holds no PEM certificate", ca)
		} else if err != nil {
			return nil, fail(exitOther, "give a PEM file of CA certificates with --ca or client.ca_file", "cannot read the CA certificates in %s: %s", ca, errText(err))
		}
	}
	path, err := KnownServersPath(cfg.KnownServers)
	if err != nil {
		return nil, fail(exitOther, "set AUTHBOX_KNOWN_SERVERS or client.known_servers to a file path", "%s", err)
	}
	if cn.trust.Known, err = LoadKnownServers(path); err != nil {
		return nil, fail(exitOther, "fix or delete that line: each line is \"host:port SHA256:...\", or a # comment", "known servers file: %s", err)
	}
	return cn, nil
}

// dial connects to addr. On a first contact it pins the server's
// fingerprint if the user says so (or gave --accept-new) and connects
// again; nothing but the handshake has been sent to the server by then.
func (cn *connector) dial(addr string) (*Client, error) {
	if cn.plain {
		c, err := Dial(addr)
		var pe *ProtoError
		var oe *net.OpError
		if err != nil && !errors.As(err, &pe) && !errors.Is(err, ErrNotGreeting) && !(errors.As(err, &oe) && oe.Op == "dial") {
			// A TLS server waits for a ClientHello where a plain one
			// greets, so a plain client to it hears nothing.
			e := fail(exitOther, "if the server speaks TLS (its default), leave out --plain and client.tls = false",
				"no greeting from %s: %s", addr, errText(err))
			e.(*cliError).cause = err
			return nil, e
		}
		return c, err
	}
	c, err := DialTLS(addr, cn.trust.TLSConfig(addr))
	var ue *UnknownServerError
	if !errors.As(err, &ue) {
		return c, err
	}
	if err := cn.firstContact(ue); err != nil {
		return nil, err
	}
	return DialTLS(addr, cn.trust.TLSConfig(addr))
}

// firstContact asks whether to trust a server seen for the first time,
// before any password is asked, and pins it when told to.
func (cn *connector) firstContact(ue *UnknownServerError) error {
	known := cn.trust.Known.Path
	if !cn.acceptNew {
		refuse := fail(exitOther,
			fmt.Sprintf(`check the fingerprint with the server's operator ("authbox fingerprint" on the server), then run again with --fingerprint %s, or with --accept-new to pin it in %s`, ue.Fingerprint, known),
			"%s is not a known server; it presented the key %s", ue.Addr, ue.Fingerprint)
		if cn.term == nil {
			return refuse
		}
		_, done, err := cn.term.tty()
		if err != nil {
			return refuse
		}
		done()
		fmt.Fprintf(cn.stderr, "authbox: the server %s is not known yet\nauthbox: its key fingerprint is %s\n", ue.Addr, ue.Fingerprint)
		answer, err := cn.term.readLine("trust it and remember it? [y/N] ")
		if err != nil {
			return refuse
		}
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return fail(exitOther, "", "not trusted; nothing was sent to %s", ue.Addr)
		}
	}
	if err := cn.trust.Known.Add(ue.Addr, ue.Fingerprint); err != nil {
		var fe *FingerprintError
		if errors.As(err, &fe) {
			return explainTrust(fe, ue.Addr)
		}
		return fail(exitOther, "check that the directory is writable, or set AUTHBOX_KNOWN_SERVERS", "cannot pin the server in %s: %s", known, errText(err))
	}
	fmt.Fprintf(cn.stderr, "authbox: pinned %s as %s in %s\n", ue.Addr, ue.Fingerprint, known)
	return nil
}

// explainTrust turns a TLS or trust failure into what the user reads, or
// returns nil for an error that is none of those.
func explainTrust(err error, addr string) error {
	var fe *FingerprintError
	var ce *CAError
	var ue *UnknownServerError
	switch {
	case errors.As(err, &fe) && fe.File != "":
		return fail(exitOther,
			fmt.Sprintf("if the server's key really changed (ask its operator), delete line %d of %s and connect again", fe.Line, fe.File),
			"THE SERVER'S KEY HAS CHANGED: %s presented %s, but %s line %d pins %s; someone may be intercepting the connection, nothing was sent",
			fe.Addr, fe.Got, fe.File, fe.Line, fe.Want)
	case errors.As(err, &fe):
		return fail(exitOther, `check the fingerprint with the server's operator ("authbox fingerprint" on the server)`,
			"the server's key does not match --fingerprint: %s presented %s, expected %s; nothing was sent", fe.Addr, fe.Got, fe.Want)
	case errors.As(err, &ce):
		return fail(exitOther, "check --ca (or client.ca_file) and that --server names the host the certificate is for",
			"the certificate of %s is not valid under %s: %s", ce.Addr, ce.CAFile, ce.Err)
	case errors.As(err, &ue):
		return fail(exitOther, "give --fingerprint or --accept-new", "%s", ue)
	case errors.Is(err, ErrPlainServer):
		return fail(exitOther, "if the network between you is trusted, add --plain (or set client.tls = false); better, turn tls on at the server",
			"%s speaks plain TCP, not TLS", addr)
	case errors.Is(err, ErrClosedBeforeHandshake):
		return fail(exitOther, "the server is busy (or not an authbox server); try again in a moment", "%s closed the connection before the TLS handshake", addr)
	case errors.Is(err, ErrHandshakeTimeout):
		return fail(exitOther, "the server or the network is slow or stuck, or this is not an authbox server; try again", "no TLS handshake with %s in time", addr)
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return nil
	}
	if strings.HasPrefix(err.Error(), "tls: ") {
		return fail(exitOther, "is this an authbox server speaking TLS 1.3?", "TLS handshake with %s failed: %s", addr, err)
	}
	return nil
}
