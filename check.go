package main

// check.go is the check command: bbolt's consistency check over a db file,
// for an operator who wants to know whether a file (the live one with the
// server stopped, or a backup) can be trusted.

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
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
