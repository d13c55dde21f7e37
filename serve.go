package main

// serve.go is the serve command: it opens the store, starts the server and
// the admin socket, and stops them cleanly on a signal; and the log buffer
// that batches the server's log lines.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

func cmdServe(ctx *cli.Context) error {
	if err := noCLIArgs(ctx); err != nil {
		return err
	}
	cfg, err := loadConfig(ctx)
	if err != nil {
		return err
	}
	if v := ctx.String("listen"); v != "" {
		cfg.Listen = v
	}
	if v := ctx.String("db"); v != "" {
		cfg.DB = v
		cfg.Store = "bbolt" // --db names a file, whatever the config's store
	}
	logs := newLogBuffer(ctx.App.ErrWriter)
	defer logs.Close()
	log := newLogger(cfg, logs)

	ln, store, srv, admin, err := openServe(cfg, log)
	if err != nil {
		return err
	}
	if _, set := os.LookupEnv("GOGC"); !set && cfg.Store != "etcd" {
		debug.SetGCPercent(serveGCPercent)
	}
	defer ln.Close()
	defer store.Close()
	var mgmt *Management
	if cfg.MetricsListen != "" {
		if mgmt, err = ListenManagement(cfg.MetricsListen, srv, log); err != nil {
			admin.Shutdown(context.Background())
			return fail(exitOther, "is another program using that address? choose another metrics_listen", "cannot listen on %s (metrics_listen): %s", cfg.MetricsListen, errText(err))
		}
	}
	// The management listener stops last, so that /readyz says 503 for as
	// long as the server drains.
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), managementWriteTimeout)
		defer cancel()
		mgmt.Shutdown(ctx)
	}()

	// SIGINT or SIGTERM stops it; so does the end of the run's context,
	// which is how the tests stop a serve that runs in their process.
	sigs, stop := signal.NotifyContext(ctx.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		// Serve failed on its own: stop the workers before the deferred
		// store.Close pulls the db from under them.
		now, cancelNow := context.WithCancel(context.Background())
		cancelNow()
		admin.Shutdown(now)
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
		defer cancel()
		srv.Shutdown(sctx)
		return fail(exitOther, "", "server stopped: %s", err)
	case <-sigs.Done():
	}
	log.Info("shutting down", "grace", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
	defer cancel()
	adminDone := make(chan struct{})
	go func() { admin.Shutdown(sctx); close(adminDone) }()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("grace period over; remaining connections were closed", "err", err)
	}
	<-served
	<-adminDone
	if err := store.Close(); err != nil {
		return fail(exitOther, "", "closing %s: %s", store.Describe(), err)
	}
	log.Info("stopped cleanly")
	return nil
}

// newLogger makes the server's logger in the configured format. Its
// lines are slog's own TextHandler or JSONHandler lines, byte for byte;
// logHandler only makes the common ones cheaper.
func newLogger(cfg Config, w io.Writer) *slog.Logger {
	return slog.New(newLogHandler(w, cfg.LogFormat == "json"))
}

// openServe opens what serve needs: the listener, the store, the server
// with its TLS identity, and the admin socket. On failure it closes what
// it opened and says what to do.
func openServe(cfg Config, log *slog.Logger) (net.Listener, Storage, *Server, *AdminServer, error) {
	// Listen first: a server that cannot listen must not leave a new empty
	// db file behind.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, nil, nil, nil, fail(exitOther, "is another server using that address? choose another with --listen", "cannot listen on %s: %s", cfg.Listen, errText(err))
	}
	store, err := openStorage(cfg)
	if err != nil {
		ln.Close()
		if cfg.Store == "etcd" {
			return nil, nil, nil, nil, fail(exitOther, "check etcd.endpoints and that a majority of the cluster's members is up", "cannot use the etcd store: %s", errText(err))
		}
		if errors.Is(err, ErrDBLocked) {
			return nil, nil, nil, nil, fail(exitOther, `an authbox server is probably running on it already; stop it, or give another file with --db`,
				"database %s is locked by another process", cfg.DB)
		}
		var de *DamagedError
		if errors.As(err, &de) {
			return nil, nil, nil, nil, fail(exitOther, de.Hint(), "%s", de)
		}
		msg, hint := dbOpenFailure(cfg.DB, err)
		return nil, nil, nil, nil, fail(exitOther, hint, "%s", msg)
	}
	if cfg.Store != "etcd" { // the db path is not used then
		for _, w := range dbModeWarnings(cfg.DB) {
			log.Warn(w)
		}
	}
	srv := NewServer(cfg, store, log)
	if _, err := srv.Identity(); err != nil {
		ln.Close()
		store.Close()
		if errors.Is(err, ErrBadIdentity) {
			return nil, nil, nil, nil, fail(exitOther, "restore the db from a backup, or give a certificate with tls_cert_file and tls_key_file", "%s: %s", store.Describe(), err)
		}
		return nil, nil, nil, nil, fail(exitOther, "give a PEM certificate chain and its PEM private key, or leave both empty for the identity kept in the db", "cannot load the TLS certificate: %s", err)
	}
	// The etcd store needs no admin socket: the commands talk to etcd.
	db, ok := store.(*Store)
	if !ok {
		return ln, store, srv, nil, nil
	}
	admin, err := ListenAdmin(db, srv, log)
	if err != nil {
		ln.Close()
		store.Close()
		return nil, nil, nil, nil, fail(exitOther, `the admin socket is the db's path plus ".sock": remove what is in the way, or choose another --db (a shorter one if the path is too long for a socket)`, "%s", err)
	}
	return ln, store, srv, admin, nil
}

// serveGCPercent is the collector's GOGC for a server on a bbolt file,
// unless the environment sets GOGC. Such a server's live heap is about a
// megabyte (the accounts stay in the file's mapping), and a login leaves
// a kilobyte of garbage: at Go's default of 100 the collector ran 13
// times a second under load, half a microsecond a login. At 400 it runs
// a quarter as often, for about 20 MiB more resident memory (a
// 10,000-connection burst peaks at 51 MiB, not 32; BENCHMARKS.md). The
// etcd store keeps every account in memory, so its heap grows with the
// accounts: it keeps the default.
const serveGCPercent = 400

// logFlushEvery is how long a server log line may wait in memory. Writing
// each line at once costs a syscall per event, two per login, a fair part
// of a login's whole cost on the server; a tenth of a second of delay costs
// an operator nothing.
const logFlushEvery = 100 * time.Millisecond

// logBuffer batches log lines into few writes when they come thick and
// fast, and writes a line at once when none was written for logFlushEvery,
// so a quiet server's log is as live as an unbuffered one. Lines are whole
// when they reach the output; a kill -9 loses at most logFlushEvery of
// them, never an account (those are on disk before OK).
type logBuffer struct {
	mu      sync.Mutex
	out     io.Writer
	w       *bufio.Writer
	flushed time.Time
	stop    chan struct{}
	done    chan struct{}
}

func newLogBuffer(w io.Writer) *logBuffer {
	l := &logBuffer{out: w, w: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(logFlushEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				l.flush()
			case <-l.stop:
				l.flush()
				return
			}
		}
	}()
	return l
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.w.Write(p)
	// time.Since reads the monotonic clock only; time.Now reads two.
	if err == nil && time.Since(l.flushed) >= logFlushEvery {
		err = l.flushLocked(time.Now())
	}
	return n, err
}

func (l *logBuffer) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w.Buffered() > 0 {
		l.flushLocked(time.Now())
	}
}

// flushLocked writes the buffer out. bufio.Writer keeps its first error
// for ever; one failed write (a full disk) must not silence the log for
// the rest of the server's life, so a failure drops what was buffered and
// starts afresh.
func (l *logBuffer) flushLocked(now time.Time) error {
	err := l.w.Flush()
	if err != nil {
		l.w.Reset(l.out)
	}
	l.flushed = now
	return err
}

// Close writes what is left and stops the flusher.
func (l *logBuffer) Close() error {
	close(l.stop)
	<-l.done
	return nil
}
