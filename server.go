package main

// server.go owns the server's lifecycle and concurrency: one accept loop
// feeding a bounded queue, a fixed pool of workers each serving one
// connection at a time, per-line deadlines, and a clean Shutdown.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xdg-go/scram"
)

const (
	// rejectWriteTimeout bounds the one-line answer to a connection the
	// server will not serve (BUSY): the accept loop writes it inline, so it
	// must never wait on a peer that does not read.
	rejectWriteTimeout = 500 * time.Millisecond
	// drainTimeout is how long a connection cut for an over-long line is
	// read and discarded after the ERR line, so that closing it does not
	// reset the connection before the client has read why.
	drainTimeout = time.Second
	// drainLimit bounds what is discarded in that time.
	drainLimit = 64 << 10
	// acceptBackoffMax caps the pause after a failing Accept (for example
	// out of file descriptors), as net/http does.
	acceptBackoffMax = time.Second
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("authbox: server closed")

// Server is an authbox server. Make one with NewServer, run it with Serve,
// stop it with Shutdown.
type Server struct {
	cfg   Config
	store *Store
	log   *slog.Logger
	thr   *throttle

	queue    chan *queued
	shutting atomic.Bool
	wg       sync.WaitGroup

	mu    sync.Mutex
	ln    net.Listener
	conns map[*conn]struct{}
}

// NewServer makes a server for an open store. It does not listen yet.
func NewServer(cfg Config, store *Store, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Server{
		cfg:   cfg,
		store: store,
		log:   log,
		thr:   newThrottle(cfg),
		queue: make(chan *queued, cfg.Queue),
		conns: make(map[*conn]struct{}),
	}
}

// Serve accepts connections on ln until Shutdown. It returns
// ErrServerClosed after Shutdown, or the listener's error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutting.Load() || s.ln != nil {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.ln = ln
	s.wg.Add(1 + s.cfg.Workers)
	s.mu.Unlock()

	for range s.cfg.Workers {
		go s.worker()
	}
	if s.cfg.HasMech(MechSeed) {
		s.log.Warn("legacy mechanism SEED-SHA256 is enabled: its stored values are password-equivalent and its hash is fast; upgrade its users and turn it off")
	}
	s.log.Info("listening", "addr", ln.Addr().String(), "db", s.store.Path(),
		"workers", s.cfg.Workers, "queue", s.cfg.Queue, "mechanisms", s.cfg.Mechanisms)
	defer s.wg.Done()
	// Only the accept loop sends on the queue, so it alone may close it;
	// workers then drain what is left and exit.
	defer close(s.queue)

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), acceptBackoffMax)
				s.log.Error("accept failed; pausing", "err", err, "pause", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		src := sourceKey(nc.RemoteAddr())
		// Spec §2 allows only the greeting or ERR BUSY at connect, so a
		// source over its cap is told BUSY, with its own reason.
		if !s.thr.connOpen(src) {
			s.reject(nc, CodeBusy, "too many connections from your address; close some and retry")
			continue
		}
		q := s.newQueued(nc, src)
		select {
		case s.queue <- q:
		default:
			if q.claim() {
				s.thr.connClose(src)
				s.reject(nc, CodeBusy, "server busy, retry shortly")
			}
		}
	}
}

// isTemporary reports accept errors worth retrying: running out of file
// descriptors or buffers passes once connections close.
func isTemporary(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// reject answers a connection the server will not serve and closes it.
func (s *Server) reject(nc net.Conn, code, text string) {
	nc.SetWriteDeadline(time.Now().Add(rejectWriteTimeout))
	io.WriteString(nc, FormatReply(ReplyErr, code, text))
	nc.Close()
	s.log.Info("rejected", "remote", nc.RemoteAddr().String(), "code", code)
}

func (s *Server) worker() {
	defer s.wg.Done()
	for q := range s.queue {
		if !q.claim() {
			continue // waited too long; its timer answered it
		}
		if s.shutting.Load() {
			s.reject(q.nc, CodeBusy, "server is shutting down, retry shortly")
		} else {
			s.serveConn(q.nc, q.src)
		}
		s.thr.connClose(q.src)
	}
}

// queued is an accepted connection waiting for a worker. Whoever claims it
// first answers it: a worker, or the timer of queue_timeout, which tells it
// ERR BUSY; the spec promises that no client is left without an answer.
type queued struct {
	nc      net.Conn
	src     string
	claimed atomic.Bool
	timer   *time.Timer
}

// newQueued arms the timer before the connection is published on the
// queue, so the worker that receives it sees the timer.
func (s *Server) newQueued(nc net.Conn, src string) *queued {
	q := &queued{nc: nc, src: src}
	q.timer = time.AfterFunc(s.cfg.QueueTimeout.Duration, func() {
		if q.claimed.CompareAndSwap(false, true) {
			s.reject(q.nc, CodeBusy, "server busy, retry shortly")
			s.thr.connClose(q.src)
		}
	})
	return q
}

// claim takes the connection for a worker (or the accept loop); false if
// the timer already answered it.
func (q *queued) claim() bool {
	if !q.claimed.CompareAndSwap(false, true) {
		return false
	}
	q.timer.Stop()
	return true
}

// Addr is the listening address, once Serve runs.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops accepting, lets every exchange under way finish, and waits
// for the workers, at most until ctx ends; then it closes what is left and
// returns ctx's error. Connections waiting for a new command are told
// "ERR BUSY" and closed at once. It does not close the store.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.interruptIfIdle()
	}

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// conn is one served connection and its protocol state.
type conn struct {
	srv     *Server
	nc      net.Conn
	r       *bufio.Reader
	remote  string
	src     string // sourceKey of remote: the unit of throttling
	started time.Time

	mu   sync.Mutex // guards idle against Shutdown
	idle bool       // blocked reading a fresh command, nothing under way

	user     string   // "" until a successful AUTH
	pending  exchange // the exchange a SALT or CHALLENGE began
	attempt  *attempt // the login under way, counted by the throttle
	lastFail failure  // the last charged failure, see failLogin
	stats    connStats
}

// mechOf names the mechanism an account logs in with, for the log.
func mechOf(rec Record) string {
	if rec.Kind == KindLegacy {
		return MechSeed
	}
	return MechSCRAM
}

// failure is a failed login: the name and the mechanism.
type failure struct{ name, mech string }

type connStats struct {
	commands, logins, failures, registrations int
	end                                       string
}

// exchange is a two-step command waiting for its continuation.
type exchange interface {
	// next is the only command word that continues it.
	next() string
}

type registerEx struct {
	name       string
	salt       []byte
	iterations int
}

type passwdEx struct {
	salt       []byte
	iterations int
}

type scramEx struct {
	conv   *scram.ServerConversation
	name   string
	rec    Record
	exists bool
}

type seedEx struct {
	name   string
	nonce  string
	rec    Record
	exists bool
}

func (*registerEx) next() string { return CmdVerifier }
func (*passwdEx) next() string   { return CmdVerifier }
func (*scramEx) next() string    { return CmdResponse }
func (*seedEx) next() string     { return CmdResponse }

// errQuit and errShutdown end a connection after their reply is written.
var (
	errQuit     = errors.New("quit")
	errShutdown = errors.New("shutdown")
)

func (s *Server) serveConn(nc net.Conn, src string) {
	c := &conn{
		srv:     s,
		nc:      nc,
		r:       bufio.NewReaderSize(nc, MaxLineBytes),
		remote:  nc.RemoteAddr().String(),
		src:     src,
		started: time.Now(),
	}
	if !s.track(c) {
		s.reject(nc, CodeBusy, "server is shutting down, retry shortly")
		return
	}
	defer func() {
		c.endAttempt(false)
		s.untrack(c)
		nc.Close()
		s.log.Info("connection closed", "remote", c.remote, "end", c.stats.end,
			"duration", time.Since(c.started).Round(time.Millisecond),
			"commands", c.stats.commands, "logins", c.stats.logins,
			"failed_logins", c.stats.failures, "registrations", c.stats.registrations)
	}()
	defer func() {
		if r := recover(); r != nil {
			c.stats.end = "panic"
			s.log.Error("panic serving connection", "remote", c.remote, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			c.write(FormatReply(ReplyErr, CodeInternal, "internal server error"))
		}
	}()

	if !c.write(Greeting(s.cfg.Mechanisms)) {
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
			return
		}
	}
}

// readLine reads one line within the line and session deadlines.
func (c *conn) readLine() ([]byte, error) {
	c.mu.Lock()
	if c.pending == nil && c.srv.shutting.Load() {
		c.mu.Unlock()
		return nil, errShutdown
	}
	c.idle = c.pending == nil
	now := time.Now()
	deadline := min64time(now.Add(c.srv.cfg.LineTimeout.Duration), c.started.Add(c.srv.cfg.SessionTimeout.Duration))
	c.nc.SetReadDeadline(deadline)
	c.mu.Unlock()

	line, err := c.r.ReadSlice('\n')

	c.mu.Lock()
	c.idle = false
	c.mu.Unlock()
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, ErrLineTooLong
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && c.srv.shutting.Load() && c.pending == nil {
		return nil, errShutdown
	}
	return line, err
}

func min64time(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (c *conn) interruptIfIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idle {
		c.nc.SetReadDeadline(time.Now())
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
	if tc, ok := c.nc.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	c.nc.SetReadDeadline(time.Now().Add(drainTimeout))
	io.CopyN(io.Discard, c.nc, drainLimit)
}

// write sends one line within the line deadline; false if it failed.
func (c *conn) write(line string) bool {
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.LineTimeout.Duration))
	_, err := io.WriteString(c.nc, line)
	return err == nil
}

// reply writes a handler's outcome: its reply line, its protocol error, or
// for any other error a generic ERR INTERNAL with the detail in the log
// only. It reports whether the connection stays open.
func (c *conn) reply(line string, err error) bool {
	var pe *ProtoError
	switch {
	case err == nil:
		return c.write(line)
	case errors.Is(err, errQuit):
		c.stats.end = "quit"
		c.write(line)
		return false
	case errors.As(err, &pe):
		return c.write(pe.Line())
	default:
		c.srv.log.Error("internal error", "remote", c.remote, "err", err)
		c.write(FormatReply(ReplyErr, CodeInternal, "internal server error; nothing was changed"))
		return true
	}
}

// handleLine parses a line and runs its command. The order of checks is
// the spec's: state, then mechanism, then arguments.
func (c *conn) handleLine(raw []byte) (string, error) {
	cmd, err := ParseLine(TrimEOL(raw))
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
	authed := c.user != ""
	switch cmd.Verb {
	case CmdPing:
		return noArgs(cmd, FormatReply(ReplyOK, "PONG"))
	case CmdQuit:
		if err := CheckArgs(cmd, 0, 0); err != nil {
			return "", err
		}
		return FormatReply(ReplyOK, "BYE"), errQuit
	case CmdRegister, CmdAuth:
		if authed {
			return "", protoErr(CodeBadCmd, "%s is not allowed while logged in; LOGOUT first", cmd.Verb)
		}
		if cmd.Verb == CmdRegister {
			return c.handleRegister(cmd)
		}
		return c.handleAuth(cmd)
	case CmdWhoami, CmdPasswd, CmdDelete, CmdLogout:
		if !authed {
			return "", protoErr(CodeBadCmd, "%s needs a successful AUTH first", cmd.Verb)
		}
		switch cmd.Verb {
		case CmdWhoami:
			return noArgs(cmd, FormatReply(ReplyOK, c.user))
		case CmdPasswd:
			return c.handlePasswd(cmd)
		case CmdDelete:
			return c.handleDelete(cmd)
		default:
			if err := CheckArgs(cmd, 0, 0); err != nil {
				return "", err
			}
			c.user = ""
			return FormatReply(ReplyOK), nil
		}
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
		return c.finishRegister(p, cmd)
	case *passwdEx:
		return c.finishPasswd(p, cmd)
	case *scramEx:
		return c.finishSCRAM(p, cmd)
	case *seedEx:
		return c.finishSeed(p, cmd)
	}
	return "", fmt.Errorf("unknown exchange %T", p)
}

func noArgs(cmd Command, reply string) (string, error) {
	if err := CheckArgs(cmd, 0, 0); err != nil {
		return "", err
	}
	return reply, nil
}

func newSalt() ([]byte, error) {
	salt := make([]byte, SaltLen)
	_, err := rand.Read(salt)
	return salt, err
}

func (c *conn) handleRegister(cmd Command) (string, error) {
	if err := CheckArgs(cmd, 1, 1); err != nil {
		return "", err
	}
	if !c.srv.cfg.OpenRegistration {
		c.srv.log.Info("registration refused: registration is closed", "remote", c.remote)
		return "", protoErr(CodeDenied, "registration is closed on this server")
	}
	name, err := NormalizeUsername(cmd.Args[0])
	if err != nil {
		return "", err
	}
	// "That name is taken" tells an outsider the account exists, so each
	// such answer is charged to the source like a failed login: probing
	// names through REGISTER is no faster than through AUTH.
	if err := c.beginAttempt(name, ""); err != nil {
		return "", err
	}
	switch _, err := c.srv.store.Get(name); {
	case err == nil:
		c.endAttempt(true)
		c.srv.log.Info("registration refused: name taken", "remote", c.remote, "user", name)
		return "", protoErr(CodeExists, "that username is taken")
	case !errors.Is(err, ErrNotFound):
		return "", err
	}
	salt, err := newSalt()
	if err != nil {
		return "", err
	}
	c.endAttempt(false)
	c.pending = &registerEx{name: name, salt: salt, iterations: c.srv.cfg.Iterations}
	return FormatReply(ReplySalt, EncodeB64(salt), fmt.Sprint(c.srv.cfg.Iterations)), nil
}

// parseVerifier reads VERIFIER's two keys into a SCRAM record.
func parseVerifier(cmd Command, salt []byte, iterations int) (Record, error) {
	if err := CheckArgs(cmd, 2, 2); err != nil {
		return Record{}, err
	}
	stored, err := DecodeKey(cmd.Args[0])
	if err != nil {
		return Record{}, err
	}
	server, err := DecodeKey(cmd.Args[1])
	if err != nil {
		return Record{}, err
	}
	return Record{Kind: KindSCRAM, Iterations: iterations, Salt: salt, StoredKey: stored, ServerKey: server}, nil
}

func (c *conn) finishRegister(p *registerEx, cmd Command) (string, error) {
	rec, err := parseVerifier(cmd, p.salt, p.iterations)
	if err != nil {
		return "", err
	}
	switch err := c.srv.store.Create(p.name, rec); {
	case errors.Is(err, ErrExists):
		return "", protoErr(CodeExists, "another client registered that username meanwhile")
	case err != nil:
		return "", err
	}
	c.stats.registrations++
	c.srv.log.Info("registered", "remote", c.remote, "user", p.name)
	return FormatReply(ReplyOK), nil
}

func (c *conn) handlePasswd(cmd Command) (string, error) {
	if err := CheckArgs(cmd, 0, 0); err != nil {
		return "", err
	}
	salt, err := newSalt()
	if err != nil {
		return "", err
	}
	c.pending = &passwdEx{salt: salt, iterations: c.srv.cfg.Iterations}
	return FormatReply(ReplySalt, EncodeB64(salt), fmt.Sprint(c.srv.cfg.Iterations)), nil
}

func (c *conn) finishPasswd(p *passwdEx, cmd Command) (string, error) {
	rec, err := parseVerifier(cmd, p.salt, p.iterations)
	if err != nil {
		return "", err
	}
	upgraded := false
	err = c.srv.store.Update(c.user, func(old Record) (Record, error) {
		rec.Locked = old.Locked
		upgraded = old.Kind == KindLegacy
		return rec, nil
	})
	if errors.Is(err, ErrNotFound) {
		// Deleted by an administrator while logged in.
		c.user = ""
		return "", protoErr(CodeAuth, "the account no longer exists")
	}
	if err != nil {
		return "", err
	}
	if upgraded {
		c.srv.log.Info("account upgraded from the legacy scheme to SCRAM-SHA-256", "remote", c.remote, "user", c.user)
	} else {
		c.srv.log.Info("password changed", "remote", c.remote, "user", c.user)
	}
	return FormatReply(ReplyOK), nil
}

func (c *conn) handleDelete(cmd Command) (string, error) {
	if err := CheckArgs(cmd, 0, 0); err != nil {
		return "", err
	}
	if err := c.srv.store.Delete(c.user); err != nil && !errors.Is(err, ErrNotFound) {
		return "", err
	}
	c.srv.log.Info("account deleted", "remote", c.remote, "user", c.user)
	c.user = ""
	return FormatReply(ReplyOK), nil
}

func (c *conn) handleAuth(cmd Command) (string, error) {
	if len(cmd.Args) == 0 {
		return "", protoErr(CodeBadReq, "AUTH takes a mechanism and its argument")
	}
	mech := cmd.Args[0]
	if !c.srv.cfg.HasMech(mech) {
		return "", protoErr(CodeNoMech, "mechanism not enabled on this server")
	}
	if err := CheckArgs(cmd, 2, 2); err != nil {
		return "", err
	}
	if mech == MechSeed {
		return c.startSeed(cmd.Args[1])
	}
	return c.startSCRAM(cmd.Args[1])
}

// lookup reads an account for a login. The store read and the fake-value
// HMAC happen whether or not the name exists, so that the two cases cost
// the same and cannot be told apart by timing.
func (c *conn) lookup(name string, kind Kind, fakeLabel string) (Record, []byte, bool, error) {
	fake := c.srv.store.FakeSalt(fakeLabel, name)
	rec, err := c.srv.store.Get(name)
	switch {
	case errors.Is(err, ErrNotFound):
		// A hit decodes a record; so does a miss, a stand-in of the same
		// size, so that both cost the same allocations and copies.
		standIn, _ := unmarshalRecord(standInRecord)
		return standIn, fake, false, nil
	case err != nil:
		return Record{}, nil, false, err
	}
	return rec, fake, rec.Kind == kind, nil
}

// standInRecord is an encoded SCRAM record, decoded for names that do not
// exist (see lookup). Its kind is 0, so it can never match.
var standInRecord = (&Record{Salt: make([]byte, SaltLen), StoredKey: make([]byte, KeyLen), ServerKey: make([]byte, KeyLen)}).marshal()

func (c *conn) startSCRAM(arg string) (string, error) {
	raw, err := DecodeB64(arg)
	if err != nil {
		return "", err
	}
	first, err := ParseClientFirst(string(raw))
	if err != nil {
		return "", err
	}
	name, err := NormalizeUsername(first.Username)
	if err != nil {
		return "", err
	}
	if err := c.beginAttempt(name, MechSCRAM); err != nil {
		return "", err
	}
	rec, fake, exists, err := c.lookup(name, KindSCRAM, "scram")
	if err != nil {
		return "", err
	}
	creds := scram.StoredCredentials{
		// An unknown name gets a salt from the secret and an unreachable
		// StoredKey: the proof is checked the same way, and fails.
		KeyFactors: scram.KeyFactors{Salt: string(fake[:SaltLen]), Iters: c.srv.cfg.Iterations},
		StoredKey:  fake,
		ServerKey:  fake,
	}
	if exists {
		creds = scram.StoredCredentials{
			KeyFactors: scram.KeyFactors{Salt: string(rec.Salt), Iters: rec.Iterations},
			StoredKey:  rec.StoredKey,
			ServerKey:  rec.ServerKey,
		}
	}
	srv, _ := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return creds, nil })
	conv := srv.NewConversation()
	serverFirst, err := conv.Step(string(raw))
	if err != nil {
		return "", protoErr(CodeBadReq, "malformed SCRAM client-first-message")
	}
	c.pending = &scramEx{conv: conv, name: name, rec: rec, exists: exists}
	return FormatReply(ReplyChallenge, EncodeB64([]byte(serverFirst))), nil
}

var errAuthFailed = &ProtoError{Code: CodeAuth, Text: "authentication failed"}

func (c *conn) finishSCRAM(p *scramEx, cmd Command) (string, error) {
	if err := CheckArgs(cmd, 1, 1); err != nil {
		return "", err
	}
	raw, err := DecodeB64(cmd.Args[0])
	if err != nil {
		return "", err
	}
	// The SCRAM library decodes c= and p= leniently (it skips CR and LF);
	// RFC 5802 messages are printable, so refuse anything else here.
	if bytes.ContainsFunc(raw, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", protoErr(CodeBadReq, "SCRAM client-final-message has control characters")
	}
	serverFinal, err := p.conv.Step(string(raw))
	if err != nil {
		if serverFinal == scram.ErrInvalidProof {
			return c.failLogin(p.name, MechSCRAM)
		}
		return "", protoErr(CodeBadReq, "malformed SCRAM client-final-message (channel binding, nonce or proof)")
	}
	if !p.exists || !p.conv.Valid() {
		return c.failLogin(p.name, MechSCRAM)
	}
	return c.succeedLogin(p.name, p.rec, FormatReply(ReplyOK, EncodeB64([]byte(serverFinal))))
}

// beginAttempt asks the throttle whether this source may try to log in as
// name now with mech ("" for a REGISTER probe). The second half of a
// SCRAM/SEED pair (see failLogin) is neither checked nor charged: its first
// half was, and only one of the two can ever succeed.
func (c *conn) beginAttempt(name, mech string) error {
	c.endAttempt(false)
	if mech != "" && c.lastFail.name == name && c.lastFail.mech != mech {
		c.attempt = &attempt{free: true}
		return nil
	}
	a, wait, perUser := c.srv.thr.begin(c.src, name, time.Now())
	if a == nil {
		c.srv.log.Info("throttled", "remote", c.remote, "user", name, "retry_in", wait)
		if perUser {
			return protoErr(CodeLimit, "too many failed attempts for this username from your address; retry in %ds", int(wait.Seconds()))
		}
		return protoErr(CodeLimit, "too many failed attempts from your address; retry in %ds", int(wait.Seconds()))
	}
	c.attempt = a
	return nil
}

// endAttempt ends the login under way, if any; only a wrong proof counts
// as a failure.
func (c *conn) endAttempt(failed bool) {
	if c.attempt != nil {
		c.srv.thr.end(c.attempt, failed, time.Now())
		c.attempt = nil
	}
}

// failLogin answers a wrong proof. It is charged to the throttle, except
// for the second half of a SCRAM-then-SEED (or SEED-then-SCRAM) pair for
// the same name on the same connection, which is how our client finds a
// legacy account. Charging that pair once gives nothing away: an account is
// either SCRAM or legacy, so only one of the two proofs could ever succeed,
// and a pair still tests at most one password.
func (c *conn) failLogin(name, mech string) (string, error) {
	free := c.attempt != nil && c.attempt.free
	c.endAttempt(!free)
	if free {
		c.lastFail = failure{}
	} else {
		c.lastFail = failure{name, mech}
	}
	c.stats.failures++
	c.srv.log.Info("login failed", "remote", c.remote, "user", name, "mech", mech, "charged", !free)
	return "", errAuthFailed
}

func (c *conn) succeedLogin(name string, rec Record, reply string) (string, error) {
	c.endAttempt(false)
	c.lastFail = failure{}
	if rec.Locked {
		c.srv.log.Info("login refused: account locked", "remote", c.remote, "user", name)
		return "", protoErr(CodeLocked, "this account is locked; ask the administrator")
	}
	c.user = name
	c.stats.logins++
	c.srv.log.Info("login", "remote", c.remote, "user", name, "mech", mechOf(rec))
	return reply, nil
}

func (c *conn) startSeed(arg string) (string, error) {
	name, err := NormalizeUsername(arg)
	if err != nil {
		return "", err
	}
	if err := c.beginAttempt(name, MechSeed); err != nil {
		return "", err
	}
	rec, fake, exists, err := c.lookup(name, KindLegacy, "seed")
	if err != nil {
		return "", err
	}
	salt := hex.EncodeToString(fake[:16])
	if exists {
		salt = string(rec.Salt)
	} else {
		// Hash the same number of bytes at RESPONSE as for a real account.
		rec.StoredKey = fake
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	p := &seedEx{name: name, nonce: hex.EncodeToString(nonce), rec: rec, exists: exists}
	c.pending = p
	return FormatReply(ReplyChallenge, salt, p.nonce), nil
}

func (c *conn) finishSeed(p *seedEx, cmd Command) (string, error) {
	if err := CheckArgs(cmd, 1, 1); err != nil {
		return "", err
	}
	got := cmd.Args[0]
	if !IsLowerHex(got, 64) {
		return "", protoErr(CodeBadReq, "SEED-SHA256 response must be 64 lower-case hex digits")
	}
	stored := hex.EncodeToString(p.rec.StoredKey)
	want := SeedResponse(p.nonce, stored)
	if !hmac.Equal([]byte(got), []byte(want)) || !p.exists {
		return c.failLogin(p.name, MechSeed)
	}
	return c.succeedLogin(p.name, p.rec, FormatReply(ReplyOK))
}
