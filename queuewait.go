package main

// queuewait.go answers the connections that waited in the queue longer
// than queue_timeout, so that none is left without an answer (spec §2).
// One goroutine watches them all, in order of arrival, which is also the
// order of their deadlines: a timer per connection cost each login an
// allocation and two operations on the runtime's timer heap, where this
// costs a lock and an append.

import (
	"sync"
	"time"
)

// queueWaits holds the queued connections, oldest first, from their
// acceptance until the reaper sees them claimed or past their deadline.
type queueWaits struct {
	timeout time.Duration
	expire  func(*queued) // answers one that waited too long; claimed already

	mu   sync.Mutex
	list []*queued
	head int // list[head:] are held; the slots before it are free
	kick chan struct{}
	stop chan struct{}
	once sync.Once
	done sync.WaitGroup
}

func newQueueWaits(timeout time.Duration, expire func(*queued)) *queueWaits {
	return &queueWaits{timeout: timeout, expire: expire, kick: make(chan struct{}, 1), stop: make(chan struct{})}
}

// add starts q's wait, once it is in the queue (a worker may have
// claimed it already).
func (w *queueWaits) add(q *queued) {
	q.deadline = time.Now().Add(w.timeout)
	w.mu.Lock()
	w.dropClaimedLocked()
	w.list = append(w.list, q)
	first := len(w.list)-w.head == 1
	w.mu.Unlock()
	if first {
		// The reaper may be idle; otherwise its timer is set for an
		// earlier deadline than q's.
		tick(w.kick)
	}
}

// dropClaimedLocked lets go of the oldest connections that workers took,
// so that under load the list stays about as long as the queue.
func (w *queueWaits) dropClaimedLocked() {
	for w.head < len(w.list) && w.list[w.head].claimed.Load() {
		w.list[w.head] = nil
		w.head++
	}
	if w.head == len(w.list) {
		w.list, w.head = w.list[:0], 0
	} else if w.head > 64 && w.head > len(w.list)/2 {
		n := copy(w.list, w.list[w.head:])
		clear(w.list[n:])
		w.list, w.head = w.list[:n], 0
	}
}

// start runs the reaper until halt.
func (w *queueWaits) start() {
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		t := time.NewTimer(time.Hour)
		t.Stop()
		for {
			if next, ok := w.reap(time.Now()); ok {
				t.Reset(next)
			}
			select {
			case <-w.stop:
				t.Stop()
				return
			case <-w.kick:
			case <-t.C:
			}
		}
	}()
}

// reap answers every unclaimed connection past its deadline at now, and
// says how long until the next deadline, if any connection is held.
func (w *queueWaits) reap(now time.Time) (time.Duration, bool) {
	var late []*queued
	w.mu.Lock()
	for w.dropClaimedLocked(); w.head < len(w.list); w.dropClaimedLocked() {
		q := w.list[w.head]
		if q.deadline.After(now) {
			break
		}
		if q.claimed.CompareAndSwap(false, true) {
			late = append(late, q)
		}
	}
	var next time.Duration
	held := w.head < len(w.list)
	if held {
		next = w.list[w.head].deadline.Sub(now)
	}
	w.mu.Unlock()
	// Outside the lock: answering writes to the network.
	for _, q := range late {
		w.expire(q)
	}
	return next, held
}

func (w *queueWaits) halt() {
	w.once.Do(func() { close(w.stop) })
	w.done.Wait()
}
