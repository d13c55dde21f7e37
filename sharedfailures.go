package main

// sharedfailures.go makes the throttle one across the servers of a
// cluster: every failed login a server charges is also written to etcd,
// and every server charges the failures the others wrote, as they arrive
// through a watch. An attacker who spreads guesses over N servers thus
// gets about one allowance, not N. A successful login writes nothing.
//
// The keys are <prefix>failures/<server>/<n>, value "source\x00user",
// under a lease that expires them: they only carry the news, which each
// server's own limiters then remember (and refill) as for a local
// failure. "authbox users unthrottle" on etcd writes
// <prefix>failures/forgive/<n>, value "source\x00user" of what to clear,
// so that every server clears it, and a server that starts within the
// lease replays failures and pardons in the order they were written.
// While etcd is unreachable each server throttles on its own, as a lone
// server does, and the failures it could not write are lost.

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	// failureTTL is how long a failure's key lives in etcd: long enough
	// for a server whose watch broke to catch up from its revision,
	// short enough that the keys stay few (one per failed login per
	// minute). The limiters, not the keys, hold the penalty.
	failureTTL = 60
	// failureLeaseEvery is how often a new lease is taken; keys go under
	// the newest, so each lives between TTL-30 s and TTL seconds.
	failureLeaseEvery = 30 * time.Second
	// failureQueue bounds the failures waiting to be written. A wave of
	// failures beyond it is still charged here; the other servers learn
	// of fewer of them, which the log says.
	failureQueue = 4096
	// failureBatch is how many failures one write carries (etcd allows
	// 128 operations per transaction).
	failureBatch = 100
	// watchRetry is the pause before a broken watch is opened again, so
	// that a lost cluster is not asked in a tight loop.
	watchRetry = 250 * time.Millisecond
)

// sharedFailures writes and watches the cluster's failures.
type sharedFailures struct {
	store  *EtcdStore
	thr    *throttle
	log    *slog.Logger
	id     string
	base   string // <prefix>failures/
	queue  chan string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	seq     atomic.Uint64
	dropped atomic.Int64
	// applied counts failures charged from other servers, pardoned the
	// pardons applied; appliedCh ticks at each, for the tests.
	applied   atomic.Int64
	pardoned  atomic.Int64
	appliedCh chan struct{}
}

// forgiveDir holds the pardons under failures/; no server id (hex) is it.
const forgiveDir = "forgive/"

// forgiveCluster asks every server on store's cluster to clear what an
// unthrottle's target names (see forgiveTarget), now and, for a server
// that starts within failureTTL, at its start.
func forgiveCluster(store *EtcdStore, target string) error {
	src, user, err := forgiveTarget(target)
	if err != nil {
		return err
	}
	id := make([]byte, 8)
	rand.Read(id)
	ctx, cancel := store.ctx()
	defer cancel()
	lease, err := store.cli.Grant(ctx, failureTTL)
	if err != nil {
		return err
	}
	key := store.prefix + "failures/" + forgiveDir + hex.EncodeToString(id)
	_, err = store.cli.Put(ctx, key, src+"\x00"+user, clientv3.WithLease(lease.ID))
	return err
}

// shareFailures starts sharing thr's failures through store.
func shareFailures(store *EtcdStore, thr *throttle, log *slog.Logger) *sharedFailures {
	id := make([]byte, 8)
	rand.Read(id)
	ctx, cancel := context.WithCancel(context.Background())
	f := &sharedFailures{store: store, thr: thr, log: log, id: hex.EncodeToString(id),
		base: store.prefix + "failures/", queue: make(chan string, failureQueue),
		ctx: ctx, cancel: cancel, appliedCh: make(chan struct{}, 1)}
	rev := f.catchUp()
	thr.share = f.enqueue
	f.wg.Add(2)
	go f.writer()
	go f.watcher(rev)
	return f
}

// stop ends the writer and the watch.
func (f *sharedFailures) stop() {
	if f == nil {
		return
	}
	f.cancel()
	f.wg.Wait()
}

// enqueue is the throttle's share hook: it never blocks a login.
func (f *sharedFailures) enqueue(src, user string) {
	select {
	case f.queue <- src + "\x00" + user:
	default:
		if f.dropped.Add(1) == 1 {
			f.log.Warn("failed logins come faster than they can be shared with the other servers; some are charged here only")
		}
	}
}

// writer writes queued failures in batches under the current lease.
func (f *sharedFailures) writer() {
	defer f.wg.Done()
	var lease clientv3.LeaseID
	var leased time.Time
	failing := false
	for {
		var batch []string
		select {
		case <-f.ctx.Done():
			return
		case v := <-f.queue:
			batch = append(batch, v)
		}
	more:
		for len(batch) < failureBatch {
			select {
			case v := <-f.queue:
				batch = append(batch, v)
			default:
				break more
			}
		}
		err := func() error {
			ctx, cancel := context.WithTimeout(f.ctx, etcdOpTimeout)
			defer cancel()
			if lease == 0 || time.Since(leased) > failureLeaseEvery {
				l, err := f.store.cli.Grant(ctx, failureTTL)
				if err != nil {
					return err
				}
				lease, leased = l.ID, time.Now()
			}
			ops := make([]clientv3.Op, len(batch))
			for i, v := range batch {
				key := f.base + f.id + "/" + strconv.FormatUint(f.seq.Add(1), 10)
				ops[i] = clientv3.OpPut(key, v, clientv3.WithLease(lease))
			}
			_, err := f.store.cli.Txn(ctx).Then(ops...).Commit()
			return err
		}()
		switch {
		case err != nil && f.ctx.Err() == nil && !failing:
			failing = true
			f.log.Warn("cannot share failed logins with the other servers; throttling here alone until etcd is back", "err", err)
		case err == nil && failing:
			failing = false
			f.log.Info("sharing failed logins with the other servers again")
		}
	}
}

// catchUp charges the failures of the last failureTTL seconds that are
// still in etcd (a server that just started) and returns the revision to
// watch from.
func (f *sharedFailures) catchUp() int64 {
	ctx, cancel := context.WithTimeout(f.ctx, etcdOpTimeout)
	defer cancel()
	resp, err := f.store.cli.Get(ctx, f.base, clientv3.WithPrefix())
	if err != nil {
		return 0
	}
	// In the order written, not by key: a pardon clears only the failures
	// before it.
	slices.SortFunc(resp.Kvs, func(a, b *mvccpb.KeyValue) int { return cmp.Compare(a.ModRevision, b.ModRevision) })
	for _, kv := range resp.Kvs {
		f.apply(string(kv.Key), kv.Value)
	}
	return resp.Header.Revision + 1
}

// watcher charges every failure another server writes. A watch that
// breaks (etcd lost, a compaction) is taken up again from the revision
// after the last one seen, so nothing in between is missed while etcd
// still has it.
func (f *sharedFailures) watcher(rev int64) {
	defer f.wg.Done()
	for f.ctx.Err() == nil {
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithFilterDelete()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		rev = f.follow(rev, opts)
		select {
		case <-f.ctx.Done():
		case <-time.After(watchRetry):
		}
	}
}

// follow applies one watch's events until it ends or the server stops,
// and returns the revision to take it up from. It waits on the server's
// stop itself: while etcd is unreachable the client closes a cancelled
// watch's channel only once it reaches etcd again.
func (f *sharedFailures) follow(rev int64, opts []clientv3.OpOption) int64 {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(f.ctx))
	defer cancel()
	wch := f.store.cli.Watch(ctx, f.base, opts...)
	for {
		select {
		case <-f.ctx.Done():
			return rev
		case resp, ok := <-wch:
			if ok && resp.CompactRevision > 0 {
				return 0 // gone: start from now
			}
			if !ok || resp.Err() != nil {
				return rev
			}
			for _, ev := range resp.Events {
				f.apply(string(ev.Kv.Key), ev.Kv.Value)
				rev = ev.Kv.ModRevision + 1
			}
		}
	}
}

// apply charges one failure from the cluster, unless this server wrote
// it, or clears what a pardon names.
func (f *sharedFailures) apply(key string, val []byte) {
	if strings.HasPrefix(key, f.base+f.id+"/") {
		return
	}
	src, user, ok := strings.Cut(string(val), "\x00")
	if !ok {
		return
	}
	if strings.HasPrefix(key, f.base+forgiveDir) {
		n := f.thr.forgive(src, user)
		f.log.Info("throttle cleared for the cluster", "source", src, "user", user, "entries", n)
		f.pardoned.Add(1)
	} else {
		f.thr.charge(src, user, time.Now())
		f.applied.Add(1)
	}
	tick(f.appliedCh)
}
