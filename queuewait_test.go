package main

import (
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestQueueWaitsExpireInTime: a connection no worker claims is answered
// at its deadline, not before; one claimed in time is never answered by
// the reaper; each is answered once.
func TestQueueWaitsExpireInTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		expired := map[*queued]time.Duration{}
		start := time.Now()
		w := newQueueWaits(200*time.Millisecond, func(q *queued) {
			mu.Lock()
			defer mu.Unlock()
			if _, twice := expired[q]; twice {
				t.Errorf("%s answered twice", q.src)
			}
			expired[q] = time.Since(start)
		})
		w.start()
		defer w.halt()

		a := &queued{src: "a"}
		w.add(a)
		time.Sleep(50 * time.Millisecond) // fake time: the bubble's clock
		b := &queued{src: "b"}
		w.add(b)
		c := &queued{src: "c"}
		w.add(c)
		if !c.claim() { // a worker takes c at once
			t.Fatal("c was taken before its deadline")
		}
		time.Sleep(199 * time.Millisecond)
		synctest.Wait()
		mu.Lock()
		if d, ok := expired[a]; !ok || d != 200*time.Millisecond {
			t.Errorf("a answered after %v (answered %v), want 200ms", d, ok)
		}
		if _, ok := expired[b]; ok {
			t.Error("b answered before its deadline")
		}
		mu.Unlock()
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if d := expired[b]; d != 250*time.Millisecond {
			t.Errorf("b answered after %v, want 250ms", d)
		}
		if _, ok := expired[c]; ok {
			t.Error("c, claimed by a worker, was answered by the reaper")
		}
		if b.claim() {
			t.Error("a worker could take b after the reaper answered it")
		}
	})
}

// TestQueueWaitsLetGoOfClaimed: connections that workers took are not
// kept by the reaper's list, however many pass through it, so that it
// holds no closed connection alive.
func TestQueueWaitsLetGoOfClaimed(t *testing.T) {
	w := newQueueWaits(time.Hour, func(*queued) { t.Error("nothing should expire") })
	for range 10000 {
		q := &queued{}
		w.add(q)
		q.claim()
	}
	w.mu.Lock()
	held, capacity := len(w.list)-w.head, cap(w.list)
	w.mu.Unlock()
	if held > 1 || capacity > 256 {
		t.Fatalf("after 10000 claimed connections the list holds %d (capacity %d)", held, capacity)
	}
	if _, ok := w.reap(time.Now()); ok {
		t.Fatal("the reaper still holds a claimed connection")
	}
}

// TestRejectedConnectionsNeverWait: while a connection waits in a full
// queue, those turned away after it are answered at once and never enter
// the reaper's list, which a flood would otherwise fill for a
// queue_timeout behind the waiter.
func TestRejectedConnectionsNeverWait(t *testing.T) {
	cfg := testConfig(t)
	cfg.Workers, cfg.Queue = 1, 1
	cfg.QueueTimeout = Duration{time.Minute}
	cfg.LineTimeout = Duration{time.Minute}
	ts := startServer(t, cfg)
	held, _ := dialRaw(t, ts.addr) // the only worker
	waiting, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	for range 50 {
		rc, line := dialRaw(t, ts.addr)
		if !strings.HasPrefix(line, "ERR BUSY ") {
			t.Fatalf("with the queue full: %q", line)
		}
		rc.expectClosed()
	}
	w := ts.Server.waits
	w.mu.Lock()
	held2 := len(w.list) - w.head
	w.mu.Unlock()
	if held2 > 1 {
		t.Fatalf("after 50 connections turned away, the reaper holds %d", held2)
	}
	if got := held.do("PING"); got != "OK PONG" {
		t.Fatal(got)
	}
}
