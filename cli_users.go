package main

// cli_users.go holds the administration commands: `authbox users …`,
// `authbox backup` and `authbox pw`.

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"
)

// stdioPath is the file name that means standard input (import) or
// standard output (export, backup), as for most Unix tools.
const stdioPath = "-"

// How messages name the standard streams, where they would name a file.
const (
	stdinName  = "standard input"
	stdoutName = "standard output"
)

// progressMinBytes is the smallest import file that gets a progress bar:
// below it the import ends before a bar would be worth drawing.
const progressMinBytes = 1 << 20

// adminCommands are `authbox users …` and `authbox backup`.
func adminCommands(usageErr cli.OnUsageErrorFunc) []*cli.Command {
	configFlag := newConfigFlag()
	dbFlag := &cli.StringFlag{Name: "db", Usage: "account database `FILE` (default: db from the config, authbox.db)"}
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"}
	formatFlag := &cli.StringFlag{Name: "format", Usage: "`FORMAT` of the file: seed-csv (the original system's USERS table) or pg (PostgreSQL SCRAM verifiers)"}
	sub := func(name, args, usage string, action cli.ActionFunc, flags ...cli.Flag) *cli.Command {
		return &cli.Command{Name: name, ArgsUsage: args, Usage: usage, OnUsageError: usageErr,
			Flags: append([]cli.Flag{dbFlag, configFlag}, flags...), Action: action}
	}
	nameOp := func(op string) cli.ActionFunc {
		return func(ctx *cli.Context) error {
			name, err := oneArg(ctx, "NAME")
			if err != nil {
				return err
			}
			return adminAction(ctx, adminRequest{Op: op, Name: name, JSON: ctx.Bool("json")}, nil)
		}
	}
	return []*cli.Command{
		{
			Name:            "users",
			HideHelpCommand: true,
			Usage:           "list and manage accounts, import and export them (through the running server, or on the db file)",
			OnUsageError:    usageErr,
			// Runs when no subcommand matches: say so in our words, not
			// the CLI library's "No help topic".
			Action: func(ctx *cli.Context) error {
				hint := runHint(commandPath(ctx), "its commands")
				if ctx.NArg() > 0 {
					return fail(exitOther, hint, "unknown command \"users %s\"", ctx.Args().First())
				}
				return fail(exitOther, hint, "users needs a command: list, show, delete, lock, unlock, passwd, unthrottle, import or export")
			},
			Subcommands: []*cli.Command{
				sub("list", "", "list every account", func(ctx *cli.Context) error {
					if err := noCLIArgs(ctx); err != nil {
						return err
					}
					return adminAction(ctx, adminRequest{Op: opList, JSON: ctx.Bool("json")}, nil)
				}, jsonFlag),
				sub("show", "NAME", "show one account", nameOp(opShow), jsonFlag),
				sub("delete", "NAME", "delete an account, or with --prefix every account whose name begins with it", cmdUsersDelete,
					&cli.StringFlag{Name: "prefix", Usage: "delete every account whose name begins with `PREFIX` (e.g. bench, for what \"authbox bench\" made), instead of NAME"}),
				sub("lock", "NAME", "lock an account: a right password then gets ERR LOCKED", nameOp(opLock)),
				sub("unlock", "NAME", "unlock an account", nameOp(opUnlock)),
				sub("passwd", "NAME", "set an account's password (typed twice; --password-stdin: one line), keeping its created time; ends its sessions", cmdUsersPasswd,
					newPasswordStdinFlag()),
				sub("unthrottle", "[NAME|ADDRESS]", "clear the running server's (on etcd, every server's) failed logins on record for a name (from every address), an IP address (and its names), or everything", cmdUsersUnthrottle),
				sub("import", "FILE", "create accounts from a file, - for standard input (all or nothing)", cmdUsersImport, formatFlag,
					&cli.BoolFlag{Name: "replace", Usage: "overwrite accounts that exist (default: skip them)"},
					&cli.BoolFlag{Name: "partial", Usage: "import the good lines even if some are rejected (lines that name one account, even spelled differently, are all rejected even so)"}),
				sub("export", "FILE", "write every SCRAM account to a new file, - for standard output, as PostgreSQL verifiers", cmdUsersExport,
					&cli.StringFlag{Name: "format", Value: FormatPG, Usage: "`FORMAT` of the file: pg (PostgreSQL SCRAM verifiers), the only one"}),
			},
		},
		sub("backup", "FILE", "write a consistent copy of the db to a new file (- for standard output, not a terminal), while the server keeps serving", cmdBackup),
	}
}

// oneArg returns the single positional argument. urfave/cli stops reading
// flags at the first argument, so a flag after it is called out.
func oneArg(ctx *cli.Context, what string) (string, error) {
	usage := helpHint(ctx)
	switch {
	case ctx.NArg() == 0:
		return "", fail(exitOther, usage, "missing %s", what)
	case ctx.NArg() > 1:
		return "", fail(exitOther, "flags go before "+what+"; "+usage, "unexpected argument %q after %s", ctx.Args().Get(1), what)
	}
	return ctx.Args().First(), nil
}

func adminAction(ctx *cli.Context, req adminRequest, in io.Reader) error {
	ac, err := newAdminClient(ctx)
	if err != nil {
		return err
	}
	return ac.run(req, in, false)
}

func cmdUsersDelete(ctx *cli.Context) error {
	if !ctx.IsSet("prefix") {
		name, err := oneArg(ctx, "NAME")
		if err != nil {
			return err
		}
		return adminAction(ctx, adminRequest{Op: opDelete, Name: name}, nil)
	}
	if ctx.NArg() > 0 {
		return fail(exitOther, helpHint(ctx), "unexpected argument %q: --prefix and NAME do not go together", ctx.Args().First())
	}
	if ctx.String("prefix") == "" {
		return fail(exitOther, helpHint(ctx), "--prefix is empty: that would delete every account")
	}
	return adminAction(ctx, adminRequest{Op: opDelete, Prefix: ctx.String("prefix")}, nil)
}

// cmdUsersPasswd sets a password as an administrator. The verifier is
// made here, as "authbox pw" makes one: the server (or the db file) gets
// only the verifier, never the password.
func cmdUsersPasswd(ctx *cli.Context) error {
	name, err := oneArg(ctx, "NAME")
	if err != nil {
		return err
	}
	ac, err := newAdminClient(ctx)
	if err != nil {
		return err
	}
	// Nobody should type a password twice to learn the name is wrong.
	probe := *ac
	probe.out = adminOut{Stdout: io.Discard, Stderr: io.Discard}
	if err := probe.run(adminRequest{Op: opShow, Name: name}, nil, false); err != nil {
		return err
	}
	pw, err := newTerminal(ctx).newPassword(ctx.Bool("password-stdin"), ac.cfg.Client, "new password")
	if err != nil {
		return err
	}
	salt, err := newSalt()
	if err != nil {
		return err
	}
	stored, server, err := Verifier(name, pw, salt, ac.iterations)
	if err != nil {
		return fail(exitOther, "", "%s", err)
	}
	v := FormatPGVerifier(Record{Kind: KindSCRAM, Iterations: ac.iterations, Salt: salt, StoredKey: stored, ServerKey: server})
	return ac.run(adminRequest{Op: opPasswd, Name: name, Verifier: v}, nil, false)
}

func cmdUsersUnthrottle(ctx *cli.Context) error {
	if ctx.NArg() > 1 {
		return fail(exitOther, helpHint(ctx), "unexpected argument %q: give one name or address, or none for everything", ctx.Args().Get(1))
	}
	return adminAction(ctx, adminRequest{Op: opUnthrottle, Target: ctx.Args().First()}, nil)
}

func cmdUsersImport(ctx *cli.Context) error {
	path, err := oneArg(ctx, "FILE")
	if err != nil {
		return err
	}
	format := ctx.String("format")
	if format != FormatSeedCSV && format != FormatPG {
		return fail(exitOther, "say what the file holds: --format seed-csv (the original system's USERS table) or --format pg (PostgreSQL verifiers)",
			"missing or unknown --format %q", format)
	}
	ac, err := newAdminClient(ctx)
	if err != nil {
		return err
	}
	req := adminRequest{Op: opImport, Format: format, File: path, Replace: ctx.Bool("replace"), Partial: ctx.Bool("partial"), Iterations: ac.iterations}
	if path == stdioPath {
		// A pipe has no size to draw a bar against.
		req.File = stdinName
		return ac.run(req, ctx.App.Reader, true)
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(exitOther, "", "cannot read %s: %s", path, errText(err))
	}
	defer f.Close()
	var in io.Reader = f
	bar := newProgress(ctx.App.ErrWriter)
	if fi, err := f.Stat(); err == nil && fi.Size() >= progressMinBytes {
		in = bar.reading(f, fi.Size(), "reading "+path)
	}
	ac.out.Stdout, ac.out.Stderr = bar.clearing(ac.out.Stdout), bar.clearing(ac.out.Stderr)
	defer bar.stop()
	return ac.run(req, in, true)
}

func cmdUsersExport(ctx *cli.Context) error {
	if f := ctx.String("format"); f != FormatPG {
		return fail(exitOther, "export writes --format pg", "cannot export in format %q", f)
	}
	return withOutputFile(ctx, adminRequest{Op: opExport, Format: FormatPG})
}

// cmdFingerprint prints the fingerprint: the running server's, through
// the admin socket, or offline the one its config and db give; the output
// is the same either way.
func cmdFingerprint(ctx *cli.Context) error {
	if err := noCLIArgs(ctx); err != nil {
		return err
	}
	return adminAction(ctx, adminRequest{Op: opFingerprint}, nil)
}

func cmdBackup(ctx *cli.Context) error {
	return withOutputFile(ctx, adminRequest{Op: opBackup})
}

// withOutputFile runs a command that writes a new file: created before
// anything else happens (0600: it holds verifiers), never over an existing
// one, synced, and removed if the command fails.
func withOutputFile(ctx *cli.Context, req adminRequest) error {
	path, err := oneArg(ctx, "FILE")
	if err != nil {
		return err
	}
	ac, err := newAdminClient(ctx)
	if err != nil {
		return err
	}
	if path == stdioPath {
		return toStdout(ctx, ac, req)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fail(exitOther, "choose a new file name: it never overwrites a file", "%s exists", path)
	}
	if err != nil {
		return fail(exitOther, "", "cannot create %s: %s", path, errText(err))
	}
	req.File = path
	ac.out.File = f
	err = ac.run(req, nil, false)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		var ce *cliError
		if !errors.As(err, &ce) {
			err = fail(exitOther, "", "writing %s: %s", path, err)
		}
	}
	return err
}

// toStdout runs a command whose output file is "-": standard output,
// for pipes as pg_dump's. What it says about the file goes to standard
// error then, so that it does not mix with the data.
func toStdout(ctx *cli.Context, ac *adminClient, req adminRequest) error {
	if req.Op == opBackup && ifTerminal(ctx.App.Writer) != nil {
		return fail(exitOther, "redirect standard output to a pipe, or to a file only you can read: (umask 077; authbox backup - > copy.db)",
			"refusing to write a binary database to a terminal")
	}
	req.File, req.Stdout = stdoutName, true
	ac.out.File, ac.out.Stdout = ctx.App.Writer, ctx.App.ErrWriter
	return ac.run(req, nil, false)
}

func cmdPw(ctx *cli.Context) error {
	if err := noCLIArgs(ctx); err != nil {
		return err
	}
	cfg, err := loadConfig(ctx)
	if err != nil {
		return err
	}
	it := cfg.Iterations
	if ctx.IsSet("iterations") {
		it = ctx.Int("iterations")
	}
	if it < MinIterations || it > cfg.Client.MaxIterations {
		return fail(exitOther, "clients refuse fewer than 4096 and more than client.max_iterations", "--iterations must be %d to %d, got %d", MinIterations, cfg.Client.MaxIterations, it)
	}
	pw, err := newTerminal(ctx).newPassword(ctx.Bool("password-stdin"), cfg.Client, "password")
	if err != nil {
		return err
	}
	salt, err := newSalt()
	if err != nil {
		return err
	}
	// The keys depend on the password, salt and iterations only, not on
	// the name, so one verifier serves any account.
	stored, server, err := Verifier("", pw, salt, it)
	if err != nil {
		return fail(exitOther, "", "%s", err)
	}
	fmt.Fprintln(ctx.App.Writer, FormatPGVerifier(Record{Iterations: it, Salt: salt, StoredKey: stored, ServerKey: server}))
	return nil
}
