package main

// metrics.go is what the server counts for an operator: Prometheus
// collectors, resolved to their label values once, so that the hot path
// pays a few atomic adds and never a label lookup. A server without a
// management listener has no metrics (a nil *metrics), and every method is
// a no-op on nil, so that the cost of metrics can be measured against none.

import (
	"errors"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Label values. No label ever carries a username or an address: those are
// unbounded, and they belong in the log, which says who; metrics say how
// many.
const (
	outcomeOK     = "ok"
	outcomeAuth   = "auth"
	outcomeLocked = "locked"
	outcomeLimit  = "limit"
	outcomeError  = "error"
	outcomeExists = "exists"
	outcomeClosed = "closed"
	outcomeEnded  = "ended"

	refusedQueueFull    = "queue_full"
	refusedSourceCap    = "source_cap"
	refusedQueueTimeout = "queue_timeout"
	refusedShutdown     = "shutting_down"
	refusedHandshake    = "tls_handshake"
	refusedStoreDown    = "store_unavailable"

	throttleSource = "source"
	throttlePair   = "pair"

	// mechOther stands for a mechanism the server does not offer, which
	// the client names and so must not become a label value.
	mechOther = "other"
)

var (
	loginOutcomes    = []string{outcomeOK, outcomeAuth, outcomeLocked, outcomeLimit, outcomeError}
	registerOutcomes = []string{outcomeOK, outcomeExists, outcomeClosed, outcomeLimit, outcomeError}
	passwdOutcomes   = []string{outcomeOK, outcomeEnded, outcomeError}
	refusedReasons   = []string{refusedQueueFull, refusedSourceCap, refusedQueueTimeout, refusedShutdown, refusedHandshake, refusedStoreDown}
	storeOps         = []string{"get", "create", "update", "delete"}
)

// metrics holds one server's collectors in a registry of its own, so that
// two servers in one process (as in the tests) never share a count.
type metrics struct {
	reg *prometheus.Registry

	logins        map[string]map[string]prometheus.Counter // mechanism → outcome
	registrations map[string]prometheus.Counter
	passwords     map[string]prometheus.Counter
	cbMismatch    prometheus.Counter
	cbDowngrade   prometheus.Counter
	throttled     map[string]prometheus.Counter
	accepted      prometheus.Counter
	refused       map[string]prometheus.Counter
	busyWorkers   prometheus.Gauge
	loginSeconds  prometheus.Histogram
	storeSeconds  map[string]prometheus.Observer
	storeErrors   map[string]prometheus.Counter
}

// newMetrics makes the collectors for s and registers them, with the Go
// runtime's and the process's own. Gauges that are a length somewhere are
// read at scrape time, so that they cost the hot path nothing.
func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "authbox_build_info",
		Help: "Always 1; its labels say which authbox is running."}, []string{"version", "goversion", "store"})
	build.WithLabelValues(version(), runtime.Version(), s.cfg.Store).Set(1)
	f(build)

	logins := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authbox_logins_total",
		Help: "Logins that reached an answer, by mechanism and outcome (ok, auth: wrong password or unknown name, locked, limit: throttled, error: malformed)."},
		[]string{"mechanism", "outcome"})
	m.logins = map[string]map[string]prometheus.Counter{}
	for _, mech := range append([]string{MechPlus, MechSCRAM, MechSeed}, mechOther) {
		m.logins[mech] = resolve(logins, loginOutcomes, mech)
	}
	f(logins)

	regs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authbox_registrations_total",
		Help: "REGISTER commands by outcome (ok, exists, closed: registration is off, limit, error)."}, []string{"outcome"})
	m.registrations = resolve(regs, registerOutcomes)
	f(regs)

	pw := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authbox_password_changes_total",
		Help: "PASSWD commands by outcome (ok, ended: the session's account had changed, error)."}, []string{"outcome"})
	m.passwords = resolve(pw, passwdOutcomes)
	f(pw)

	m.cbMismatch = prometheus.NewCounter(prometheus.CounterOpts{Name: "authbox_channel_binding_mismatches_total",
		Help: "SCRAM-SHA-256-PLUS logins whose channel binding did not match this connection's: the mark of a relay in the middle."})
	m.cbDowngrade = prometheus.NewCounter(prometheus.CounterOpts{Name: "authbox_channel_binding_downgrades_total",
		Help: "Logins refused because the client saw no SCRAM-SHA-256-PLUS offered where this connection offered it: an altered greeting."})
	f(m.cbMismatch)
	f(m.cbDowngrade)

	thr := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authbox_throttle_refusals_total",
		Help: "Attempts refused with ERR LIMIT, by the allowance that ran out (source, or pair: one source and one username)."}, []string{"kind"})
	m.throttled = resolve(thr, []string{throttleSource, throttlePair})
	f(thr)
	for kind, n := range map[string]func() int{throttleSource: s.thr.sourceEntries, throttlePair: s.thr.pairEntries} {
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authbox_throttle_entries",
			Help: "Entries held in the throttle's failure tables (bounded by throttle_entries each).", ConstLabels: prometheus.Labels{"kind": kind}},
			func() float64 { return float64(n()) }))
	}

	m.accepted = prometheus.NewCounter(prometheus.CounterOpts{Name: "authbox_connections_accepted_total",
		Help: "TCP connections accepted on the protocol port."})
	f(m.accepted)
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authbox_connections_refused_total",
		Help: "Accepted connections not served, by reason."}, []string{"reason"})
	m.refused = resolve(refused, refusedReasons)
	f(refused)

	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authbox_queue_depth",
		Help: "Accepted connections waiting for a worker."}, func() float64 { return float64(len(s.queue)) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authbox_queue_capacity",
		Help: "The queue setting: how many connections may wait."}, func() float64 { return float64(cap(s.queue)) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authbox_workers",
		Help: "The workers setting: how many connections are served at once."}, func() float64 { return float64(s.cfg.Workers) }))
	m.busyWorkers = prometheus.NewGauge(prometheus.GaugeOpts{Name: "authbox_workers_busy",
		Help: "Workers serving a connection now."})
	f(m.busyWorkers)

	m.loginSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "authbox_login_duration_seconds",
		Help: "Time from AUTH to the login's final answer, as the server sees it (includes the client's round trip).",
		// A login is two round trips and a few hashes: under a
		// millisecond on loopback, tens of milliseconds across a network.
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9)})
	f(m.loginSeconds)

	storeSecs := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "authbox_store_operation_duration_seconds",
		Help:    "Time the server's store operations took, by operation. A write includes its fsync.",
		Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10)}, []string{"op"})
	storeErrs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authbox_store_errors_total",
		Help: "Store operations that failed for a reason other than the answer itself (not found, exists), by operation."}, []string{"op"})
	m.storeSeconds = map[string]prometheus.Observer{}
	for _, op := range storeOps {
		m.storeSeconds[op] = storeSecs.WithLabelValues(op)
	}
	m.storeErrors = resolve(storeErrs, storeOps)
	f(storeSecs)
	f(storeErrs)
	return m
}

// resolve looks up every value of vec's last label once, after the fixed
// leading ones.
func resolve(vec *prometheus.CounterVec, values []string, leading ...string) map[string]prometheus.Counter {
	out := make(map[string]prometheus.Counter, len(values))
	for _, v := range values {
		out[v] = vec.WithLabelValues(append(leading, v)...)
	}
	return out
}

func (m *metrics) login(mech, outcome string) {
	if m == nil {
		return
	}
	byOutcome, ok := m.logins[mech]
	if !ok {
		byOutcome = m.logins[mechOther]
	}
	byOutcome[outcome].Inc()
}

// loginDone counts a login's final answer and how long it took since AUTH.
func (m *metrics) loginDone(mech, outcome string, since time.Time) {
	if m == nil {
		return
	}
	m.login(mech, outcome)
	if !since.IsZero() {
		m.loginSeconds.Observe(time.Since(since).Seconds())
	}
}

func (m *metrics) registration(outcome string) {
	if m != nil {
		m.registrations[outcome].Inc()
	}
}

func (m *metrics) passwordChange(outcome string) {
	if m != nil {
		m.passwords[outcome].Inc()
	}
}

func (m *metrics) channelBindingMismatch() {
	if m != nil {
		m.cbMismatch.Inc()
	}
}

func (m *metrics) channelBindingDowngrade() {
	if m != nil {
		m.cbDowngrade.Inc()
	}
}

func (m *metrics) throttleRefusal(perUser bool) {
	if m == nil {
		return
	}
	if perUser {
		m.throttled[throttlePair].Inc()
	} else {
		m.throttled[throttleSource].Inc()
	}
}

func (m *metrics) accept() {
	if m != nil {
		m.accepted.Inc()
	}
}

func (m *metrics) refuse(reason string) {
	if m != nil {
		m.refused[reason].Inc()
	}
}

func (m *metrics) workerBusy(delta float64) {
	if m != nil {
		m.busyWorkers.Add(delta)
	}
}

// timedStore is the server's view of its store: the same store, each
// operation a login or an account change makes timed into the metrics,
// and a failure of a remote store reported to its health.
type timedStore struct {
	Storage
	m  *metrics
	h  *health
	wc writeCounter // Storage as a writeCounter, nil if it is none
}

// writeCounter is a store whose every write goes through it, so that a
// count of its writes says whether anything changed (see Store.Writes).
// An etcd store has other writers, the other servers, and is not one.
type writeCounter interface{ Writes() uint64 }

// writes is the store's count of writes, and false if it keeps none.
func (t timedStore) writes() (uint64, bool) {
	if t.wc == nil {
		return 0, false
	}
	return t.wc.Writes(), true
}

func (t timedStore) Get(name string) (Record, error) {
	start := t.m.now()
	rec, err := t.Storage.Get(name)
	return rec, t.done("get", start, err, ErrNotFound)
}

func (t timedStore) Create(name string, rec Record) error {
	start := t.m.now()
	return t.done("create", start, t.Storage.Create(name, rec), ErrExists)
}

func (t timedStore) Update(name string, fn func(Record) (Record, error)) error {
	start := t.m.now()
	return t.done("update", start, t.Storage.Update(name, fn), ErrNotFound, errSessionEnded)
}

func (t timedStore) DeleteIf(name string, fn func(Record) error) error {
	start := t.m.now()
	return t.done("delete", start, t.Storage.DeleteIf(name, fn), ErrNotFound, errSessionEnded)
}

// done records an operation and returns its error, marked when it was a
// failure of the store rather than an answer (not found, exists, a
// changed session).
func (t timedStore) done(op string, start time.Time, err error, answers ...error) error {
	failed := err != nil
	for _, a := range answers {
		if failed && errors.Is(err, a) {
			failed = false
		}
	}
	t.m.storeDone(op, start, failed)
	if failed {
		return t.h.failed(err)
	}
	return err
}

// now is the start of a timed operation; without metrics nothing is timed.
func (m *metrics) now() time.Time {
	if m == nil {
		return time.Time{}
	}
	return time.Now()
}

// storeDone records one store operation.
func (m *metrics) storeDone(op string, start time.Time, failed bool) {
	if m == nil {
		return
	}
	m.storeSeconds[op].Observe(time.Since(start).Seconds())
	if failed {
		m.storeErrors[op].Inc()
	}
}
