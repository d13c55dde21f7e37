package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
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
