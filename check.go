package main

// check.go is the check command and the check itself (CheckFile): bbolt's
// consistency check over a db file, for an operator who wants to know
// whether a file (the live one with the server stopped, or a backup) can
// be trusted. It opens the file with store.go's openBolt, under its guard.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	bolt "go.etcd.io/bbolt"
)

func checkCommand(usageErr cli.OnUsageErrorFunc) *cli.Command {
	return &cli.Command{
		Name:         "check",
		Usage:        "check that a db file is sound (bbolt's consistency check); exit 2 if it is damaged",
		OnUsageError: usageErr,
		Flags: []cli.Flag{newConfigFlag(),
			&cli.StringFlag{Name: "db", Usage: "account database `FILE` (default: db from the config, authbox.db)"}},
		Action: cmdCheck,
	}
}

func cmdCheck(ctx *cli.Context) error {
	if err := noCLIArgs(ctx); err != nil {
		return err
	}
	cfg, err := loadConfig(ctx)
	if err != nil {
		return err
	}
	db := cfg.DB
	if v := ctx.String("db"); v != "" {
		db = v
	}
	// bbolt would make a db of an empty file; check only reads.
	switch fi, err := os.Stat(db); {
	case errors.Is(err, os.ErrNotExist):
		return fail(exitOther, "give the db with --db, or the config that names it with --config", "no database at %s", db)
	case err != nil:
		return fail(exitOther, "check the path and its permissions", "cannot read %s: %s", db, errText(err))
	case !fi.Mode().IsRegular() || fi.Size() == 0:
		return fail(exitOther, "give the db with --db, or the config that names it with --config", "%s is not an authbox database (an empty file, or not a file)", db)
	}
	problems, err := CheckFile(db)
	if errors.Is(err, ErrDBLocked) {
		return fail(exitOther, "a running server holds it: check a copy instead (authbox backup COPY, then authbox check --db COPY), or stop the server first",
			"database %s is locked by another process", db)
	}
	if err != nil {
		return fail(exitOther, "check the path and its permissions", "cannot check %s: %s", db, errText(err))
	}
	if len(problems) == 0 {
		fmt.Fprintf(ctx.App.Writer, "%s: ok\n", db)
		return nil
	}
	for _, p := range problems {
		fmt.Fprintf(ctx.App.Writer, "%s: %s\n", db, p)
	}
	return fail(exitOther, restoreHint(db), "database %s is damaged: %d %s found", db, len(problems), plural(len(problems), "problem", "problems"))
}

// CheckFile runs bbolt's consistency check over the db file at path,
// opened read-only, and returns the problems it found: none for a sound
// file. It fails with ErrDBLocked while a server holds the file.
//
// bbolt's tx.Check runs on a goroutine of its own, where a panic (the way
// bbolt meets a page whose header is not what it should be) cannot be
// recovered and would end the process. So every page header is read first,
// and every account walked, here under guard; tx.Check runs only on a file
// whose pages all say what they are.
func CheckFile(path string) ([]string, error) {
	s, err := openBolt(path, &bolt.Options{Timeout: dbLockTimeout, ReadOnly: true, PreLoadFreelist: true})
	var de *DamagedError
	if errors.As(err, &de) {
		return []string{de.Detail}, nil
	}
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var problems []string
	err = s.view(func(tx *bolt.Tx) error {
		if problems = s.checkPageHeaders(tx); len(problems) > 0 {
			return nil
		}
		if problems = checkAccounts(tx); len(problems) > 0 {
			return nil
		}
		for err := range tx.Check() {
			// bbolt words a failed assertion as a "panic"; here it is a
			// finding, and nothing crashed.
			problems = append(problems, strings.Replace(err.Error(), "panic: ", "", 1))
		}
		return nil
	})
	if errors.As(err, &de) {
		return append(problems, de.Detail), nil
	}
	return problems, err
}

// checkPageHeaders reads the header of every page in use, straight from
// the file: its page number must be its own and its type one of bbolt's.
// A free page (and the rest of a page that overflows) has no header to
// check.
func (s *Store) checkPageHeaders(tx *bolt.Tx) []string {
	size := int64(s.db.Info().PageSize)
	var hdr [16]byte // id u64 | flags u16 | count u16 | overflow u32, little-endian
	for id := int64(2); id < tx.Size()/size; {
		info, err := tx.Page(int(id))
		if err != nil {
			return []string{fmt.Sprintf("page %d: %s", id, err)}
		}
		if info == nil {
			break
		}
		if info.Type == "free" {
			id++
			continue
		}
		if _, err := s.file.ReadAt(hdr[:], id*size); err != nil {
			return []string{fmt.Sprintf("page %d: cannot read its header: %s", id, err)}
		}
		if self := binary.LittleEndian.Uint64(hdr[:]); self != uint64(id) {
			return []string{fmt.Sprintf("page %d: its header says it is page %d", id, self)}
		}
		switch info.Type {
		case "branch", "leaf", "meta", "freelist":
		default:
			return []string{fmt.Sprintf("page %d: its header has an unknown type (%s)", id, info.Type)}
		}
		id += 1 + int64(info.OverflowCount)
	}
	return nil
}

// checkAccounts reads every key of every bucket, which visits every page
// of theirs, and decodes every account.
func checkAccounts(tx *bolt.Tx) []string {
	var problems []string
	for _, name := range [][]byte{bucketUsers, bucketMeta} {
		if tx.Bucket(name) == nil {
			problems = append(problems, fmt.Sprintf("the %s bucket is missing", name))
		}
	}
	if len(problems) > 0 {
		return problems
	}
	tx.Bucket(bucketMeta).ForEach(func(_, _ []byte) error { return nil })
	tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
		if _, err := unmarshalRecord(v); err != nil {
			problems = append(problems, fmt.Sprintf("account %q: %s", k, err))
		}
		return nil
	})
	return problems
}
