package main

import (
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// benchsetup.go makes and removes the bench's accounts: bench0..N-1 with
// the bench password, set up before a run (nothing is measured then) and,
// with --cleanup, deleted after it.

// setup makes sure bench0..bench(N-1) exist with the bench password and
// warms the key cache, so that no PBKDF2 runs while measuring.
//
// The server charges failed logins and "name taken" answers to the source,
// so setup must not probe blindly: bench0 tells whether the accounts are
// already there, and each worker then takes the path that costs nothing
// in that case (log in to existing accounts, register fresh ones).
func (b *bench) setup(progress io.Writer) error {
	exist, err := b.accountsExist()
	if err != nil {
		return fmt.Errorf("bench0: %w", err)
	}
	return b.eachAccount(progress, "setting up bench accounts", func(c *benchConn, name string) error {
		return b.setupAccount(c, name, exist)
	})
}

// cleanupAccounts deletes bench0..bench(N-1), logging in to each with the bench
// password; a name that does not log in is not one of ours, and is left.
func (b *bench) cleanupAccounts(progress io.Writer) (deleted int, err error) {
	var n atomic.Int64
	err = b.eachAccount(progress, "deleting bench accounts", func(c *benchConn, name string) error {
		err := b.login(c, name)
		if errorClass(err) == CodeAuth {
			return nil
		}
		if err == nil {
			err = b.simple(c, CmdDelete)
		}
		if err == nil {
			n.Add(1)
		}
		return err
	})
	return int(n.Load()), err
}

// eachAccount runs fn on bench0..bench(N-1), on a few connections at
// once, and stops at the first error.
func (b *bench) eachAccount(progress io.Writer, what string, fn func(c *benchConn, name string) error) error {
	workers := min(b.o.conc, b.o.users, 64)
	var next, done atomic.Int64
	errc := make(chan error, workers)
	stopProgress := progressLine(progress, func(elapsed time.Duration) string {
		return fmt.Sprintf("%s: %d/%d", what, done.Load(), b.o.users)
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
				if c == nil {
					var err error
					if c, err = b.dial(w); err != nil {
						errc <- err
						return
					}
				}
				name := "bench" + strconv.Itoa(i)
				if err := fn(c, name); err != nil {
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

// setupAccount makes sure one bench account logs in with the bench
// password. exist says that bench0 did, so the others probably do too and
// a login is tried first; otherwise a registration is.
func (b *bench) setupAccount(c *benchConn, name string, exist bool) error {
	var err error
	if exist {
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
		return ErrBenchSetup
	}
	return err
}

// accountsExist logs in as bench0: success means a previous run made the
// accounts; ERR AUTH means they must be registered.
func (b *bench) accountsExist() (bool, error) {
	c, err := b.dial(0)
	if err != nil {
		return false, err
	}
	defer c.close()
	err = b.login(c, "bench0")
	if errorClass(err) == CodeAuth {
		return false, nil
	}
	return err == nil, err
}
