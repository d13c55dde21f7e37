package main

// adminserver.go serves admin commands on the Unix socket beside the db
// while `authbox serve` holds the db file.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// adminIOTimeout bounds each read of a request and each write of a frame
// on the server side, so a stuck admin client cannot hold a goroutine and a
// read transaction for ever.
const adminIOTimeout = 30 * time.Second

// AdminServer answers admin commands on the socket beside the db while
// `authbox serve` holds the db.
type AdminServer struct {
	store *Store
	srv   adminHooks
	log   *slog.Logger
	path  string
	ln    net.Listener
	wg    sync.WaitGroup
	// closing tells the accept loop that its listener was closed on
	// purpose.
	closing atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	cut   bool // Shutdown's grace is over: a connection accepted now is closed
}

// adminHooks is what the admin socket needs of the running server beyond
// its store: its TLS identity (nil, nil for plain TCP), for "authbox
// fingerprint", and its login throttle, for "authbox users unthrottle".
// *Server has both.
type adminHooks interface {
	Identity() (*ServerIdentity, error)
	Forgive(target string) (cleared int, err error)
}

// noServer is the hooks of an admin socket served without a server (in
// tests): plain TCP, and a throttle that holds nothing.
type noServer struct{}

func (noServer) Identity() (*ServerIdentity, error) { return nil, nil }
func (noServer) Forgive(string) (int, error)        { return 0, nil }

// ListenAdmin creates the admin socket beside the store's db file, mode
// 0600, and serves it until Shutdown. A socket file left by a server that
// died is replaced: the caller holds the db, so no live server owns it.
func ListenAdmin(store *Store, srv adminHooks, log *slog.Logger) (*AdminServer, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}

	path := AdminSocketPath(store.Path())
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, adminDialTimeout)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another process answers on %s", path)
		}
		// Only a refused connection says nobody listens: a socket of
		// another kind, or one we may not open, may still be in use.
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%s exists and cannot be checked (%s): remove it if no server uses it", path, errText(err))
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale %s: %w", path, err)
		}
		log.Info("removed a stale admin socket", "path", path)
	}
	if max := len(syscall.RawSockaddrUnix{}.Path) - 1; len(path) > max {
		return nil, fmt.Errorf("cannot create the admin socket %s: the path is %d bytes, and a Unix socket's may have %d", path, len(path), max)
	}
	// The umask makes the socket 0600 from its first moment: a chmod
	// after bind would leave a window. Serve runs this before it starts
	// any other goroutine that creates files.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("cannot create the admin socket %s: %s", path, errText(err))
	}
	log.Info("admin socket", "path", path)
	return serveAdmin(store, srv, log, path, ln), nil
}

// serveAdmin serves admin commands on ln, the socket at path, until
// Shutdown.
func serveAdmin(store *Store, srv adminHooks, log *slog.Logger, path string, ln net.Listener) *AdminServer {
	if srv == nil {
		srv = noServer{}
	}
	a := &AdminServer{store: store, srv: srv, log: log, path: path, ln: ln, conns: map[net.Conn]struct{}{}}
	a.wg.Add(1)
	go a.serve()
	return a
}

// Path is the socket's path.
func (a *AdminServer) Path() string { return a.path }

func (a *AdminServer) serve() {
	defer a.wg.Done()
	backoff := acceptBackoff{log: a.log}
	for {
		c, err := a.ln.Accept()
		if err != nil {
			if a.closing.Load() {
				return
			}
			if backoff.retry(err) {
				continue
			}
			// Closed, the socket refuses at once: the commands then say no
			// server answers, where an open one would leave them waiting.
			a.log.Error("the admin socket failed; admin commands cannot reach this server", "err", err)
			a.ln.Close()
			return
		}
		backoff.ok()
		a.mu.Lock()
		if a.cut {
			a.mu.Unlock()
			c.Close()
			return
		}
		a.conns[c] = struct{}{}
		a.wg.Add(1)
		a.mu.Unlock()
		go func() {
			defer a.wg.Done()
			a.handle(c)
			a.mu.Lock()
			delete(a.conns, c)
			a.mu.Unlock()
			c.Close()
		}()
	}
}

// Shutdown stops accepting, removes the socket file, and waits for the
// commands under way, at most until ctx ends; then it cuts them and
// returns ctx's error.
func (a *AdminServer) Shutdown(ctx context.Context) error {
	if a == nil {
		return nil // a server on a store that needs no admin socket
	}
	a.closing.Store(true)
	a.ln.Close() // a listening Unix socket made by Listen unlinks its file
	finished := make(chan struct{})
	go func() { a.wg.Wait(); close(finished) }()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	a.mu.Lock()
	a.cut = true
	for c := range a.conns {
		c.Close()
	}
	a.mu.Unlock()
	<-finished
	return ctx.Err()
}

func (a *AdminServer) handle(nc net.Conn) {
	// A bug in one admin command must not take the logins down with it.
	defer func() {
		if r := recover(); r != nil {
			a.log.Error("panic in an admin command", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	c := deadlineConn{nc, adminIOTimeout}
	r := bufio.NewReaderSize(c, 4096)
	line, err := readAdminLine(r)
	if err != nil {
		if !errors.Is(err, io.EOF) { // a bare connect is a liveness probe
			a.log.Warn("admin request unreadable", "err", err)
		}
		return
	}
	var req adminRequest
	if err := json.Unmarshal(line, &req); err != nil {
		a.log.Warn("admin request unreadable", "err", err)
		return
	}
	who := []any{"op", req.Op}
	if req.Name != "" {
		who = append(who, "user", req.Name)
	}
	if req.Target != "" {
		who = append(who, "target", req.Target)
	}
	a.log.Info("admin", who...)
	fw := newFrameWriter(c)
	var in io.Reader
	if req.Op == opImport {
		in = &uploadReader{r: r}
	}
	env := adminEnv{open: func() (Storage, error) { return a.store, nil }, identity: a.srv.Identity, forgive: a.srv.Forgive}
	err = runAdmin(env, req, in, adminOut{Stdout: fw.stream("stdout"), Stderr: fw.stream("stderr"), File: fw.stream("file")})
	exit := 0
	end := adminFrame{Exit: &exit}
	var ae *AdminError
	if errors.As(err, &ae) {
		exit, end.Error, end.Hint = int(ae.Kind), ae.Msg, ae.Hint
		a.log.Info("admin failed", append(who, "err", ae.Msg)...)
	}
	fw.end(end)
}
