package main

// conn.go is one served connection: the line reader under the deadlines,
// one dispatch on the command word, and the writing of replies.

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// conn is one served connection and its protocol state.
type conn struct {
	srv *Server
	// raw is the accepted TCP connection: Shutdown closes it and sets its
	// deadlines from other goroutines. nc is what the protocol runs on:
	// raw itself, or the TLS connection over it once the handshake is done.
	raw     net.Conn
	nc      net.Conn
	r       *bufio.Reader
	overTLS bool
	cb      []byte // its tls-exporter channel binding, over TLS
	remote  string
	src     string // sourceKey of remote: the unit of throttling
	started time.Time
	readBy  time.Time // the read deadline set last (see readLine)
	writeBy time.Time // the write deadline set last

	mu   sync.Mutex // guards idle against Shutdown
	idle bool       // blocked reading a fresh command, nothing under way

	user string // "" until a successful AUTH
	gen  uint64 // the Gen of the record user logged in to
	// checked is the store's write count (timedStore.writes) taken before
	// the read that last confirmed the session; lookedUp is the one taken
	// before the login's own read.
	checked, lookedUp uint64
	pending           exchange  // the exchange a SALT or CHALLENGE began
	scram             scramEx   // where a SCRAM exchange lives while pending, not allocated per login
	fields            []string  // the words of the line being handled, reused from line to line
	words             [4]string // fields' first array: no command has more words
	attempt           *attempt  // the login under way, counted by the throttle: nil or &att
	att               attempt
	fake              [KeyLen]byte // the fake salt of the login under way, see lookup
	lastFail          failure      // the last charged failure, see failLogin
	// authStart is when the login under way sent AUTH (zero without
	// metrics), for the login latency.
	authStart time.Time
	stats     connStats
}

type connStats struct {
	commands, logins, failures, registrations int
	end                                       string
}

// exchange is a two-step command waiting for its continuation.
type exchange interface {
	// next is the only command word that continues it.
	next() string
}

// errQuit and errShutdown end a connection after their reply is written.
var (
	errQuit     = errors.New("quit")
	errShutdown = errors.New("shutdown")
)

// lineReaders are the connections' line readers, kept between
// connections: each holds a MaxLineBytes buffer, which would otherwise be
// allocated for every login.
var lineReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, MaxLineBytes) }}

func (s *Server) serveConn(nc net.Conn, src string) {
	c := &conn{
		srv:     s,
		raw:     nc,
		nc:      nc,
		remote:  nc.RemoteAddr().String(),
		src:     src,
		started: time.Now(),
	}
	c.fields = c.words[:0]
	if !s.track(c) {
		// Over TLS, ERR BUSY goes inside the handshake the client expects.
		if c.handshake(true) == nil {
			// As any rejection is written: within rejectWriteTimeout.
			c.nc.SetWriteDeadline(time.Now().Add(rejectWriteTimeout))
			io.WriteString(c.nc, FormatReply(ReplyErr, CodeBusy, "server is shutting down, retry shortly"))
		}
		nc.Close()
		s.met.refuse(refusedShutdown)
		s.log.Info("rejected", "remote", c.remote, "code", CodeBusy, "reason", "shutting down")
		return
	}
	defer func() {
		c.endAttempt(false)
		s.untrack(c)
		c.nc.Close()
		if c.r != nil {
			c.r.Reset(nil) // holds no connection while pooled
			lineReaders.Put(c.r)
		}
		s.logAttrs(slog.LevelInfo, "connection closed", slog.String("remote", c.remote), slog.String("end", c.stats.end),
			slog.Duration("duration", time.Since(c.started).Round(time.Millisecond)),
			slog.Int("commands", c.stats.commands), slog.Int("logins", c.stats.logins),
			slog.Int("failed_logins", c.stats.failures), slog.Int("registrations", c.stats.registrations))
	}()
	defer func() {
		if r := recover(); r != nil {
			c.stats.end = "panic"
			s.log.Error("panic serving connection", "remote", c.remote, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			c.write(FormatReply(ReplyErr, CodeInternal, "internal server error"))
		}
	}()

	if err := c.handshake(false); err != nil {
		c.stats.end = "tls handshake failed"
		s.met.refuse(refusedHandshake)
		s.log.Info("tls handshake failed", "remote", c.remote, "err", err)
		return
	}
	c.r = lineReaders.Get().(*bufio.Reader)
	c.r.Reset(c.nc)
	if !c.write(s.greeting[boolIndex(c.overTLS)]) {
		c.stats.end = "write failed"
		return
	}
	for {
		line, err := c.readLine()
		if err != nil {
			c.endRead(err)
			return
		}
		c.stats.commands++
		reply, err := c.handleLine(line)
		if !c.reply(reply, err) {
			if c.stats.end == "" {
				c.stats.end = "write failed"
			}
			return
		}
	}
}

// offers reports whether this connection's greeting offered mech.
func (c *conn) offers(mech string) bool {
	return slices.Contains(c.srv.offered[boolIndex(c.overTLS)], mech)
}

// handshake runs the server's TLS handshake, if the server speaks TLS,
// within the line deadline (spec §9.1), in the worker: the accept loop must
// never wait on a client. It then reads the channel binding once. Either
// way it sets the greeting's deadline, which is the first line's too.
//
// busy is the handshake that only carries the ERR BUSY of a server
// shutting down: it has rejectWriteTimeout, Shutdown does not track it,
// and it must not be cut for the shutdown it is there to announce.
func (c *conn) handshake(busy bool) error {
	if busy {
		c.setDeadline(time.Now().Add(rejectWriteTimeout))
	} else {
		c.setDeadline(c.lineDeadline())
	}
	conf := c.srv.tlsConf
	if conf == nil {
		return nil
	}
	tc := tls.Server(c.raw, conf)
	if busy {
		c.nc = tc
		return tc.Handshake()
	}
	// Nothing is under way during a handshake: Shutdown may cut it as it
	// cuts a connection waiting for its next command.
	c.mu.Lock()
	c.idle = true
	shutting := c.srv.shutting.Load()
	c.mu.Unlock()
	if shutting {
		c.raw.SetReadDeadline(time.Now())
	}
	err := tc.Handshake()
	c.mu.Lock()
	c.idle = false
	c.mu.Unlock()
	if err != nil {
		return err
	}
	st := tc.ConnectionState()
	cb, err := exporterBinding(&st)
	if err != nil {
		return err
	}
	c.nc, c.overTLS, c.cb = tc, true, cb
	return nil
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// lineDeadline is when the next line (or the handshake) must be complete:
// a line timeout and a sixteenth from now (see readLine), and never past
// the session's end.
func (c *conn) lineDeadline() time.Time {
	lt := c.srv.cfg.LineTimeout.Duration
	return earlier(time.Now().Add(lt+lt/lineSlack), c.started.Add(c.srv.cfg.SessionTimeout.Duration))
}

// lineSlack is the part of a line timeout by which a line's deadline may
// be later than a line timeout from the moment the server starts waiting
// for it. A deadline is set when less than a line timeout of the last one
// is left, so lines that follow each other closely share one: each new
// deadline is a timer update in the runtime, a tenth of a microsecond or
// more, and a login reads three lines. A sixteenth of the default 10s is
// 625ms.
const lineSlack = 16

// readLine reads one line within the line and session deadlines.
func (c *conn) readLine() ([]byte, error) {
	c.mu.Lock()
	if c.pending == nil && c.srv.shutting.Load() {
		c.mu.Unlock()
		return nil, errShutdown
	}
	c.idle = c.pending == nil
	// Every line has at least a line timeout: the deadline of an earlier
	// line serves while that much of it is left (time.Until reads one
	// clock, time.Now two). A new one is set in one call for the line's
	// read and its reply's write (see write): each costs a timer update.
	if time.Until(c.readBy) < c.srv.cfg.LineTimeout.Duration {
		if d := c.lineDeadline(); !d.Equal(c.readBy) { // equal: the session's end
			c.setDeadline(d)
		}
	}
	c.mu.Unlock()

	line, err := ReadLine(c.r)

	c.mu.Lock()
	c.idle = false
	c.mu.Unlock()
	if err != nil && c.srv.shutting.Load() && c.pending == nil {
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return nil, errShutdown
		}
	}
	return line, err
}

// setDeadline sets the read and write deadlines of the connection (of
// the TCP connection under TLS, as tls.Conn's own do) and remembers them.
func (c *conn) setDeadline(d time.Time) {
	c.raw.SetDeadline(d)
	c.readBy, c.writeBy = d, d
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (c *conn) interruptIfIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idle {
		c.raw.SetReadDeadline(time.Now())
		// The read it cuts may have got its line first (and be an AUTH,
		// whose RESPONSE is then read): that next line needs a deadline
		// of its own, not the past one set here.
		c.readBy = time.Time{}
	}
}

// endRead writes the last word, if any, for a read that failed.
func (c *conn) endRead(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, ErrLineTooLong):
		c.stats.end = "line too long"
		c.write(ErrLineTooLong.Line())
		c.drainAndClose()
	case errors.Is(err, errShutdown):
		c.stats.end = "shutdown"
		c.write(FormatReply(ReplyErr, CodeBusy, "server is shutting down, retry shortly"))
		// The client may be sending its next command right now.
		c.drainAndClose()
	case errors.As(err, &ne) && ne.Timeout():
		c.stats.end = "timeout"
		text := "no complete line within " + c.srv.cfg.LineTimeout.String()
		if !time.Now().Before(c.started.Add(c.srv.cfg.SessionTimeout.Duration)) {
			text = "connection time limit of " + c.srv.cfg.SessionTimeout.String() + " reached"
		}
		c.write(FormatReply(ReplyErr, CodeTimeout, text))
	case errors.Is(err, io.EOF):
		c.stats.end = "client closed"
	default:
		c.stats.end = "read error"
	}
}

// drainAndClose half-closes and discards what the client is still sending,
// so the kernel does not answer it with a reset that destroys our last line.
func (c *conn) drainAndClose() {
	if tc, ok := c.nc.(*tls.Conn); ok {
		tc.CloseWrite() // close_notify; it leaves the TCP side open
	}
	if tc, ok := c.raw.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	c.raw.SetReadDeadline(time.Now().Add(drainTimeout))
	io.CopyN(io.Discard, c.raw, drainLimit)
}

// write sends one line within a write deadline of at least half a line
// timeout and at most 17/16 of one; false if it failed. The deadline set
// last (with the read of the command it answers, or by an earlier reply)
// serves when enough of it is left, as it is unless the command was slow.
func (c *conn) write(line string) bool {
	lt := c.srv.cfg.LineTimeout.Duration
	// time.Until reads only the monotonic clock; time.Now reads both.
	if time.Until(c.writeBy) < lt/2 {
		c.writeBy = time.Now().Add(lt)
		c.nc.SetWriteDeadline(c.writeBy)
	}
	// Neither a TCP nor a TLS connection writes strings: io.WriteString
	// would copy each line to a new slice.
	buf := getLineBuf()
	*buf = append((*buf)[:0], line...)
	_, err := c.nc.Write(*buf)
	putLineBuf(buf)
	return err == nil
}

// lineBufs are scratch buffers for a line on its way out or a value being
// decoded, handed from connection to connection.
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func getLineBuf() *[]byte { return lineBufs.Get().(*[]byte) }

func putLineBuf(b *[]byte) {
	if cap(*b) <= 2*MaxLineBytes { // a long admin reply's buffer goes
		lineBufs.Put(b)
	}
}

// reply writes a handler's outcome: its reply line, its protocol error, or
// for any other error a generic ERR INTERNAL with the detail in the log
// only. It reports whether the connection stays open.
func (c *conn) reply(line string, err error) bool {
	if err == nil {
		return c.write(line)
	}
	if pe, ok := errors.AsType[*ProtoError](err); ok {
		return c.write(pe.Line())
	}
	switch {
	case errors.Is(err, errQuit):
		c.stats.end = "quit"
		c.write(line)
		return false
	case errors.Is(err, errStoreUnavailable):
		c.stats.end = "store unreachable"
		c.srv.health.commandFailed(c.srv.log, c.remote, err)
		c.write(FormatReply(ReplyErr, CodeBusy, "the account store is unreachable; retry shortly, or another server"))
		return false
	default:
		c.srv.log.Error("internal error", "remote", c.remote, "err", err)
		c.write(FormatReply(ReplyErr, CodeInternal, "internal server error; nothing was changed"))
		return true
	}
}

// handleLine parses a line and runs its command. The order of checks is
// the spec's: state, then mechanism, then arguments. It is long because it
// is one flat switch on the command word, each case its state guard and
// its handler, so that a new command cannot fall into another's case.
func (c *conn) handleLine(raw []byte) (string, error) {
	// cmd.Args lives in c.fields until the next line: nothing keeps it.
	cmd, err := ParseLineInto(&c.fields, TrimEOL(raw))
	if err != nil {
		c.pending = nil
		c.endAttempt(false)
		return "", err
	}
	// An exchange continues only with its own continuation; anything else
	// abandons it, counting no failure, and is handled as a fresh command.
	if p := c.pending; p != nil {
		c.pending = nil
		if cmd.Verb == p.next() {
			reply, err := c.finish(p, cmd)
			// Every way out of an exchange ends its login attempt; a wrong
			// proof has already ended it as a failure.
			c.endAttempt(false)
			return reply, err
		}
		c.endAttempt(false)
	}
	switch cmd.Verb {
	case CmdPing:
		return noArgs(cmd, FormatReply(ReplyOK, "PONG"))
	case CmdQuit:
		if err := CheckArgs(cmd, 0, 0); err != nil {
			return "", err
		}
		return FormatReply(ReplyOK, "BYE"), errQuit
	case CmdRegister:
		if err := c.needAnonymous(cmd); err != nil {
			return "", err
		}
		return c.handleRegister(cmd)
	case CmdAuth:
		if err := c.needAnonymous(cmd); err != nil {
			return "", err
		}
		return c.handleAuth(cmd)
	case CmdWhoami:
		if err := c.needLogin(cmd); err != nil {
			return "", err
		}
		return noArgs(cmd, FormatReply(ReplyOK, c.user))
	case CmdPasswd:
		if err := c.needLogin(cmd); err != nil {
			c.passwdError(err)
			return "", err
		}
		reply, err := c.handlePasswd(cmd)
		c.passwdError(err)
		return reply, err
	case CmdDelete:
		if err := c.needLogin(cmd); err != nil {
			return "", err
		}
		return c.handleDelete(cmd)
	case CmdLogout:
		if err := c.needLogin(cmd); err != nil {
			return "", err
		}
		if err := CheckArgs(cmd, 0, 0); err != nil {
			return "", err
		}
		c.user = ""
		return FormatReply(ReplyOK), nil
	case CmdVerifier:
		return "", protoErr(CodeBadCmd, "VERIFIER only answers a SALT")
	case CmdResponse:
		return "", protoErr(CodeBadCmd, "RESPONSE only answers a CHALLENGE")
	default:
		return "", protoErr(CodeBadCmd, "unknown command")
	}
}

// finish runs the continuation of an exchange.
func (c *conn) finish(p exchange, cmd Command) (string, error) {
	switch p := p.(type) {
	case *registerEx:
		reply, err := c.finishRegister(p, cmd)
		c.registerError(err)
		return reply, err
	case *passwdEx:
		reply, err := c.finishPasswd(p, cmd)
		c.passwdError(err)
		return reply, err
	case *scramEx:
		mech := p.mech // p is the conn's own exchange, cleared as it ends
		reply, err := c.finishSCRAM(p, cmd)
		c.loginError(mech, err)
		return reply, err
	case *seedEx:
		reply, err := c.finishSeed(p, cmd)
		c.loginError(MechSeed, err)
		return reply, err
	}
	return "", fmt.Errorf("unknown exchange %T", p)
}

func noArgs(cmd Command, reply string) (string, error) {
	if err := CheckArgs(cmd, 0, 0); err != nil {
		return "", err
	}
	return reply, nil
}
