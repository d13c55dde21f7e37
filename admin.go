package main

// admin.go is account administration: the operations of the `authbox
// users …` and `authbox backup` commands. bbolt lets one process hold the
// db file, so while `authbox serve` runs the commands cannot open it;
// instead they send their request over a Unix socket beside the db (db
// path + ".sock", mode 0600: file permissions are the access control, and
// it is never on TCP; adminserver.go, adminwire.go, adminclient.go). With
// no server they open the db themselves. Either way the same function,
// runAdmin, does the work and writes the output, so the two cannot differ.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
)

// AdminErrorKind is the kind of an admin command's failure. Its number is
// what the end frame's "exit" carries (adminwire.go), and the exit code the
// CLI gives it (adminCLIError).
type AdminErrorKind int

const (
	// AdminRefused is a name that is not valid, or names no account.
	AdminRefused AdminErrorKind = 1
	// AdminFailed is every other failure.
	AdminFailed AdminErrorKind = 2
)

// AdminError is an admin command's failure as the user is to see it, the
// same through the socket as from a local run.
type AdminError struct {
	Kind AdminErrorKind
	Msg  string
	Hint string // what to do about it, or ""
}

func (e *AdminError) Error() string { return e.Msg }

func adminFail(kind AdminErrorKind, hint, format string, args ...any) error {
	return &AdminError{Kind: kind, Msg: fmt.Sprintf(format, args...), Hint: hint}
}

// Admin operations.
const (
	opList   = "list"
	opShow   = "show"
	opDelete = "delete"
	opLock   = "lock"
	opUnlock = "unlock"
	opImport = "import"
	opExport = "export"
	opBackup = "backup"
	// opFingerprint prints the server's TLS fingerprint: the running
	// server's own, or offline the one the config and db give.
	opFingerprint = "fingerprint"
	// opPasswd sets an account's verifier, made by the admin's client:
	// the password itself never leaves the admin's process.
	opPasswd = "passwd"
	// opUnthrottle clears the running server's login throttle for a
	// name, an address, or everything.
	opUnthrottle = "unthrottle"
)

// adminRequest is one admin command, as sent over the socket.
type adminRequest struct {
	Op     string `json:"op"`
	Name   string `json:"name,omitempty"`
	JSON   bool   `json:"json,omitempty"`
	Format string `json:"format,omitempty"`
	File   string `json:"file,omitempty"` // as the user wrote it, for messages
	// Stdout says that the output file is the client's standard output.
	Stdout  bool `json:"stdout,omitempty"`
	Replace bool `json:"replace,omitempty"`
	Partial bool `json:"partial,omitempty"`
	// Iterations is the admin's config's iterations, which an import
	// compares the imported accounts' with.
	Iterations int `json:"iterations,omitempty"`
	// Verifier is a passwd's new verifier, in the format of the pg
	// import ("SCRAM-SHA-256$…", as "authbox pw" prints it).
	Verifier string `json:"verifier,omitempty"`
	// Prefix makes a delete remove every account whose name begins
	// with it, instead of the one named.
	Prefix string `json:"prefix,omitempty"`
	// Target is what an unthrottle clears: a name, an address, or "" for
	// everything.
	Target string `json:"target,omitempty"`
}

// adminEnv is what an admin command works on: the store, opened only once
// it is needed, so that an import reads its whole input first; the
// server's TLS identity (nil for a plain-TCP server); and the running
// server's login throttle, which offline there is none of.
type adminEnv struct {
	open     func() (Storage, error)
	identity func() (*ServerIdentity, error)
	// forgive is throttle.forgive through the running server; nil offline.
	forgive func(target string) (cleared int, err error)
}

// adminOut is where an admin command writes: the user's standard output
// and error, and the output file of a backup or an export.
type adminOut struct {
	Stdout, Stderr, File io.Writer
}

// AdminSocketPath is the admin socket of a db file.
func AdminSocketPath(db string) string { return db + ".sock" }

// runAdmin does one admin command in env: the server's, or the db file's
// when none runs. in is an import's input. Every failure is an
// *AdminError, so that it reaches the user the same way from the socket as
// from a local run.
func runAdmin(env adminEnv, req adminRequest, in io.Reader, out adminOut) error {
	switch req.Op {
	case opFingerprint:
		return runAdminErr(writeFingerprint(env.identity, out.Stdout))
	case opUnthrottle:
		return runAdminErr(unthrottle(env.forgive, req.Target, out.Stdout))
	}
	return runAdminErr(adminOp(env.open, req, in, out))
}

// forgivenOnCluster is what forgive returns on the etcd store, where the
// servers, not the command, clear their throttles and count what they
// cleared (each logs it).
const forgivenOnCluster = -1

// unthrottle clears the login throttle of the running server, or of every
// server on the cluster.
func unthrottle(forgive func(string) (int, error), target string, w io.Writer) error {
	what := "every address and name"
	if target != "" {
		what = fmt.Sprintf("%q", target)
	}
	if forgive == nil {
		// The throttle lives in a running server's memory, and a server
		// starts with it empty: with none running there is nothing to do.
		fmt.Fprintf(w, "no server is running on this db, so nothing is throttled: a server's throttle lives in its memory and starts empty\n")
		return nil
	}
	n, err := forgive(target)
	if err != nil {
		return err
	}
	if n == forgivenOnCluster {
		fmt.Fprintf(w, "asked every server on the cluster to clear the failed logins on record for %s; each does as its watch delivers it, within a second\n", what)
		return nil
	}
	if n == 0 {
		fmt.Fprintf(w, "nothing to clear: no failed logins on record for %s\n", what)
		return nil
	}
	fmt.Fprintf(w, "cleared the failed logins on record for %s (%d throttle %s)\n", what, n, plural(n, "entry", "entries"))
	return nil
}

func runAdminErr(err error) error {
	var ae *AdminError
	var de *DamagedError
	switch {
	case err == nil || errors.As(err, &ae):
		return err
	case errors.As(err, &de):
		return adminFail(AdminFailed, de.Hint(), "%s", err)
	}
	return adminFail(AdminFailed, "", "%s", err)
}

// writeFingerprint prints the fingerprint clients pin, alone on a line so
// that scripts can take it as it is.
func writeFingerprint(identity func() (*ServerIdentity, error), w io.Writer) error {
	id, err := identity()
	var ae *AdminError
	if errors.As(err, &ae) {
		return err
	}
	if err != nil {
		return adminFail(AdminFailed, "check tls_cert_file and tls_key_file, or restore the db from a backup", "cannot load the TLS identity: %s", err)
	}
	if id == nil {
		return adminFail(AdminFailed, "a server with tls = false has no fingerprint; clients reach it with --plain", "this server speaks plain TCP (tls = false)")
	}
	_, err = fmt.Fprintln(w, id.Fingerprint)
	return err
}

func adminOp(open func() (Storage, error), req adminRequest, in io.Reader, out adminOut) error {
	switch req.Op {
	case opImport:
		return adminImport(open, req, in, out)
	case opDelete:
		if req.Prefix != "" {
			return deletePrefix(open, req.Prefix, out.Stdout)
		}
		fallthrough
	case opShow, opLock, opUnlock, opPasswd:
		name, err := NormalizeUsername(req.Name)
		if err != nil {
			return adminFail(AdminRefused, "a username is 1 to 64 bytes of letters, digits and punctuation, without spaces", "invalid username %q", req.Name)
		}
		if req.Op == opPasswd {
			return adminPasswd(open, name, req.Verifier, out.Stdout)
		}
		store, err := open()
		if err != nil {
			return err
		}
		return accountOp(store, req.Op, name, req.JSON, out.Stdout)
	}
	store, err := open()
	if err != nil {
		return err
	}
	switch req.Op {
	case opList:
		return listAccounts(store, out.Stdout, req.JSON)
	case opExport:
		return adminExport(store, req, out)
	case opBackup:
		n, err := store.Backup(out.File)
		if err != nil {
			return fmt.Errorf("writing the backup: %w", err)
		}
		if req.Stdout {
			fmt.Fprintf(out.Stdout, "wrote a backup of %d bytes to %s\n", n, req.File)
			return nil
		}
		fmt.Fprintf(out.Stdout, "wrote a backup of %d bytes to %s; \"authbox serve --db %s\" serves it\n", n, req.File, req.File)
		return nil
	}
	return adminFail(AdminFailed, "", "unknown admin operation %q", req.Op)
}

// accountOp shows, deletes, locks or unlocks the account name.
func accountOp(store Storage, op, name string, asJSON bool, w io.Writer) error {
	var err error
	switch op {
	case opShow:
		var rec Record
		if rec, err = store.Get(name); err == nil {
			return writeAccount(w, accountInfo(name, rec), asJSON)
		}
	case opDelete:
		if err = store.Delete(name); err == nil {
			fmt.Fprintf(w, "deleted account %q\n", name)
		}
	case opLock, opUnlock:
		var changed bool
		if changed, err = store.SetLocked(name, op == opLock); err == nil && changed {
			fmt.Fprintf(w, "%sed account %q\n", op, name)
		} else if err == nil {
			fmt.Fprintf(w, "account %q was already %sed\n", name, op)
		}
	}
	if errors.Is(err, ErrNotFound) {
		return adminFail(AdminRefused, `"authbox users list" shows the accounts; names are case-sensitive`, "no account named %q", name)
	}
	return err
}

// deletePrefix deletes every account whose name begins with prefix: the
// bench's, say ("bench").
func deletePrefix(open func() (Storage, error), prefix string, w io.Writer) error {
	store, err := open()
	if err != nil {
		return err
	}
	n, err := store.DeletePrefix(prefix)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "deleted %d %s whose %s with %q\n", n, plural(n, "account", "accounts"), plural(n, "name begins", "names begin"), prefix)
	return nil
}

// adminPasswd sets the verifier of an account, as a user's PASSWD does:
// it keeps created and the lock, and gives the account a new identity
// stamp, which ends every session logged in to it (Record.Gen).
func adminPasswd(open func() (Storage, error), name, verifier string, w io.Writer) error {
	rec, err := ParsePGVerifier(verifier)
	if err != nil {
		return adminFail(AdminFailed, "", "the new verifier is malformed: %s", err)
	}
	store, err := open()
	if err != nil {
		return err
	}
	err = store.Update(name, func(old Record) (Record, error) {
		rec.Locked, rec.Gen = old.Locked, NewGen()
		return rec, nil
	})
	if errors.Is(err, ErrNotFound) {
		return adminFail(AdminRefused, `"authbox users list" shows the accounts; names are case-sensitive`, "no account named %q", name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "changed the password of account %q; its sessions were ended\n", name)
	return nil
}

// adminImport parses the whole input first, so that a bad line stops the
// import before anything is written (or a db created), then writes every
// account: in one transaction on the bbolt store, in transactions of 100
// on etcd (see EtcdStore.CreateMany).
func adminImport(open func() (Storage, error), req adminRequest, in io.Reader, out adminOut) error {
	sample := &headWriter{max: sniffSampleBytes}
	res, err := ParseImport(req.Format, io.TeeReader(in, sample))
	if err != nil {
		return inputError(req.File, err)
	}
	if len(res.Accounts) == 0 && len(res.Rejected) > 0 {
		// Every line rejected is most often the wrong --format: say so
		// rather than list each line and suggest --partial.
		if other := SniffFormat(req.Format, sample.buf); other != "" {
			return adminFail(AdminFailed, fmt.Sprintf("run the import again with --format %s", other),
				"nothing imported: no line of %s is in the %s format, and the file looks like %s", req.File, req.Format, other)
		}
	}
	for _, r := range res.Rejected {
		fmt.Fprintf(out.Stderr, "%s:%d: %s\n", req.File, r.Line, r.Reason)
	}
	counts := func(created, skipped int) {
		fmt.Fprintf(out.Stdout, "imported %d, skipped %d (name exists), rejected %d\n", created, skipped, len(res.Rejected))
	}
	if len(res.Rejected) > 0 && !req.Partial {
		counts(0, 0)
		return adminFail(AdminFailed, "fix the lines above and import again, or import the other lines with --partial",
			"nothing imported: %d of %d lines rejected", len(res.Rejected), res.Lines)
	}
	var created, skipped int
	if len(res.Accounts) > 0 {
		store, err := open()
		if err != nil {
			return err
		}
		// In key order bbolt fills its pages; in file order it leaves
		// them half empty.
		slices.SortFunc(res.Accounts, func(a, b NamedRecord) int { return strings.Compare(a.Name, b.Name) })
		created, skipped, err = store.CreateMany(res.Accounts, req.Replace)
		if err != nil && created+skipped == 0 {
			return fmt.Errorf("nothing imported: %w", err)
		}
		if err != nil {
			// Only a store that writes in several transactions (etcd,
			// at most 100 accounts in each) stops part way.
			counts(created, skipped)
			return adminFail(AdminFailed, "run the same import again to finish it: the accounts already written are then skipped (with --replace, written again); \"authbox users delete\" removes any you do not want",
				"the import stopped part way, after %d of %d accounts: %s", created+skipped, len(res.Accounts), err)
		}
	}
	counts(created, skipped)
	if odd := oddIterations(res.Accounts, req.Iterations); created > 0 && odd > 0 {
		// The whole explanation is here: a user may have the binary and
		// no README.
		fmt.Fprintf(out.Stderr, "authbox: note: %d %s in the file %s an iteration count other than the config's iterations (%d); a login shows the account's count, and an unknown name is shown %d, so anyone can tell %s from unknown names (and a lower count is cheaper to attack offline) until %s, which gives the config's count\n",
			odd, plural(odd, "account", "accounts"), plural(odd, "has", "have"), req.Iterations, req.Iterations, plural(odd, "it", "them"),
			plural(odd, "its user changes the password", "their users change their passwords"))
	}
	if skipped > 0 && !req.Replace {
		fmt.Fprintf(out.Stderr, "authbox: hint: existing accounts were left as they are; --replace overwrites them\n")
	}
	if created > 0 && req.Format == FormatSeedCSV {
		fmt.Fprintf(out.Stderr, "authbox: hint: legacy accounts can log in only while the server's mechanisms include %q (auth.toml); each is upgraded to SCRAM at its first login\n", MechSeed)
	}
	return nil
}

// oddIterations counts the SCRAM accounts whose iteration count is not
// the config's: an unknown name is shown the config's, so they stand out.
func oddIterations(accounts []NamedRecord, configured int) int {
	if configured == 0 {
		return 0 // a request from a client that did not say
	}
	n := 0
	for _, a := range accounts {
		if a.Record.Kind == KindSCRAM && a.Record.Iterations != configured {
			n++
		}
	}
	return n
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// adminExport writes every SCRAM account as a PostgreSQL verifier line.
// Legacy accounts have no verifier to write: they get one at their first
// login, so they are counted and left out.
func adminExport(store Storage, req adminRequest, out adminOut) error {
	if req.Format != FormatPG {
		return adminFail(AdminFailed, "export writes --format pg", "cannot export in format %q", req.Format)
	}
	w := bufio.NewWriter(out.File)
	var n, legacy int
	err := store.Each(func(name string, rec Record) error {
		if rec.Kind != KindSCRAM {
			legacy++
			return nil
		}
		n++
		_, err := w.WriteString(FormatPGLine(name, rec))
		return err
	})
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", req.File, err)
	}
	fmt.Fprintf(out.Stdout, "exported %d %s to %s\n", n, plural(n, "account", "accounts"), req.File)
	if legacy > 0 {
		fmt.Fprintf(out.Stdout, "left out %d legacy %s\n", legacy,
			plural(legacy, "account: it has no SCRAM verifier until its first login", "accounts: they have no SCRAM verifier until their first login"))
	}
	return nil
}

// inputError is how an import reports that its input cannot be read, the
// same from the socket as on the file.
func inputError(file string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return adminFail(AdminFailed, "", "reading %s: %s", file, errText(err))
}
