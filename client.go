package main

// client.go is the client side of protocol v1, used by the CLI commands and
// by the tests. Passwords stay in this process: only SCRAM proofs and
// verifiers are sent.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xdg-go/scram"
)

const (
	// clientDialTimeout bounds connecting and the wait for the greeting; a
	// server whose queue is full answers BUSY at once, so a longer wait
	// means something is wrong on the path.
	clientDialTimeout = 10 * time.Second
	// clientReplyTimeout bounds the wait for each reply. The server does
	// only cheap work per command, so this is generous.
	clientReplyTimeout = 30 * time.Second
)

var (
	// ErrServerSignature is returned when the server's SCRAM signature is
	// wrong: it does not hold this account's verifier, so it may be an
	// impostor, and nothing it said can be trusted.
	ErrServerSignature = errors.New("the server's SCRAM signature is wrong: it does not know this account's verifier (possible impostor)")
	// ErrTooFewIterations is returned for a server asking for fewer than
	// MinIterations PBKDF2 iterations: that would weaken the verifier.
	ErrTooFewIterations = errors.New("server asks for too few PBKDF2 iterations")
	// ErrTooManyIterations is returned for a server asking for more than
	// the client's cap: a hostile server must not burn the client's CPU.
	ErrTooManyIterations = errors.New("server asks for more PBKDF2 iterations than this client allows")
	// ErrNoSCRAM is returned when the server does not offer SCRAM-SHA-256.
	ErrNoSCRAM = errors.New("server does not offer SCRAM-SHA-256")
	// ErrPlainServer is returned when a TLS client meets a server that
	// speaks plain TCP: its greeting came where a TLS record was due.
	ErrPlainServer = errors.New("the server speaks plain TCP, not TLS")
	// ErrClosedBeforeHandshake is returned when the server closed the
	// connection before the TLS handshake: over TLS that is how a server
	// whose queue is full says busy (spec §9.1).
	ErrClosedBeforeHandshake = errors.New("the server closed the connection before the TLS handshake (it is busy)")
	// ErrHandshakeTimeout is returned when the TLS handshake did not end
	// within clientDialTimeout.
	ErrHandshakeTimeout = errors.New("no TLS handshake in time")
	// ErrConnClosed is returned when the server closed the connection
	// where a line was due.
	ErrConnClosed = errors.New("server closed the connection")
)

// defaultMaxIterations is client.max_iterations of the embedded config,
// decoded once: Dial runs per login in a load generator.
var defaultMaxIterations = sync.OnceValue(func() int { return DefaultConfig().Client.MaxIterations })

// Client is one connection to an authbox server.
type Client struct {
	nc    net.Conn
	r     *bufio.Reader
	Mechs []string
	// cb is the connection's tls-exporter channel binding; nil over
	// plain TCP.
	cb []byte
	// MaxIterations caps the PBKDF2 work a server may ask of this client.
	MaxIterations int
}

// Dial connects over plain TCP and reads the greeting. A BUSY server
// yields a *ProtoError with code BUSY.
func Dial(addr string) (*Client, error) {
	return dialWith(&net.Dialer{Timeout: clientDialTimeout}, addr, nil)
}

// DialTLS connects, runs the TLS 1.3 handshake under conf (whose
// VerifyConnection decides whether the server is trusted: see Trust), and
// reads the greeting inside TLS.
func DialTLS(addr string, conf *tls.Config) (*Client, error) {
	return dialWith(&net.Dialer{Timeout: clientDialTimeout}, addr, conf)
}

func dialWith(d *net.Dialer, addr string, conf *tls.Config) (*Client, error) {
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc, MaxIterations: defaultMaxIterations()}
	nc.SetDeadline(time.Now().Add(clientDialTimeout))
	if conf != nil {
		tc := tls.Client(nc, conf)
		if err := tc.Handshake(); err != nil {
			nc.Close()
			return nil, handshakeError(err)
		}
		st := tc.ConnectionState()
		if c.cb, err = exporterBinding(&st); err != nil {
			nc.Close()
			return nil, err
		}
		c.nc = tc
	}
	c.r = bufio.NewReaderSize(c.nc, MaxLineBytes)
	line, err := c.readLine()
	if err != nil {
		nc.Close()
		return nil, err
	}
	if strings.HasPrefix(line, ReplyErr+" ") {
		nc.Close()
		_, err := ParseReply(line)
		return nil, err
	}
	c.Mechs, err = ParseGreeting(line)
	if err != nil {
		// The caller names the server: the address here would say it twice.
		nc.Close()
		return nil, err
	}
	return c, nil
}

// handshakeError names the usual reasons a TLS handshake fails, so that a
// person can act on them; trust decisions (see Trust) pass through as
// they are.
func handshakeError(err error) error {
	var rh tls.RecordHeaderError
	var ne net.Error
	switch {
	case errors.As(err, &rh) && bytes.HasPrefix(rh.RecordHeader[:], []byte(ReplyGreeting[:5])):
		return ErrPlainServer
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return ErrClosedBeforeHandshake
	case errors.As(err, &ne) && ne.Timeout():
		return ErrHandshakeTimeout
	}
	return err
}

// OverTLS reports whether the connection runs inside TLS.
func (c *Client) OverTLS() bool { return c.cb != nil }

// Close sends QUIT and closes the connection.
func (c *Client) Close() error {
	c.nc.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c.nc, CmdQuit+"\n"); err == nil {
		c.readLine()
	}
	return c.nc.Close()
}

func (c *Client) readLine() (string, error) {
	line, err := ReadLine(c.r)
	if errors.Is(err, ErrLineTooLong) {
		return "", errors.New("server sent a line longer than 4096 bytes")
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			return "", ErrConnClosed
		}
		return "", err
	}
	return string(TrimEOL(line)), nil
}

// Do sends one command and reads its reply. An ERR reply is returned as a
// *ProtoError.
func (c *Client) Do(words ...string) (Reply, error) {
	line := strings.Join(words, " ") + "\n"
	if len(line) > MaxLineBytes {
		return Reply{}, errors.New("command longer than 4096 bytes")
	}
	c.nc.SetDeadline(time.Now().Add(clientReplyTimeout))
	if _, err := io.WriteString(c.nc, line); err != nil {
		return Reply{}, err
	}
	resp, err := c.readLine()
	if err != nil {
		return Reply{}, err
	}
	return ParseReply(resp)
}

// expect checks a reply's word and argument count.
func expect(r Reply, word string, nargs int) error {
	if r.Word != word || len(r.Args) != nargs {
		return fmt.Errorf("unexpected reply from server: %s (wanted %s)", r.Word, word)
	}
	return nil
}

func (c *Client) checkIterations(n int) error {
	if n < MinIterations {
		return fmt.Errorf("%w: %d, the minimum is %d", ErrTooFewIterations, n, MinIterations)
	}
	if n > c.MaxIterations {
		return fmt.Errorf("%w: %d, the cap is %d (client.max_iterations)", ErrTooManyIterations, n, c.MaxIterations)
	}
	return nil
}

// scramClient prepares a SCRAM client. The name is PRECIS-normalized (the
// server's rule); only the password is prepared, with SASLprep as RFC 5802
// asks, and as PostgreSQL does when SASLprep refuses it (preparePassword).
func scramClient(name, password string) (*scram.Client, error) {
	return scram.SHA256.NewClientUnprepped(name, preparePassword(password), "")
}

// Verifier computes StoredKey and ServerKey for a password, salt and
// iteration count (RFC 5802 §3).
func Verifier(name, password string, salt []byte, iterations int) (stored, server []byte, err error) {
	sc, err := scramClient(name, password)
	if err != nil {
		return nil, nil, err
	}
	creds, err := sc.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: iterations})
	if err != nil {
		return nil, nil, err
	}
	return creds.StoredKey, creds.ServerKey, nil
}

// sendVerifier answers a SALT reply with a fresh verifier.
func (c *Client) sendVerifier(r Reply, name, password string) error {
	if err := expect(r, ReplySalt, 2); err != nil {
		return err
	}
	salt, err := DecodeB64(r.Args[0])
	if err != nil || len(salt) < SaltLen {
		return errors.New("server sent a malformed or short salt")
	}
	it, err := ParseIterations(r.Args[1])
	if err != nil {
		return errors.New("server sent a malformed iteration count")
	}
	if err := c.checkIterations(it); err != nil {
		return err
	}
	stored, server, err := Verifier(name, password, salt, it)
	if err != nil {
		return err
	}
	r, err = c.Do(CmdVerifier, EncodeB64(stored), EncodeB64(server))
	if err != nil {
		return err
	}
	return expect(r, ReplyOK, 0)
}

// Register creates an account; the password never leaves this process.
func (c *Client) Register(name, password string) error {
	name, err := NormalizeUsername(name)
	if err != nil {
		return err
	}
	r, err := c.Do(CmdRegister, name)
	if err != nil {
		return err
	}
	return c.sendVerifier(r, name, password)
}

// Login runs SCRAM-SHA-256 and checks the server's signature. Over TLS it
// binds the login to the connection (SCRAM-SHA-256-PLUS) whenever the
// server offers it, and otherwise says it could have (GS2 "y"), so that a
// server that did offer it sees the downgrade (spec §9.3).
func (c *Client) Login(name, password string) error {
	mech := MechSCRAM
	if c.cb != nil && slices.Contains(c.Mechs, MechPlus) {
		mech = MechPlus
	} else if !slices.Contains(c.Mechs, MechSCRAM) {
		return ErrNoSCRAM
	}
	name, err := NormalizeUsername(name)
	if err != nil {
		return err
	}
	sc, err := scramClient(name, password)
	if err != nil {
		return err
	}
	conv := c.conversation(sc.WithMinIterations(MinIterations), mech)
	first, err := conv.Step("")
	if err != nil {
		return err
	}
	r, err := c.Do(CmdAuth, mech, EncodeB64([]byte(first)))
	if err != nil {
		return err
	}
	if err := expect(r, ReplyChallenge, 1); err != nil {
		return err
	}
	serverFirst, err := DecodeB64(r.Args[0])
	if err != nil {
		return errors.New("server sent a CHALLENGE that is not base64")
	}
	sf, err := ParseServerFirst(string(serverFirst))
	if err != nil {
		return err
	}
	if err := c.checkIterations(sf.Iterations); err != nil {
		return err
	}
	final, err := conv.Step(string(serverFirst))
	if err != nil {
		return fmt.Errorf("server's SCRAM challenge rejected: %w", err)
	}
	r, err = c.Do(CmdResponse, EncodeB64([]byte(final)))
	if err != nil {
		return err
	}
	if err := expect(r, ReplyOK, 1); err != nil {
		return err
	}
	serverFinal, err := DecodeB64(r.Args[0])
	if err != nil {
		return ErrServerSignature
	}
	if _, err := conv.Step(string(serverFinal)); err != nil || !conv.Valid() {
		return ErrServerSignature
	}
	return nil
}

// conversation starts the SCRAM exchange the connection calls for: bound
// to TLS under PLUS, "y" (could bind, saw no PLUS) over TLS otherwise, "n"
// over plain TCP.
func (c *Client) conversation(sc *scram.Client, mech string) *scram.ClientConversation {
	switch {
	case mech == MechPlus:
		return sc.NewConversationWithChannelBinding(scram.ChannelBinding{Type: scram.ChannelBindingTLSExporter, Data: c.cb})
	case c.cb != nil:
		return sc.NewConversationAdvertisingChannelBinding()
	}
	return sc.NewConversation()
}

// LoginSeed runs the legacy SEED-SHA256 exchange.
func (c *Client) LoginSeed(name, password string) error {
	if !slices.Contains(c.Mechs, MechSeed) {
		return errors.New("server does not offer SEED-SHA256")
	}
	name, err := NormalizeUsername(name)
	if err != nil {
		return err
	}
	r, err := c.Do(CmdAuth, MechSeed, name)
	if err != nil {
		return err
	}
	if err := expect(r, ReplyChallenge, 2); err != nil {
		return err
	}
	resp := SeedResponse(r.Args[1], SeedStored(r.Args[0], password))
	r, err = c.Do(CmdResponse, resp)
	if err != nil {
		return err
	}
	return expect(r, ReplyOK, 0)
}

// LoginAny logs in with SCRAM-SHA-256 and, when that fails with ERR AUTH
// on a server that offers SEED-SHA256, tries the legacy scheme with the
// same password on the same connection: an account imported from the
// original system has only a legacy record, and its user cannot be
// expected to know. legacy reports that the legacy scheme let the user in;
// the caller then upgrades the account with Passwd. Unlike SCRAM, the
// legacy scheme does not prove the server knows the account.
func (c *Client) LoginAny(name, password string) (legacy bool, err error) {
	err = c.Login(name, password)
	var pe *ProtoError
	if !errors.As(err, &pe) || pe.Code != CodeAuth || !slices.Contains(c.Mechs, MechSeed) {
		return false, err
	}
	switch serr := c.LoginSeed(name, password); {
	case serr == nil:
		return true, nil
	case errors.As(serr, &pe) && pe.Code == CodeAuth:
		return false, err
	default:
		return false, serr
	}
}

// Passwd replaces the logged-in account's verifier.
func (c *Client) Passwd(name, newPassword string) error {
	r, err := c.Do(CmdPasswd)
	if err != nil {
		return err
	}
	return c.sendVerifier(r, name, newPassword)
}

// Whoami returns the logged-in name.
func (c *Client) Whoami() (string, error) {
	r, err := c.Do(CmdWhoami)
	if err != nil {
		return "", err
	}
	if err := expect(r, ReplyOK, 1); err != nil {
		return "", err
	}
	return r.Args[0], nil
}

// Delete removes the logged-in account.
func (c *Client) Delete() error {
	r, err := c.Do(CmdDelete)
	if err != nil {
		return err
	}
	return expect(r, ReplyOK, 0)
}
