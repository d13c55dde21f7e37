package main

// bench.go is "authbox bench", a load generator for a running server in the
// spirit of redis-benchmark and pgbench, and "authbox bench populate", an
// offline bulk loader of bench accounts. The load generator speaks the
// protocol itself with SCRAM keys derived once per (salt, iterations), so
// that what it measures is the server and not its own PBKDF2 (RFC 5802 §5.1
// allows a client to cache SaltedPassword).

import (
	"bufio"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

const (
	// benchPassword is the one password of every bench account. Bench
	// accounts are throwaway load-test data; one shared password lets the
	// bulk loader and the load generator derive keys once per salt.
	benchPassword = "Bench-password-1"
	// benchDefaultTimeout bounds each network step of the load generator
	// (dial, each reply): a hostile or wedged server cannot make it hang,
	// and a healthy one answers in well under a millisecond.
	benchDefaultTimeout = 5 * time.Second
	// benchBusyBackoff is the pause after ERR BUSY or ERR LIMIT, as the
	// spec asks of clients; jitter up to the same again spreads retries.
	benchBusyBackoff = 10 * time.Millisecond
	// benchProgressEvery is how often the live progress line is redrawn.
	benchProgressEvery = 250 * time.Millisecond
	// benchRSSEvery is how often the server's RSS is sampled with --pid.
	benchRSSEvery = 50 * time.Millisecond
	// benchConnsPerSource keeps each loopback source address well under
	// the server's per-source connection cap (max_conns_per_source, 32 by
	// default), with room for connections the server has not yet seen
	// closed.
	benchConnsPerSource = 16
	// populateChunk is how many accounts one bulk-load transaction writes:
	// large enough that commits (and fsyncs) are rare, small enough that a
	// transaction's dirty pages stay a few tens of MiB.
	populateChunk = 100_000
	// benchNonceLen is the raw size of the client nonce; base64 makes 32
	// characters, the size our client library uses.
	benchNonceLen = 24
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
	serverFlag := &cli.StringFlag{Name: "server", Usage: "server `ADDR` (default: client.server from the config, 127.0.0.1:7886)", EnvVars: []string{"AUTHBOX_SERVER"}}
	configFlag := &cli.StringFlag{Name: "config", Usage: "read settings from `FILE` (auth.toml)"}
	return &cli.Command{
		Name:  "bench",
		Usage: "load-test a running server (logins or registrations); \"bench populate\" bulk-loads bench accounts",
		Description: `Runs --conc concurrent clients against --server for --duration after a
--warmup, and reports operations/s, latency percentiles and errors by code.
With --pid (the server's process id, same machine) it also reports the
server's CPU time per operation and its RSS, from /proc.

Login mode first registers bench0..bench(N-1) with a fixed bench password, or
checks that they log in; --no-setup skips that for accounts made by "authbox
bench populate". Register mode creates fresh accounts named benchreg-*: to
keep its own PBKDF2 out of the figures it answers every SALT with one
precomputed verifier, so those accounts cannot log in (use a throwaway db).`,
		OnUsageError: usageErr,
		Flags: []cli.Flag{
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
		},
		Action: cmdBench,
		Subcommands: []*cli.Command{{
			Name:  "populate",
			Usage: "write bench accounts straight into a db file (offline: the server must be stopped)",
			Description: `Writes bench0..bench(N-1) into --db in large sorted transactions. All of
them share one salt and the bench password, so one PBKDF2 serves them all and
"authbox bench --no-setup --users N" logs in as any of them. Existing names
are kept.`,
			OnUsageError: usageErr,
			Flags: []cli.Flag{
				configFlag,
				&cli.StringFlag{Name: "db", Usage: "account database `FILE` (default: db from the config)"},
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
	}
	if o.server == "" {
		o.server = cfg.Client.Server
	}
	usage := `run "authbox bench --help" for usage`
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
	var progress io.Writer
	if f, ok := ctx.App.ErrWriter.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		progress = f
	}
	rep, err := b.run(progress)
	if err != nil {
		return err
	}
	if ctx.Bool("json") {
		enc := json.NewEncoder(ctx.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.writeText(ctx.App.Writer)
	return nil
}

// benchKeys are the SCRAM keys of one (password, salt, iterations).
type benchKeys struct {
	clientKey, storedKey, serverKey []byte
}

// keyCache derives keys once per (salt, iterations): the name plays no part
// in SaltedPassword, so accounts that share a salt share their keys.
type keyCache struct {
	mu sync.Mutex
	m  map[string]*keyEntry
}

type keyEntry struct {
	once sync.Once
	keys *benchKeys
	err  error
}

func (kc *keyCache) get(salt []byte, iterations int) (*benchKeys, error) {
	k := string(salt) + "\x00" + strconv.Itoa(iterations)
	kc.mu.Lock()
	e := kc.m[k]
	if e == nil {
		e = &keyEntry{}
		kc.m[k] = e
	}
	kc.mu.Unlock()
	e.once.Do(func() { e.keys, e.err = deriveBenchKeys(salt, iterations) })
	return e.keys, e.err
}

func deriveBenchKeys(salt []byte, iterations int) (*benchKeys, error) {
	// The bench password is ASCII without controls: SASLprep leaves it as is.
	salted, err := pbkdf2.Key(sha256.New, benchPassword, salt, iterations, sha256.Size)
	if err != nil {
		return nil, err
	}
	ck := hmacSHA256(salted, []byte("Client Key"))
	stored := sha256.Sum256(ck)
	return &benchKeys{clientKey: ck, storedKey: stored[:], serverKey: hmacSHA256(salted, []byte("Server Key"))}, nil
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
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
	b := &bench{o: o, keys: keyCache{m: map[string]*keyEntry{}}}
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
		// password it never sees.
		if b.regKeys, err = deriveBenchKeys([]byte("authbox-bench-reg"), MinIterations); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// benchConn is one protocol connection of a bench client, with buffers it
// reuses from operation to operation.
type benchConn struct {
	nc  net.Conn
	r   *bufio.Reader
	buf []byte
}

func (b *bench) dial(worker int) (*benchConn, error) {
	d := net.Dialer{Timeout: b.o.timeout}
	if len(b.sources) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: b.sources[worker%len(b.sources)]}
	}
	nc, err := d.Dial("tcp", b.o.server)
	if err != nil {
		return nil, err
	}
	c := &benchConn{nc: nc, r: bufio.NewReaderSize(nc, MaxLineBytes), buf: make([]byte, 0, 512)}
	line, err := c.read(b.o.timeout)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if !strings.HasPrefix(line, ReplyGreeting+" ") {
		nc.Close()
		return nil, fmt.Errorf("%w: %.40q instead of a greeting", ErrBenchReply, line)
	}
	return c, nil
}

// read returns the next line without its end of line, within timeout.
func (c *benchConn) read(timeout time.Duration) (string, error) {
	c.nc.SetReadDeadline(time.Now().Add(timeout))
	line, err := c.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", fmt.Errorf("%w: line over %d bytes", ErrBenchReply, MaxLineBytes)
	}
	if err != nil {
		return "", err
	}
	s := string(TrimEOL(line))
	if strings.HasPrefix(s, ReplyErr+" ") {
		_, err := ParseReply(s)
		return "", err
	}
	return s, nil
}

// do writes c.buf as one line and returns the reply.
func (c *benchConn) do(timeout time.Duration) (string, error) {
	c.nc.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.nc.Write(c.buf); err != nil {
		return "", err
	}
	return c.read(timeout)
}

func (c *benchConn) close() { c.nc.Close() }

// login runs one SCRAM-SHA-256 login on an anonymous connection.
func (b *bench) login(c *benchConn, name string) error {
	var raw [benchNonceLen]byte
	rand.Read(raw[:])
	nonce := EncodeB64(raw[:])
	clientFirstBare := "n=" + EncodeSaslName(name) + ",r=" + nonce
	c.buf = append(c.buf[:0], "AUTH "+MechSCRAM+" "...)
	c.buf = b64.AppendEncode(c.buf, []byte("n,,"+clientFirstBare))
	c.buf = append(c.buf, '\n')
	line, err := c.do(b.o.timeout)
	if err != nil {
		return err
	}
	arg, ok := strings.CutPrefix(line, ReplyChallenge+" ")
	if !ok {
		return fmt.Errorf("%w to AUTH: %.40q", ErrBenchReply, line)
	}
	sfb, err := b64.DecodeString(arg)
	if err != nil {
		return fmt.Errorf("%w: CHALLENGE is not base64", ErrBenchReply)
	}
	serverFirst := string(sfb)
	full, salt, iters, err := parseBenchServerFirst(serverFirst)
	if err != nil {
		return err
	}
	// The bare server replays one fixed challenge, so only a real server's
	// nonce can be checked.
	if !b.o.bare && (!strings.HasPrefix(full, nonce) || len(full) == len(nonce)) {
		return fmt.Errorf("%w: server nonce does not extend ours", ErrBenchReply)
	}
	if iters < MinIterations || iters > b.o.maxIter {
		return fmt.Errorf("%w: %d iterations", ErrBenchReply, iters)
	}
	b.iters.Store(int64(iters))
	keys, err := b.keys.get(salt, iters)
	if err != nil {
		return err
	}
	withoutProof := "c=biws,r=" + full
	authMessage := []byte(clientFirstBare + "," + serverFirst + "," + withoutProof)
	proof := hmacSHA256(keys.storedKey, authMessage)
	subtle.XORBytes(proof, proof, keys.clientKey)
	c.buf = append(c.buf[:0], "RESPONSE "...)
	c.buf = b64.AppendEncode(c.buf, []byte(withoutProof+",p="+EncodeB64(proof)))
	c.buf = append(c.buf, '\n')
	line, err = c.do(b.o.timeout)
	if err != nil {
		return err
	}
	arg, ok = strings.CutPrefix(line, ReplyOK+" ")
	if !ok {
		return fmt.Errorf("%w to RESPONSE: %.40q", ErrBenchReply, line)
	}
	// The signature is computed in both cases, so that the client does the
	// same work against the bare server as against authbox.
	want := "v=" + EncodeB64(hmacSHA256(keys.serverKey, authMessage))
	got, err := b64.DecodeString(arg)
	if !b.o.bare && (err != nil || !hmac.Equal(got, []byte(want))) {
		return ErrBenchSignature
	}
	return nil
}

// parseBenchServerFirst reads r=, s= and i= from a server-first-message.
func parseBenchServerFirst(msg string) (nonce string, salt []byte, iters int, err error) {
	f := strings.SplitN(msg, ",", 4)
	if len(f) < 3 || !strings.HasPrefix(f[0], "r=") || !strings.HasPrefix(f[1], "s=") || !strings.HasPrefix(f[2], "i=") {
		return "", nil, 0, fmt.Errorf("%w: malformed server-first-message", ErrBenchReply)
	}
	if salt, err = b64.DecodeString(f[1][2:]); err != nil {
		return "", nil, 0, fmt.Errorf("%w: malformed salt", ErrBenchReply)
	}
	if iters, err = strconv.Atoi(f[2][2:]); err != nil {
		return "", nil, 0, fmt.Errorf("%w: malformed iteration count", ErrBenchReply)
	}
	return f[0][2:], salt, iters, nil
}

// simple sends a command without arguments and expects a bare OK.
func (b *bench) simple(c *benchConn, cmd string) error {
	c.buf = append(append(c.buf[:0], cmd...), '\n')
	line, err := c.do(b.o.timeout)
	if err != nil {
		return err
	}
	if line != ReplyOK {
		return fmt.Errorf("%w to %s: %.40q", ErrBenchReply, cmd, line)
	}
	return nil
}

// quit sends QUIT and reads the server's goodbye.
func (b *bench) quit(c *benchConn) error {
	c.buf = append(append(c.buf[:0], CmdQuit...), '\n')
	line, err := c.do(b.o.timeout)
	if err != nil {
		return err
	}
	if line != ReplyOK+" BYE" {
		return fmt.Errorf("%w to QUIT: %.40q", ErrBenchReply, line)
	}
	return nil
}

// register runs REGISTER and VERIFIER. With keys nil it derives a real
// verifier from the server's salt, so that the account can log in.
func (b *bench) register(c *benchConn, name string, keys *benchKeys) error {
	c.buf = append(append(c.buf[:0], CmdRegister+" "+name...), '\n')
	line, err := c.do(b.o.timeout)
	if err != nil {
		return err
	}
	r, err := ParseReply(line)
	if err != nil || r.Word != ReplySalt || len(r.Args) != 2 {
		return fmt.Errorf("%w to REGISTER: %.40q", ErrBenchReply, line)
	}
	salt, err := b64.DecodeString(r.Args[0])
	if err != nil {
		return fmt.Errorf("%w: malformed salt", ErrBenchReply)
	}
	iters, err := ParseIterations(r.Args[1])
	if err != nil || iters < MinIterations || iters > b.o.maxIter {
		return fmt.Errorf("%w: iteration count %q", ErrBenchReply, r.Args[1])
	}
	b.iters.Store(int64(iters))
	if keys == nil {
		if keys, err = b.keys.get(salt, iters); err != nil {
			return err
		}
	}
	c.buf = append(c.buf[:0], CmdVerifier+" "...)
	c.buf = b64.AppendEncode(c.buf, keys.storedKey)
	c.buf = append(c.buf, ' ')
	c.buf = b64.AppendEncode(c.buf, keys.serverKey)
	c.buf = append(c.buf, '\n')
	line, err = c.do(b.o.timeout)
	if err != nil {
		return err
	}
	if line != ReplyOK {
		return fmt.Errorf("%w to VERIFIER: %.40q", ErrBenchReply, line)
	}
	return nil
}

// setup makes sure bench0..bench(N-1) exist with the bench password and
// warms the key cache, so that no PBKDF2 runs while measuring.
//
// The server charges failed logins and "name taken" answers to the source,
// so setup must not probe blindly: bench0 tells whether the accounts are
// already there, and each worker then takes the path that costs nothing
// in that case (log in to existing accounts, register fresh ones).
func (b *bench) setup(progress io.Writer) error {
	reuse, err := b.accountsExist()
	if err != nil {
		return fmt.Errorf("bench0: %w", err)
	}
	workers := min(b.o.conc, b.o.users, 64)
	var next, done atomic.Int64
	errc := make(chan error, workers)
	stopProgress := b.progress(progress, func(elapsed time.Duration) string {
		return fmt.Sprintf("setting up bench accounts: %d/%d", done.Load(), b.o.users)
	})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *benchConn
			defer func() {
				if c != nil {
					c.close()
				}
			}()
			for {
				i := int(next.Add(1) - 1)
				if i >= b.o.users {
					return
				}
				var err error
				if c == nil {
					if c, err = b.dial(w); err != nil {
						errc <- err
						return
					}
				}
				name := "bench" + strconv.Itoa(i)
				if reuse {
					err = b.login(c, name)
					if err == nil {
						err = b.simple(c, CmdLogout)
					} else if errorClass(err) == CodeAuth {
						err = b.register(c, name, nil)
					}
				} else {
					err = b.register(c, name, nil)
					if errorClass(err) == CodeExists {
						if err = b.login(c, name); err == nil {
							err = b.simple(c, CmdLogout)
						}
					}
				}
				if errorClass(err) == CodeAuth || errorClass(err) == CodeExists {
					err = ErrBenchSetup
				}
				if err != nil {
					errc <- fmt.Errorf("%s: %w", name, err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	stopProgress()
	close(errc)
	return <-errc
}

// accountsExist logs in as bench0: success means a previous run made the
// accounts; ERR AUTH means they must be registered.
func (b *bench) accountsExist() (bool, error) {
	c, err := b.dial(0)
	if err != nil {
		return false, err
	}
	defer c.close()
	switch err := b.login(c, "bench0"); errorClass(err) {
	case CodeAuth:
		return false, nil
	default:
		if err != nil {
			return false, err
		}
		return true, nil
	}
}

// progress redraws one status line on a terminal until the returned
// function is called; w nil means no terminal, and no display.
func (b *bench) progress(w io.Writer, status func(time.Duration) string) func() {
	if w == nil {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(benchProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprintf(w, "\r\033[K%s", status(time.Since(start)))
			}
		}
	}()
	return func() { close(stop); <-done }
}

// workerStats is what one client gathered while measuring.
type workerStats struct {
	lat  []time.Duration
	errs map[string]int
}

// errorClass names a failed operation for the report: the server's ERR
// code, or what went wrong on the client's side.
func errorClass(err error) string {
	var pe *ProtoError
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &pe):
		return pe.Code
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
			if cl := errorClass(err); cl == CodeBusy || cl == CodeLimit {
				time.Sleep(benchBusyBackoff + time.Duration(rng.Int64N(int64(benchBusyBackoff))))
			}
		}
	}
}

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

func (b *bench) run(progress io.Writer) (*benchReport, error) {
	if b.o.mode == "login" && !b.o.noSetup {
		if err := b.setup(progress); err != nil {
			return nil, fail(exitOther, `check --server; accounts made by another tool or password can be skipped with a fresh db, or use "bench populate" and --no-setup`, "bench setup: %s", err)
		}
	}
	stats := make([]*workerStats, b.o.conc)
	var wg sync.WaitGroup
	for w := range b.o.conc {
		stats[w] = &workerStats{errs: map[string]int{}}
		wg.Add(1)
		go func() { defer wg.Done(); b.worker(w, stats[w]) }()
	}

	var rssBefore, rssPeak int64
	var rssMu sync.Mutex
	stopRSS := func() {}
	if b.o.pid > 0 {
		rssBefore, _ = readProcRSS(b.o.pid)
		rssPeak = rssBefore
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(benchRSSEvery)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if v, err := readProcRSS(b.o.pid); err == nil {
						rssMu.Lock()
						rssPeak = max(rssPeak, v)
						rssMu.Unlock()
					}
				}
			}
		}()
		stopRSS = func() { close(stop); <-done }
	}

	unit := "logins"
	if b.o.mode == "register" {
		unit = "registrations"
	}
	if b.o.warmup > 0 {
		stopP := b.progress(progress, func(d time.Duration) string {
			return fmt.Sprintf("warming up: %.1fs of %s", d.Seconds(), b.o.warmup)
		})
		time.Sleep(b.o.warmup)
		stopP()
	}
	cpu0, cpuErr0 := readProcCPU(b.o.pid)
	self0 := selfCPU()
	start := time.Now()
	b.phase.Store(phaseMeasure)
	stopP := b.progress(progress, func(d time.Duration) string {
		n := b.ops.Load()
		return fmt.Sprintf("%5.1fs  %d %s  %.0f/s  %d errors", d.Seconds(), n, unit, float64(n)/d.Seconds(), b.errs.Load())
	})
	time.Sleep(b.o.duration)
	b.phase.Store(phaseStop)
	elapsed := time.Since(start)
	cpu1, cpuErr1 := readProcCPU(b.o.pid)
	self1 := selfCPU()
	stopP()
	wg.Wait()
	stopRSS()

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
	if rep.Ops > 0 {
		rep.BenchCPUUs = (self1 - self0).Seconds() * 1e6 / float64(rep.Ops)
	}
	if b.o.pid > 0 {
		rep.ServerPID = b.o.pid
		rep.setServerCPU(cpu0, cpu1, errors.Join(cpuErr0, cpuErr1))
		end, _ := readProcRSS(b.o.pid)
		rep.ServerRSSMiB, rep.ServerPeakMiB, rep.ServerEndMiB = mib(rssBefore), mib(max(rssPeak, end)), mib(end)
		if b.o.settle > 0 {
			time.Sleep(b.o.settle)
			v, _ := readProcRSS(b.o.pid)
			rep.ServerSettled, rep.SettleSec = mib(v), b.o.settle.Seconds()
		}
	}
	return rep, nil
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

// clockTicks is the kernel's USER_HZ, the unit of utime and stime in
// /proc/PID/stat: 100 on every Linux architecture Go supports.
const clockTicks = 100

// readProcCPU returns a process's utime+stime, all threads, from /proc.
func readProcCPU(pid int) (time.Duration, error) {
	if pid <= 0 {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, errors.New("no such process on this machine")
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from the last ')'.
	s := string(b)
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
	for _, line := range strings.Split(string(b), "\n") {
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

func cmdBenchPopulate(ctx *cli.Context) error {
	if err := noCLIArgs(ctx); err != nil {
		return err
	}
	cfg, err := loadConfig(ctx)
	if err != nil {
		return err
	}
	path := ctx.String("db")
	if path == "" {
		path = cfg.DB
	}
	n := ctx.Int("users")
	iters := ctx.Int("iterations")
	if iters == 0 {
		iters = cfg.Iterations
	}
	usage := `run "authbox bench populate --help" for usage`
	if n < 1 || n > 100_000_000 {
		return fail(exitOther, usage, "--users must be 1 to 100000000, got %d", n)
	}
	if iters < MinIterations || iters > cfg.Client.MaxIterations {
		return fail(exitOther, usage, "--iterations must be %d to %d (client.max_iterations), got %d", MinIterations, cfg.Client.MaxIterations, iters)
	}
	start := time.Now()
	store, err := OpenStore(path)
	if errors.Is(err, ErrDBLocked) {
		return fail(exitOther, "stop the server first: the bulk loader writes the file directly", "database %s is locked by another process", path)
	}
	if err != nil {
		return fail(exitOther, "check the path and its permissions", "%s", err)
	}
	defer store.Close()

	created, skipped, err := populate(store, n, iters, func(done int) {
		if f, ok := ctx.App.ErrWriter.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			fmt.Fprintf(f, "\r\033[Kwriting bench accounts: %d/%d", done, n)
		}
	})
	if f, ok := ctx.App.ErrWriter.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(f, "\r\033[K")
	}
	if err != nil {
		return fail(exitOther, "", "populate %s: %s", path, err)
	}
	if err := store.Close(); err != nil {
		return fail(exitOther, "", "closing %s: %s", path, err)
	}
	size := int64(0)
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	total := created + skipped
	fmt.Fprintf(ctx.App.Writer, "wrote %d bench accounts (bench0..bench%d, %d iterations) to %s in %.1fs; %d already there were kept\n",
		created, n-1, iters, filepath.Clean(path), time.Since(start).Seconds(), skipped)
	fmt.Fprintf(ctx.App.Writer, "db file: %d bytes, %.0f bytes per bench account\n", size, float64(size)/float64(total))
	return nil
}

// populate writes bench0..bench(n-1) with one shared salt and the bench
// password, in byte-wise sorted order so that bbolt appends to its last
// page and packs pages densely.
func populate(store *Store, n, iters int, progress func(int)) (created, skipped int, err error) {
	salt := make([]byte, SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return 0, 0, err
	}
	stored, server, err := Verifier("bench", benchPassword, salt, iters)
	if err != nil {
		return 0, 0, err
	}
	rec := Record{Kind: KindSCRAM, Iterations: iters, Salt: salt, StoredKey: stored, ServerKey: server}
	names := make([]string, n)
	for i := range names {
		names[i] = "bench" + strconv.Itoa(i)
	}
	sort.Strings(names)
	chunk := make([]NamedRecord, 0, min(n, populateChunk))
	for i := 0; i < n; i += populateChunk {
		chunk = chunk[:0]
		for _, name := range names[i:min(i+populateChunk, n)] {
			chunk = append(chunk, NamedRecord{Name: name, Record: rec})
		}
		c, s, err := store.CreateMany(chunk, false)
		if err != nil {
			return created, skipped, err
		}
		created += c
		skipped += s
		progress(i + len(chunk))
	}
	return created, skipped, nil
}
