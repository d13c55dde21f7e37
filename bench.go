package main

// bench.go is "authbox bench", a load generator for a running server in the
// spirit of redis-benchmark and pgbench: its flags (and those of "bench
// populate", the bulk loader in populate.go), the setup of the accounts,
// the workers and the run. The load generator speaks the protocol itself
// (benchconn.go) with SCRAM keys derived once per (salt, iterations), so
// that what it measures is the server and not its own PBKDF2 (RFC 5802 §5.1
// allows a client to cache SaltedPassword); benchreport.go and procstat.go
// make its report.

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"
)

const (
	// benchDefaultTimeout bounds each network step of the load generator
	// (dial, each reply): a hostile or wedged server cannot make it hang,
	// and a healthy one answers in well under a millisecond.
	benchDefaultTimeout = 5 * time.Second
	// benchBusyBackoff is the pause after ERR BUSY or ERR LIMIT, as the
	// spec asks of clients; jitter up to the same again spreads retries.
	benchBusyBackoff = 10 * time.Millisecond
	// benchProgressEvery is how often the live progress line is redrawn.
	benchProgressEvery = 250 * time.Millisecond
	// benchConnsPerSource keeps each loopback source address well under
	// the server's per-source connection cap (max_conns_per_source, 32 by
	// default), with room for connections the server has not yet seen
	// closed.
	benchConnsPerSource = 16
	// benchNonceLen is the raw size of the client nonce; base64 makes 32
	// characters, the size our client library uses.
	benchNonceLen = 24
	// benchMaxErrors is the default --max-errors.
	benchMaxErrors = 0.01
	// benchLineBuf is the starting capacity of a connection's request
	// buffer: every request the bench sends fits (the longest, AUTH with a
	// 64-byte name, is about 330 bytes), so it never grows.
	benchLineBuf = 512
)

var (
	// ErrBenchSignature is returned when a server's SCRAM signature does
	// not verify during a bench login.
	ErrBenchSignature = errors.New("server signature does not verify")
	// ErrBenchReply is returned when a reply is not the one the protocol
	// step expects.
	ErrBenchReply = errors.New("unexpected reply")
	// ErrBenchSetup is returned when a bench account exists with another
	// password, so the load generator cannot log in as it.
	ErrBenchSetup = errors.New("bench account exists with another password")
)

func benchCommand(usageErr cli.OnUsageErrorFunc) *cli.Command {
	serverFlag, configFlag := newServerFlag(), newConfigFlag()
	return &cli.Command{
		Name:  "bench",
		Usage: "load-test a running server (logins or registrations); \"bench populate\" bulk-loads bench accounts",
		Description: `Runs --conc concurrent clients against --server for --duration after a
--warmup, and reports operations/s, latency percentiles and errors by code.
With --pid (the server's process id, same machine) it also reports the
server's CPU time per operation and its RSS, from /proc.

Login mode first registers bench0..bench(N-1), or checks that they log in;
--no-setup skips that for accounts made by "authbox bench populate". Their
password is made from a random secret kept in the file bench_secret beside
known_servers (made 0600 at the first run), never one written in the source;
--cleanup deletes them after the run. Register mode creates fresh accounts
named benchreg-RUN-*: to keep its own PBKDF2 out of the figures it answers
every SALT with one verifier of a random password of that run alone, so
nobody can log in to them; "authbox users delete --prefix benchreg-" removes
them. Before it writes anything, bench says on standard error which server
it writes to. Point it at a throwaway server.`,
		OnUsageError: usageErr,
		Flags: append([]cli.Flag{
			serverFlag, configFlag,
			&cli.StringFlag{Name: "mode", Value: "login", Usage: "`login` or register"},
			&cli.IntFlag{Name: "users", Value: 1000, Usage: "log in as bench0..bench(`N`-1), chosen at random"},
			&cli.IntFlag{Name: "conc", Value: 32, Usage: "`C` concurrent clients"},
			&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "measured run time"},
			&cli.DurationFlag{Name: "warmup", Value: time.Second, Usage: "unmeasured run time before it"},
			&cli.BoolFlag{Name: "reuse", Usage: "keep one connection per client (AUTH, RESPONSE, LOGOUT) instead of a new connection per operation (greeting, AUTH, RESPONSE, QUIT)"},
			&cli.IntFlag{Name: "sources", Usage: "spread connections over `N` loopback source addresses 127.0.0.1, 127.0.0.2, … (default: one per 16 clients; loopback servers only)"},
			&cli.BoolFlag{Name: "no-setup", Usage: "do not register or check the bench accounts first (they come from \"bench populate\")"},
			&cli.BoolFlag{Name: "bare", Usage: "the server is the bare reference server of the benchmarks: do the same client work but do not check its (fake) SCRAM signatures"},
			&cli.IntFlag{Name: "pid", Usage: "the server's process `ID`, to report its CPU per operation and RSS from /proc"},
			&cli.DurationFlag{Name: "settle", Usage: "with --pid, wait this long after the run and report the server's RSS again"},
			&cli.DurationFlag{Name: "timeout", Value: benchDefaultTimeout, Usage: "limit for connecting and for each reply"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			&cli.BoolFlag{Name: "resume", Usage: "over TLS, resume sessions (a client session cache) instead of a full handshake per connection"},
			&cli.BoolFlag{Name: "cleanup", Usage: "login mode: delete bench0..bench(N-1) from the server after the run"},
			&cli.Float64Flag{Name: "max-errors", Value: benchMaxErrors, Usage: "exit 2 when more than this `FRACTION` of the operations failed (ERR BUSY not counted: a full server is what a load test finds); none succeeding always does"},
		}, newTrustFlags()...),
		Action: cmdBench,
		Subcommands: []*cli.Command{{
			Name:  "populate",
			Usage: "write bench accounts straight into a db file (offline: the server must be stopped)",
			Description: `Writes bench0..bench(N-1) into --db (required: a throwaway file, never the
config's db) in large sorted transactions. All of
them share one salt and the bench password, so one PBKDF2 serves them all and
"authbox bench --no-setup --users N" logs in as any of them. Existing names
are kept.`,
			OnUsageError: usageErr,
			Flags: []cli.Flag{
				configFlag,
				&cli.StringFlag{Name: "db", Usage: "account database `FILE` to write (required: never the db from the config)"},
				&cli.IntFlag{Name: "users", Value: 1000, Usage: "write bench0..bench(`N`-1)"},
				&cli.IntFlag{Name: "iterations", Usage: "PBKDF2 iterations of the accounts (default: iterations from the config)"},
			},
			Action: cmdBenchPopulate,
		}},
	}
}

// benchOptions are the load generator's settings.
type benchOptions struct {
	server   string
	mode     string
	users    int
	conc     int
	duration time.Duration
	warmup   time.Duration
	reuse    bool
	sources  int
	noSetup  bool
	bare     bool
	pid      int
	settle   time.Duration
	timeout  time.Duration
	maxIter  int
	// tls is the TLS every connection speaks, with the user's trust; nil
	// over plain TCP.
	tls *tls.Config
	// password is the one password of every bench account (benchsecret.go):
	// one shared password lets the bulk loader and the load generator
	// derive keys once per salt.
	password string
	// secretPath is the file the password is made from, for messages.
	secretPath string
	// cleanup deletes the bench accounts after the run.
	cleanup bool
	// maxErrors is the fraction of failed operations (BUSY aside) over
	// which the run exits 2.
	maxErrors float64
}

func cmdBench(ctx *cli.Context) error {
	if err := noCLIArgs(ctx); err != nil {
		return err
	}
	cfg, err := loadConfig(ctx)
	if err != nil {
		return err
	}
	o := benchOptions{
		server: ctx.String("server"), mode: ctx.String("mode"), users: ctx.Int("users"),
		conc: ctx.Int("conc"), duration: ctx.Duration("duration"), warmup: ctx.Duration("warmup"),
		reuse: ctx.Bool("reuse"), sources: ctx.Int("sources"), noSetup: ctx.Bool("no-setup"),
		bare: ctx.Bool("bare"), pid: ctx.Int("pid"), settle: ctx.Duration("settle"),
		timeout: ctx.Duration("timeout"), maxIter: cfg.Client.MaxIterations,
		cleanup: ctx.Bool("cleanup"), maxErrors: ctx.Float64("max-errors"),
	}
	if o.server == "" {
		o.server = cfg.Client.Server
	}
	if o.server, err = serverAddr(o.server); err != nil {
		return err
	}
	usage := helpHint(ctx)
	switch {
	case o.mode != "login" && o.mode != "register":
		return fail(exitOther, usage, "--mode must be login or register, got %q", o.mode)
	case o.conc < 1:
		return fail(exitOther, usage, "--conc must be at least 1")
	case o.users < 1 && o.mode == "login":
		return fail(exitOther, usage, "--users must be at least 1")
	case o.duration <= 0 || o.warmup < 0 || o.timeout <= 0 || o.settle < 0:
		return fail(exitOther, usage, "--duration and --timeout must be positive, --warmup and --settle not negative")
	case o.sources < 0:
		return fail(exitOther, usage, "--sources must not be negative")
	case o.pid < 0:
		return fail(exitOther, usage, "--pid must be a process id")
	case o.maxErrors < 0 || o.maxErrors > 1:
		return fail(exitOther, usage, "--max-errors must be 0 to 1, got %g", o.maxErrors)
	case o.cleanup && o.mode == "register":
		return fail(exitOther, `register mode's accounts cannot be logged in to, so bench cannot delete them; an administrator can: "authbox users delete --prefix benchreg-"`,
			"--cleanup works in login mode only")
	}
	if o.password, o.secretPath, err = benchPassword(cfg.Client); err != nil {
		return err
	}
	if o.pid > 0 {
		if _, err := readProcCPU(o.pid); err != nil {
			return fail(exitOther, "give the process id of an authbox server on this machine", "--pid %d: %s", o.pid, err)
		}
	}
	b, err := newBench(o)
	if err != nil {
		return fail(exitOther, usage, "%s", err)
	}
	if b.o.tls, err = benchTLS(ctx, cfg.Client, o.server); err != nil {
		return err
	}
	rep, err := b.run(ctx.App.ErrWriter, ifTerminal(ctx.App.ErrWriter))
	if rep == nil {
		return err
	}
	// The report is printed whatever the verdict: it shows what failed.
	if ctx.Bool("json") {
		enc := json.NewEncoder(ctx.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.writeText(ctx.App.Writer)
	}
	if err != nil {
		return err
	}
	return b.verdict(rep)
}

// bench is one run of the load generator.
type bench struct {
	o       benchOptions
	keys    keyCache
	sources []net.IP
	iters   atomic.Int64 // the server's iteration count, as last seen
	// regKeys is the one verifier register mode sends.
	regKeys *benchKeys
	runID   string

	phase atomic.Int32 // 0 warm-up, 1 measuring, 2 stopping
	ops   atomic.Int64 // successful operations while measuring
	errs  atomic.Int64 // failed operations while measuring

	// aborted is closed when a reply says that going on would only spend
	// the address's failed-login allowance (see abort); abortErr is why.
	aborted   chan struct{}
	abortOnce sync.Once
	abortErr  error
}

const (
	phaseWarmup = iota
	phaseMeasure
	phaseStop
)

func newBench(o benchOptions) (*bench, error) {
	host, _, err := net.SplitHostPort(o.server)
	if err != nil {
		return nil, fmt.Errorf("--server %q is not host:port", o.server)
	}
	b := &bench{o: o, keys: keyCache{m: map[string]*keyEntry{}}, aborted: make(chan struct{})}
	ip := net.ParseIP(host)
	if ip == nil && host == "localhost" {
		ip = net.IPv4(127, 0, 0, 1)
	}
	if ip != nil && ip.To4() != nil && ip.IsLoopback() {
		n := o.sources
		if n == 0 {
			n = (o.conc + benchConnsPerSource - 1) / benchConnsPerSource
		}
		if n > 254*256 {
			return nil, fmt.Errorf("--sources %d: at most %d loopback sources", n, 254*256)
		}
		for i := range n {
			b.sources = append(b.sources, net.IPv4(127, 0, byte(i/254), byte(i%254+1)))
		}
	} else if o.sources > 1 {
		return nil, fmt.Errorf("--sources needs a loopback IPv4 server, not %s", host)
	}
	var rid [4]byte
	rand.Read(rid[:])
	b.runID = fmt.Sprintf("%x", rid)
	if o.mode == "register" {
		// Any valid verifier will do: the server cannot check it against a
		// password it never sees. One from a password of this run alone,
		// forgotten at its end, makes accounts nobody can log in to.
		var pw, salt [32]byte
		rand.Read(pw[:])
		rand.Read(salt[:])
		if b.regKeys, err = deriveBenchKeys(fmt.Sprintf("%x", pw), salt[:], MinIterations); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// workerStats is what one client gathered while measuring.
type workerStats struct {
	lat  []time.Duration
	errs map[string]int
}

func (b *bench) worker(w int, st *workerStats) {
	rng := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	var c *benchConn
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	seq := 0
	for b.phase.Load() != phaseStop {
		start := time.Now()
		var err error
		if c == nil {
			c, err = b.dial(w)
		}
		if err == nil {
			if b.o.mode == "register" {
				seq++
				err = b.register(c, fmt.Sprintf("benchreg-%s-%d-%d", b.runID, w, seq), b.regKeys)
			} else {
				err = b.login(c, "bench"+strconv.Itoa(rng.IntN(b.o.users)))
				if err == nil && b.o.reuse {
					err = b.simple(c, CmdLogout)
				}
			}
		}
		if err == nil && !b.o.reuse {
			// As "authbox login" does: QUIT, so that the server closes
			// first and the TIME_WAIT state stays on its side. When the
			// client closes first, tens of thousands of loopback ports in
			// TIME_WAIT make each connect() search for a free port, and
			// the load generator measures the kernel's port search.
			err = b.quit(c)
		}
		if err != nil || !b.o.reuse {
			if c != nil {
				c.close()
				c = nil
			}
		}
		elapsed := time.Since(start)
		if b.phase.Load() == phaseMeasure {
			if err == nil {
				st.lat = append(st.lat, elapsed)
				b.ops.Add(1)
			} else {
				st.errs[errorClass(err)]++
				b.errs.Add(1)
			}
		}
		if err != nil {
			b.abortOn(err)
			if cl := errorClass(err); cl == CodeBusy || cl == CodeLimit {
				time.Sleep(benchBusyBackoff + time.Duration(rng.Int64N(int64(benchBusyBackoff))))
			}
		}
	}
}

// abortOn stops the run at a failure that every further try would repeat
// at the user's expense: ERR LIMIT (the server throttles this address, and
// each try deepens its debt), or in login mode ERR AUTH (the bench
// accounts are not there, and each try spends the address's failed-login
// allowance, which the user's own logins share).
func (b *bench) abortOn(err error) {
	cl := errorClass(err)
	var why error
	switch {
	case cl == CodeLimit:
		why = fail(exitOther, b.failureHint(CodeLimit), "bench stopped: the server throttles this address (%s)", printable(err.Error()))
	case cl == CodeAuth && b.o.mode == "login":
		why = fail(exitOther, b.failureHint(CodeAuth), "bench stopped at the first failed login, so as not to spend the address's failed-login allowance: %s", printable(err.Error()))
	default:
		return
	}
	b.abortOnce.Do(func() {
		b.abortErr = why
		if b.aborted != nil {
			close(b.aborted)
		}
	})
}

// wait waits d, or less if the run is aborted.
func (b *bench) wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.aborted:
	}
}

// announce says on standard error, before anything is sent, which server
// the run is about to write to and what it writes, so that a bench
// pointed at the default server by mistake is seen at once.
func (b *bench) announce(w io.Writer) {
	last := fmt.Sprintf("bench%d", b.o.users-1)
	switch {
	case b.o.mode == "register":
		fmt.Fprintf(w, "authbox: warning: bench writes to %s: it registers accounts benchreg-%s-* that nobody can log in to; \"authbox users delete --prefix benchreg-%s-\" removes them\n", b.o.server, b.runID, b.runID)
	case b.o.noSetup:
		fmt.Fprintf(w, "authbox: bench logs in to %s as bench0..%s, with the password from %s; it registers nothing\n", b.o.server, last, b.o.secretPath)
	default:
		fmt.Fprintf(w, "authbox: warning: bench writes to %s: it registers bench0..%s where missing, with the password from %s\n", b.o.server, last, b.o.secretPath)
	}
}

// run sets up the accounts, warms up, measures for the duration and
// gathers the report; with cleanup it then deletes the accounts. stderr
// gets the announcement; progress, nil when stderr is no terminal, the
// live progress line.
func (b *bench) run(stderr, progress io.Writer) (*benchReport, error) {
	b.announce(stderr)
	if b.o.mode == "login" && !b.o.noSetup {
		if err := b.setup(progress); err != nil {
			if ue := benchUnreachable(b.o.server, err); ue != nil {
				return nil, ue
			}
			hint := `check --server; accounts made by another tool or password can be skipped with a fresh db, or use "bench populate" and --no-setup`
			if errors.Is(err, ErrBenchSetup) {
				hint = fmt.Sprintf(`bench accounts made with another %s (or by an older authbox, whose password was public) are there: an administrator removes them with "authbox users delete --prefix bench", then run again`, benchSecretFile)
			}
			return nil, fail(exitOther, hint, "bench setup: %s", err)
		}
	}
	stats := make([]*workerStats, b.o.conc)
	var wg sync.WaitGroup
	for w := range b.o.conc {
		stats[w] = &workerStats{errs: map[string]int{}}
		wg.Add(1)
		go func() { defer wg.Done(); b.worker(w, stats[w]) }()
	}
	rss := sampleRSS(b.o.pid)

	unit := "logins"
	if b.o.mode == "register" {
		unit = "registrations"
	}
	if b.o.warmup > 0 {
		stopP := progressLine(progress, func(d time.Duration) string {
			return fmt.Sprintf("warming up: %.1fs of %s", d.Seconds(), b.o.warmup)
		})
		b.wait(b.o.warmup)
		stopP()
	}
	cpu0, cpuErr0 := readProcCPU(b.o.pid)
	self0 := selfCPU()
	start := time.Now()
	b.phase.Store(phaseMeasure)
	stopP := progressLine(progress, func(d time.Duration) string {
		n := b.ops.Load()
		return fmt.Sprintf("%5.1fs  %d %s  %.0f/s  %d errors", d.Seconds(), n, unit, float64(n)/d.Seconds(), b.errs.Load())
	})
	b.wait(b.o.duration)
	b.phase.Store(phaseStop)
	elapsed := time.Since(start)
	cpu1, cpuErr1 := readProcCPU(b.o.pid)
	self1 := selfCPU()
	stopP()
	wg.Wait()
	before, peak, end := rss.end()

	rep := b.report(stats, elapsed)
	if rep.Ops > 0 {
		rep.BenchCPUUs = (self1 - self0).Seconds() * 1e6 / float64(rep.Ops)
	}
	if b.o.pid > 0 {
		rep.ServerPID = b.o.pid
		rep.setServerCPU(cpu0, cpu1, errors.Join(cpuErr0, cpuErr1))
		rep.ServerRSSMiB, rep.ServerPeakMiB, rep.ServerEndMiB = mib(before), mib(peak), mib(end)
		if b.o.settle > 0 {
			time.Sleep(b.o.settle)
			v, _ := readProcRSS(b.o.pid)
			rep.ServerSettled, rep.SettleSec = mib(v), b.o.settle.Seconds()
		}
	}
	if b.abortErr != nil {
		return rep, b.abortErr
	}
	if b.o.cleanup {
		n, err := b.cleanupAccounts(progress)
		if err != nil {
			return rep, fail(exitOther, `run again with --cleanup, or have an administrator run "authbox users delete --prefix bench"`, "bench cleanup: %s", err)
		}
		fmt.Fprintf(stderr, "authbox: bench deleted %d bench %s from %s\n", n, plural(n, "account", "accounts"), b.o.server)
	}
	return rep, nil
}
