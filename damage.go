package main

// damage.go is what a damaged db file does to the store: bbolt's panics
// turned into one clear error, and the hint that says how to recover.

import (
	"fmt"
	"runtime/debug"
)

// DamagedError is ErrDamaged for one file, with what bbolt found.
type DamagedError struct {
	Path   string
	Detail string // bbolt's panic message, or its error
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("database %s is damaged (%s): restore it from a backup", e.Path, e.Detail)
}

func (e *DamagedError) Unwrap() error { return ErrDamaged }

// Hint says how to get back to a working db.
func (e *DamagedError) Hint() string {
	return restoreHint(e.Path) + fmt.Sprintf("; authbox check --db %s lists the damage", e.Path)
}

// restoreHint says how to put a backup in place of the damaged db at path.
func restoreHint(path string) string {
	return fmt.Sprintf("stop the server and copy a backup over the file (cp BACKUP %s), or serve the backup as it is (authbox serve --db BACKUP)", path)
}

// damaged makes the DamagedError for a panic value of bbolt's.
func damaged(path string, r any) *DamagedError {
	detail := fmt.Sprint(r)
	if len(detail) > 200 {
		detail = detail[:200] + "…"
	}
	return &DamagedError{Path: path, Detail: "bbolt: " + detail}
}

// callerPanic carries a panic in a caller's function (Each's fn, Update's
// fn) through guard, which must not take a bug for a damaged file.
type callerPanic struct{ v any }

// callOut runs a caller's function inside a bbolt transaction.
func callOut(fn func() error) error {
	defer func() {
		if r := recover(); r != nil {
			panic(callerPanic{r})
		}
	}()
	return fn()
}

// guard runs op, some bbolt calls, and turns a panic in bbolt into a
// DamagedError: bbolt panics, by design, on a page that is not what it
// should be, and a damaged file must give a clear error, not a stack. Every
// bbolt call of the store goes through it. A fault reading the mapped
// file (it was cut short under us) is made a panic too, to be caught here.
func (s *Store) guard(op func() error) (err error) {
	if d := s.damage.Load(); d != nil {
		return d
	}
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if cp, ok := r.(callerPanic); ok {
			panic(cp.v)
		}
		if s.damage.CompareAndSwap(nil, damaged(s.path, r)) {
			// Damage that a read met changes what every session stands
			// on: counted as a write, it makes the next session check
			// read, and fail, instead of trusting the last one.
			s.writes.Add(1)
		}
		err = s.damage.Load()
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return op()
}
