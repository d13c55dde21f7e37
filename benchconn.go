package main

// benchconn.go is the load generator's side of the protocol: one
// connection with reused buffers, the SCRAM login with keys derived once per
// salt, and registration.

import (
	"bufio"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
)

// benchKeys are the SCRAM keys of one (password, salt, iterations).
type benchKeys struct {
	clientKey, storedKey, serverKey []byte
}

// keyCache derives keys once per (salt, iterations): the name plays no part
// in SaltedPassword, so accounts that share a salt share their keys. A run
// has one password.
type keyCache struct {
	mu sync.Mutex
	m  map[string]*keyEntry
}

type keyEntry struct {
	once sync.Once
	keys *benchKeys
	err  error
}

func (kc *keyCache) get(password string, salt []byte, iterations int) (*benchKeys, error) {
	k := string(salt) + "\x00" + strconv.Itoa(iterations)
	kc.mu.Lock()
	e := kc.m[k]
	if e == nil {
		e = &keyEntry{}
		kc.m[k] = e
	}
	kc.mu.Unlock()
	e.once.Do(func() { e.keys, e.err = deriveBenchKeys(password, salt, iterations) })
	return e.keys, e.err
}

func deriveBenchKeys(password string, salt []byte, iterations int) (*benchKeys, error) {
	// The bench passwords are ASCII without controls: SASLprep leaves them
	// as they are.
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return nil, err
	}
	ck := hmacSHA256(salted, []byte("Client Key"))
	stored := sha256.Sum256(ck)
	return &benchKeys{clientKey: ck, storedKey: stored[:], serverKey: hmacSHA256(salted, []byte("Server Key"))}, nil
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

// benchConn is one protocol connection of a bench client, with buffers it
// reuses from operation to operation. It wraps any net.Conn: the tests hand
// it an in-memory one.
type benchConn struct {
	nc  net.Conn
	r   *bufio.Reader
	buf []byte
	// cb is the tls-exporter channel binding over TLS; plus is whether
	// the greeting offered SCRAM-SHA-256-PLUS, which a login then uses.
	cb   []byte
	plus bool
}

func newBenchConn(nc net.Conn) *benchConn {
	c := &benchConn{nc: nc, r: bufio.NewReaderSize(nc, MaxLineBytes), buf: make([]byte, 0, benchLineBuf)}
	if tc, ok := nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		c.cb, _ = exporterBinding(&st)
	}
	return c
}

// binding is what a login on c says about channel binding, as our client
// does (spec §9.3): bound to the TLS connection when the server offers
// PLUS, "y" over TLS when it does not, "n" over plain TCP. cbind is the
// base64 that client-final's c= carries.
func (c *benchConn) binding() (mech, gs2, cbind string) {
	switch {
	case c.plus:
		gs2 = "p=" + cbTLSExporter + ",,"
		return MechPlus, gs2, EncodeB64(append([]byte(gs2), c.cb...))
	case c.cb != nil:
		return MechSCRAM, "y,,", "eSws"
	}
	return MechSCRAM, "n,,", "biws"
}

// dialConn is the one place the load generator opens a connection to the
// server, from the worker's loopback source if it has one.
func (b *bench) dialConn(worker int) (net.Conn, error) {
	d := net.Dialer{Timeout: b.o.timeout}
	if len(b.sources) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: b.sources[worker%len(b.sources)]}
	}
	nc, err := d.Dial("tcp", b.o.server)
	if err != nil || b.o.tls == nil {
		return nc, err
	}
	tc := tls.Client(nc, b.o.tls)
	tc.SetDeadline(time.Now().Add(b.o.timeout))
	if err := tc.Handshake(); err != nil {
		nc.Close()
		return nil, handshakeError(err)
	}
	return tc, nil
}

// dial connects and reads the greeting.
func (b *bench) dial(worker int) (*benchConn, error) {
	nc, err := b.dialConn(worker)
	if err != nil {
		return nil, err
	}
	c := newBenchConn(nc)
	line, err := c.read(b.o.timeout)
	if err == nil {
		mechs, gerr := ParseGreeting(line)
		if gerr != nil {
			err = fmt.Errorf("%w: %.40q: %v", ErrBenchReply, line, gerr)
		}
		c.plus = c.cb != nil && slices.Contains(mechs, MechPlus)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// read returns the next line without its end of line, within timeout. An
// ERR line is returned as a *ProtoError.
func (c *benchConn) read(timeout time.Duration) (string, error) {
	c.nc.SetReadDeadline(time.Now().Add(timeout))
	line, err := ReadLine(c.r)
	if errors.Is(err, ErrLineTooLong) {
		// Not the server's TOOLONG: the report must not blame the client.
		return "", fmt.Errorf("%w: line over %d bytes", ErrBenchReply, MaxLineBytes)
	}
	if err != nil {
		return "", err
	}
	s := string(TrimEOL(line))
	if strings.HasPrefix(s, ReplyErr+" ") {
		_, err := ParseReply(s)
		return "", err
	}
	return s, nil
}

// do writes c.buf as one line and returns the reply.
func (c *benchConn) do(timeout time.Duration) (string, error) {
	c.nc.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.nc.Write(c.buf); err != nil {
		return "", err
	}
	return c.read(timeout)
}

func (c *benchConn) close() { c.nc.Close() }

// login runs one SCRAM-SHA-256 login on an anonymous connection.
func (b *bench) login(c *benchConn, name string) error {
	var raw [benchNonceLen]byte
	rand.Read(raw[:])
	nonce := EncodeB64(raw[:])
	clientFirstBare := "n=" + EncodeSaslName(name) + ",r=" + nonce
	mech, gs2, cbind := c.binding()
	c.buf = append(c.buf[:0], CmdAuth+" "+mech+" "...)
	c.buf = AppendB64(c.buf, []byte(gs2+clientFirstBare))
	c.buf = append(c.buf, '\n')
	line, err := c.do(b.o.timeout)
	if err != nil {
		return err
	}
	arg, ok := strings.CutPrefix(line, ReplyChallenge+" ")
	if !ok {
		return fmt.Errorf("%w to AUTH: %.40q", ErrBenchReply, line)
	}
	sfb, err := DecodeB64(arg)
	if err != nil {
		return fmt.Errorf("%w: CHALLENGE is not base64", ErrBenchReply)
	}
	serverFirst := string(sfb)
	sf, err := ParseServerFirst(serverFirst)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBenchReply, err)
	}
	// The bare server replays one fixed challenge, so only a real server's
	// nonce can be checked.
	if !b.o.bare && (!strings.HasPrefix(sf.Nonce, nonce) || len(sf.Nonce) == len(nonce)) {
		return fmt.Errorf("%w: server nonce does not extend ours", ErrBenchReply)
	}
	if err := b.checkIterations(sf.Iterations); err != nil {
		return err
	}
	keys, err := b.keys.get(b.o.password, sf.Salt, sf.Iterations)
	if err != nil {
		return err
	}
	withoutProof := "c=" + cbind + ",r=" + sf.Nonce
	authMessage := []byte(clientFirstBare + "," + serverFirst + "," + withoutProof)
	proof := hmacSHA256(keys.storedKey, authMessage)
	subtle.XORBytes(proof, proof, keys.clientKey)
	c.buf = append(c.buf[:0], CmdResponse+" "...)
	c.buf = AppendB64(c.buf, []byte(withoutProof+",p="+EncodeB64(proof)))
	c.buf = append(c.buf, '\n')
	line, err = c.do(b.o.timeout)
	if err != nil {
		return err
	}
	arg, ok = strings.CutPrefix(line, ReplyOK+" ")
	if !ok {
		return fmt.Errorf("%w to RESPONSE: %.40q", ErrBenchReply, line)
	}
	// The signature is computed in both cases, so that the client does the
	// same work against the bare server as against authbox.
	want := "v=" + EncodeB64(hmacSHA256(keys.serverKey, authMessage))
	got, err := DecodeB64(arg)
	if !b.o.bare && (err != nil || !hmac.Equal(got, []byte(want))) {
		return ErrBenchSignature
	}
	return nil
}

// checkIterations refuses the iteration counts "authbox login" refuses
// and notes the count for the report.
func (b *bench) checkIterations(n int) error {
	if n < MinIterations || n > b.o.maxIter {
		return fmt.Errorf("%w: %d iterations", ErrBenchReply, n)
	}
	b.iters.Store(int64(n))
	return nil
}

// simple sends a command without arguments and expects a bare OK.
func (b *bench) simple(c *benchConn, cmd string) error {
	c.buf = append(append(c.buf[:0], cmd...), '\n')
	line, err := c.do(b.o.timeout)
	if err != nil {
		return err
	}
	if line != ReplyOK {
		return fmt.Errorf("%w to %s: %.40q", ErrBenchReply, cmd, line)
	}
	return nil
}

// quit sends QUIT and reads the server's goodbye.
func (b *bench) quit(c *benchConn) error {
	c.buf = append(append(c.buf[:0], CmdQuit...), '\n')
	line, err := c.do(b.o.timeout)
	if err != nil {
		return err
	}
	if line != ReplyOK+" BYE" {
		return fmt.Errorf("%w to QUIT: %.40q", ErrBenchReply, line)
	}
	return nil
}

// register runs REGISTER and VERIFIER. With keys nil it derives a real
// verifier from the server's salt, so that the account can log in.
func (b *bench) register(c *benchConn, name string, keys *benchKeys) error {
	c.buf = append(append(c.buf[:0], CmdRegister+" "+name...), '\n')
	line, err := c.do(b.o.timeout)
	if err != nil {
		return err
	}
	r, err := ParseReply(line)
	if err != nil || r.Word != ReplySalt || len(r.Args) != 2 {
		return fmt.Errorf("%w to REGISTER: %.40q", ErrBenchReply, line)
	}
	salt, err := DecodeB64(r.Args[0])
	if err != nil {
		return fmt.Errorf("%w: malformed salt", ErrBenchReply)
	}
	iters, err := ParseIterations(r.Args[1])
	if err != nil {
		return fmt.Errorf("%w: iteration count %q", ErrBenchReply, r.Args[1])
	}
	if err := b.checkIterations(iters); err != nil {
		return err
	}
	if keys == nil {
		if keys, err = b.keys.get(b.o.password, salt, iters); err != nil {
			return err
		}
	}
	c.buf = append(c.buf[:0], CmdVerifier+" "...)
	c.buf = AppendB64(c.buf, keys.storedKey)
	c.buf = append(c.buf, ' ')
	c.buf = AppendB64(c.buf, keys.serverKey)
	c.buf = append(c.buf, '\n')
	line, err = c.do(b.o.timeout)
	if err != nil {
		return err
	}
	if line != ReplyOK {
		return fmt.Errorf("%w to VERIFIER: %.40q", ErrBenchReply, line)
	}
	return nil
}

// benchTLS settles, once before the run, how the load generator trusts
// the server: the client commands' flags and settings, never a question
// (--accept-new pins a first contact). nil means plain TCP.
func benchTLS(ctx *cli.Context, cfg ClientConfig, server string) (*tls.Config, error) {
	cn, err := newConnector(ctx, cfg, nil)
	if err != nil || cn.plain {
		return nil, err
	}
	c, err := cn.dial(server)
	if err != nil {
		if te := explainTrust(err, server); te != nil {
			return nil, te
		}
		return nil, fail(exitOther, `is "authbox serve" running there?`, "cannot reach %s: %s", server, errText(err))
	}
	c.Close()
	conf := cn.trust.TLSConfig(server)
	if ctx.Bool("resume") {
		conf.ClientSessionCache = tls.NewLRUClientSessionCache(ctx.Int("conc") + 1)
	}
	return conf, nil
}
