package main

// management.go is the management listener: plain HTTP on its own address
// (metrics_listen), never on the protocol port, serving /metrics for
// Prometheus and the /livez and /readyz probes. It is off unless
// configured: it tells whoever reaches it how busy the server is.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const (
	// managementReadTimeout bounds a scraper's request headers: nothing
	// legitimate sends slowly, and a slow sender holds a goroutine.
	managementReadTimeout = 5 * time.Second
	// managementWriteTimeout bounds one answer; a scrape is a few KiB.
	managementWriteTimeout = 10 * time.Second
)

// Management serves the management listener. Make one with
// ListenManagement; stop it with Shutdown, after the server's own
// Shutdown, so that /readyz answers 503 for as long as the server drains.
type Management struct {
	ln   net.Listener
	http *http.Server
	done chan struct{}
}

// ListenManagement listens on addr and serves srv's metrics and probes.
func ListenManagement(addr string, srv *Server, log *slog.Logger) (*Management, error) {
	if srv.met == nil {
		return nil, errors.New("the server was made without metrics_listen")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(srv.met.reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{log}}))
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if reason := srv.notReady(); reason != "" {
			http.Error(w, reason, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	m := &Management{
		ln: ln,
		http: &http.Server{Handler: mux, ReadHeaderTimeout: managementReadTimeout, ReadTimeout: managementReadTimeout,
			WriteTimeout: managementWriteTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)},
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("management listener stopped", "err", err)
		}
	}()
	log.Info("management listener", "addr", ln.Addr().String(), "paths", "/metrics,/livez,/readyz")
	return m, nil
}

// Addr is where it listens.
func (m *Management) Addr() net.Addr { return m.ln.Addr() }

// Shutdown stops it, letting a scrape under way finish until ctx ends. It
// is a no-op on nil, a server without a management listener.
func (m *Management) Shutdown(ctx context.Context) error {
	if m == nil {
		return nil
	}
	err := m.http.Shutdown(ctx)
	if err != nil {
		m.http.Close()
	}
	<-m.done
	return err
}

// notReady is why the server should not get traffic now, "" if it should.
func (s *Server) notReady() string {
	if s.shutting.Load() {
		return "shutting down"
	}
	// A remote store's health is probed every second already; a probe
	// per scrape would add a quorum read, and a wait, to each.
	if s.health.unavailable() {
		return "store unavailable: " + s.store.Describe() + " cannot be reached"
	}
	if s.health == nil {
		if err := s.store.Ping(); err != nil {
			return "store unavailable: " + err.Error()
		}
	}
	return ""
}

// slogPrinter sends the metrics handler's complaints (a scraper that hung
// up mid-answer) to the server's log.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics: " + fmt.Sprint(v...)) }
