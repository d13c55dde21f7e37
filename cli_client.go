package main

// cli_client.go holds the client commands (register, login, passwd,
// delete): what they share, and how their errors read to a person.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// clientSetup is what the client commands share: the config, the server,
// the name, and the terminal to ask for passwords on.
type clientSetup struct {
	cfg Config
	// servers are the addresses to try, in order; server is the one
	// talked to last, which messages name.
	servers []string
	server  string
	name    string
	term    *terminal
	conn    *connector
	// warnedLegacy: the legacy-login warning has been shown.
	warnedLegacy bool
}

// setupClient reads the config, the server and the name, then checks the
// server (and, for a registration, the name) before any password prompt.
func setupClient(ctx *cli.Context, register bool) (*clientSetup, error) {
	if err := noCLIArgs(ctx); err != nil {
		return nil, err
	}
	cfg, err := loadConfig(ctx)
	if err != nil {
		return nil, err
	}
	cs := &clientSetup{cfg: cfg, server: ctx.String("server"), term: newTerminal(ctx)}
	// Before the server is asked anything or any prompt shows.
	if err := cs.term.checkPasswordStdin(ctx.Bool("password-stdin")); err != nil {
		return nil, err
	}
	if cs.server == "" {
		if ctx.IsSet("server") {
			return nil, fail(exitOther, "give HOST:PORT, e.g. 127.0.0.1:7886", "--server is empty")
		}
		cs.server = cfg.Client.Server
	}
	if cs.servers, err = parseServers(cs.server); err != nil {
		return nil, fail(exitOther, "give HOST or HOST:PORT, or several separated by commas, e.g. 10.0.0.1:7886,10.0.0.2 (from --server, AUTHBOX_SERVER or client.server)", "%s", err)
	}
	cs.server = cs.servers[0]
	if cs.conn, err = newConnector(ctx, cfg.Client, cs.term); err != nil {
		return nil, err
	}
	cs.conn.trust.Group = cs.servers
	name := ctx.String("user")
	if name == "" {
		if name, err = cs.term.readLine("username: "); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fail(exitOther, "give the name with --user", "no username given")
			}
			return nil, fail(exitOther, "give the name with --user", "cannot ask for a username: %s", err)
		}
	}
	if cs.name, err = NormalizeUsername(name); err != nil {
		return nil, fail(exitRefused, "a username is 1 to 64 bytes of letters, digits and punctuation, without spaces", "invalid username")
	}
	// With --password-stdin nobody types, so nothing is gained by asking
	// first, and the connection it costs is a tenth of a login's time.
	if !ctx.Bool("password-stdin") {
		if err := cs.preflight(register); err != nil {
			return nil, err
		}
	}
	return cs, nil
}

// preflight checks, before the user types a password, that the server
// answers and, for a registration, that the name is free: nobody should
// type a password twice to learn the server is down. It holds no
// connection open while the user types, since the server would time it out.
func (cs *clientSetup) preflight(register bool) error {
	c, err := cs.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if !register {
		return nil
	}
	// REGISTER then QUIT abandons the exchange: nothing is created.
	if _, err := c.Do(CmdRegister, cs.name); err != nil {
		return cs.explain(err)
	}
	return nil
}

// dial connects and reads the greeting, turning failures into messages.
// With several servers it starts at the one that answered last and moves
// on to the next while one is down, busy, silent or closes before its
// greeting; any other answer (a trust failure above all) stops it. When
// none could serve, the message says what each of them did.
func (cs *clientSetup) dial() (*Client, error) {
	start := slices.Index(cs.servers, cs.server)
	var err error
	var tried []string
	for i := range cs.servers {
		if i > 0 {
			time.Sleep(time.Duration(i) * failoverBackoff)
		}
		cs.server = cs.servers[(start+i)%len(cs.servers)]
		var c *Client
		if c, err = cs.conn.dial(cs.server); err == nil {
			c.MaxIterations = cs.cfg.Client.MaxIterations
			return c, nil
		}
		if !isUnavailable(err) && !noGreeting(err) {
			break
		}
		var ce *cliError
		if errors.As(cs.explain(err), &ce) {
			tried = append(tried, ce.msg)
		}
	}
	explained := cs.explain(err)
	var ce *cliError
	if len(tried) > 1 && len(tried) == len(cs.servers) && errors.As(explained, &ce) {
		return nil, fail(ce.code, "each is down, busy, stuck, or has lost its store (a cluster without a quorum); try again in a moment, and check the servers' logs",
			"none of the %d servers could serve: %s", len(tried), strings.Join(tried, "; "))
	}
	return nil, explained
}

// noGreeting reports whether err means a server took the connection but
// neither greeted nor refused it in time, or closed it first: a server
// hung or going down, which another may not share. It is checked only
// before the greeting; later, a silent server may have acted on a command.
func noGreeting(err error) bool {
	var ne net.Error
	return errors.Is(err, ErrHandshakeTimeout) || errors.Is(err, ErrConnClosed) || (errors.As(err, &ne) && ne.Timeout())
}

// failoverBackoff is the pause before trying the next server, growing with
// each: short, since the next server is usually fine, but not zero, so a
// cluster that is all busy is not hammered in a tight loop.
const failoverBackoff = 50 * time.Millisecond

// parseServers reads a comma-separated list of host:port.
func parseServers(list string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		addr, err := normalizeServerAddr(s)
		if err != nil {
			return nil, fmt.Errorf("invalid server address: %w", err)
		}
		out = append(out, addr)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no server address in %q", list)
	}
	return out, nil
}

// isUnavailable reports whether err means "this server cannot serve now"
// (down, busy, shutting down, its store lost), so another may.
func isUnavailable(err error) bool {
	var pe *ProtoError
	var oe *net.OpError
	switch {
	case errors.As(err, &pe):
		return pe.Code == CodeBusy
	case errors.As(err, &oe):
		return oe.Op == "dial"
	}
	return errors.Is(err, ErrClosedBeforeHandshake)
}

// login dials and logs in, trying the legacy scheme after a failed SCRAM
// login (Client.LoginAny). legacy reports an account still to upgrade.
func (cs *clientSetup) login(password string) (c *Client, legacy bool, err error) {
	// A server that turns busy during the login (its store lost) is left
	// for the next one, as at connect.
	for attempt := range cs.servers {
		if c, err = cs.dial(); err != nil {
			return nil, false, err
		}
		if cs.cfg.Client.LegacyFallback {
			legacy, err = c.LoginAny(cs.name, password)
		} else {
			err = c.Login(cs.name, password)
		}
		if err == nil {
			break
		}
		c.Close()
		if !isUnavailable(err) || attempt == len(cs.servers)-1 {
			return nil, false, cs.explain(err)
		}
		cs.server = cs.servers[(slices.Index(cs.servers, cs.server)+1)%len(cs.servers)]
	}
	if legacy && !cs.warnedLegacy {
		// SEED-SHA256 proves nothing about the server, and what it sent can
		// be attacked offline at the speed of SHA-256: say so every time
		// (once per command: passwd may log in twice).
		cs.warnedLegacy = true
		fmt.Fprintf(cs.term.stderr, "authbox: warning: this login used the legacy SEED-SHA256 scheme, which cannot tell a real server from an impostor; set client.legacy_fallback = false once your accounts are upgraded\n")
	}
	return c, legacy, nil
}

// explain turns a client-side error into what the user reads.
func (cs *clientSetup) explain(err error) error {
	var pe *ProtoError
	var ne net.Error
	var oe *net.OpError
	var ce *cliError
	if errors.As(err, &ce) {
		return err
	}
	if te := explainTrust(err, cs.server); te != nil {
		return te
	}
	switch {
	case errors.As(err, &pe):
		// The text comes from the server: runContext makes it printable.
		return explainCode(pe, cs.name)
	case errors.Is(err, ErrServerSignature):
		return fail(exitOther, "do not trust this server: it may be an impostor, or the account was restored from another server", "%s", err)
	case errors.Is(err, ErrTooFewIterations), errors.Is(err, ErrTooManyIterations):
		return fail(exitOther, "this account's iteration count (the server's iterations setting when it was made, or an imported verifier's) is outside what this client accepts; client.max_iterations sets the cap", "%s", err)
	case errors.Is(err, ErrNotGreeting):
		return fail(exitOther, "check the address (--server, else AUTHBOX_SERVER, else client.server in --config): another service may listen on that port",
			"%s is not an authbox server: its first line is not an authbox greeting", cs.server)
	case errors.As(err, &oe) && oe.Op == "dial":
		return fail(exitOther, `is "authbox serve" running there? the address comes from --server, else AUTHBOX_SERVER, else client.server in --config`, "cannot reach %s: %s", cs.server, errText(err))
	case errors.As(err, &ne) && ne.Timeout():
		return fail(exitOther, "the server or the network is slow or stuck; try again", "no answer from %s in time", cs.server)
	}
	return fail(exitOther, "", "talking to %s: %s", cs.server, err)
}

func explainCode(pe *ProtoError, name string) error {
	switch pe.Code {
	case CodeAuth:
		return fail(exitRefused, "check the username and password; names are case-sensitive", "login failed: wrong username or password")
	case CodeLocked:
		return fail(exitRefused, "ask the server's administrator to unlock it", "account %q is locked", name)
	case CodeExists:
		return fail(exitRefused, "choose another username", "username %q is taken", name)
	case CodeBadName:
		return fail(exitRefused, "a username is 1 to 64 bytes of letters, digits and punctuation, without spaces", "the server rejected the username: %s", pe.Text)
	case CodeDenied:
		return fail(exitOther, "ask the server's administrator to create your account", "%s", pe.Text)
	case CodeBusy:
		return fail(exitOther, "try again in a moment", "the server is busy: %s", pe.Text)
	case CodeLimit:
		return fail(exitOther, "", "%s", pe.Text)
	case CodeTimeout:
		return fail(exitOther, "try again", "the server timed out the connection: %s", pe.Text)
	}
	return fail(exitOther, "", "the server answered %s: %s", pe.Code, pe.Text)
}

func cmdRegister(ctx *cli.Context) error {
	cs, err := setupClient(ctx, true)
	if err != nil {
		return err
	}
	pw, err := cs.term.newPassword(ctx.Bool("password-stdin"), cs.cfg.Client, "password")
	if err != nil {
		return err
	}
	c, err := cs.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Register(cs.name, pw); err != nil {
		return cs.explain(err)
	}
	fmt.Fprintf(ctx.App.Writer, "registered %q on %s\n", cs.name, cs.server)
	return nil
}

func cmdLogin(ctx *cli.Context) error {
	cs, err := setupClient(ctx, false)
	if err != nil {
		return err
	}
	pw, err := cs.term.password(ctx.Bool("password-stdin"), "password: ")
	if err != nil {
		return err
	}
	c, legacy, err := cs.login(pw)
	if err != nil {
		return err
	}
	defer c.Close()
	if !legacy {
		fmt.Fprintf(ctx.App.Writer, "logged in as %q on %s; the server proved it holds your verifier\n", cs.name, cs.server)
		return nil
	}
	// The same password, now as a SCRAM verifier: the legacy record goes.
	if err := c.Passwd(cs.name, pw); err != nil {
		return fail(exitOther, "log in again: the upgrade is tried at every login until it succeeds",
			"logged in as %q, but upgrading the account to SCRAM-SHA-256 failed: %s", cs.name, cs.explain(err))
	}
	fmt.Fprintf(ctx.App.Writer, "logged in as %q on %s; upgraded the account from the legacy scheme to SCRAM-SHA-256\n", cs.name, cs.server)
	return nil
}

func cmdPasswd(ctx *cli.Context) error {
	cs, err := setupClient(ctx, false)
	if err != nil {
		return err
	}
	fromStdin := ctx.Bool("password-stdin")
	old, err := cs.term.password(fromStdin, "current password: ")
	if err != nil {
		return err
	}
	// The current password is checked first, as passwd(1) does: nobody
	// should make up and type a new password twice to learn the old one
	// was wrong.
	c, legacy, err := cs.login(old)
	if err != nil {
		return err
	}
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	pw, err := cs.term.newPassword(fromStdin, cs.cfg.Client, "new password")
	if err != nil {
		return err
	}
	// Compared as SCRAM sees them: two spellings SASLprep makes one are
	// the same password.
	if preparePassword(pw) == preparePassword(old) {
		return fail(exitOther, "choose a password other than the current one", "the new password is the current one; nothing was changed")
	}
	if !fromStdin {
		// A person typing the new password twice may take longer than the
		// server's line_timeout; a fresh login is not timed out.
		c.Close()
		fresh, _, err := cs.login(old)
		if err != nil {
			c = nil
			return err
		}
		c = fresh
	}
	if err := c.Passwd(cs.name, pw); err != nil {
		return cs.explain(err)
	}
	note := ""
	if legacy {
		note = "; the account now uses SCRAM-SHA-256"
	}
	fmt.Fprintf(ctx.App.Writer, "changed the password of %q on %s%s\n", cs.name, cs.server, note)
	return nil
}

func cmdDelete(ctx *cli.Context) error {
	cs, err := setupClient(ctx, false)
	if err != nil {
		return err
	}
	// Asked before the password and before connecting: the server would
	// time the connection out while a person makes up their mind.
	if !ctx.Bool("yes") {
		answer, err := cs.term.readLine(fmt.Sprintf("delete the account %q on %s for good? [y/N] ", cs.name, cs.server))
		if errors.Is(err, io.EOF) {
			// ^D at the question is no, as at the password prompt.
			fmt.Fprintln(cs.term.stderr)
			return fail(exitOther, "", "not confirmed; the account was not deleted")
		}
		if err != nil {
			return fail(exitOther, "pass --yes to delete without a confirmation", "cannot ask for a confirmation: %s", err)
		}
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return fail(exitOther, "", "not confirmed; the account was not deleted")
		}
	}
	pw, err := cs.term.password(ctx.Bool("password-stdin"), "password: ")
	if err != nil {
		return err
	}
	c, _, err := cs.login(pw)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Delete(); err != nil {
		return cs.explain(err)
	}
	fmt.Fprintf(ctx.App.Writer, "deleted the account %q on %s\n", cs.name, cs.server)
	return nil
}
