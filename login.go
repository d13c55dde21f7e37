package main

// login.go holds the login exchanges (SCRAM-SHA-256 and the legacy
// SEED-SHA256) and how each attempt is counted by the throttle.

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"time"
)

// failure is a failed login: the name and the kind of account the
// mechanism proves (see failLogin).
type failure struct {
	name string
	kind Kind
}

// kindOf is the kind of account a mechanism logs in to: both SCRAM
// mechanisms check the same record.
func kindOf(mech string) Kind {
	if mech == MechSeed {
		return KindLegacy
	}
	return KindSCRAM
}

type scramEx struct {
	conv   *scramServer
	mech   string // MechSCRAM or MechPlus
	gs2    string // the GS2 header client-first began with
	name   string
	rec    Record
	exists bool
}

type seedEx struct {
	name   string
	nonce  string
	rec    Record
	exists bool
}

func (c *conn) handleAuth(cmd Command) (string, error) {
	c.authStart = c.srv.met.now()
	reply, err := c.startAuth(cmd)
	if err != nil {
		// An AUTH that failed after its attempt began (the store, a
		// client-first the exchange refused) ends it: left, it would
		// count as a login under way until the connection's next AUTH
		// or its end, against its pair's allowance.
		c.endAttempt(false)
	}
	if len(cmd.Args) > 0 {
		c.loginError(cmd.Args[0], err)
	}
	return reply, err
}

// loginError counts a login that ended in an error no other place counted:
// a wrong proof, a throttle and a locked account are counted where they
// are decided.
func (c *conn) loginError(mech string, err error) {
	if err == nil {
		return
	}
	var pe *ProtoError
	if errors.As(err, &pe) && (pe.Code == CodeAuth || pe.Code == CodeLimit || pe.Code == CodeLocked) {
		return
	}
	c.srv.met.login(mech, outcomeError)
}

func (c *conn) startAuth(cmd Command) (string, error) {
	if len(cmd.Args) == 0 {
		return "", protoErr(CodeBadReq, "AUTH takes a mechanism and its argument")
	}
	mech := cmd.Args[0]
	if !c.offers(mech) {
		if c.overTLS && c.srv.cfg.RequireChannelBinding && c.srv.cfg.HasMech(mech) {
			return "", protoErr(CodeNoMech, "this server requires channel binding: log in with %s", MechPlus)
		}
		return "", protoErr(CodeNoMech, "mechanism not enabled on this server")
	}
	if err := CheckArgs(cmd, 2, 2); err != nil {
		return "", err
	}
	if mech == MechSeed {
		return c.startSeed(cmd.Args[1])
	}
	return c.startSCRAM(mech, cmd.Args[1])
}

// checkGS2 applies spec §9.3 to the GS2 header of a SCRAM login under
// mech: -PLUS binds with tls-exporter, plain SCRAM-SHA-256 does not bind,
// and "y" (the client can bind but saw no -PLUS offered) on a connection
// that offered -PLUS means someone took it out of the greeting.
func (c *conn) checkGS2(mech string, cf ClientFirst) error {
	switch {
	case mech == MechPlus && cf.CBFlag != 'p':
		return protoErr(CodeBadReq, "%s needs the GS2 header \"p=%s,,\"", MechPlus, cbTLSExporter)
	case mech == MechPlus && cf.CBType != cbTLSExporter:
		return protoErr(CodeBadReq, "channel-binding type must be %s", cbTLSExporter)
	case mech != MechPlus && cf.CBFlag == 'p':
		return protoErr(CodeBadReq, "%s does not bind to the channel; use %s for \"p=\"", mech, MechPlus)
	case cf.CBFlag == 'y' && c.offers(MechPlus):
		c.srv.log.Warn("login refused: the client saw no SCRAM-SHA-256-PLUS offered, but this connection offered it (was the greeting altered?)",
			"remote", c.remote)
		c.srv.met.channelBindingDowngrade()
		c.srv.met.loginDone(mech, outcomeAuth, c.authStart)
		return errAuthFailed
	}
	return nil
}

// lookup reads an account for a login. The store read and the fake-value
// HMAC happen whether or not the name exists, so that the two cases cost
// the same and cannot be told apart by timing.
//
// The record is read into rec, the exchange's own: a Record is 160 bytes,
// and each copy of it in a login is a fifth of a microsecond of moves and
// write barriers.
func (c *conn) lookup(rec *Record, name string, kind Kind, fakeLabel string) ([]byte, bool, error) {
	// In the conn's buffer: the exchange that uses it ends before the
	// next lookup.
	fake := c.srv.store.FakeSalt(c.fake[:0], fakeLabel, name)
	c.lookedUp, _ = c.srv.store.writes()
	var err error
	*rec, err = c.srv.store.Get(name)
	switch {
	case errors.Is(err, ErrNotFound):
		// A hit decodes a record; so does a miss, a stand-in of the same
		// size, so that both cost the same allocations and copies.
		*rec, _ = unmarshalRecord(standInRecord)
		return fake, false, nil
	case err != nil:
		*rec = Record{}
		return nil, false, err
	}
	return fake, rec.Kind == kind, nil
}

// standInRecord is an encoded SCRAM record, decoded for names that do not
// exist (see lookup). Its kind is 0, so it can never match.
var standInRecord = (&Record{Salt: make([]byte, SaltLen), StoredKey: make([]byte, KeyLen), ServerKey: make([]byte, KeyLen)}).marshal()

func (c *conn) startSCRAM(mech, arg string) (string, error) {
	// raw is scratch: what is kept of it is copied (ParseClientFirst's
	// string, scramServer's buffers).
	buf := getLineBuf()
	defer putLineBuf(buf)
	raw, err := AppendDecodeB64((*buf)[:0], arg)
	if err != nil {
		return "", err
	}
	first, err := ParseClientFirst(string(raw))
	if err != nil {
		return "", err
	}
	if err := c.checkGS2(mech, first); err != nil {
		return "", err
	}
	name, err := NormalizeUsername(first.Username)
	if err != nil {
		return "", err
	}
	if err := c.beginAttempt(name, mech); err != nil {
		return "", err
	}
	p := &c.scram
	fake, exists, err := c.lookup(&p.rec, name, KindSCRAM, "scram")
	if err != nil {
		*p = scramEx{}
		return "", err
	}
	// An unknown name gets a salt from the secret and an unreachable
	// StoredKey: the proof is checked the same way, and fails.
	creds := scramCreds{salt: fake[:SaltLen], iters: c.srv.cfg.Iterations, storedKey: fake, serverKey: fake}
	if rec := &p.rec; exists {
		creds = scramCreds{salt: rec.Salt, iters: rec.Iterations, storedKey: rec.StoredKey, serverKey: rec.ServerKey}
	}
	var conv *scramServer
	if c.offers(MechPlus) {
		// This also refuses "y" (checkGS2 did already).
		conv = newSCRAMServer(cbTLSExporter, c.cb)
	} else {
		conv = newSCRAMServer("", nil)
	}
	serverFirst, err := conv.first(raw, creds)
	if err != nil {
		conv.release()
		*p = scramEx{}
		return "", protoErr(CodeBadReq, "malformed SCRAM client-first-message")
	}
	p.conv, p.mech, p.gs2, p.name, p.exists = conv, mech, first.GS2Header, name, exists
	c.pending = p
	return FormatB64Reply(ReplyChallenge, serverFirst), nil
}

var errAuthFailed = &ProtoError{Code: CodeAuth, Text: "authentication failed"}

func (c *conn) finishSCRAM(p *scramEx, cmd Command) (string, error) {
	// An exchange left for another command is not released: the garbage
	// collector takes it. p is the conn's own (c.scram): cleared, it holds
	// neither the released conversation nor the account.
	defer func() {
		p.conv.release()
		*p = scramEx{}
	}()
	if err := CheckArgs(cmd, 1, 1); err != nil {
		return "", err
	}
	buf := getLineBuf()
	var raw []byte
	defer func() { clear(raw); putLineBuf(buf) }() // raw holds the proof
	raw, err := AppendDecodeB64((*buf)[:0], cmd.Args[0])
	if err != nil {
		return "", err
	}
	// scramServer decodes c= and p= as leniently as the SCRAM library (it
	// skips CR and LF); RFC 5802 messages are printable, so refuse anything
	// else here.
	if hasControl(raw) {
		return "", protoErr(CodeBadReq, "SCRAM client-final-message has control characters")
	}
	if p.mech == MechPlus {
		// A wrong binding is the mark of a relay (spec §9.3): it is told
		// from a malformed c= here, counted and logged as such.
		switch cbind, ok := clientFinalCBind(raw); {
		case !ok || !bytes.HasPrefix(cbind, []byte(p.gs2)):
			return "", protoErr(CodeBadReq, "SCRAM c= does not match the GS2 header")
		case !hmac.Equal(cbind[len(p.gs2):], c.cb):
			c.srv.met.channelBindingMismatch()
			return c.failLogin(p.name, p.mech, "channel binding mismatch (a relay in the middle?)")
		}
	}
	serverFinal, err := p.conv.final(raw)
	switch {
	case err == errSCRAMProof, err == nil && !p.exists:
		return c.failLogin(p.name, p.mech, "wrong proof")
	case err != nil:
		return "", protoErr(CodeBadReq, "malformed SCRAM client-final-message (channel binding, nonce or proof)")
	}
	return c.succeedLogin(p.name, p.mech, &p.rec, FormatB64Reply(ReplyOK, serverFinal))
}

// hasControl reports whether b holds an ASCII control character. A loop
// over bytes, not bytes.ContainsFunc: that decodes runes, a third of a
// microsecond a login, and every byte from 0x80 up is a part of a rune
// that is no control character in any case.
func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// clientFinalCBind decodes the c= attribute that starts client-final.
func clientFinalCBind(msg []byte) ([]byte, bool) {
	v, ok := bytes.CutPrefix(msg, []byte("c="))
	if !ok {
		return nil, false
	}
	if i := bytes.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	cbind, err := DecodeB64(string(v))
	return cbind, err == nil
}

// beginAttempt asks the throttle whether this source may try to log in as
// name now with mech ("" for a REGISTER probe). The second half of a
// SCRAM/SEED pair (see failLogin) is neither checked nor charged: its first
// half was, and only one of the two can ever succeed.
func (c *conn) beginAttempt(name, mech string) error {
	c.endAttempt(false)
	if mech != "" && c.lastFail.name == name && c.lastFail.kind != kindOf(mech) {
		c.att = attempt{free: true}
		c.attempt = &c.att
		return nil
	}
	ok, wait, perUser := c.srv.thr.begin(&c.att, c.src, name, time.Now())
	if !ok {
		c.srv.log.Info("throttled", "remote", c.remote, "user", name, "retry_in", wait)
		c.srv.met.throttleRefusal(perUser)
		if mech == "" {
			c.srv.met.registration(outcomeLimit)
		} else {
			c.srv.met.loginDone(mech, outcomeLimit, time.Time{})
		}
		if perUser {
			return protoErr(CodeLimit, "too many failed attempts for this username from your address; retry in %ds", int(wait.Seconds()))
		}
		return protoErr(CodeLimit, "too many failed attempts from your address; retry in %ds", int(wait.Seconds()))
	}
	c.attempt = &c.att
	return nil
}

// endAttempt ends the login under way, if any; a wrong proof counts as a
// failure, and so does a SEED-SHA256 challenge left unanswered.
func (c *conn) endAttempt(failed bool) {
	if c.attempt != nil {
		if c.attempt.unanswered && !failed {
			failed = true
			c.stats.failures++
			c.srv.log.Info("login abandoned", "remote", c.remote, "mech", MechSeed, "charged", true)
		}
		var now time.Time // the throttle reads it only for a failure
		if failed {
			now = time.Now()
		}
		c.srv.thr.end(c.attempt, failed, now)
		c.attempt = nil
	}
}

// failLogin answers a wrong proof. It is charged to the throttle, except
// for the second half of a SCRAM-then-SEED (or SEED-then-SCRAM) pair for
// the same name on the same connection, which is how our client finds a
// legacy account. Charging that pair once gives nothing away: an account is
// either SCRAM or legacy, so only one of the two proofs could ever succeed,
// and a pair still tests at most one password.
func (c *conn) failLogin(name, mech, reason string) (string, error) {
	free := c.attempt != nil && c.attempt.free
	c.endAttempt(!free)
	if free {
		c.lastFail = failure{}
	} else {
		c.lastFail = failure{name, kindOf(mech)}
	}
	c.stats.failures++
	c.srv.met.loginDone(mech, outcomeAuth, c.authStart)
	c.srv.logAttrs(slog.LevelInfo, "login failed", slog.String("remote", c.remote), slog.String("user", name),
		slog.String("mech", mech), slog.String("reason", reason), slog.Bool("charged", !free))
	return "", errAuthFailed
}

func (c *conn) succeedLogin(name, mech string, rec *Record, reply string) (string, error) {
	c.endAttempt(false)
	c.lastFail = failure{}
	if rec.Locked {
		c.srv.log.Info("login refused: account locked", "remote", c.remote, "user", name)
		c.srv.met.loginDone(mech, outcomeLocked, c.authStart)
		return "", protoErr(CodeLocked, "this account is locked; ask the administrator")
	}
	c.user, c.gen, c.checked = name, rec.Gen, c.lookedUp
	c.stats.logins++
	c.srv.met.loginDone(mech, outcomeOK, c.authStart)
	// Attrs, not key-value pairs: those box each string, three
	// allocations a login.
	c.srv.logAttrs(slog.LevelInfo, "login", slog.String("remote", c.remote), slog.String("user", name), slog.String("mech", mech))
	return reply, nil
}

func (c *conn) startSeed(arg string) (string, error) {
	name, err := NormalizeUsername(arg)
	if err != nil {
		return "", err
	}
	if err := c.beginAttempt(name, MechSeed); err != nil {
		return "", err
	}
	var rec Record
	fake, exists, err := c.lookup(&rec, name, KindLegacy, "seed")
	if err != nil {
		return "", err
	}
	// Shaped for every name, so that a real one costs the same.
	salt := c.srv.store.FakeLegacySalt(fake)
	if exists {
		salt = string(rec.Salt)
	} else {
		// Hash the same number of bytes at RESPONSE as for a real account.
		rec.StoredKey = fake
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	p := &seedEx{name: name, nonce: hex.EncodeToString(nonce), rec: rec, exists: exists}
	c.pending = p
	// A SEED challenge shows the salt, and the salt alone may tell a
	// legacy account from none (a real one of an odd shape): a challenge
	// taken and left, by closing the connection or sending anything but
	// its RESPONSE, is charged like a wrong one, so that listing names
	// this way is throttled as guessing is. The free half of a pair was
	// paid for by its first half.
	c.attempt.unanswered = !c.attempt.free
	return FormatReply(ReplyChallenge, salt, p.nonce), nil
}

func (c *conn) finishSeed(p *seedEx, cmd Command) (string, error) {
	if err := CheckArgs(cmd, 1, 1); err != nil {
		return "", err
	}
	got := cmd.Args[0]
	if !IsLowerHex(got, 64) {
		return "", protoErr(CodeBadReq, "SEED-SHA256 response must be 64 lower-case hex digits")
	}
	if c.attempt != nil {
		c.attempt.unanswered = false // checked now: charged if wrong, as any proof
	}
	stored := hex.EncodeToString(p.rec.StoredKey)
	want := SeedResponse(p.nonce, stored)
	if !hmac.Equal([]byte(got), []byte(want)) || !p.exists {
		return c.failLogin(p.name, MechSeed, "wrong response")
	}
	return c.succeedLogin(p.name, MechSeed, &p.rec, FormatReply(ReplyOK))
}

func (*scramEx) next() string { return CmdResponse }

func (*seedEx) next() string { return CmdResponse }
