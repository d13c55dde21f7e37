package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestErrorClass(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&ProtoError{Code: CodeLocked, Text: "too many failed logins"}, CodeLocked},
		{fmt.Errorf("bench0: %w", &ProtoError{Code: CodeBusy}), CodeBusy},
		{ErrBenchSignature, "signature"},
		{fmt.Errorf("%w to AUTH: %q", ErrBenchReply, "OK"), "protocol"},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, "timeout"},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, "dial"},
		{io.EOF, "closed"},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, "closed"},
		{&net.OpError{Op: "write", Err: syscall.EPIPE}, "closed"},
		{errors.New("something else"), "io"},
	} {
		if got := errorClass(tc.err); got != tc.want {
			t.Errorf("errorClass(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestBenchReportServerCodes checks that an ERR code a hostile server made
// of terminal escapes reaches the report, text and JSON, as visible
// escapes.
func TestBenchReportServerCodes(t *testing.T) {
	cl := errorClass(&ProtoError{Code: "\x1b]0;pwned\x07\u009b2J", Text: "x"})
	rep := &benchReport{Mode: "login", Errors: 1, ErrorsByCode: map[string]int{cl: 1},
		LatencyMs: map[string]any{"p50": 0.0, "p90": 0.0, "p99": 0.0, "p99.9": 0.0, "max": 0.0}}
	var text strings.Builder
	rep.writeText(&text)
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{text.String(), string(js)} {
		if !strings.Contains(out, `0;pwned`) || strings.ContainsAny(out, "\x1b\x07\u009b") {
			t.Errorf("the report holds the server's escapes raw: %q", out)
		}
	}
	if !strings.Contains(text.String(), `errors:       1 (\x1b]0;pwned\x07\u009b2J 1)`) {
		t.Errorf("text report: %q", text.String())
	}
}

func TestQuantile(t *testing.T) {
	if quantile(nil, 0.5) != 0 {
		t.Fatal("quantile of no latencies")
	}
	lat := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for q, want := range map[float64]time.Duration{0: 1, 0.5: 5, 0.9: 9, 0.99: 10, 1: 10} {
		if got := quantile(lat, q); got != want {
			t.Errorf("quantile(1..10, %v) = %v, want %v", q, got, want)
		}
	}
	if ms(1500*time.Microsecond) != 1.5 || ms(1234567) != 1.235 || mib(3<<20+1<<19) != 3.5 {
		t.Fatal("ms or mib rounding")
	}
}

func TestReportText(t *testing.T) {
	b := &bench{o: benchOptions{server: "127.0.0.1:7", mode: "register", conc: 2, bare: true}}
	stats := []*workerStats{
		{lat: []time.Duration{3 * time.Millisecond, time.Millisecond}, errs: map[string]int{CodeBusy: 2}},
		{lat: []time.Duration{2 * time.Millisecond}, errs: map[string]int{"timeout": 1, CodeBusy: 1}},
	}
	rep := b.report(stats, 2*time.Second)
	if rep.Ops != 3 || rep.Errors != 4 || rep.OpsPerSec != 1.5 || rep.Users != 0 || rep.LatencyMs["p50"] != 2.0 || rep.LatencyMs["max"] != 3.0 {
		t.Fatalf("report: %+v", rep)
	}
	rep.ServerPID, rep.ServerCPUUs, rep.ServerCPUSec = 99, 12.5, 0.25
	rep.ServerRSSMiB, rep.ServerPeakMiB, rep.ServerEndMiB, rep.ServerSettled, rep.SettleSec = 10, 30, 20, 12, 5
	var w strings.Builder
	rep.writeText(&w)
	for _, want := range []string{
		"register on 127.0.0.1:7 (bare reference server): 2 clients, new connection per operation, 0 loopback sources\n",
		"registrations: 2/s (3 in 2.00s)\n",
		"latency:      p50 2.000ms  p90 3.000ms  p99 3.000ms  p99.9 3.000ms  max 3.000ms\n",
		"errors:       4 (BUSY 3, timeout 1)\n",
		"server cpu:   12.5µs per operation (pid 99: 0.25s utime+stime)\n",
		"server rss:   10.0 MiB before, 30.0 MiB peak, 20.0 MiB at the end, 12.0 MiB 5s later\n",
	} {
		if !strings.Contains(w.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, w.String())
		}
	}
	if strings.Contains(w.String(), "accounts:") {
		t.Errorf("a register run names login accounts:\n%s", w.String())
	}
}

// TestProgressLine checks the live line on a terminal: redrawn in place,
// and erased when the phase ends.
func TestProgressLine(t *testing.T) {
	progressLine(nil, func(time.Duration) string { panic("no terminal, no status") })()
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ifTerminal(&strings.Builder{}) != nil || ifTerminal(f) != nil {
		t.Fatal("a buffer or a file taken for a terminal")
	}

	var out syncBuffer
	drawn := make(chan struct{})
	calls := 0
	stop := progressLine(&out, func(time.Duration) string {
		if calls++; calls == 1 {
			close(drawn)
		}
		return "42 logins"
	})
	select {
	case <-drawn:
	case <-time.After(10 * time.Second):
		t.Fatal("no progress line within 10s")
	}
	stop()
	if got := out.String(); !strings.HasPrefix(got, "\r\033[K42 logins") || !strings.HasSuffix(got, "\r\033[K") {
		t.Fatalf("progress output %q", got)
	}
}

// TestBenchServerCPUUnavailable belongs with the bench tests; it is here
// to keep this change out of bench_test.go. A --pid process that exits
// mid-run has no CPU figure: it is reported unavailable, never negative.
func TestBenchServerCPUUnavailable(t *testing.T) {
	// A child that has exited and been reaped: its /proc entry is gone.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	gone := cmd.Process.Pid
	before, err := readProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	after, errAfter := readProcCPU(gone)
	if errAfter == nil {
		t.Skipf("pid %d was reused already", gone)
	}
	rep := &benchReport{Ops: 100, ServerPID: gone}
	rep.setServerCPU(before, after, errAfter)
	var text strings.Builder
	rep.writeText(&text)
	b, _ := json.Marshal(rep)
	if !rep.NoServerCPU || rep.ServerCPUSec != 0 || rep.ServerCPUUs != 0 ||
		!strings.Contains(text.String(), fmt.Sprintf("server cpu:   unavailable (pid %d exited", gone)) ||
		!strings.Contains(string(b), `"server_cpu_unavailable":true`) {
		t.Fatalf("%+v\n%s\n%s", rep, text.String(), b)
	}
	rep = &benchReport{Ops: 100, ServerPID: os.Getpid()}
	rep.setServerCPU(before, before+time.Second, nil)
	if rep.NoServerCPU || rep.ServerCPUSec != 1 || rep.ServerCPUUs != 1e4 {
		t.Fatalf("a readable process: %+v", rep)
	}
}
