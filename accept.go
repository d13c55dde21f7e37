package main

// accept.go is what the accept loops (the TCP server's and the admin
// socket's) do when Accept fails: pause and retry while the failure may
// pass, give up only when it cannot.

import (
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// acceptBackoffMin is the first pause after a failing Accept; each further
// failure in a row doubles it, up to acceptBackoffMax, as net/http does.
const acceptBackoffMin = 5 * time.Millisecond

// acceptBackoff paces an accept loop through failures that pass, such as
// running out of file descriptors: without a pause the loop would spin on
// the CPU, and without a retry the listener would be dead for good while
// its clients wait in the backlog.
type acceptBackoff struct {
	log   *slog.Logger
	pause time.Duration // the last pause; 0 after an Accept that worked
}

// retry reports whether err may pass; if so it logs it and pauses first.
// A false is for the loop to end on.
func (b *acceptBackoff) retry(err error) bool {
	var ne net.Error
	if !(errors.As(err, &ne) && ne.Timeout() || isTemporary(err)) {
		return false
	}
	b.pause = min(max(2*b.pause, acceptBackoffMin), acceptBackoffMax)
	b.log.Error("accept failed; pausing", "err", err, "pause", b.pause)
	time.Sleep(b.pause)
	return true
}

// ok is called after each Accept that worked.
func (b *acceptBackoff) ok() { b.pause = 0 }

// isTemporary reports accept errors worth retrying: running out of file
// descriptors or buffers passes once connections close.
func isTemporary(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}
