package main

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	for time.Unix(0, cache.fresh.Load()).Before(wrote) {
		select {
		case <-cache.confirmed:
		case <-timeout:
			t.Fatal("the cache was not confirmed after writes outside its prefix")
		}
	}
	confirmed := time.Unix(0, cache.fresh.Load())
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
