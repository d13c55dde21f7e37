package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestStoreUnreachableIsBusy(t *testing.T) {
	c := startEtcd(t, 1)
	ts := serveOnEtcd(t, c, "/health/", func(cfg *Config) { cfg.MetricsListen = "127.0.0.1:0" })
	mgmt, err := ListenManagement("127.0.0.1:0", ts.Server, ts.Server.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mgmt.Shutdown(context.Background()) })
	readyz := "http://" + mgmt.Addr().String() + "/readyz"
	mustRegister(t, ts.addr, "fay", "Secret123")
	if code, _ := get(t, readyz); code != http.StatusOK {
		t.Fatalf("/readyz with the store up: %d", code)
	}

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
	if code, body := get(t, readyz); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "store unavailable") {
		t.Errorf("/readyz with the store lost: %d %q", code, body)
	}

	c.restart(0)
	dialUntil(t, ts.addr, 15*time.Second, func(l string) bool { return strings.HasPrefix(l, "AUTHBOX 1 ") })
	if err := login(t, ts.addr, "fay", "Secret123"); err != nil {
		t.Fatalf("login after the store came back: %v", err)
	}
	if code, _ := get(t, readyz); code != http.StatusOK {
		t.Errorf("/readyz with the store back: %d", code)
	}
	if n := strings.Count(ts.logs.String(), "store reachable again"); n != 1 {
		t.Errorf("the store's return was logged %d times:\n%s", n, ts.logs)
	}
}

// TestStoreAnswerIsNotUnreachable: a store that answers, but with a record
// that does not decode, is a fault of that record, not a lost store: the
// command gets ERR INTERNAL, the connection stays, and the server keeps
// taking connections instead of sending every client away BUSY.
func TestStoreAnswerIsNotUnreachable(t *testing.T) {
	c := startEtcd(t, 1)
	ts := serveOnEtcd(t, c, "/badrec/")
	es := ts.storage.(*EtcdStore)
	ctx, cancel := es.ctx()
	defer cancel()
	if _, err := es.cli.Put(ctx, es.userKey("mangled"), "not a record"); err != nil {
		t.Fatal(err)
	}
	rc, _ := dialRaw(t, ts.addr)
	first := "n,,n=mangled,r=abcdefghijklmnop"
	if r := rc.do("AUTH SCRAM-SHA-256 " + EncodeB64([]byte(first))); !strings.HasPrefix(r, "ERR INTERNAL ") {
		t.Fatalf("AUTH for a record that does not decode: %q", r)
	}
	if r := rc.do("PING"); r != "OK PONG" {
		t.Fatalf("after ERR INTERNAL: %q", r)
	}
	if ts.Server.health.unavailable() {
		t.Fatal("a record that does not decode marked the store unreachable")
	}
	if logs := ts.logs.String(); strings.Contains(logs, "store unreachable") || !strings.Contains(logs, "internal error") {
		t.Fatalf("logs:\n%s", logs)
	}
	if err := login(t, ts.addr, "nobody", "Secret123"); code(err) != CodeAuth {
		t.Fatalf("another login on the same server: %v", err)
	}
}

// TestStoreLostMidCommandIsBusy: a command that needs the store while it
// is unreachable gets ERR BUSY and a close, so that the client moves on
// to another server.
func TestStoreLostMidCommandIsBusy(t *testing.T) {
	c := startEtcd(t, 1)
	ts := serveOnEtcd(t, c, "/midcmd/")
	cl, err := testDial(t, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c.kill(0)
	err = cl.Register("newcomer", "Secret123")
	if code(err) != CodeBusy || !strings.Contains(err.Error(), "store is unreachable") {
		t.Fatalf("REGISTER with the store lost: %v", err)
	}
}

// TestStoreDownLogsOncePerChange: a server whose store is unreachable
// logs it once per change of state, not once per connection it turns
// away.
func TestStoreDownLogsOncePerChange(t *testing.T) {
	c := startEtcd(t, 1)
	ts := serveOnEtcd(t, c, "/logonce/")
	c.kill(0)
	busy := func(l string) bool { return strings.HasPrefix(l, "ERR BUSY") }
	dialUntil(t, ts.addr, 10*time.Second, busy)
	for range 20 {
		dialUntil(t, ts.addr, time.Second, busy)
	}
	if n := strings.Count(ts.logs.String(), "unreachable"); n > 2 {
		t.Fatalf("21 connections turned away while the store was down logged its loss %d times", n)
	}
}
