package main

// etcdcache.go keeps a server's copy of the cluster's accounts in memory,
// fed by a watch, so that a login reads memory instead of making a quorum
// read of etcd (which cost as much server CPU again as the whole login,
// and most of etcd's). Its staleness is bounded, not hoped for: every
// cacheProbeEvery the server makes a quorum read to learn the cluster's
// revision, and asks the watch for a progress notice; once the watch has
// delivered everything up to that revision, the cache is known complete as
// of the moment of the read. A login uses the cache only if it was known
// complete less than cacheStaleness ago; otherwise (the watch broke, the
// member behind it lags or lost its leader, etcd is unreachable) it reads
// etcd itself, as without a cache. A change committed anywhere is thus
// seen by every server's next login within cacheStaleness at worst; in
// practice the watch delivers it in milliseconds. A server's own writes go
// into its cache as they commit.

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	// cacheProbeEvery is how often the cache's completeness is checked:
	// four quorum reads a second per server, each a few hundred bytes.
	cacheProbeEvery = 250 * time.Millisecond
	// cacheStaleness is the oldest a confirmation may be for a login to
	// use the cache. Under the bound of a second, with room for a
	// probe that is slow once.
	cacheStaleness = 750 * time.Millisecond
)

// cachedRecord is one account as the cache holds it: its encoding, nil
// for a name deleted (kept, so that an older event cannot bring it back),
// and the revision that wrote it.
type cachedRecord struct {
	val []byte
	rev int64
}

type etcdCache struct {
	s    *EtcdStore
	base string // <prefix>users/

	mu   sync.RWMutex
	recs map[string]cachedRecord
	seen int64 // the highest revision the watch has delivered

	// fresh is when (unix ns) the cache was last known complete;
	// confirmed ticks at each confirmation, for the tests.
	fresh     atomic.Int64
	confirmed chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// startCache fills the cache and keeps it; Get uses it from then on.
func (s *EtcdStore) startCache() {
	ctx, cancel := context.WithCancel(context.Background())
	c := &etcdCache{s: s, base: s.prefix + "users/", ctx: ctx, cancel: cancel, confirmed: make(chan struct{}, 1)}
	s.cache.Store(c)
	c.wg.Add(1)
	go c.run()
}

// stopCache ends the watch; Get reads etcd again.
func (s *EtcdStore) stopCache() {
	c := s.cache.Swap(nil)
	if c == nil {
		return
	}
	c.cancel()
	c.wg.Wait()
}

// run loads a snapshot and follows it with a watch, again from the start
// whenever the watch ends, until stopped.
func (c *etcdCache) run() {
	defer c.wg.Done()
	for c.ctx.Err() == nil {
		c.fresh.Store(0)
		rev, err := c.load()
		if err == nil {
			c.follow(rev)
		}
		select {
		case <-c.ctx.Done():
		case <-time.After(watchRetry):
		}
	}
}

// load reads every account at one revision into a new map.
func (c *etcdCache) load() (int64, error) {
	recs := map[string]cachedRecord{}
	rev, err := c.s.eachRawAt(c.ctx, func(name string, val []byte, mod int64) error {
		recs[name] = cachedRecord{val: val, rev: mod}
		return nil
	})
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.recs, c.seen = recs, rev
	c.mu.Unlock()
	return rev, nil
}

// follow applies the watch's events from rev on, and confirms completeness
// every cacheProbeEvery, until the watch ends.
func (c *etcdCache) follow(rev int64) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(c.ctx))
	defer cancel()
	wch := c.s.cli.Watch(ctx, c.base, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	probe := time.NewTicker(cacheProbeEvery)
	defer probe.Stop()
	var asked time.Time // when the pending confirmation's revision was read
	var want int64      // that revision
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-probe.C:
			if want != 0 && time.Since(asked) < cacheStaleness {
				continue // the last one may still come back
			}
			now := time.Now()
			r, err := c.s.revision(c.ctx)
			if err != nil {
				continue // no confirmation: the cache ages, logins read etcd
			}
			asked, want = now, r
			if c.upTo(want) {
				c.confirm(asked)
				want = 0
				continue
			}
			c.s.cli.RequestProgress(ctx)
		case resp, ok := <-wch:
			if !ok || resp.Canceled || resp.Err() != nil {
				return
			}
			for _, ev := range resp.Events {
				c.apply(strings.TrimPrefix(string(ev.Kv.Key), c.base), eventValue(ev), ev.Kv.ModRevision)
			}
			c.mu.Lock()
			c.seen = max(c.seen, resp.Header.Revision)
			c.mu.Unlock()
			if want != 0 && c.upTo(want) {
				c.confirm(asked)
				want = 0
			}
		}
	}
}

// confirm records that the cache held every write made before at.
func (c *etcdCache) confirm(at time.Time) {
	c.fresh.Store(at.UnixNano())
	select {
	case c.confirmed <- struct{}{}:
	default:
	}
}

// eventValue is a put's value, or nil for a delete.
func eventValue(ev *clientv3.Event) []byte {
	if ev.Type == clientv3.EventTypeDelete {
		return nil
	}
	return ev.Kv.Value
}

// upTo reports whether the watch has delivered everything up to rev.
func (c *etcdCache) upTo(rev int64) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.seen >= rev
}

// apply records a write at rev, unless the cache holds a newer one.
func (c *etcdCache) apply(name string, val []byte, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recs == nil {
		return
	}
	if old, ok := c.recs[name]; ok && old.rev >= rev {
		return
	}
	c.recs[name] = cachedRecord{val: val, rev: rev}
}

// get answers from the cache if it was known complete recently enough:
// found reports the account exists, ok that the cache could answer.
func (c *etcdCache) get(name string) (val []byte, found, ok bool) {
	if time.Since(time.Unix(0, c.fresh.Load())) > cacheStaleness {
		return nil, false, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	r := c.recs[name]
	return r.val, r.val != nil, true
}
