package main

// server.go owns the server's lifecycle and concurrency: one accept loop
// feeding a bounded queue, a fixed pool of workers each serving one
// connection at a time, per-line deadlines, and a clean Shutdown.

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// rejectWriteTimeout bounds the one-line answer to a connection the
	// server will not serve (BUSY): the accept loop writes it inline, so it
	// must never wait on a peer that does not read.
	rejectWriteTimeout = 500 * time.Millisecond
	// drainLimit bounds what is discarded during drainTimeout.
	drainLimit = 64 << 10
	// acceptBackoffMax caps the pause after a failing Accept (for example
	// out of file descriptors), as net/http does.
	acceptBackoffMax = time.Second
)

// drainTimeout is how long a connection cut for an over-long line (or at
// shutdown) is read and discarded after its ERR line, so that closing it
// does not reset the connection before the client has read why. A var only
// so that the tests can shorten it.
var drainTimeout = time.Second

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("authbox: server closed")

// Server is an authbox server. Make one with NewServer, run it with Serve,
// stop it with Shutdown.
type Server struct {
	cfg   Config
	store timedStore
	log   *slog.Logger
	thr   *throttle
	// met is nil unless metrics_listen is set: see metrics.go.
	met *metrics
	// health watches a remote store; nil for the bbolt file.
	health *health
	// shared carries failed logins to and from the cluster's other
	// servers; nil unless the store is etcd.
	shared *sharedFailures
	// cache is the etcd store's account cache this server started, and
	// stops at Shutdown; nil for the bbolt file.
	cache *etcdCache

	queue chan *queued
	waits *queueWaits // the queue's deadlines
	// ready is closed when Serve has set everything up and is about to
	// accept: its fields may be read from then on.
	ready    chan struct{}
	shutting atomic.Bool
	wg       sync.WaitGroup

	mu    sync.Mutex
	ln    net.Listener
	conns map[*conn]struct{}

	// tlsConf is the TLS every connection speaks, nil over plain TCP; it
	// is set by Identity, before Serve accepts.
	tlsConf *tls.Config
	id      *ServerIdentity
	idErr   error
	idOnce  sync.Once
	// offered and greeting are per transport, indexed by boolIndex(overTLS).
	offered  [2][]string
	greeting [2]string
}

// NewServer makes a server for an open store. It does not listen yet.
func NewServer(cfg Config, store Storage, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(newLogHandler(io.Discard, false))
	}
	s := &Server{
		cfg:      cfg,
		log:      log,
		thr:      newThrottle(cfg),
		queue:    make(chan *queued, cfg.Queue),
		ready:    make(chan struct{}),
		conns:    make(map[*conn]struct{}),
		offered:  [2][]string{cfg.Offered(false), cfg.Offered(true)},
		greeting: [2]string{Greeting(cfg.Offered(false)), Greeting(cfg.Offered(true))},
	}
	if cfg.MetricsListen != "" {
		s.met = newMetrics(s)
	}
	s.health = newHealth(store, log)
	wc, _ := store.(writeCounter)
	s.store = timedStore{store, s.met, s.health, wc}
	s.waits = newQueueWaits(cfg.QueueTimeout.Duration, s.queueExpired)
	return s
}

// Identity loads (on first call, making it if the db has none) the TLS
// identity the server presents; nil with tls = false.
func (s *Server) Identity() (*ServerIdentity, error) {
	s.idOnce.Do(func() {
		if !s.cfg.TLS {
			return
		}
		s.id, s.idErr = LoadIdentity(s.cfg, s.store.Storage)
		if s.idErr == nil {
			s.tlsConf = serverTLSConfig(s.id)
		}
	})
	return s.id, s.idErr
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
	if _, err := s.Identity(); err != nil {
		s.mu.Unlock()
		ln.Close()
		return err
	}
	s.ln = ln
	s.wg.Add(1 + s.cfg.Workers)
	s.mu.Unlock()
	// Before any worker runs: the throttle's share hook is set here.
	if es, ok := s.store.Storage.(*EtcdStore); ok {
		s.shared = shareFailures(es, s.thr, s.log)
		s.cache = es.startCache()
	}

	for range s.cfg.Workers {
		go s.worker()
	}
	if s.cfg.HasMech(MechSeed) {
		s.log.Warn("legacy mechanism SEED-SHA256 is enabled: its stored values are password-equivalent and its hash is fast; upgrade its users and turn it off")
	}
	if s.cfg.TLS && !s.cfg.HasMech(MechPlus) {
		// Typically a config written before TLS existed: logins still work,
		// but a relay holding a certificate the client accepted could pass
		// them through unnoticed, which PLUS would catch.
		s.log.Warn("tls is on but " + MechPlus + " is not in mechanisms: logins are not bound to the TLS channel; add it first in mechanisms")
	}
	s.logListening(ln)
	s.health.start()
	s.waits.start()
	close(s.ready)
	defer s.wg.Done()
	// Only the accept loop sends on the queue, so it alone may close it;
	// workers then drain what is left and exit.
	defer close(s.queue)

	backoff := acceptBackoff{log: s.log}
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return ErrServerClosed
			}
			if backoff.retry(err) {
				continue
			}
			return err
		}
		backoff.ok()
		s.met.accept()
		if s.health.unavailable() {
			// Not logged one by one: the probe logged the outage once,
			// and the metric counts these.
			s.met.refuse(refusedStoreDown)
			s.answerReject(nc, CodeBusy, "the account store is unreachable; retry shortly, or another server")
			continue
		}
		src := sourceKey(nc.RemoteAddr())
		// Spec §2 allows only the greeting or ERR BUSY at connect, so a
		// source over its cap is told BUSY, with its own reason.
		if !s.thr.connOpen(src) {
			s.met.refuse(refusedSourceCap)
			s.reject(nc, CodeBusy, "too many connections from your address; close some and retry")
			continue
		}
		q := &queued{nc: nc, src: src}
		select {
		case s.queue <- q:
			// Its wait starts once it is in the queue: a worker may have
			// claimed it already, which the reaper then sees. One turned
			// away below never enters the reaper's list, which a flood
			// would otherwise fill behind a connection waiting its turn.
			s.waits.add(q)
		default:
			q.claim()
			s.thr.connClose(src)
			s.met.refuse(refusedQueueFull)
			s.reject(nc, CodeBusy, "server busy, retry shortly")
		}
	}
}

// logListening is the start line: where, how, and the fingerprint that
// clients pin.
func (s *Server) logListening(ln net.Listener) {
	transport := []any{"transport", "plain TCP"}
	if s.id != nil {
		transport = []any{"transport", "TLS 1.3", "fingerprint", s.id.Fingerprint}
	}
	s.log.Info("listening", append(append([]any{"addr", ln.Addr().String()}, transport...),
		"store", s.store.Describe(), "workers", s.cfg.Workers, "queue", s.cfg.Queue,
		"mechanisms", strings.Join(s.cfg.Offered(s.id != nil), ","))...)
}

// reject answers a connection the server will not serve, before any worker
// took it, and closes it. Over TLS that answer would need a handshake,
// which is a worker's job (spec §9.1), so the connection is only closed:
// clients read that as busy.
func (s *Server) reject(nc net.Conn, code, text string) {
	s.answerReject(nc, code, text)
	s.log.Info("rejected", "remote", nc.RemoteAddr().String(), "code", code, "reason", text)
}

// answerReject is reject without its log line.
func (s *Server) answerReject(nc net.Conn, code, text string) {
	if s.tlsConf == nil {
		nc.SetWriteDeadline(time.Now().Add(rejectWriteTimeout))
		io.WriteString(nc, FormatReply(ReplyErr, code, text))
	}
	nc.Close()
}

// workerPad is stack that a worker holds while it waits for a
// connection. The collector halves the stack of a goroutine that uses
// under a quarter of it, and a worker waiting between connections uses
// little: its next connection then grew the stack back, copying it, which
// cost 0.6 µs a connection. Waiting with this much in use keeps a stack of
// up to 32 KiB (a login needs less) from being shrunk.
const workerPad = 8 << 10

// keepPad keeps a worker's pad in its frame: a pad nothing uses would be
// optimized away. It does not let the pad escape to the heap.
//
//go:noinline
func keepPad(p *[workerPad]byte) { p[0] = 0 }

func (s *Server) worker() {
	defer s.wg.Done()
	var pad [workerPad]byte
	for q := range s.queue {
		if !q.claim() {
			continue // waited too long; its timer answered it
		}
		s.met.workerBusy(1)
		s.serveConn(q.nc, q.src)
		s.met.workerBusy(-1)
		s.thr.connClose(q.src)
	}
	keepPad(&pad)
}

// queued is an accepted connection waiting for a worker. Whoever claims it
// first answers it: a worker, or the reaper of queue_timeout
// (queuewait.go), which tells it ERR BUSY; the spec promises that no
// client is left without an answer.
type queued struct {
	nc       net.Conn
	src      string
	claimed  atomic.Bool
	deadline time.Time
}

// queueExpired answers a connection that waited longer than
// queue_timeout.
func (s *Server) queueExpired(q *queued) {
	s.met.refuse(refusedQueueTimeout)
	s.reject(q.nc, CodeBusy, "server busy, retry shortly")
	s.thr.connClose(q.src)
}

// claim takes the connection for a worker (or the accept loop); false if
// the reaper already answered it.
func (q *queued) claim() bool {
	return q.claimed.CompareAndSwap(false, true)
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
	go func() {
		s.wg.Wait()
		s.waits.halt()
		s.health.halt()
		s.shared.stop()
		if s.cache != nil {
			s.cache.s.stopCache(s.cache)
		}
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.raw.Close()
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

// tick signals ch, a channel of capacity one, without waiting: one
// pending signal is enough for whoever waits on it.
func tick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// logAttrs is s.log.LogAttrs without the caller's program counter, which
// slog's Logger looks up for every line (runtime.Callers, most of a
// microsecond) although no handler here prints the source. The lines of
// every login go through it.
func (s *Server) logAttrs(level slog.Level, msg string, attrs ...slog.Attr) {
	h := s.log.Handler()
	if !h.Enabled(context.Background(), level) {
		return
	}
	if lh, ok := h.(*logHandler); ok {
		lh.line(time.Now(), level, msg, attrs)
		return
	}
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.AddAttrs(attrs...)
	h.Handle(context.Background(), r)
}
