package main

// populate.go is `authbox bench populate`: an offline bulk loader of bench
// accounts, written in key order in large transactions.

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"
)

// populateChunk is how many accounts one bulk-load transaction writes:
// large enough that commits (and fsyncs) are rare, small enough that a
// transaction's dirty pages stay a few tens of MiB.
const populateChunk = 100_000

func cmdBenchPopulate(ctx *cli.Context) error {
	if err := noCLIArgs(ctx); err != nil {
		return err
	}
	cfg, err := loadConfig(ctx)
	if err != nil {
		return err
	}
	// No default from the config: that is the real accounts' db, and bench
	// accounts have no place in it.
	path := ctx.String("db")
	n := ctx.Int("users")
	iters := ctx.Int("iterations")
	if iters == 0 {
		iters = cfg.Iterations
	}
	usage := helpHint(ctx)
	if path == "" {
		return fail(exitOther, "give a throwaway db file, e.g. --db bench.db", "bench populate needs --db")
	}
	if n < 1 || n > 100_000_000 {
		return fail(exitOther, usage, "--users must be 1 to 100000000, got %d", n)
	}
	if iters < MinIterations || iters > cfg.Client.MaxIterations {
		return fail(exitOther, usage, "--iterations must be %d to %d (client.max_iterations), got %d", MinIterations, cfg.Client.MaxIterations, iters)
	}
	password, secret, err := benchPassword(cfg.Client)
	if err != nil {
		return err
	}
	start := time.Now()
	store, err := OpenStore(path)
	if errors.Is(err, ErrDBLocked) {
		return fail(exitOther, "stop the server first: the bulk loader writes the file directly", "database %s is locked by another process", path)
	}
	if err != nil {
		msg, hint := dbOpenFailure(path, err)
		return fail(exitOther, hint, "%s", msg)
	}
	defer store.Close()

	var written atomic.Int64
	stopProgress := progressLine(ifTerminal(ctx.App.ErrWriter), func(time.Duration) string {
		return fmt.Sprintf("writing bench accounts: %d/%d", written.Load(), n)
	})
	created, skipped, err := populate(store, n, iters, password, func(done int) { written.Store(int64(done)) })
	stopProgress()
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
	fmt.Fprintf(ctx.App.Writer, "their password is made from %s, which \"authbox bench\" on this machine reads too\n", secret)
	return nil
}

// populate writes bench0..bench(n-1) with one shared salt and password, in byte-wise sorted order so that bbolt appends to its last
// page and packs pages densely.
func populate(store Storage, n, iters int, password string, progress func(int)) (created, skipped int, err error) {
	salt := make([]byte, SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return 0, 0, err
	}
	stored, server, err := Verifier("bench", password, salt, iters)
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
