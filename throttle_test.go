package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func TestGuessingIsThrottled(t *testing.T) {
	cfg := testConfig(t)
	ts := startServer(t, cfg)
	mustRegister(t, ts.addr, "alice", "Secret123")
	mustRegister(t, ts.addr, "bob", "Secret123")

	// 30 rapid wrong guesses from one source, one connection each.
	var failed, limited int
	for i := range 30 {
		err := loginFrom(t, ts.addr, "127.0.0.4", "alice", fmt.Sprintf("Guess%03d", i))
		switch code(err) {
		case CodeAuth:
			if limited > 0 {
				t.Fatalf("guess %d got AUTH after LIMIT", i+1)
			}
			failed++
		case CodeLimit:
			limited++
			if !strings.Contains(err.Error(), "retry in ") {
				t.Fatalf("LIMIT without a retry time: %v", err)
			}
		default:
			t.Fatalf("guess %d: %v", i+1, err)
		}
	}
	t.Logf("%d wrong guesses answered AUTH, then LIMIT", failed)
	if failed >= 14 || limited == 0 {
		t.Fatalf("%d guesses were tried before the limit, want fewer than 14", failed)
	}
	// Even the right password waits now, from that source...
	if err := loginFrom(t, ts.addr, "127.0.0.4", "alice", "Secret123"); code(err) != CodeLimit {
		t.Fatalf("right password from the throttled source: %v", err)
	}
	// ...while the account logs in normally from anywhere else.
	if err := loginFrom(t, ts.addr, "127.0.0.5", "alice", "Secret123"); err != nil {
		t.Fatalf("login from another source: %v", err)
	}
}

func TestGuessingOneUserIsThrottledPerPair(t *testing.T) {
	cfg := testConfig(t)
	cfg.SourceFailures = 100 // isolate the (source, user) allowance
	ts := startServer(t, cfg)
	mustRegister(t, ts.addr, "alice", "Secret123")
	mustRegister(t, ts.addr, "bob", "Secret123")
	tries := 0
	for ; tries < 30; tries++ {
		if err := loginFrom(t, ts.addr, "127.0.0.6", "alice", "Wrong1234"); code(err) == CodeLimit {
			break
		}
	}
	if tries != cfg.UserFailures {
		t.Fatalf("%d guesses at one user before LIMIT, want %d", tries, cfg.UserFailures)
	}
	if err := loginFrom(t, ts.addr, "127.0.0.6", "bob", "Secret123"); err != nil {
		t.Fatalf("another user from the same source: %v", err)
	}
}

func TestParallelGuessingAtOneAccountIsCapped(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = 40
	ts := startServer(t, cfg)
	mustRegister(t, ts.addr, "alice", "Secret123")
	// 30 connections each ask for a challenge before any answers: logins
	// under way count against the (source, user) allowance, so no more
	// than it can be checked at once.
	challenged, limited := 0, 0
	var first *rawConn
	for range 30 {
		rc, _ := rawFrom(t, ts.addr, "127.0.0.7")
		reply := rc.do("AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,,n=alice,r=abcdefgh")))
		switch {
		case strings.HasPrefix(reply, "CHALLENGE "):
			challenged++
			if first == nil {
				first = rc
			}
		case strings.HasPrefix(reply, "ERR LIMIT "):
			limited++
		default:
			t.Fatal(reply)
		}
	}
	if challenged != cfg.UserFailures || limited != 30-cfg.UserFailures {
		t.Fatalf("%d of 30 parallel attempts at one account got a challenge, want %d", challenged, cfg.UserFailures)
	}
	// Abandoning an exchange counts no failure and frees its place.
	first.do("PING")
	rc, _ := rawFrom(t, ts.addr, "127.0.0.7")
	if reply := rc.do("AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,,n=alice,r=abcdefgh"))); !strings.HasPrefix(reply, "CHALLENGE ") {
		t.Fatalf("after one abandoned attempt: %q", reply)
	}
	// Other accounts are not held back by the ones under way.
	if err := loginFrom(t, ts.addr, "127.0.0.7", "bob", "Secret123"); code(err) != CodeAuth {
		t.Fatalf("another name from the same source: %v", err)
	}
}

func TestParallelGuessingAcrossNamesPaysInDebt(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = 40
	ts := startServer(t, cfg)
	mustRegister(t, ts.addr, "alice", "Secret123")
	// A wave of wrong guesses at 30 different names, all in flight before
	// any fails: parallel logins of different users are not refused (a
	// backend does that), but each failure beyond the source's allowance
	// must be paid for in waiting.
	const wave = 30
	var conns []*rawConn
	var nonces []string
	for i := range wave {
		rc, _ := rawFrom(t, ts.addr, "127.0.0.9")
		reply := rc.do("AUTH SCRAM-SHA-256 " + EncodeB64([]byte(fmt.Sprintf("n,,n=user%d,r=abcdefgh", i))))
		s1, err := DecodeB64(strings.TrimPrefix(reply, "CHALLENGE "))
		if err != nil {
			t.Fatalf("parallel attempt %d: %q", i, reply)
		}
		conns = append(conns, rc)
		nonces = append(nonces, strings.TrimPrefix(strings.Split(string(s1), ",")[0], "r="))
	}
	for i, rc := range conns {
		final := "c=biws,r=" + nonces[i] + ",p=" + EncodeB64(make([]byte, 32))
		if got := rc.do("RESPONSE " + EncodeB64([]byte(final))); !strings.HasPrefix(got, "ERR AUTH ") {
			t.Fatalf("wrong proof: %q", got)
		}
	}
	err := loginFrom(t, ts.addr, "127.0.0.9", "alice", "Secret123")
	if code(err) != CodeLimit {
		t.Fatalf("after a wave of %d failures: %v", wave, err)
	}
	var secs int
	fmt.Sscanf(err.Error()[strings.Index(err.Error(), "retry in ")+len("retry in "):], "%ds", &secs)
	// 30 failures against an allowance of 10 leave a debt of 20: 21
	// refill periods before the next try.
	if want := (wave - cfg.SourceFailures + 1) * int(cfg.SourceFailureRefill.Seconds()); secs < want-1 || secs > want {
		t.Fatalf("retry in %ds after the wave, want about %ds", secs, want)
	}
}

func TestThrottleRefillsAndStaysBounded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SourceFailures, cfg.SourceFailureRefill = 3, Duration{10 * time.Second}
	cfg.UserFailures, cfg.UserFailureRefill = 100, Duration{time.Second}
	cfg.ThrottleEntries = 1000
	th := newThrottle(cfg)
	now := time.Unix(1e9, 0)
	fail := func(src, user string) time.Duration {
		var a attempt
		ok, wait, _ := th.begin(&a, src, user, now)
		if ok {
			th.end(&a, true, now)
		}
		return wait
	}
	for i := range 3 {
		if w := fail("10.0.0.1", "u"); w != 0 {
			t.Fatalf("failure %d refused (%v)", i+1, w)
		}
	}
	if w := fail("10.0.0.1", "u"); w != 10*time.Second {
		t.Fatalf("4th attempt: wait %v, want 10s", w)
	}
	now = now.Add(10 * time.Second)
	if w := fail("10.0.0.1", "u"); w != 0 {
		t.Fatalf("after one refill period: wait %v", w)
	}
	// A success spends nothing and leaves no state.
	for range 100 {
		var a attempt
		ok, wait, _ := th.begin(&a, "10.0.0.2", "u", now)
		if !ok {
			t.Fatalf("successful logins throttled (%v)", wait)
		}
		th.end(&a, false, now)
	}
	if n := th.entries(); n != 2 {
		t.Fatalf("%d entries after clean logins, want the 2 of 10.0.0.1", n)
	}
	// Debt: failures while over the allowance are not possible through
	// begin, but a parallel wave ends in debt and waits for all of it.
	for range 5 {
		th.end(&attempt{src: "10.0.0.3", user: "u"}, true, now)
	}
	if _, w, _ := th.begin(new(attempt), "10.0.0.3", "u", now); w != 30*time.Second {
		t.Fatalf("after 5 failures with an allowance of 3: wait %v, want 30s", w)
	}
	// An attacker cycling through sources and names cannot grow the tables
	// past their bound.
	for i := range 50000 {
		fail(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255), fmt.Sprint("user", i))
	}
	if n := th.entries(); n > 2*cfg.ThrottleEntries {
		t.Fatalf("%d entries, bound is %d", n, 2*cfg.ThrottleEntries)
	}
}

// textAddr is a net.Addr that is only its text.
type textAddr string

func (a textAddr) Network() string { return "tcp" }
func (a textAddr) String() string  { return string(a) }

func TestSourceKey(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1:5000", "127.0.0.1"},
		{"[::ffff:127.0.0.1]:5000", "127.0.0.1"},
		{"[2001:db8:1:2:3:4:5:6]:5000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:1", "2001:db8:1:2::/64"},
	} {
		addr, _ := net.ResolveTCPAddr("tcp", tc.addr)
		if got := sourceKey(addr); got != tc.want {
			t.Errorf("sourceKey(%s) = %s, want %s", tc.addr, got, tc.want)
		}
		// The same from the address's text, the way for other addresses.
		if got := sourceKey(textAddr(tc.addr)); got != tc.want {
			t.Errorf("sourceKey of the text %s = %s, want %s", tc.addr, got, tc.want)
		}
		// An IPv4 address held in 16 bytes, as the accept call gives it.
		if ip4 := addr.IP.To4(); ip4 != nil {
			wide := &net.TCPAddr{IP: ip4.To16(), Port: addr.Port}
			if got := sourceKey(wide); got != tc.want {
				t.Errorf("sourceKey(%s in 16 bytes) = %s, want %s", tc.addr, got, tc.want)
			}
		}
	}
}
