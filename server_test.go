package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestQueuedConnectionIsAnsweredInTime(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = 1
	cfg.Queue = 4
	cfg.QueueTimeout = Duration{200 * time.Millisecond}
	cfg.LineTimeout = Duration{time.Minute}
	ts := startServer(t, cfg)
	held, _ := dialRaw(t, ts.addr) // holds the only worker, silently
	// The next one waits in the queue, and is told BUSY rather than left
	// hanging until the worker frees up.
	waiting, first := dialRaw(t, ts.addr)
	if !strings.HasPrefix(first, "ERR BUSY ") {
		t.Fatalf("queued connection got %q", first)
	}
	waiting.expectClosed()
	if got := held.do("PING"); got != "OK PONG" {
		t.Fatal(got)
	}
}

func TestBusyWhenQueueFull(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = 1
	cfg.Queue = 1
	ts := startServer(t, cfg)
	held, greeting := dialRaw(t, ts.addr) // the only worker is now serving it
	if !strings.HasPrefix(greeting, "AUTHBOX 1 ") {
		t.Fatal(greeting)
	}
	queued, err := net.DialTimeout("tcp", ts.addr, 5*time.Second) // accepted, waits in the queue
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()
	busy, line := dialRaw(t, ts.addr)
	if !strings.HasPrefix(line, "ERR BUSY ") {
		t.Fatalf("third connection got %q, want ERR BUSY", line)
	}
	busy.expectClosed()
	// When the worker is free, the queued connection is served.
	if got := held.do("QUIT"); got != "OK BYE" {
		t.Fatal(got)
	}
	rq := &rawConn{t: t, nc: queued, r: bufio.NewReader(queued)}
	if got := rq.read(); !strings.HasPrefix(got, "AUTHBOX 1 ") {
		t.Fatalf("queued connection: %q", got)
	}
	if got := rq.do("PING"); got != "OK PONG" {
		t.Fatal(got)
	}
}

func TestRestartKeepsAccounts(t *testing.T) {
	cfg := testConfig(t)
	ts := startServer(t, cfg)
	names := []string{"alice", "bob", "Ünïcode", "a=b,c"}
	for _, n := range names {
		mustRegister(t, ts.addr, n, "Secret123")
	}
	ts.stop()
	ts2 := startServer(t, cfg)
	for _, n := range names {
		if err := login(t, ts2.addr, n, "Secret123"); err != nil {
			t.Errorf("%s after restart: %v", n, err)
		}
	}
}

func TestShutdownLetsExchangeFinish(t *testing.T) {
	ts := startServer(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "Secret123")
	idle, _ := dialRaw(t, ts.addr)
	idle.do("PING")
	inflight, _ := dialRaw(t, ts.addr)

	sc, _ := scramClient("alice", "Secret123")
	conv := sc.NewConversation()
	c1, _ := conv.Step("")
	reply := inflight.do("AUTH SCRAM-SHA-256 " + EncodeB64([]byte(c1)))
	s1, _ := DecodeB64(strings.TrimPrefix(reply, "CHALLENGE "))

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- ts.Shutdown(ctx)
	}()
	// The idle connection is told and closed.
	if got := idle.read(); !strings.HasPrefix(got, "ERR BUSY ") {
		t.Fatalf("idle connection at shutdown: %q", got)
	}
	// The exchange under way still completes.
	c2, _ := conv.Step(string(s1))
	got := inflight.do("RESPONSE " + EncodeB64([]byte(c2)))
	if !strings.HasPrefix(got, "OK ") {
		t.Fatalf("in-flight login at shutdown: %q", got)
	}
	if got := inflight.read(); !strings.HasPrefix(got, "ERR BUSY ") {
		t.Fatalf("after the exchange: %q", got)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestSilentConnectionsFromOneSourceDoNotStallOthers(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = 16
	cfg.Queue = 8
	cfg.MaxConnsPerSource = 4
	cfg.LineTimeout = Duration{time.Minute} // the silent ones are never cut during the test
	ts := startServer(t, cfg)
	mustRegister(t, ts.addr, "alice", "Secret123")

	served, limited := 0, 0
	for range 100 {
		rc, first := rawFrom(t, ts.addr, "127.0.0.2")
		switch {
		case strings.HasPrefix(first, "AUTHBOX 1 "):
			served++ // stays open and silent
		case strings.HasPrefix(first, "ERR BUSY too many connections from your address"):
			limited++
			rc.expectClosed()
		default:
			t.Fatalf("silent connection got %q", first)
		}
	}
	if served != cfg.MaxConnsPerSource || limited != 100-served {
		t.Fatalf("served %d, limited %d; want %d and the rest", served, limited, cfg.MaxConnsPerSource)
	}
	// Another source logs in at once: a worker is free for it.
	if err := loginFrom(t, ts.addr, "127.0.0.3", "alice", "Secret123"); err != nil {
		t.Fatalf("login from another source while one source holds silent connections: %v", err)
	}
}

func TestFloodIsShedQuickly(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers = 2
	cfg.Queue = 2
	cfg.MaxConnsPerSource = 10000
	// "Quickly": every connection must be answered within its 10 s read
	// deadline, while the queue timer would answer only after a minute; so
	// each BUSY here comes from the accept loop shedding at once, never
	// from a connection left to wait in the queue.
	cfg.QueueTimeout = Duration{time.Minute}
	ts := startServer(t, cfg)
	mustRegister(t, ts.addr, "alice", "Secret123")
	baseline := runtime.NumGoroutine()

	const total, parallel = 3000, 100
	var greeted, busy, other atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	start := time.Now()
	for i := range total {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			src := fmt.Sprintf("127.0.1.%d", 1+i%200)
			d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			nc, err := d.Dial("tcp", ts.addr)
			if err != nil {
				other.Add(1)
				return
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(nc).ReadString('\n')
			switch {
			case strings.HasPrefix(line, "AUTHBOX 1 "):
				greeted.Add(1)
				nc.Write([]byte("QUIT\n"))
			case strings.HasPrefix(line, "ERR BUSY "):
				busy.Add(1)
			default:
				other.Add(1)
				t.Errorf("flood connection got %q, %v", line, err)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d connections in %v: %d served, %d BUSY", total, time.Since(start).Round(time.Millisecond), greeted.Load(), busy.Load())
	if busy.Load() == 0 || greeted.Load()+busy.Load() != total {
		t.Fatalf("served %d, busy %d, other %d of %d", greeted.Load(), busy.Load(), other.Load(), total)
	}
	// Service is normal right after, and the server holds no leftovers:
	// memory per connection is a goroutine and a 4 KiB buffer, only while
	// it is queued or served.
	if err := login(t, ts.addr, "alice", "Secret123"); err != nil {
		t.Fatalf("login after the flood: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline+5 && time.Now().Before(deadline) {
		// Connection goroutines exit on their own after the client
		// closes; there is no event to wait for, so poll gently.
		<-time.After(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline+5 {
		t.Fatalf("%d goroutines after the flood, %d before", n, baseline)
	}
}
