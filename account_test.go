package main

import (
	"bytes"
	"testing"
	"time"
)

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
