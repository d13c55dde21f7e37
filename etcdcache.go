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

type cachedTomb struct {
	name string
	rev  int64
}

type etcdCache struct {
	s    *EtcdStore
	base string // <prefix>users/
	meta string // <prefix>meta/, watched too: the secret and the tally

	mu   sync.RWMutex
	recs map[string]cachedRecord
	seen int64 // the highest revision the watch has delivered
	// tombs are the deleted names recs still holds, dropped once the
	// watch is past their delete: no older event can come then.
	tombs []cachedTomb

	// epoch is the cache's start: fresh counts from it on the monotonic
	// clock, so that a step of the wall clock cannot stretch the bound.
	epoch time.Time
	// fresh is when (ns since epoch) the cache was last known complete;
	// confirmed ticks at each confirmation and changed at each watch
	// response applied, for the tests to wait on.
	fresh     atomic.Int64
	confirmed chan struct{}
	changed   chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// startCache fills the cache and keeps it; Get uses it from then on. A
// cache started before is stopped: one store follows one watch.
func (s *EtcdStore) startCache() *etcdCache {
	ctx, cancel := context.WithCancel(context.Background())
	c := &etcdCache{s: s, base: s.prefix + "users/", meta: s.prefix + "meta/", ctx: ctx, cancel: cancel, epoch: time.Now(),
		confirmed: make(chan struct{}, 1), changed: make(chan struct{}, 1)}
	c.fresh.Store(never)
	if old := s.cache.Swap(c); old != nil {
		old.stop()
	}
	c.wg.Add(1)
	go c.run()
	return c
}

// stopCache ends the store's cache, if c is it (a server stops the cache
// it started, not one a later server started on the same store); nil
// stops whichever there is. Get reads etcd again.
func (s *EtcdStore) stopCache(c *etcdCache) {
	if c == nil {
		c = s.cache.Swap(nil)
	} else if !s.cache.CompareAndSwap(c, nil) {
		return
	}
	if c != nil {
		c.stop()
	}
}

func (c *etcdCache) stop() {
	c.cancel()
	c.wg.Wait()
}

// run loads a snapshot and follows it with a watch, again from the start
// whenever the watch ends, until stopped.
func (c *etcdCache) run() {
	defer c.wg.Done()
	for c.ctx.Err() == nil {
		c.fresh.Store(never)
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

// load reads every account at one revision into a new map, and the meta
// values that shape fake salts at the same revision.
func (c *etcdCache) load() (int64, error) {
	recs := map[string]cachedRecord{}
	rev, err := c.s.eachRawAt(c.ctx, func(name string, val []byte, mod int64) error {
		recs[name] = cachedRecord{val: val, rev: mod}
		return nil
	})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(c.ctx, etcdOpTimeout)
	resp, err := c.s.cli.Get(ctx, c.meta, clientv3.WithPrefix(), clientv3.WithRev(rev))
	cancel()
	if err != nil {
		return 0, err
	}
	for _, kv := range resp.Kvs {
		c.s.metaChanged(strings.TrimPrefix(string(kv.Key), c.meta), kv.Value)
	}
	c.mu.Lock()
	c.recs, c.seen, c.tombs = recs, rev, nil
	c.mu.Unlock()
	return rev, nil
}

// follow applies the watch's events from rev on, and confirms completeness
// every cacheProbeEvery, until the watch ends.
func (c *etcdCache) follow(rev int64) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(c.ctx))
	defer cancel()
	// One watch over meta/ and users/ (no other key sorts between them;
	// failures/ comes before), so that one confirmation covers both.
	wch := c.s.cli.Watch(ctx, c.meta, clientv3.WithRange(clientv3.GetPrefixRangeEnd(c.base)), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
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
				key := string(ev.Kv.Key)
				if name, ok := strings.CutPrefix(key, c.base); ok {
					c.apply(name, eventValue(ev), ev.Kv.ModRevision)
				} else if name, ok := strings.CutPrefix(key, c.meta); ok {
					c.s.metaChanged(name, eventValue(ev))
				}
			}
			upto := deliveredUpTo(resp)
			c.mu.Lock()
			c.seen = max(c.seen, upto)
			c.mu.Unlock()
			tick(c.changed)
			if want != 0 && c.upTo(want) {
				c.confirm(asked)
				want = 0
			}
		}
	}
}

// deliveredUpTo is the revision up to which a watch response shows the
// watch has delivered every event: an event batch only as far as its last
// event, since a watcher catching up gets its backlog in batches that each
// carry the cluster's current revision in the header; the header only of
// a progress notice, which etcd sends once the watcher is caught up. 0
// when the response shows nothing (the watch's creation, say).
func deliveredUpTo(resp clientv3.WatchResponse) int64 {
	if n := len(resp.Events); n > 0 {
		return resp.Events[n-1].Kv.ModRevision
	}
	if resp.IsProgressNotify() {
		return resp.Header.Revision
	}
	return 0
}

// never is fresh before any confirmation: far enough before epoch that the
// cache is not current.
const never = -1 << 62

// current reports whether the cache was known complete less than
// cacheStaleness ago.
func (c *etcdCache) current() bool {
	return time.Since(c.epoch)-time.Duration(c.fresh.Load()) <= cacheStaleness
}

// freshAt is when the cache was last known complete.
func (c *etcdCache) freshAt() time.Time {
	return c.epoch.Add(time.Duration(c.fresh.Load()))
}

// confirm records that the cache held every write made before at.
func (c *etcdCache) confirm(at time.Time) {
	c.fresh.Store(int64(at.Sub(c.epoch)))
	c.prune()
	tick(c.confirmed)
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
	if val == nil {
		c.tombs = append(c.tombs, cachedTomb{name, rev})
	}
}

// prune drops the deleted names the watch is past.
func (c *etcdCache) prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	keep := c.tombs[:0]
	for _, t := range c.tombs {
		switch r, ok := c.recs[t.name]; {
		case t.rev > c.seen:
			keep = append(keep, t)
		case ok && r.val == nil && r.rev == t.rev:
			delete(c.recs, t.name)
		}
	}
	clear(c.tombs[len(keep):])
	c.tombs = keep
}

// get answers from the cache if it was known complete recently enough:
// found reports the account exists, ok that the cache could answer.
func (c *etcdCache) get(name string) (val []byte, found, ok bool) {
	if !c.current() {
		return nil, false, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	r := c.recs[name]
	return r.val, r.val != nil, true
}
