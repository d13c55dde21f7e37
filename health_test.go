package main

import (
	"strings"
	"testing"
	"time"
)

func TestStoreUnreachableIsBusy(t *testing.T) {
	c := startEtcd(t, 1)
	ts := serveOnEtcd(t, c, "/health/")
	mustRegister(t, ts.addr, "fay", "Secret123")

	c.kill(0)
	busy := func(l string) bool { return strings.HasPrefix(l, "ERR BUSY") }
	line := dialUntil(t, ts.addr, 10*time.Second, busy)
	if !strings.Contains(line, "store is unreachable") {
		t.Errorf("BUSY for a lost store says %q", line)
	}
	// Once per change of state, however many connections it turned away.
	dialUntil(t, ts.addr, time.Second, busy)
	dialUntil(t, ts.addr, time.Second, busy)
	if n := strings.Count(ts.logs.String(), "store unreachable:"); n != 1 {
		t.Errorf("the lost store was logged %d times:\n%s", n, ts.logs)
	}

	c.restart(0)
	dialUntil(t, ts.addr, 15*time.Second, func(l string) bool { return strings.HasPrefix(l, "AUTHBOX 1 ") })
	if err := login(t, ts.addr, "fay", "Secret123"); err != nil {
		t.Fatalf("login after the store came back: %v", err)
	}
	if n := strings.Count(ts.logs.String(), "store reachable again"); n != 1 {
		t.Errorf("the store's return was logged %d times:\n%s", n, ts.logs)
	}
}
