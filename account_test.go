package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDuplicateRegistration(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "Secret123")
	c, err := Dial(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Register("alice", "Other1234"); code(err) != CodeExists {
		t.Fatalf("duplicate: %v, want ERR EXISTS", err)
	}
	// The first password still works; the second never took.
	if err := login(t, ts.addr, "alice", "Secret123"); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentDuplicateRegistration(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = 32
	ts := startServer(t, cfg)
	const n = 16
	// Every client gets its SALT first, then all send VERIFIER together:
	// they race inside the store, where exactly one may win.
	conns := make([]*rawConn, n)
	salts := make([]string, n)
	for i := range conns {
		conns[i], _ = dialRaw(t, ts.addr)
		reply := conns[i].do("REGISTER carol")
		f := strings.Fields(reply)
		if len(f) != 3 || f[0] != "SALT" {
			t.Fatalf("REGISTER: %q", reply)
		}
		salts[i] = f[1]
	}
	var wg sync.WaitGroup
	replies := make([]string, n)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			salt, _ := DecodeB64(salts[i])
			st, sv, _ := Verifier("carol", fmt.Sprintf("Password%d", i), salt, testIterations)
			conns[i].send("VERIFIER " + EncodeB64(st) + " " + EncodeB64(sv) + "\n")
		}()
	}
	wg.Wait()
	ok, winner := 0, -1
	for i, rc := range conns {
		replies[i] = rc.read()
		switch {
		case replies[i] == "OK":
			ok++
			winner = i
		case strings.HasPrefix(replies[i], "ERR EXISTS "):
		default:
			t.Errorf("client %d: %q", i, replies[i])
		}
	}
	if ok != 1 {
		t.Fatalf("%d registrations won, want exactly 1: %q", ok, replies)
	}
	if err := login(t, ts.addr, "carol", fmt.Sprintf("Password%d", winner)); err != nil {
		t.Fatalf("the winner cannot log in: %v", err)
	}
}

func TestRegistrationDenied(t *testing.T) {
	cfg := testConfig(t)
	cfg.OpenRegistration = false
	ts := startServer(t, cfg)
	rc, _ := dialRaw(t, ts.addr)
	if got := rc.do("REGISTER alice"); !strings.HasPrefix(got, "ERR DENIED ") {
		t.Fatalf("REGISTER with registration off: %q", got)
	}
	if got := rc.do("PING"); got != "OK PONG" {
		t.Fatalf("after DENIED: %q", got)
	}
}

func TestProbingNamesThroughRegisterIsThrottled(t *testing.T) {
	ts := startServer(t, testConfig(t))
	for i := range 20 {
		mustRegister(t, ts.addr, fmt.Sprint("user", i), "Secret123")
	}
	rc, _ := rawFrom(t, ts.addr, "127.0.0.8")
	exists := 0
	for i := range 20 {
		got := rc.do(fmt.Sprint("REGISTER user", i))
		if strings.HasPrefix(got, "ERR LIMIT ") {
			break
		}
		if !strings.HasPrefix(got, "ERR EXISTS ") {
			t.Fatal(got)
		}
		exists++
	}
	if exists != testConfig(t).SourceFailures {
		t.Fatalf("%d names probed through REGISTER before LIMIT, want %d", exists, testConfig(t).SourceFailures)
	}
	// A free name is still registrable from elsewhere.
	mustRegister(t, ts.addr, "newcomer", "Secret123")
}

// loggedIn dials addr and logs in as name; the connection closes at cleanup.
func loggedIn(t *testing.T, addr, name, password string) *Client {
	t.Helper()
	c, err := testDial(t, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(name, password); err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return c
}

// A session deleted out from under it, its name then registered by someone
// else, must neither answer the old name nor change the new owner's password.
func TestSessionEndsWhenAccountDeletedAndReregistered(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "mallory1", "first-password")
	old := loggedIn(t, ts.addr, "mallory1", "first-password")
	victim := loggedIn(t, ts.addr, "mallory1", "first-password")
	if err := victim.Delete(); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, ts.addr, "mallory1", "new-owner-password")
	if name, err := old.Whoami(); code(err) != CodeAuth {
		t.Fatalf("WHOAMI of the old session = %q, %v; want ERR %s", name, err, CodeAuth)
	}
	if err := old.Passwd("mallory1", "takeover-password"); err == nil {
		t.Fatal("the old session changed the new owner's password")
	}
	if err := login(t, ts.addr, "mallory1", "new-owner-password"); err != nil {
		t.Fatalf("the new owner cannot log in: %v", err)
	}
}

// A password change from one session logs every other session out, so a
// stolen password's session does not survive the victim's passwd.
func TestPasswdEndsOtherSessions(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "stolen-password")
	thief := loggedIn(t, ts.addr, "alice", "stolen-password")
	owner := loggedIn(t, ts.addr, "alice", "stolen-password")
	if err := owner.Passwd("alice", "fresh-password"); err != nil {
		t.Fatal(err)
	}
	if name, err := owner.Whoami(); err != nil || name != "alice" {
		t.Fatalf("the changing session: WHOAMI = %q, %v", name, err)
	}
	if _, err := thief.Whoami(); code(err) != CodeAuth {
		t.Fatalf("the other session's WHOAMI: %v, want ERR %s", err, CodeAuth)
	}
	if err := thief.Passwd("alice", "thief-password"); err == nil {
		t.Fatal("the other session changed the password again")
	}
	if err := login(t, ts.addr, "alice", "fresh-password"); err != nil {
		t.Fatal(err)
	}
}

// A session is checked against the store before each command that needs
// a login, but read again only after a write: with nothing written since
// the login, WHOAMI and LOGOUT read nothing; after a write they read, and
// a session whose account went meanwhile is ended, LOGOUT included.
func TestSessionCheckReadsAfterWritesOnly(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "alice-password")
	mustRegister(t, ts.addr, "bob", "bob-password")
	alice := loggedIn(t, ts.addr, "alice", "alice-password")
	ts.store.countGets.Store(true)
	reads := ts.store.gets.Load()
	for range 3 {
		if name, err := alice.Whoami(); err != nil || name != "alice" {
			t.Fatalf("WHOAMI = %q, %v", name, err)
		}
	}
	if n := ts.store.gets.Load() - reads; n != 0 {
		t.Fatalf("%d store reads for WHOAMI with nothing written since the login, want 0", n)
	}
	mustRegister(t, ts.addr, "carol", "carol-password")
	reads = ts.store.gets.Load()
	for range 2 {
		if name, err := alice.Whoami(); err != nil || name != "alice" {
			t.Fatalf("WHOAMI after another account's registration = %q, %v", name, err)
		}
	}
	if n := ts.store.gets.Load() - reads; n != 1 {
		t.Fatalf("%d store reads for two WHOAMIs after a write, want 1", n)
	}
	bob := loggedIn(t, ts.addr, "bob", "bob-password")
	if err := loggedIn(t, ts.addr, "bob", "bob-password").Delete(); err != nil {
		t.Fatal(err)
	}
	if r, err := bob.Do("LOGOUT"); code(err) != CodeAuth {
		t.Fatalf("LOGOUT of a deleted account's session = %v, %v; want ERR %s", r, err, CodeAuth)
	}
	if r, err := alice.Do("LOGOUT"); err != nil || r.Word != "OK" {
		t.Fatalf("LOGOUT = %v, %v", r, err)
	}
}

// TestSessionCheckAfterDamage: damage a read meets (here, a read whose
// page does not decode, as the store's guard sees it) ends the trust the
// session check puts in the write count: WHOAMI then reads, and fails,
// rather than answering for an account the server can no longer read.
func TestSessionCheckAfterDamage(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "alice-password")
	alice := loggedIn(t, ts.addr, "alice", "alice-password")
	if name, err := alice.Whoami(); err != nil || name != "alice" {
		t.Fatalf("WHOAMI = %q, %v", name, err)
	}
	if err := ts.store.guard(func() error { panic("unexpected page type") }); !errors.Is(err, ErrDamaged) {
		t.Fatalf("a read that panics: %v, want ErrDamaged", err)
	}
	if r, err := alice.Do("WHOAMI"); code(err) != CodeInternal {
		t.Fatalf("WHOAMI on a damaged store = %v, %v; want ERR %s", r, err, CodeInternal)
	}
}

// TestFailedAuthEndsItsAttempt: an AUTH that fails after the throttle
// counted it under way (here the store cannot read the account) is no
// longer under way once answered.
func TestFailedAuthEndsItsAttempt(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "alice-password")
	if err := ts.store.guard(func() error { panic("unexpected page type") }); !errors.Is(err, ErrDamaged) {
		t.Fatalf("a read that panics: %v, want ErrDamaged", err)
	}
	rc, _ := dialRaw(t, ts.addr)
	rc.send("AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,,n=alice,r="+strings.Repeat("x", 32))) + "\n")
	if got := rc.read(); !strings.HasPrefix(got, "ERR INTERNAL ") {
		t.Fatalf("AUTH on a damaged store: %q", got)
	}
	ts.thr.mu.Lock()
	n := len(ts.thr.inflight)
	ts.thr.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d logins still under way after the failed AUTH was answered, want 0", n)
	}
}

// Records written before Gen existed (version 1) still read, as Gen 0.
func TestRecordVersion1StillReads(t *testing.T) {
	in := Record{Kind: KindSCRAM, Iterations: 4096, Salt: []byte("salt"), StoredKey: bytes.Repeat([]byte{1}, KeyLen),
		ServerKey: bytes.Repeat([]byte{2}, KeyLen), Created: time.Unix(1, 0).UTC(), Updated: time.Unix(2, 0).UTC(), Gen: 7}
	v2 := in.marshal()
	v1 := append([]byte{1}, v2[1:23]...)
	v1 = append(v1, v2[31:]...)
	out, err := unmarshalRecord(v1)
	if err != nil || out.Gen != 0 || !bytes.Equal(out.Salt, in.Salt) || out.Iterations != 4096 {
		t.Fatalf("version 1: %+v, %v", out, err)
	}
	if back, err := unmarshalRecord(v2); err != nil || back.Gen != 7 {
		t.Fatalf("version 2: %+v, %v", back, err)
	}
}

// Every write path to the bbolt file moves its write count: after each, a
// session confirmed just before is ended, whatever its next command.
func TestSessionEndsOnEveryWritePath(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "alice-password")
	rec, err := ts.store.Get("alice")
	if err != nil {
		t.Fatal(err)
	}
	writes := map[string]func(){
		"CreateMany replace": func() {
			if _, _, err := ts.store.CreateMany([]NamedRecord{{"alice", rec}}, true); err != nil {
				t.Fatal(err)
			}
		},
		"Delete+Create": func() {
			if err := ts.store.Delete("alice"); err != nil {
				t.Fatal(err)
			}
			if err := ts.store.Create("alice", rec); err != nil {
				t.Fatal(err)
			}
		},
		"DeletePrefix+CreateMany": func() {
			if _, err := ts.store.DeletePrefix("ali"); err != nil {
				t.Fatal(err)
			}
			if _, _, err := ts.store.CreateMany([]NamedRecord{{"alice", rec}}, false); err != nil {
				t.Fatal(err)
			}
		},
		"admin passwd": func() {
			if err := ts.store.Update("alice", func(old Record) (Record, error) {
				old.Gen = NewGen()
				return old, nil
			}); err != nil {
				t.Fatal(err)
			}
		},
	}
	for what, write := range writes {
		for _, verb := range []string{"WHOAMI", "LOGOUT", "PASSWD", "DELETE"} {
			c := loggedIn(t, ts.addr, "alice", "alice-password")
			if _, err := c.Whoami(); err != nil { // confirmed: checked is current
				t.Fatal(err)
			}
			write()
			if r, err := c.Do(verb); code(err) != CodeAuth {
				t.Errorf("%s after %s: %v, %v; want ERR %s", verb, what, r, err, CodeAuth)
			}
			c.Close()
		}
	}
}

// A session spamming WHOAMI while its account is deleted elsewhere: once
// the delete has returned, no WHOAMI sent after it succeeds.
func TestSessionCheckRacesADelete(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "alice-password")
	rec, err := ts.store.Get("alice")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		c := loggedIn(t, ts.addr, "alice", "alice-password")
		deleted := make(chan struct{})
		go func() {
			// Unrelated writes move the count too, as in a busy server.
			ts.store.Create(fmt.Sprintf("other%d", i), rec)
			if err := ts.store.Delete("alice"); err != nil {
				t.Error(err)
			}
			close(deleted)
		}()
		after := false
		for {
			select {
			case <-deleted:
				after = true
			default:
			}
			_, err := c.Whoami()
			if err != nil {
				if code(err) != CodeAuth {
					t.Fatal(err)
				}
				break
			}
			if after {
				t.Fatalf("round %d: WHOAMI sent after the delete returned succeeded", i)
			}
		}
		c.Close()
		if err := ts.store.Create("alice", rec); err != nil {
			t.Fatal(err)
		}
	}
}
