package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and a ')' of its own: fields count from
	// the last ')'. utime 250 and stime 50 ticks are 3s.
	stat := "42 (a b) c)) S 1 42 42 0 -1 4194304 10 0 0 0 250 50 0 0 20 0 1 0 100 2000000 300 18446744073709551615"
	if d, err := parseProcCPU(stat); err != nil || d != 3*time.Second {
		t.Fatalf("parseProcCPU = %v, %v; want 3s", d, err)
	}
	for _, bad := range []string{"", "42 no parenthesis 1 2 3", "42 (x) S 1 2", "42 (x) S 1 42 42 0 -1 4194304 10 0 0 0 x 50 0"} {
		if _, err := parseProcCPU(bad); err == nil {
			t.Errorf("parseProcCPU(%q) accepted", bad)
		}
	}
	status := "Name:\tauthbox\nVmPeak:\t  9000 kB\nVmRSS:\t    1956 kB\nThreads:\t4\n"
	if n, err := parseProcRSS(status); err != nil || n != 1956<<10 {
		t.Fatalf("parseProcRSS = %d, %v", n, err)
	}
	if _, err := parseProcRSS("Name:\tkthread\n"); err == nil {
		t.Error("parseProcRSS without VmRSS accepted")
	}
	if _, err := parseProcRSS("VmRSS:\tlots kB\n"); err == nil {
		t.Error("parseProcRSS of a non-number accepted")
	}
}

func TestProcOfThisProcess(t *testing.T) {
	if _, err := readProcCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if d, err := readProcCPU(0); d != 0 || err != nil {
		t.Fatalf("readProcCPU(0) = %v, %v; want no process and no time", d, err)
	}
	// Beyond the kernel's largest pid: no such process.
	const nopid = 1<<31 - 1
	if _, err := readProcCPU(nopid); err == nil || !strings.Contains(err.Error(), "no such process") {
		t.Fatalf("readProcCPU of no process: %v", err)
	}
	if _, err := readProcRSS(nopid); err == nil {
		t.Fatal("readProcRSS of no process succeeded")
	}
	if selfCPU() <= 0 {
		t.Fatal("this process used no CPU")
	}

	s := sampleRSS(os.Getpid())
	before, peak, now := s.end()
	if before <= 0 || now <= 0 || peak < before || peak < now {
		t.Fatalf("sampleRSS of this process: before %d, peak %d, now %d", before, peak, now)
	}
	if before, peak, now := sampleRSS(0).end(); before != 0 || peak != 0 || now != 0 {
		t.Fatalf("sampleRSS(0): %d %d %d", before, peak, now)
	}
}
