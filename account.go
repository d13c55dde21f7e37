package main

// account.go holds the commands that make and change accounts over the
// wire: REGISTER, PASSWD and DELETE.

import (
	"crypto/rand"
	"errors"
	"fmt"
)

type registerEx struct {
	name       string
	salt       []byte
	iterations int
}

type passwdEx struct {
	salt       []byte
	iterations int
}

func newSalt() ([]byte, error) {
	salt := make([]byte, SaltLen)
	_, err := rand.Read(salt)
	return salt, err
}

func (c *conn) handleRegister(cmd Command) (string, error) {
	reply, err := c.startRegister(cmd)
	c.registerError(err)
	return reply, err
}

// registerError counts a REGISTER that failed for a reason not counted
// where it was decided (taken, closed, throttled).
func (c *conn) registerError(err error) {
	var pe *ProtoError
	if err == nil || errors.As(err, &pe) && (pe.Code == CodeExists || pe.Code == CodeDenied || pe.Code == CodeLimit) {
		return
	}
	c.srv.met.registration(outcomeError)
}

// passwdError counts a PASSWD that did not change the password.
func (c *conn) passwdError(err error) {
	switch {
	case err == nil:
	case errors.Is(err, errSessionEnded):
		c.srv.met.passwordChange(outcomeEnded)
	default:
		c.srv.met.passwordChange(outcomeError)
	}
}

func (c *conn) startRegister(cmd Command) (string, error) {
	if err := CheckArgs(cmd, 1, 1); err != nil {
		return "", err
	}
	if !c.srv.cfg.OpenRegistration {
		c.srv.log.Info("registration refused: registration is closed", "remote", c.remote)
		c.srv.met.registration(outcomeClosed)
		return "", protoErr(CodeDenied, "registration is closed on this server")
	}
	name, err := NormalizeUsername(cmd.Args[0])
	if err != nil {
		return "", err
	}
	// "That name is taken" tells an outsider the account exists, so each
	// such answer is charged to the source like a failed login: probing
	// names through REGISTER is no faster than through AUTH.
	if err := c.beginAttempt(name, ""); err != nil {
		return "", err
	}
	switch _, err := c.srv.store.Get(name); {
	case err == nil:
		c.endAttempt(true)
		c.srv.log.Info("registration refused: name taken", "remote", c.remote, "user", name)
		c.srv.met.registration(outcomeExists)
		return "", protoErr(CodeExists, "that username is taken")
	case !errors.Is(err, ErrNotFound):
		return "", err
	}
	salt, err := newSalt()
	if err != nil {
		return "", err
	}
	c.endAttempt(false)
	c.pending = &registerEx{name: name, salt: salt, iterations: c.srv.cfg.Iterations}
	return FormatReply(ReplySalt, EncodeB64(salt), fmt.Sprint(c.srv.cfg.Iterations)), nil
}

// parseVerifier reads VERIFIER's two keys into a SCRAM record.
func parseVerifier(cmd Command, salt []byte, iterations int) (Record, error) {
	if err := CheckArgs(cmd, 2, 2); err != nil {
		return Record{}, err
	}
	stored, err := DecodeKey(cmd.Args[0])
	if err != nil {
		return Record{}, err
	}
	server, err := DecodeKey(cmd.Args[1])
	if err != nil {
		return Record{}, err
	}
	return Record{Kind: KindSCRAM, Iterations: iterations, Salt: salt, StoredKey: stored, ServerKey: server}, nil
}

func (c *conn) finishRegister(p *registerEx, cmd Command) (string, error) {
	rec, err := parseVerifier(cmd, p.salt, p.iterations)
	if err != nil {
		return "", err
	}
	switch err := c.srv.store.Create(p.name, rec); {
	case errors.Is(err, ErrExists):
		c.srv.met.registration(outcomeExists)
		return "", protoErr(CodeExists, "another client registered that username meanwhile")
	case err != nil:
		return "", err
	}
	c.stats.registrations++
	c.srv.met.registration(outcomeOK)
	c.srv.log.Info("registered", "remote", c.remote, "user", p.name)
	return FormatReply(ReplyOK), nil
}

func (c *conn) handlePasswd(cmd Command) (string, error) {
	if err := CheckArgs(cmd, 0, 0); err != nil {
		return "", err
	}
	salt, err := newSalt()
	if err != nil {
		return "", err
	}
	c.pending = &passwdEx{salt: salt, iterations: c.srv.cfg.Iterations}
	return FormatReply(ReplySalt, EncodeB64(salt), fmt.Sprint(c.srv.cfg.Iterations)), nil
}

func (c *conn) finishPasswd(p *passwdEx, cmd Command) (string, error) {
	rec, err := parseVerifier(cmd, p.salt, p.iterations)
	if err != nil {
		return "", err
	}
	upgraded := false
	// The stamp is checked again inside the write: the account may have
	// changed since needLogin looked. The new one ends every other session.
	gen := NewGen()
	err = c.srv.store.Update(c.user, func(old Record) (Record, error) {
		if old.Gen != c.gen {
			return old, errSessionEnded
		}
		rec.Locked, rec.Gen = old.Locked, gen
		upgraded = old.Kind == KindLegacy
		return rec, nil
	})
	if errors.Is(err, ErrNotFound) || errors.Is(err, errSessionEnded) {
		return "", c.sessionEnded()
	}
	if err != nil {
		return "", err
	}
	c.gen = gen
	c.srv.met.passwordChange(outcomeOK)
	if upgraded {
		c.srv.log.Info("account upgraded from the legacy scheme to SCRAM-SHA-256", "remote", c.remote, "user", c.user)
	} else {
		c.srv.log.Info("password changed", "remote", c.remote, "user", c.user)
	}
	return FormatReply(ReplyOK), nil
}

func (c *conn) handleDelete(cmd Command) (string, error) {
	if err := CheckArgs(cmd, 0, 0); err != nil {
		return "", err
	}
	err := c.srv.store.DeleteIf(c.user, func(rec Record) error {
		if rec.Gen != c.gen {
			return errSessionEnded
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrNotFound) || errors.Is(err, errSessionEnded):
		return "", c.sessionEnded()
	case err != nil:
		return "", err
	}
	c.srv.log.Info("account deleted", "remote", c.remote, "user", c.user)
	c.user = ""
	return FormatReply(ReplyOK), nil
}

func (*registerEx) next() string { return CmdVerifier }

func (*passwdEx) next() string { return CmdVerifier }
