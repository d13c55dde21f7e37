package main

// benchreport.go is what a bench run reports: the live progress line, the
// class of each failure, and at the end rates, latency quantiles, server
// CPU and memory, as text or JSON.

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"
)

// benchReport is the outcome of a run; the JSON field names are stable.
type benchReport struct {
	Server       string         `json:"server"`
	Mode         string         `json:"mode"`
	Reuse        bool           `json:"reuse"`
	Bare         bool           `json:"bare"`
	Conc         int            `json:"conc"`
	Users        int            `json:"users,omitempty"`
	Sources      int            `json:"sources"`
	Iterations   int            `json:"server_iterations"`
	Seconds      float64        `json:"seconds"`
	Ops          int64          `json:"ops"`
	Errors       int64          `json:"errors"`
	OpsPerSec    float64        `json:"ops_per_sec"`
	LatencyMs    map[string]any `json:"latency_ms"`
	ErrorsByCode map[string]int `json:"errors_by_code"`
	BenchCPUUs   float64        `json:"bench_cpu_us_per_op"`
	ServerPID    int            `json:"server_pid,omitempty"`
	ServerCPUSec float64        `json:"server_cpu_sec,omitempty"`
	ServerCPUUs  float64        `json:"server_cpu_us_per_op,omitempty"`
	// NoServerCPU says the server's CPU time could not be read at the
	// start or the end of the run (the process exited).
	NoServerCPU   bool    `json:"server_cpu_unavailable,omitempty"`
	ServerRSSMiB  float64 `json:"server_rss_mib_before,omitempty"`
	ServerPeakMiB float64 `json:"server_rss_mib_peak,omitempty"`
	ServerEndMiB  float64 `json:"server_rss_mib_end,omitempty"`
	ServerSettled float64 `json:"server_rss_mib_settled,omitempty"`
	SettleSec     float64 `json:"settle_sec,omitempty"`
}

// ifTerminal returns w if it is a terminal, and nil otherwise: the live
// progress line is drawn only where someone watches it, never into a file
// or a pipe.
func ifTerminal(w io.Writer) io.Writer {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return f
	}
	return nil
}

// progressLine redraws one status line on a terminal until the returned
// function is called; w nil means no terminal, and no display.
func progressLine(w io.Writer, status func(elapsed time.Duration) string) (stop func()) {
	if w == nil {
		return func() {}
	}
	stopc := make(chan struct{})
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(benchProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-stopc:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprintf(w, "\r\033[K%s", status(time.Since(start)))
			}
		}
	}()
	return func() { close(stopc); <-done }
}

// errorClass names a failed operation for the report: the server's ERR
// code, or what went wrong on the client's side.
func errorClass(err error) string {
	var pe *ProtoError
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &pe):
		// The report prints the class: a server's code is made printable.
		return printable(pe.Code)
	case errors.Is(err, ErrClosedBeforeHandshake):
		// Over TLS a full queue closes before the handshake (spec §9.1).
		return CodeBusy
	case errors.Is(err, ErrBenchSignature):
		return "signature"
	case errors.Is(err, ErrBenchReply):
		return "protocol"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &oe) && oe.Op == "dial":
		return "dial"
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "closed"
	}
	return "io"
}

// benchUnreachable is the error for a server the bench could not reach or
// that did not answer, or nil for any other failure: those have nothing to
// do with accounts, and the hint must not talk of them.
func benchUnreachable(server string, err error) error {
	switch errorClass(err) {
	case "dial":
		return fail(exitOther, `is "authbox serve" running there? the address comes from --server, else AUTHBOX_SERVER, else client.server in --config`,
			"cannot reach %s: %s", server, errText(err))
	case "timeout":
		return fail(exitOther, "the server or the network is slow or stuck; try again, or raise --timeout", "no answer from %s in time", server)
	}
	return nil
}

// report gathers what the workers measured over elapsed into the report's
// counts, rate and latency quantiles.
func (b *bench) report(stats []*workerStats, elapsed time.Duration) *benchReport {
	rep := &benchReport{
		Server: b.o.server, Mode: b.o.mode, Reuse: b.o.reuse, Bare: b.o.bare, Conc: b.o.conc,
		Sources: len(b.sources), Iterations: int(b.iters.Load()), Seconds: elapsed.Seconds(),
		ErrorsByCode: map[string]int{},
	}
	if b.o.mode == "login" {
		rep.Users = b.o.users
	}
	var lat []time.Duration
	for _, st := range stats {
		lat = append(lat, st.lat...)
		for k, v := range st.errs {
			rep.ErrorsByCode[k] += v
			rep.Errors += int64(v)
		}
	}
	rep.Ops = int64(len(lat))
	rep.OpsPerSec = float64(rep.Ops) / elapsed.Seconds()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	rep.LatencyMs = map[string]any{}
	for _, p := range []struct {
		name string
		q    float64
	}{{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}, {"p99.9", 0.999}, {"max", 1}} {
		rep.LatencyMs[p.name] = ms(quantile(lat, p.q))
	}
	return rep
}

// setServerCPU reports the server's CPU time over the run, or that there
// is none: a process that exited mid-run reads as 0 at the end, and the
// difference would be negative.
func (r *benchReport) setServerCPU(before, after time.Duration, err error) {
	if err != nil || after < before {
		r.NoServerCPU, r.ServerCPUSec, r.ServerCPUUs = true, 0, 0
		return
	}
	r.ServerCPUSec = (after - before).Seconds()
	if r.Ops > 0 {
		r.ServerCPUUs = r.ServerCPUSec * 1e6 / float64(r.Ops)
	}
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func mib(b int64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }

func (r *benchReport) writeText(w io.Writer) {
	unit := "logins"
	if r.Mode == "register" {
		unit = "registrations"
	}
	conn := "new connection per operation"
	if r.Reuse {
		conn = "one connection per client"
	}
	target := "authbox server"
	if r.Bare {
		target = "bare reference server"
	}
	fmt.Fprintf(w, "%s on %s (%s): %d clients, %s, %d loopback sources\n", r.Mode, r.Server, target, r.Conc, conn, r.Sources)
	if r.Users > 0 {
		fmt.Fprintf(w, "accounts:     bench0..bench%d\n", r.Users-1)
	}
	fmt.Fprintf(w, "server iterations: %d\n", r.Iterations)
	fmt.Fprintf(w, "%-13s %.0f/s (%d in %.2fs)\n", unit+":", r.OpsPerSec, r.Ops, r.Seconds)
	fmt.Fprintf(w, "latency:      p50 %.3fms  p90 %.3fms  p99 %.3fms  p99.9 %.3fms  max %.3fms\n",
		r.LatencyMs["p50"], r.LatencyMs["p90"], r.LatencyMs["p99"], r.LatencyMs["p99.9"], r.LatencyMs["max"])
	if r.Errors == 0 {
		fmt.Fprintf(w, "errors:       none\n")
	} else {
		codes := make([]string, 0, len(r.ErrorsByCode))
		for k := range r.ErrorsByCode {
			codes = append(codes, k)
		}
		sort.Strings(codes)
		parts := make([]string, len(codes))
		for i, k := range codes {
			parts[i] = fmt.Sprintf("%s %d", k, r.ErrorsByCode[k])
		}
		fmt.Fprintf(w, "errors:       %d (%s)\n", r.Errors, strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "bench cpu:    %.1fµs per operation (this process)\n", r.BenchCPUUs)
	if r.ServerPID > 0 {
		if r.NoServerCPU {
			fmt.Fprintf(w, "server cpu:   unavailable (pid %d exited or could not be read during the run)\n", r.ServerPID)
		} else {
			fmt.Fprintf(w, "server cpu:   %.1fµs per operation (pid %d: %.2fs utime+stime)\n", r.ServerCPUUs, r.ServerPID, r.ServerCPUSec)
		}
		fmt.Fprintf(w, "server rss:   %.1f MiB before, %.1f MiB peak, %.1f MiB at the end", r.ServerRSSMiB, r.ServerPeakMiB, r.ServerEndMiB)
		if r.SettleSec > 0 {
			fmt.Fprintf(w, ", %.1f MiB %gs later", r.ServerSettled, r.SettleSec)
		}
		fmt.Fprintln(w)
	}
}

// verdict fails a run in which nothing succeeded, or too much failed: a
// report of 0 logins/s must not read as a success to a script.
func (b *bench) verdict(rep *benchReport) error {
	counted := rep.Errors - int64(rep.ErrorsByCode[CodeBusy])
	total := rep.Ops + rep.Errors
	if rep.Ops > 0 && float64(counted) <= b.o.maxErrors*float64(total) {
		return nil
	}
	worst, n := "", 0
	for code, k := range rep.ErrorsByCode {
		if k > n || k == n && code < worst {
			worst, n = code, k
		}
	}
	msg := fmt.Sprintf("%d of %d operations failed, most with %s", rep.Errors, total, worst)
	if rep.Ops == 0 {
		msg = fmt.Sprintf("no operation succeeded: %d failed, most with %s", rep.Errors, worst)
		if total == 0 {
			msg = "no operation finished"
		}
	}
	return fail(exitOther, b.failureHint(worst), "bench: %s", msg)
}

// failureHint says what most likely went wrong, from the class of error
// most operations failed with.
func (b *bench) failureHint(class string) string {
	switch {
	case class == CodeAuth && b.o.noSetup:
		return fmt.Sprintf(`no bench accounts on that server (or not bench0..bench%d, or made with another %s); run without --no-setup, or fill its db with "authbox bench populate" on this machine`, b.o.users-1, benchSecretFile)
	case class == CodeAuth:
		return "the bench accounts changed during the run (deleted, or their password changed); run again"
	case class == CodeLimit:
		return `the server throttles this address after failed logins: wait, or have its administrator run "authbox users unthrottle ADDRESS"`
	case class == CodeBusy:
		return "the server is full: lower --conc, or raise its workers and queue"
	case class == "timeout":
		return "the server did not answer within --timeout: it is overloaded or stuck"
	case class == "protocol" || class == "signature":
		return "is it an authbox server? against the bare reference server of the benchmarks, add --bare"
	case class == "dial":
		return `is "authbox serve" running there?`
	}
	return "see the errors by code in the report"
}
