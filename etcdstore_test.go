package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// etcdCluster is a real etcd cluster of embedded members on loopback.
type etcdCluster struct {
	t       testing.TB
	cfgs    []*embed.Config
	members []*embed.Etcd
}

// freePorts returns n loopback ports free a moment ago. etcd must be told
// its peers' ports before any member listens, so ":0" cannot be used.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// startEtcd starts an n-member cluster and waits until it has a leader;
// t.Cleanup stops it.
func startEtcd(t testing.TB, n int) *etcdCluster {
	t.Helper()
	ports := freePorts(t, 2*n)
	c := &etcdCluster{t: t}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, ports[2*i+1]))
	}
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = t.TempDir()
		cu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}
		pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "authbox-test"
		// A short election: the leader-loss tests wait for one.
		cfg.TickMs, cfg.ElectionMs = 20, 200
		// Its log goes to a file: a member stopped on purpose logs errors.
		cfg.LogLevel = "warn"
		cfg.LogOutputs = []string{filepath.Join(t.TempDir(), "etcd.log")}
		c.cfgs = append(c.cfgs, cfg)
	}
	c.members = make([]*embed.Etcd, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			e, err := embed.StartEtcd(c.cfgs[i])
			c.members[i] = e
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			c.stop()
			t.Fatal(err)
		}
	}
	t.Cleanup(c.stop)
	for i, e := range c.members {
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			t.Fatalf("etcd member %d not ready", i)
		}
	}
	return c
}

func (c *etcdCluster) stop() {
	for _, e := range c.members {
		if e != nil {
			e.Close()
		}
	}
}

// endpoints are the members' client addresses.
func (c *etcdCluster) endpoints() []string {
	var out []string
	for _, cfg := range c.cfgs {
		out = append(out, cfg.ListenClientUrls[0].Host)
	}
	return out
}

// config is an [etcd] table for this cluster under prefix.
func (c *etcdCluster) config(prefix string) EtcdConfig {
	e := DefaultConfig().Etcd
	e.Endpoints = c.endpoints()
	e.Prefix = prefix
	return e
}

// open opens a store on this cluster under prefix, closed in t.Cleanup.
func (c *etcdCluster) open(t testing.TB, prefix string) *EtcdStore {
	t.Helper()
	s, err := OpenEtcd(c.config(prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestEtcdCreateManyBeyondOneTransaction(t *testing.T) {
	c := startEtcd(t, 1)
	s := c.open(t, "/many/")
	var recs []NamedRecord
	for i := range 3*etcdTxnOps + 7 {
		recs = append(recs, NamedRecord{fmt.Sprintf("u%04d", i), testRecord(byte(i))})
	}
	created, skipped, err := s.CreateMany(recs[:50], false)
	if err != nil || created != 50 || skipped != 0 {
		t.Fatalf("first 50: %d %d %v", created, skipped, err)
	}
	created, skipped, err = s.CreateMany(recs, false)
	if err != nil || created != len(recs)-50 || skipped != 50 {
		t.Fatalf("all %d: created %d skipped %d %v", len(recs), created, skipped, err)
	}
	if n, err := s.Count(); err != nil || n != len(recs) {
		t.Fatalf("count %d %v", n, err)
	}
}

// kill stops member i at once, as a machine that dies: no leadership
// handed over, no goodbye to its peers.
func (c *etcdCluster) kill(i int) {
	c.t.Helper()
	e := c.members[i]
	c.members[i] = nil
	e.Server.HardStop()
	e.Close()
}

// restart starts member i again on its own data and ports.
func (c *etcdCluster) restart(i int) {
	c.t.Helper()
	e, err := embed.StartEtcd(c.cfgs[i])
	if err != nil {
		c.t.Fatal(err)
	}
	c.members[i] = e
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		c.t.Fatalf("etcd member %d not ready after restart", i)
	}
}

// leader is the index of the member that leads now, waiting for an
// election to end if need be.
func (c *etcdCluster) leader() int {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for i, e := range c.members {
			if e != nil && e.Server.Leader() == e.Server.MemberID() {
				return i
			}
		}
		// Elections are driven by etcd's own ticks; wait for one.
		for _, e := range c.members {
			if e != nil {
				select {
				case <-e.Server.LeaderChangedNotify():
				case <-time.After(time.Second):
				}
				break
			}
		}
	}
	c.t.Fatal("no etcd leader within 10s")
	return -1
}

// serveOnEtcd runs a plain-TCP test server on the cluster under prefix.
func serveOnEtcd(t testing.TB, c *etcdCluster, prefix string, change ...func(*Config)) *testServer {
	t.Helper()
	cfg := testConfig(t)
	cfg.Store = "etcd"
	cfg.Etcd = c.config(prefix)
	for _, f := range change {
		f(&cfg)
	}
	st, err := openStorage(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serveStore(t, cfg, st)
}

// dialUntil dials addr until its first line satisfies ok, or fails the
// test at the deadline; it returns that line. It waits on the server's own
// one-second probe, which no readiness signal outside the server shows.
func dialUntil(t testing.TB, addr string, within time.Duration, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(within)
	var line string
	for time.Now().Before(deadline) {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 256)
		n, _ := nc.Read(buf)
		nc.Close()
		line = strings.TrimRight(string(buf[:n]), "\r\n")
		if ok(line) {
			return line
		}
	}
	t.Fatalf("%s still answers %q after %v", addr, line, within)
	return ""
}

// TestCacheStopsAnsweringWhenItCannotConfirm: a cache that can no longer
// confirm it is complete (its member gone) stops answering within
// cacheStaleness, so that no login reads a copy older than that.
func TestCacheStopsAnsweringWhenItCannotConfirm(t *testing.T) {
	c := startEtcd(t, 1)
	s := c.open(t, "/stale/")
	if err := s.Create("olga", testRecord(1)); err != nil {
		t.Fatal(err)
	}
	s.startCache()
	waitCacheFresh(t, s)
	cache := s.cache.Load()
	if _, found, ok := cache.get("olga"); !ok || !found {
		t.Fatalf("a current cache: found %v, answered %v", found, ok)
	}
	// Writes elsewhere in the cluster move its revision past anything the
	// cache's watch delivers: only a progress notice can confirm it now.
	other := c.open(t, "/elsewhere/")
	for i := range 5 {
		if err := other.Create(fmt.Sprint("x", i), testRecord(2)); err != nil {
			t.Fatal(err)
		}
	}
	wrote := time.Now()
	timeout := time.After(5 * time.Second)
	for cache.freshAt().Before(wrote) {
		select {
		case <-cache.confirmed:
		case <-timeout:
			t.Fatal("the cache was not confirmed after writes outside its prefix")
		}
	}
	confirmed := cache.freshAt()
	c.kill(0)
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		_, _, ok := cache.get("olga")
		if !ok {
			break
		}
		if age := time.Since(confirmed); age > cacheStaleness+50*time.Millisecond {
			t.Fatalf("the cache still answers %v after its last confirmation", age)
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache never stopped answering")
		}
		<-tick.C
	}
}

// TestWatchDeliveredUpTo: only a progress notice vouches for the header's
// revision. A watcher catching up gets its backlog in batches whose
// headers carry the cluster's current revision, so an event batch vouches
// only for its last event, and the watch's creation for nothing.
func TestWatchDeliveredUpTo(t *testing.T) {
	ev := func(rev int64) *clientv3.Event {
		return &clientv3.Event{Kv: &mvccpb.KeyValue{Key: []byte("/p/users/a"), ModRevision: rev}}
	}
	header := &etcdserverpb.ResponseHeader{Revision: 5000}
	for _, c := range []struct {
		name string
		resp clientv3.WatchResponse
		want int64
	}{
		{"a catch-up batch", clientv3.WatchResponse{Header: header, Events: []*clientv3.Event{ev(10), ev(11), ev(12)}}, 12},
		{"a progress notice", clientv3.WatchResponse{Header: header}, 5000},
		{"the watch's creation", clientv3.WatchResponse{Header: header, Created: true}, 0},
	} {
		if got := deliveredUpTo(c.resp); got != c.want {
			t.Errorf("%s: delivered up to %d, want %d", c.name, got, c.want)
		}
	}
}

// TestCacheFollowsAnotherHandle: every kind of write made through another
// handle on the prefix (another server, an admin command) reaches the
// cache itself within the bound, not only the quorum read a login falls
// back to; so do the meta values that shape unknown names' fake salts.
func TestCacheFollowsAnotherHandle(t *testing.T) {
	c := startEtcd(t, 1)
	s := c.open(t, "/follow/")
	other := c.open(t, "/follow/")
	s.startCache()
	waitCacheFresh(t, s)
	cache := s.cache.Load()
	within := func(what string, ok func() bool) {
		t.Helper()
		limit := time.After(time.Second)
		for !ok() {
			select {
			case <-cache.changed:
			case <-cache.confirmed:
			case <-limit:
				t.Fatalf("%s through another handle: not in the cache within 1s", what)
			}
		}
	}
	cached := func(check func(Record) bool) func() bool {
		return func() bool {
			val, found, ok := cache.get("rita")
			if !ok || !found {
				return false
			}
			rec, err := unmarshalRecord(val)
			return err == nil && check(rec)
		}
	}
	if err := other.Create("rita", testRecord(1)); err != nil {
		t.Fatal(err)
	}
	within("a registration", cached(func(r Record) bool { return bytes.Equal(r.StoredKey, testRecord(1).StoredKey) }))
	if err := other.Update("rita", func(r Record) (Record, error) { r.StoredKey = testRecord(2).StoredKey; return r, nil }); err != nil {
		t.Fatal(err)
	}
	within("a password change", cached(func(r Record) bool { return bytes.Equal(r.StoredKey, testRecord(2).StoredKey) }))
	if _, err := other.SetLocked("rita", true); err != nil {
		t.Fatal(err)
	}
	within("a lock", cached(func(r Record) bool { return r.Locked }))
	if err := other.Delete("rita"); err != nil {
		t.Fatal(err)
	}
	within("a delete", func() bool { _, found, ok := cache.get("rita"); return ok && !found })

	// Legacy accounts imported elsewhere: this store's fake SEED salts
	// take their shape (all dashed here) without a restart.
	mac := s.FakeSalt(nil, "seed", "nobody")
	if got := s.FakeLegacySalt(mac); isDashedUUID([]byte(got)) {
		t.Fatalf("a fake salt before any legacy account is dashed: %q", got)
	}
	if _, _, err := other.CreateMany(legacyAccounts(t, "old", 3, 0), false); err != nil {
		t.Fatal(err)
	}
	within("an import of legacy accounts", func() bool { return isDashedUUID([]byte(s.FakeLegacySalt(mac))) })
	if a, b := s.FakeLegacySalt(mac), other.FakeLegacySalt(other.FakeSalt(nil, "seed", "nobody")); a != b {
		t.Fatalf("two handles give one name different fake salts: %q, %q", a, b)
	}
}

// TestStartCacheTwiceStopsTheFirst: a store follows one watch; a cache
// replaced is stopped, not left running.
func TestStartCacheTwiceStopsTheFirst(t *testing.T) {
	c := startEtcd(t, 1)
	s := c.open(t, "/twice/")
	first := s.startCache()
	second := s.startCache()
	if first.ctx.Err() == nil {
		t.Fatal("the first cache still runs")
	}
	s.stopCache(first) // not the current one: nothing happens
	if s.cache.Load() != second || second.ctx.Err() != nil {
		t.Fatal("stopping a replaced cache stopped the current one")
	}
	s.stopCache(second)
	if s.cache.Load() != nil || second.ctx.Err() == nil {
		t.Fatal("the current cache was not stopped")
	}
}

// TestShutdownStopsTheCache: a server's Shutdown ends the watch it
// started on the store, which outlives it.
func TestShutdownStopsTheCache(t *testing.T) {
	c := startEtcd(t, 1)
	ts := serveOnEtcd(t, c, "/shut/")
	es := ts.storage.(*EtcdStore)
	// Serve starts the cache before it takes connections: a login made
	// tells that it has.
	if err := login(t, ts.addr, "nobody", "Secret123"); code(err) != CodeAuth {
		t.Fatal(err)
	}
	started := es.cache.Load()
	if started == nil {
		t.Fatal("the server did not start its cache")
	}
	ts.stop()
	if es.cache.Load() != nil || started.ctx.Err() == nil {
		t.Fatal("the cache runs on after Shutdown")
	}
}

// TestEtcdDeleteRemovesAnUndecodableRecord: as on the bbolt store, Delete
// removes a record that does not decode, so that "users delete" clears
// the very record whose logins get ERR INTERNAL.
func TestEtcdDeleteRemovesAnUndecodableRecord(t *testing.T) {
	c := startEtcd(t, 1)
	s := c.open(t, "/mangled/")
	ctx, cancel := s.ctx()
	defer cancel()
	if _, err := s.cli.Put(ctx, s.userKey("mangled"), "not a record"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("mangled"); err != nil {
		t.Fatalf("delete of an undecodable record: %v", err)
	}
	if _, err := s.Get("mangled"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

// TestCacheForgetsDeletedNames: the cache keeps a deleted name as a
// tombstone so that an older event cannot bring it back, but only until
// the watch has delivered past the delete: else a server's memory would
// grow with every name ever deleted (a bench run's accounts, say).
func TestCacheForgetsDeletedNames(t *testing.T) {
	c := startEtcd(t, 1)
	s := c.open(t, "/tomb/")
	cache := s.startCache()
	waitCacheFresh(t, s)
	var recs []NamedRecord
	for i := range 200 {
		recs = append(recs, NamedRecord{fmt.Sprintf("bench%04d", i), testRecord(byte(i))})
	}
	if _, _, err := s.CreateMany(recs, false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeletePrefix("bench"); err != nil {
		t.Fatal(err)
	}
	// Two confirmations after the delete: the watch is past it.
	after := time.Now()
	deadline := time.After(5 * time.Second)
	for cache.freshAt().Before(after.Add(cacheProbeEvery)) {
		select {
		case <-cache.confirmed:
		case <-deadline:
			t.Fatal("the cache was not confirmed after the delete")
		}
	}
	cache.mu.RLock()
	n := len(cache.recs)
	cache.mu.RUnlock()
	if n != 0 {
		t.Fatalf("the cache holds %d entries for a prefix with no account", n)
	}
}

// TestBackupKeepsUnknownNamesLegacySalts: a backup served alone gives an
// unknown name the SEED challenge the cluster gave, even after legacy
// accounts are gone (the cluster's tally only grows; a count of the
// backup's accounts would shape fake legacy salts differently).
func TestBackupKeepsUnknownNamesLegacySalts(t *testing.T) {
	c := startEtcd(t, 1)
	s := c.open(t, "/tally/")
	if _, _, err := s.CreateMany(legacyAccounts(t, "old", 3, 0), false); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Delete(fmt.Sprint("old", i)); err != nil {
			t.Fatal(err)
		}
	}
	path := backupFile(t, s)
	alone, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer alone.Close()
	for _, name := range []string{"nobody", "ghost", "phantom"} {
		want := s.FakeLegacySalt(s.FakeSalt(nil, "seed", name))
		if got := alone.FakeLegacySalt(alone.FakeSalt(nil, "seed", name)); got != want {
			t.Fatalf("unknown name %q: the cluster's fake SEED salt %q, its backup's %q", name, want, got)
		}
	}
}

// TestEtcdLandedReadsBackItsOwnWrite: after a write whose answer was lost,
// the read-back knows that write by its bytes (a fresh stamp and time),
// and not another write of the same name.
func TestEtcdLandedReadsBackItsOwnWrite(t *testing.T) {
	c := startEtcd(t, 1)
	s := c.open(t, "/landed/")
	if err := s.Create("lee", testRecord(1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.Get(ctx, s.userKey("lee"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(resp, err)
	}
	mine := resp.Kvs[0].Value
	if !s.landed("lee", mine) {
		t.Fatal("the write that is there was not recognised")
	}
	other := testRecord(1)
	other.Gen = NewGen()
	if s.landed("lee", other.marshal()) {
		t.Fatal("another write of the same name was taken for this one")
	}
	if s.landed("lee", nil) {
		t.Fatal("a delete was taken as landed while the account is there")
	}
	if err := s.Delete("lee"); err != nil {
		t.Fatal(err)
	}
	if !s.landed("lee", nil) || s.landed("lee", mine) {
		t.Fatal("after the delete")
	}
}

// freezingProxy relays TCP to a target until frozen; then it stops
// relaying but keeps every connection open, as a machine does that lost
// its power or its cable: nothing is refused or closed, nothing answers.
type freezingProxy struct {
	addr   string
	frozen chan struct{}
	once   sync.Once
}

func startFreezingProxy(t *testing.T, target string) *freezingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezingProxy{addr: ln.Addr().String(), frozen: make(chan struct{})}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	relay := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			// Short reads, so that a freeze is noticed between them.
			src.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			n, err := src.Read(buf)
			select {
			case <-p.frozen:
				<-done // silent, and open, until the test ends
				src.Close()
				dst.Close()
				return
			default:
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				src.Close()
				dst.Close()
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			wg.Add(2)
			go relay(out, in)
			go relay(in, out)
		}
	}()
	return p
}

func (p *freezingProxy) freeze() { p.once.Do(func() { close(p.frozen) }) }

// TestEtcdSurvivesASilentMember: a member that goes silent without
// closing its connections (behind a proxy that stops relaying) is dropped
// by the client's keepalive, so that the store works on with the other
// two members, instead of sending that one a share of its requests until
// the kernel gives up on the connection.
func TestEtcdSurvivesASilentMember(t *testing.T) {
	c := startEtcd(t, 3)
	eps := c.endpoints()
	p := startFreezingProxy(t, eps[0])
	cfg := c.config("/silent/")
	cfg.Endpoints = []string{p.addr, eps[1], eps[2]}
	s, err := OpenEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	p.freeze()
	// Writes until ten in a row succeed at once: the silent member must
	// have been dropped by then. Without keepalive a third of them wait
	// out etcdOpTimeout for as long as the connection lives.
	deadline := time.Now().Add(3 * (etcdKeepAlive + etcdKeepAliveTimeout))
	inRow, slow := 0, 0
	for i := 0; inRow < 10; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes in a row went through within %v of the member going silent (%d slow or failed)", inRow, 3*(etcdKeepAlive+etcdKeepAliveTimeout), slow)
		}
		start := time.Now()
		err := s.Create(fmt.Sprint("u", i), testRecord(1))
		if err == nil && time.Since(start) < time.Second {
			inRow++
		} else {
			inRow, slow = 0, slow+1
		}
	}
	t.Logf("%d writes were slow or failed before the silent member was dropped", slow)
}

// TestWritesWaitForAnElection: writes made while the leader is lost and a
// new one is elected wait for it and succeed, rather than failing at once
// (the client's connection to the dead member refused, or a member saying
// it has no leader), and none is lost or doubled.
func TestWritesWaitForAnElection(t *testing.T) {
	c := startEtcd(t, 3)
	s := c.open(t, "/election/")
	for i := range 20 { // the client is connected and warm
		if err := s.Create(fmt.Sprint("warm", i), testRecord(1)); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	errs := make(chan error, 1)
	progress := make(chan struct{}, 1)
	var made atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.Create(fmt.Sprintf("w%d-%d", w, i), testRecord(2)); err != nil {
					select {
					case errs <- fmt.Errorf("registration %d of writer %d: %w", i, w, err):
					default:
					}
					return
				}
				made.Add(1)
				tick(progress)
			}
		})
	}
	before := made.Load()
	c.kill(c.leader())
	c.leader() // a new one is elected
	after := made.Load()
	deadline := time.After(20 * time.Second)
	for made.Load() < after+20 {
		select {
		case <-progress:
		case err := <-errs:
			close(stop)
			wg.Wait()
			t.Fatal(err)
		case <-deadline:
			t.Fatalf("only %d registrations after the election", made.Load()-after)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	n, err := s.Count()
	if err != nil {
		t.Fatal(err)
	}
	if want := int(made.Load()) + 20; n != want {
		t.Fatalf("%d accounts, %d acknowledged", n, want)
	}
	t.Logf("%d registrations before the leader's loss, %d in all, none failed", before, made.Load())
}

// backupFile writes s's backup to a file of the test's and returns its
// path.
func backupFile(t *testing.T, s Storage) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := s.Backup(f); err != nil {
		t.Fatal(err)
	}
	return path
}
