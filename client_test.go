package main

import (
	"strings"
	"testing"
)

// TestLoginAnyFallsBackToSeed is the client's side of the legacy upgrade,
// and its price: one wrong password is two failed logins while SEED-SHA256
// is offered.
func TestLoginAnyFallsBackToSeed(t *testing.T) {
	cfg := testConfig(t)
	cfg.Mechanisms = []string{MechSCRAM, MechSeed}
	ts := startServer(t, cfg)
	u := newLegacyUser(t, "alice", "Alice-pw1")
	rec, err := LegacyRecord(u.password, u.salt)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.store.Create("alice", rec); err != nil {
		t.Fatal(err)
	}
	c, err := Dial(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.LoginAny("alice", "Wrong-pw1"); code(err) != CodeAuth {
		t.Fatalf("wrong password: %v", err)
	}
	if n := strings.Count(ts.logs.String(), `msg="login failed"`); n != 2 {
		t.Errorf("one wrong password logged %d failed logins, want 2 (SCRAM, then SEED)", n)
	}
	legacy, err := c.LoginAny("alice", "Alice-pw1")
	if err != nil || !legacy {
		t.Fatalf("legacy login: %v %v", legacy, err)
	}
	if err := c.Passwd("alice", "Alice-pw1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := ts.store.Get("alice"); got.Kind != KindSCRAM {
		t.Fatalf("after PASSWD the record is %v", got.Kind)
	}
	c.Do(CmdLogout)
	if legacy, err := c.LoginAny("alice", "Alice-pw1"); err != nil || legacy {
		t.Fatalf("after the upgrade: %v %v", legacy, err)
	}

	// A server without SEED-SHA256 gets one SCRAM attempt and no more.
	cfg2 := testConfig(t)
	ts2 := startServer(t, cfg2)
	ts2.store.Create("bob", rec)
	c2, err := Dial(ts2.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.LoginAny("bob", "Alice-pw1"); code(err) != CodeAuth {
		t.Fatalf("legacy user without SEED: %v", err)
	}
	if n := strings.Count(ts2.logs.String(), `msg="login failed"`); n != 1 {
		t.Errorf("%d failed logins logged, want 1", n)
	}
}
