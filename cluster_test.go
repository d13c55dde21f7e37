package main

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestClusterIsOneService: two servers on one etcd cluster answer as one.
func TestClusterIsOneService(t *testing.T) {
	c := startEtcd(t, 3)
	a := serveOnEtcd(t, c, "/svc/")
	b := serveOnEtcd(t, c, "/svc/")

	mustRegister(t, a.addr, "gil", "Secret123")
	if err := login(t, b.addr, "gil", "Secret123"); err != nil {
		t.Fatalf("registered on one, login on the other: %v", err)
	}

	// One name registered through both at once: exactly one OK.
	var wg sync.WaitGroup
	var oks, exists atomic.Int32
	for i := range 8 {
		addr := []string{a.addr, b.addr}[i%2]
		wg.Go(func() {
			cl, err := testDial(t, addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer cl.Close()
			switch err := cl.Register("race", "Secret123"); code(err) {
			case "":
				oks.Add(1)
			case CodeExists, CodeLimit:
				exists.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if oks.Load() != 1 {
		t.Fatalf("%d registrations of one name succeeded (%d refused)", oks.Load(), exists.Load())
	}

	// A change on one server is what the other's next login reads.
	cl, err := testDial(t, a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Login("gil", "Secret123"); err != nil {
		t.Fatal(err)
	}
	before, _ := a.storage.Get("gil")
	if err := cl.Passwd("gil", "Better456"); err != nil {
		t.Fatal(err)
	}
	seenAtB(t, b, "a password change", func(r Record, err error) bool { return err == nil && r.Gen != before.Gen })
	if err := login(t, b.addr, "gil", "Better456"); err != nil {
		t.Fatalf("the new password on the other server: %v", err)
	}
	if err := login(t, b.addr, "gil", "Secret123"); code(err) != CodeAuth {
		t.Fatalf("the old password on the other server: %v", err)
	}
	if _, err := a.storage.SetLocked("gil", true); err != nil {
		t.Fatal(err)
	}
	seenAtB(t, b, "a lock", func(r Record, err error) bool { return err == nil && r.Locked })
	if err := login(t, b.addr, "gil", "Better456"); code(err) != CodeLocked {
		t.Fatalf("locked through A, login at B: %v", err)
	}
	if err := a.storage.Delete("gil"); err != nil {
		t.Fatal(err)
	}
	seenAtB(t, b, "a delete", func(_ Record, err error) bool { return errors.Is(err, ErrNotFound) })
	if err := login(t, b.addr, "gil", "Better456"); code(err) != CodeAuth {
		t.Fatalf("deleted through A, login at B: %v", err)
	}

	// Unknown names get the same challenge from both.
	ra, _ := dialRaw(t, a.addr)
	rb, _ := dialRaw(t, b.addr)
	_, sa := challenge(t, ra, "nobody-here")
	_, sb := challenge(t, rb, "nobody-here")
	if string(sa.Salt) != string(sb.Salt) || sa.Iterations != sb.Iterations {
		t.Fatalf("an unknown name's challenge differs: %+v vs %+v", sa, sb)
	}
}

// seenAtB waits until b's cache, which its logins read, answers with a
// change made through another server, and fails the test if that takes a
// second or more, the bound the cluster promises. It reads the cache
// itself: a login falls back to a quorum read when the cache cannot
// answer, which would pass without the watch delivering anything.
func seenAtB(t *testing.T, b *testServer, what string, seen func(Record, error) bool) {
	t.Helper()
	cache := b.storage.(*EtcdStore).cache.Load()
	if cache == nil {
		t.Fatal("server B has no cache")
	}
	cached := func() (Record, error, bool) {
		val, found, ok := cache.get("gil")
		if !ok {
			return Record{}, nil, false
		}
		if !found {
			return Record{}, ErrNotFound, true
		}
		rec, err := unmarshalRecord(val)
		return rec, err, true
	}
	start := time.Now()
	limit := time.After(time.Second)
	for {
		if rec, err, ok := cached(); ok && seen(rec, err) {
			break
		}
		select {
		case <-cache.changed:
		case <-cache.confirmed:
		case <-limit:
			t.Fatalf("%s made through A was not in B's cache within 1s", what)
		}
	}
	t.Logf("%s made through A was in B's cache %v later", what, time.Since(start).Round(10*time.Microsecond))
}

// TestClusterSharesOneFingerprint: TLS servers on one cluster make one
// identity between them, so one pin covers them all.
func TestClusterSharesOneFingerprint(t *testing.T) {
	c := startEtcd(t, 1)
	tlsOn := func(cfg *Config) { cfg.TLS = true }
	var servers []*testServer
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 3 {
		wg.Go(func() {
			ts := serveOnEtcd(t, c, "/tls/", tlsOn)
			mu.Lock()
			servers = append(servers, ts)
			mu.Unlock()
		})
	}
	wg.Wait()
	fp := servers[0].fingerprint()
	for _, ts := range servers[1:] {
		if got := ts.fingerprint(); got != fp {
			t.Fatalf("fingerprints differ: %s vs %s", got, fp)
		}
	}
	if err := dialPinned(t, servers[1].addr, fp).Register("hal", "Secret123"); err != nil {
		t.Fatal(err)
	}
	if err := dialPinned(t, servers[2].addr, fp).Login("hal", "Secret123"); err != nil {
		t.Fatal(err)
	}
}

// TestThrottleHoldsAcrossServers: guesses spread over two servers are
// throttled as if they went to one.
func TestThrottleHoldsAcrossServers(t *testing.T) {
	c := startEtcd(t, 1)
	few := func(cfg *Config) { cfg.UserFailures = 4; cfg.SourceFailures = 100 }
	a := serveOnEtcd(t, c, "/thr/", few)
	b := serveOnEtcd(t, c, "/thr/", few)
	mustRegister(t, a.addr, "ivy", "Secret123")
	servers := []*testServer{a, b}
	for i := range 4 {
		ts, other := servers[i%2], servers[(i+1)%2]
		before := other.shared.applied.Load()
		if err := login(t, ts.addr, "ivy", "Wrong1234"); code(err) != CodeAuth {
			t.Fatalf("guess %d: %v", i, err)
		}
		// The other server hears of it through its watch.
		deadline := time.After(5 * time.Second)
		for other.shared.applied.Load() == before {
			select {
			case <-other.shared.appliedCh:
			case <-deadline:
				t.Fatalf("guess %d on one server never reached the other", i)
			}
		}
	}
	for _, ts := range servers {
		if err := login(t, ts.addr, "ivy", "Secret123"); code(err) != CodeLimit {
			t.Fatalf("after 4 guesses spread over two servers (4 allowed in all), %s answers %v", ts.addr, err)
		}
	}
	// A good login from elsewhere writes nothing and is not held back.
	if err := loginFrom(t, b.addr, "127.0.0.3", "ivy", "Secret123"); err != nil {
		t.Fatalf("another source: %v", err)
	}

	// users unthrottle, from a machine that reaches etcd, clears the
	// name at every server, and at one that starts within the minute the
	// failures are kept.
	dir := t.TempDir()
	conf := etcdConfigFile(t, dir, c, "/thr/")
	r := mustCLI(t, 0, dir, "", "users", "unthrottle", "--config", conf, "ivy")
	if !strings.HasPrefix(r.stdout, `asked every server on the cluster to clear the failed logins on record for "ivy"`) {
		t.Fatalf("unthrottle on etcd: %+v", r)
	}
	for _, ts := range servers {
		deadline := time.After(5 * time.Second)
		for ts.shared.pardoned.Load() == 0 {
			select {
			case <-ts.shared.appliedCh:
			case <-deadline:
				t.Fatalf("the pardon never reached %s", ts.addr)
			}
		}
	}
	late := serveOnEtcd(t, c, "/thr/", few)
	for _, ts := range append(servers, late) {
		if err := login(t, ts.addr, "ivy", "Secret123"); err != nil {
			t.Fatalf("after unthrottle, %s answers %v", ts.addr, err)
		}
	}
	if f, p := late.shared.applied.Load(), late.shared.pardoned.Load(); f < 4 || p != 1 {
		t.Fatalf("a server started after the pardon replayed %d failures and %d pardons, want 4 and 1", f, p)
	}
	if r := mustCLI(t, exitRefused, dir, "", "users", "unthrottle", "--config", conf, "has space"); !strings.Contains(r.stderr, "neither an IP address nor a valid username") {
		t.Errorf("unthrottle of a bad name on etcd: %+v", r)
	}
}

// TestClusterSurvivesLeaderLoss: the etcd leader dies during a storm of
// registrations and logins; both resume after the election and every
// acknowledged registration is there afterwards.
func TestClusterSurvivesLeaderLoss(t *testing.T) {
	c := startEtcd(t, 3)
	a := serveOnEtcd(t, c, "/storm/")
	b := serveOnEtcd(t, c, "/storm/")
	mustRegister(t, a.addr, "jon", "Secret123")

	var mu sync.Mutex
	var acked []string
	var loginsAfter, regsAfter atomic.Int32
	var killed atomic.Bool
	var firstRegAfter atomic.Int64 // ns after the kill
	var killedAt time.Time
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		addr := []string{a.addr, b.addr}[w%2]
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("w%dn%d", w, i)
				cl, err := testDial(t, addr)
				if err != nil {
					continue
				}
				err = cl.Register(name, "Secret123")
				cl.Close()
				if err == nil {
					mu.Lock()
					acked = append(acked, name)
					mu.Unlock()
					if killed.Load() {
						regsAfter.Add(1)
						firstRegAfter.CompareAndSwap(0, int64(time.Since(killedAt)))
					}
				}
				if err := login(t, addr, "jon", "Secret123"); err == nil && killed.Load() {
					loginsAfter.Add(1)
				}
			}
		})
	}
	// Some traffic first, then the leader goes.
	waitFor(t, 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 8 })
	l := c.leader()
	killedAt = time.Now()
	killed.Store(true)
	c.kill(l)
	waitFor(t, 20*time.Second, func() bool { return regsAfter.Load() >= 8 && loginsAfter.Load() >= 8 })
	close(stop)
	wg.Wait()
	t.Logf("leader lost: first registration acknowledged %v after; %d registrations, %d logins after",
		time.Duration(firstRegAfter.Load()).Round(time.Millisecond), regsAfter.Load(), loginsAfter.Load())

	check := c.open(t, "/storm/")
	for _, name := range acked {
		if _, err := check.Get(name); err != nil {
			t.Errorf("acknowledged registration %s: %v", name, err)
		}
	}
	if len(acked) == 0 {
		t.Fatal("no registration was acknowledged")
	}
}

// waitFor waits for cond, which the storm's goroutines make true, checking
// it whenever a goroutine yields; it fails the test at the deadline.
func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", within)
		}
		<-tick.C
	}
}

// closingServer accepts connections and closes them at once: over TLS,
// how a busy server answers (spec §9.1). It returns its address.
func closingServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			nc.Close()
		}
	}()
	return ln.Addr().String()
}

func TestClientFailsOverWithinTheCluster(t *testing.T) {
	c := startEtcd(t, 1)
	tlsOn := func(cfg *Config) { cfg.TLS = true }
	a := serveOnEtcd(t, c, "/fo/", tlsOn)
	b := serveOnEtcd(t, c, "/fo/", tlsOn)
	fp := "--fingerprint=" + a.fingerprint()
	dir := t.TempDir()
	const pw = "Correct-horse-9"
	both := "--server=" + a.addr + "," + b.addr
	if r := runCLI(t, dir, pw+"\n", nil, "register", both, fp, "--user", "kim", "--password-stdin"); r.code != 0 {
		t.Fatalf("register through the list: %+v", r)
	}
	a.stop()
	if r := runCLI(t, dir, pw+"\n", nil, "login", both, fp, "--user", "kim", "--password-stdin"); r.code != 0 {
		t.Fatalf("login with the first server down: %+v", r)
	}
	busy := closingServer(t)
	if r := runCLI(t, dir, pw+"\n", nil, "login", "--server="+busy+","+b.addr, fp, "--user", "kim", "--password-stdin"); r.code != 0 {
		t.Fatalf("login with a busy first server: %+v", r)
	}
	if r := runCLI(t, dir, pw+"\n", nil, "login", "--server="+busy, fp, "--user", "kim", "--password-stdin"); r.code == 0 {
		t.Fatalf("login through only a busy server succeeded: %+v", r)
	}
	// When none can serve, the message names what each one did.
	r := runCLI(t, dir, pw+"\n", nil, "login", "--server="+busy+","+a.addr, fp, "--user", "kim", "--password-stdin")
	if r.code == 0 || !strings.Contains(r.stderr, "none of the 2 servers could serve: "+busy+" closed the connection before the TLS handshake; cannot reach "+a.addr) {
		t.Fatalf("login with every server down or busy: %+v", r)
	}
	// Over plain TCP a server that closes before its greeting (going
	// down) is passed over too.
	p := serveOnEtcd(t, c, "/fo/")
	if r := runCLI(t, dir, pw+"\n", nil, "login", "--plain", "--server="+busy+","+p.addr, "--user", "kim", "--password-stdin"); r.code != 0 {
		t.Fatalf("plain login with a first server that closes at once: %+v", r)
	}

	// One pin covers the list: b is trusted through a's pin, as the two
	// share one key.
	ks, err := LoadKnownServers(freshPins(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.Add(a.addr, a.fingerprint()); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, dir, pw+"\n", nil, "login", "--server="+b.addr+","+a.addr, "--user", "kim", "--password-stdin"); r.code != 0 {
		t.Fatalf("login to an unpinned member of a list with one pin: %+v", r)
	}
}

func TestClientFailoverStopsOnTrustFailure(t *testing.T) {
	c := startEtcd(t, 1)
	b := serveOnEtcd(t, c, "/trust/", func(cfg *Config) { cfg.TLS = true })
	// Another server with its own key, first in the list: an impostor.
	other := startServer(t, tlsTestConfig(t))
	dir := t.TempDir()
	r := runCLI(t, dir, "Correct-horse-9\n", nil, "login", "--server="+other.addr+","+b.addr, "--fingerprint="+b.fingerprint(), "--user", "kim", "--password-stdin")
	if r.code == 0 || !strings.Contains(r.stderr, other.addr) {
		t.Fatalf("a server with the wrong key did not stop the client: %+v", r)
	}
	if strings.Contains(b.logs.String(), "msg=\"connection closed\"") {
		t.Fatalf("the client went on to the next server after a trust failure:\n%s", b.logs)
	}
}

// etcdConfigFile writes a config naming the cluster's etcd store.
func etcdConfigFile(t *testing.T, dir string, c *etcdCluster, prefix string) string {
	t.Helper()
	var eps []string
	for _, e := range c.endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	return writeConfig(t, dir, fmt.Sprintf("store = \"etcd\"\n\n[etcd]\nendpoints = [%s]\nprefix = %q\n", strings.Join(eps, ", "), prefix))
}

// TestMoveBetweenFileAndCluster: a db file is loaded into etcd and served
// there as it was (accounts, fake salts, fingerprint); a backup of the
// cluster is a db file a lone server serves as the cluster did.
func TestMoveBetweenFileAndCluster(t *testing.T) {
	c := startEtcd(t, 1)
	dir := t.TempDir()
	cfg := tlsTestConfig(t)
	cfg.DB = filepath.Join(dir, "one.db")
	one := startServer(t, cfg)
	fp := one.fingerprint()
	for _, n := range []string{"lea", "max"} {
		if err := dialPinned(t, one.addr, fp).Register(n, "Secret123"); err != nil {
			t.Fatal(err)
		}
	}
	rc, _, _ := dialRawTLS(t, one.addr)
	_, unknown := challenge(t, rc, "nobody")
	rc.nc.Close() // an exchange under way would hold the shutdown
	one.stop()

	conf := etcdConfigFile(t, dir, c, "/move/")
	if r := runCLI(t, dir, "", nil, "restore", "--config", conf, cfg.DB); r.code != 0 || !strings.HasPrefix(r.stdout, "loaded 2 accounts from ") {
		t.Fatalf("restore: %+v", r)
	}
	onEtcd := serveOnEtcd(t, c, "/move/", func(cfg *Config) { cfg.TLS = true })
	if got := onEtcd.fingerprint(); got != fp {
		t.Fatalf("on etcd the fingerprint is %s, was %s", got, fp)
	}
	if err := dialPinned(t, onEtcd.addr, fp).Login("lea", "Secret123"); err != nil {
		t.Fatalf("login on etcd after the restore: %v", err)
	}
	rc, _, _ = dialRawTLS(t, onEtcd.addr)
	if _, sf := challenge(t, rc, "nobody"); string(sf.Salt) != string(unknown.Salt) {
		t.Fatal("an unknown name's challenge changed in the move")
	}
	if err := dialPinned(t, onEtcd.addr, fp).Register("ned", "Secret123"); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, dir, "", nil, "users", "list", "--config", conf); r.code != 0 || !strings.Contains(r.stdout, "ned") || !strings.Contains(r.stdout, "lea") {
		t.Fatalf("users list on etcd: %+v", r)
	}
	// Run again, as after an interruption: it keeps what is there.
	// A finished restore is not run again: it would bring back what was
	// deleted since (an interrupted one is finished by running it again,
	// TestRestoreFinishesOnlyItsOwnRun).
	if r := runCLI(t, dir, "", nil, "restore", "--config", conf, cfg.DB); r.code == 0 || !strings.Contains(r.stderr, "no unfinished restore of this db") {
		t.Fatalf("restore again: %+v", r)
	}
	// Another db's accounts are refused: they were made under another secret.
	other := filepath.Join(dir, "other.db")
	st, err := OpenStore(other)
	if err != nil {
		t.Fatal(err)
	}
	st.Create("zed", testRecord(1))
	st.Close()
	if r := runCLI(t, dir, "", nil, "restore", "--config", conf, other); r.code == 0 || !strings.Contains(r.stderr, "holds accounts, and no unfinished restore of this db") {
		t.Fatalf("restore of another db into a used prefix: %+v", r)
	}

	if r := runCLI(t, dir, "", nil, "backup", "--config", conf, "back.db"); r.code != 0 {
		t.Fatalf("backup from etcd: %+v", r)
	}
	back := cfg
	back.DB = filepath.Join(dir, "back.db")
	alone := startServer(t, back)
	if got := alone.fingerprint(); got != fp {
		t.Fatalf("the backup's fingerprint is %s, want %s", got, fp)
	}
	if err := dialPinned(t, alone.addr, fp).Login("ned", "Secret123"); err != nil {
		t.Fatalf("login on the backup of the cluster: %v", err)
	}
	rc, _, _ = dialRawTLS(t, alone.addr)
	if _, sf := challenge(t, rc, "nobody"); string(sf.Salt) != string(unknown.Salt) {
		t.Fatal("an unknown name's challenge changed in the backup")
	}
}
