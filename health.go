package main

// health.go watches a store that lives elsewhere (etcd): whether it can be
// reached now. While it cannot, new connections are told ERR BUSY at once,
// so that clients move on to another server instead of waiting for a
// login that cannot finish, and the log says so once per change of state,
// not once per connection.

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// healthProbeEvery is how often a remote store is probed. A second bounds
// how long new clients are sent to a server that lost its store, and how
// long they are turned away after it came back; a probe is one small
// quorum read.
const healthProbeEvery = time.Second

// errStoreUnavailable marks a store operation that failed because the
// store could not be reached: the connection is told ERR BUSY and closed,
// as at connect (spec §2), rather than ERR INTERNAL.
var errStoreUnavailable = errors.New("the account store is unreachable")

// health is the state of a remote store; nil for the bbolt file, which
// is either open or the server is not running.
type health struct {
	store Storage
	log   *slog.Logger
	down  atomic.Bool
	kick  chan struct{} // a failed operation asks for a probe now
	stop  chan struct{}
	// ctx ends at halt, and with it a probe under way.
	ctx    context.Context
	cancel context.CancelFunc
	done   sync.WaitGroup
	mu     sync.Mutex // serializes probes, so state changes log in order
	once   sync.Once
	// failLogged is set once a command's store failure was logged, and
	// cleared when the store is reachable again: one line per outage.
	failLogged atomic.Bool
}

func newHealth(store Storage, log *slog.Logger) *health {
	if _, local := store.(*Store); local {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &health{store: store, log: log, kick: make(chan struct{}, 1), stop: make(chan struct{}), ctx: ctx, cancel: cancel}
}

// start probes until Shutdown calls halt.
func (h *health) start() {
	if h == nil {
		return
	}
	h.probe()
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		t := time.NewTicker(healthProbeEvery)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
			case <-h.kick:
			}
			if h.ctx.Err() != nil {
				return // select picks at random among ready cases
			}
			h.probe()
		}
	}()
}

func (h *health) halt() {
	if h == nil {
		return
	}
	h.once.Do(func() { h.cancel(); close(h.stop) })
	h.done.Wait()
}

// probe reads the store once and logs a change of state.
func (h *health) probe() {
	h.mu.Lock()
	defer h.mu.Unlock()
	var err error
	if p, ok := h.store.(interface{ PingContext(context.Context) error }); ok {
		err = p.PingContext(h.ctx)
	} else {
		err = h.store.Ping()
	}
	if h.ctx.Err() != nil {
		return // halted: the answer says nothing of the store
	}
	if was := h.down.Swap(err != nil); was != (err != nil) {
		if err != nil {
			h.log.Warn("store unreachable: new connections get ERR BUSY until it is back", "store", h.store.Describe(), "err", err)
		} else {
			h.log.Info("store reachable again", "store", h.store.Describe())
		}
	}
	if err == nil {
		h.failLogged.Store(false)
	}
}

// commandFailed logs the first command of an outage that the store
// failed; the rest are counted by the store metrics, not logged.
func (h *health) commandFailed(log *slog.Logger, remote string, err error) {
	if h != nil && !h.failLogged.CompareAndSwap(false, true) {
		return
	}
	log.Warn("store unreachable during a command; later ones until it is back are not logged", "remote", remote, "err", err)
}

// unavailable reports whether new connections should be turned away.
func (h *health) unavailable() bool { return h != nil && h.down.Load() }

// failed is told of an operation that failed for a reason other than its
// answer. If the store could not be reached, it asks for a probe at once
// and marks the error so that the connection is told BUSY; any other
// failure (a record that does not decode, an account fought over) is the
// store's answer, and stays an error of its own.
func (h *health) failed(err error) error {
	if h == nil || err == nil {
		return err
	}
	if u, ok := h.store.(interface{ Unreachable(error) bool }); ok && !u.Unreachable(err) {
		return err
	}
	tick(h.kick)
	return errors.Join(errStoreUnavailable, err)
}
