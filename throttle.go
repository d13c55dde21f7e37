package main

// throttle.go holds the server's defences that keep per-source state: a cap
// on concurrent connections from one source, and the throttling of failed
// logins per source and per (source, username), in the spirit of Dovecot's
// auth penalty. All of its state is bounded in memory.

import (
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// evictDivisor sets how much of a full failure table one eviction pass
// frees: 1/evictDivisor of it (a tenth). A pass scans the whole table, so
// it must free enough room that passes stay rare even while an attacker
// fills the table on purpose.
const evictDivisor = 10

// throttle tracks connections and failed logins by source.
type throttle struct {
	maxConns   int
	maxEntries int
	srcLimit   rate.Limit
	srcBurst   int
	userLimit  rate.Limit
	userBurst  int

	mu       sync.Mutex
	conns    map[string]int
	sources  map[string]*bucket
	pairs    map[pairKey]*bucket
	inflight map[pairKey]int // logins under way per pair; at most one per worker

	// share, when set, is told of every failure charged here, outside
	// the lock, so that the other servers of a cluster charge it too.
	share func(src, user string)
}

// pairKey is a (source, user) pair: two strings the conn already holds,
// where one joined string would be made for every login.
type pairKey struct{ src, user string }

// bucket is the failure allowance of one source or (source, user) pair.
type bucket struct {
	lim *rate.Limiter
}

func newThrottle(cfg Config) *throttle {
	return &throttle{
		maxConns:   cfg.MaxConnsPerSource,
		maxEntries: cfg.ThrottleEntries,
		srcLimit:   rate.Every(cfg.SourceFailureRefill.Duration),
		srcBurst:   cfg.SourceFailures,
		userLimit:  rate.Every(cfg.UserFailureRefill.Duration),
		userBurst:  cfg.UserFailures,
		conns:      make(map[string]int),
		sources:    make(map[string]*bucket),
		pairs:      make(map[pairKey]*bucket),
		inflight:   make(map[pairKey]int),
	}
}

// sourceKey is the unit of "one source": an IPv4 address, or an IPv6 /64,
// since one IPv6 host is normally given a whole /64 and would otherwise
// have 2^64 fresh addresses to guess from.
func sourceKey(addr net.Addr) string {
	// Every accepted connection is keyed: from the address itself where
	// it can be, not by formatting it and parsing that back.
	if ta, ok := addr.(*net.TCPAddr); ok && ta.Zone == "" {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ipSourceKey(ip)
		}
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return ipSourceKey(ap.Addr())
}

func ipSourceKey(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// connOpen counts a new connection from src; false if src is at its cap.
func (t *throttle) connOpen(src string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns[src] >= t.maxConns {
		return false
	}
	t.conns[src]++
	return true
}

// connClose uncounts a connection. The map holds only sources with open
// connections, so it is bounded by the workers and the queue.
func (t *throttle) connClose(src string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns[src] <= 1 {
		delete(t.conns, src)
	} else {
		t.conns[src]--
	}
}

// attempt is one login under way: the source and (source, user) pair a
// failure will be charged to.
type attempt struct {
	src, user string
	// free marks the second half of a SCRAM/SEED pair: not counted.
	free bool
	// unanswered marks a SEED-SHA256 challenge whose response has not
	// been checked: ended so, it counts as a failure (see startSeed).
	unanswered bool
}

// begin starts a login attempt, or says how long src must wait and
// whether it is the (source, user) allowance that ran out.
//
// Logins under way count against their pair's allowance as if they had
// failed, so that a wave of parallel guesses at one account cannot all be
// checked before the first failure is charged. They do not count against
// the source's allowance: a backend may log many different users in at
// once. A wave spread over many names is instead paid for afterwards, as
// debt (see end).
//
// The attempt is written to *a, which the connection holds, rather than
// allocated: every login begins one.
func (t *throttle) begin(a *attempt, src, user string, now time.Time) (ok bool, wait time.Duration, perUser bool) {
	pair := pairKey{src, user}
	t.mu.Lock()
	defer t.mu.Unlock()
	if b := t.sources[src]; b != nil {
		wait = b.wait(now, 0)
	}
	// A pair with no failure on record has its whole allowance: only the
	// logins under way count, and they need no limiter.
	inflight := t.inflight[pair]
	pw := time.Duration(0)
	if b := t.pairs[pair]; b != nil {
		pw = b.wait(now, inflight)
	} else if inflight >= t.userBurst {
		pw = time.Second
	}
	if pw > wait {
		wait, perUser = pw, true
	}
	if wait > 0 {
		return false, wait, perUser
	}
	t.inflight[pair] = inflight + 1
	*a = attempt{src: src, user: user}
	return true, 0, false
}

// end finishes an attempt. A failure spends one unit of both allowances;
// past zero it runs into debt, so a source that keeps failing waits longer
// and longer, as with Dovecot's growing penalty, and the sustained rate
// stays at the refill rate whatever the parallelism.
func (t *throttle) end(a *attempt, failed bool, now time.Time) {
	if a == nil || a.free {
		return
	}
	t.mu.Lock()
	pair := pairKey{a.src, a.user}
	if n := t.inflight[pair]; n > 1 {
		t.inflight[pair] = n - 1
	} else {
		delete(t.inflight, pair)
	}
	if failed {
		t.chargeLocked(pair, now)
	}
	t.mu.Unlock()
	if failed && t.share != nil {
		t.share(a.src, a.user)
	}
}

// charge spends a failure that another server of the cluster charged.
func (t *throttle) charge(src, user string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.chargeLocked(pairKey{src, user}, now)
}

func (t *throttle) chargeLocked(pair pairKey, now time.Time) {
	bucketIn(t, t.sources, pair.src, t.srcLimit, t.srcBurst, now).lim.ReserveN(now, 1)
	bucketIn(t, t.pairs, pair, t.userLimit, t.userBurst, now).lim.ReserveN(now, 1)
}

// wait is how long until one more attempt fits the allowance, with
// inflight attempts already under way. When only those stand in the way,
// the answer is a second: they end within a line timeout.
func (b *bucket) wait(now time.Time, inflight int) time.Duration {
	tokens := b.lim.TokensAt(now)
	need := 1 + float64(inflight) - tokens
	if need <= 0 {
		return 0
	}
	if tokens >= 1 {
		return time.Second
	}
	secs := (1 - tokens) / float64(b.lim.Limit())
	return time.Duration(math.Ceil(secs)) * time.Second
}

// full reports whether a bucket remembers nothing: its whole allowance is
// back. Such a bucket can be dropped and made anew when needed.
func (b *bucket) full(now time.Time) bool {
	return b.lim.TokensAt(now) >= float64(b.lim.Burst())
}

// bucketIn returns key's bucket in m, making room for a new one if the
// table is full: first by dropping buckets that remember nothing, then by
// dropping buckets at random (Go's map order) until a tenth of the table
// is free.
// Random eviction forgives some penalties under a flood of sources, but
// keeps memory bounded whatever an attacker does.
func bucketIn[K comparable](t *throttle, m map[K]*bucket, key K, lim rate.Limit, burst int, now time.Time) *bucket {
	if b, ok := m[key]; ok {
		return b
	}
	if len(m) >= t.maxEntries {
		for k, b := range m {
			if b.full(now) {
				delete(m, k)
			}
		}
		target := t.maxEntries - t.maxEntries/evictDivisor
		for k := range m {
			if len(m) < target {
				break
			}
			delete(m, k)
		}
	}
	b := &bucket{lim: rate.NewLimiter(lim, burst)}
	m[key] = b
	return b
}

// sourceEntries and pairEntries are the sizes of the two failure tables.
func (t *throttle) sourceEntries() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sources)
}

func (t *throttle) pairEntries() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pairs)
}

// entries is the number of buckets held, for tests and the memory bound.
func (t *throttle) entries() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sources) + len(t.pairs)
}

// forgive drops the failures on record, so that the logins they hold back
// may go ahead at once: those of source src and of its (source, user)
// pairs; or, with src "", those of user's pairs from every source (the
// sources' own allowances stay: they are shared by every name); or, with
// both "", all of them. Connections and logins under way are not
// failures, and are kept. It returns the number of entries dropped.
func (t *throttle) forgive(src, user string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	if user == "" {
		for k := range t.sources {
			if src == "" || k == src {
				delete(t.sources, k)
				n++
			}
		}
	}
	for k := range t.pairs {
		if (src == "" || k.src == src) && (user == "" || k.user == user) {
			delete(t.pairs, k)
			n++
		}
	}
	return n
}

// Forgive is forgive for "authbox users unthrottle": target is an IP
// address (its source: an IPv6 address stands for its /64), a username,
// or "" for everything.
func (s *Server) Forgive(target string) (int, error) {
	src, user, err := forgiveTarget(target)
	if err != nil {
		return 0, err
	}
	n := s.thr.forgive(src, user)
	s.log.Info("throttle cleared", "source", src, "user", user, "entries", n)
	return n, nil
}

// forgiveTarget is what forgive clears for an unthrottle's target.
func forgiveTarget(target string) (src, user string, err error) {
	if target == "" {
		return "", "", nil
	}
	if ip, err := netip.ParseAddr(target); err == nil {
		return ipSourceKey(ip), "", nil
	}
	name, err := NormalizeUsername(target)
	if err != nil {
		return "", "", adminFail(AdminRefused, "give a username or an IP address, or nothing to clear everything", "%q is neither an IP address nor a valid username", target)
	}
	return "", name, nil
}
