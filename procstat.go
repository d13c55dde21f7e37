package main

// procstat.go reads a process's CPU time and resident memory from /proc,
// for the figures `authbox bench --pid` reports.

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// clockTicks is the kernel's USER_HZ, the unit of utime and stime in
	// /proc/PID/stat: 100 on every Linux architecture Go supports.
	clockTicks = 100
	// rssEvery is how often a server's RSS is sampled during a run: often
	// enough to catch the peak of a connection burst.
	rssEvery = 50 * time.Millisecond
)

// readProcCPU returns a process's utime+stime, all threads, from /proc;
// pid 0 is no process, and no time.
func readProcCPU(pid int) (time.Duration, error) {
	if pid <= 0 {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, errors.New("no such process on this machine")
	}
	return parseProcCPU(string(b))
}

// parseProcCPU reads utime and stime from the text of /proc/PID/stat.
func parseProcCPU(s string) (time.Duration, error) {
	// The command name, in parentheses, may hold spaces: fields count
	// from the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("unreadable /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unreadable /proc stat")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// readProcRSS returns a process's resident set size in bytes.
func readProcRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseProcRSS(string(b))
}

// parseProcRSS reads VmRSS from the text of /proc/PID/status.
func parseProcRSS(s string) (int64, error) {
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// selfCPU is this process's user+system time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssSampler follows a process's resident memory through a run.
type rssSampler struct {
	pid          int
	before, peak int64 // peak is written by the sampling goroutine until done
	stop, done   chan struct{}
}

// sampleRSS reads pid's RSS now and then every rssEvery until end; with
// pid 0 it samples nothing and reports zeros.
func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	if pid <= 0 {
		close(s.done)
		return s
	}
	s.before, _ = readProcRSS(pid)
	s.peak = s.before
	go func() {
		defer close(s.done)
		t := time.NewTicker(rssEvery)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				if v, err := readProcRSS(pid); err == nil {
					s.peak = max(s.peak, v)
				}
			}
		}
	}()
	return s
}

// end stops sampling and returns the RSS at the start, the peak and now;
// a process that exited reads as 0 now.
func (s *rssSampler) end() (before, peak, now int64) {
	close(s.stop)
	<-s.done
	if s.pid <= 0 {
		return 0, 0, 0
	}
	now, _ = readProcRSS(s.pid)
	return s.before, max(s.peak, now), now
}
