package main

import "errors"

// session.go is a connection's logged-in state: the checks a command
// makes before it runs, and the end of a session whose account changed.

// needAnonymous and needLogin are the state checks, which come before any
// look at the arguments (spec §8).
func (c *conn) needAnonymous(cmd Command) error {
	if c.user != "" {
		return protoErr(CodeBadCmd, "%s is not allowed while logged in; LOGOUT first", cmd.Verb)
	}
	return nil
}

// needLogin also ends a session whose account was deleted or had its
// password changed since the login (see Record.Gen): that session must not
// act for the name, which may belong to someone else by now. A store that
// counts its writes is read only if something was written since the
// session was last confirmed: a LOGOUT after a login costs no read.
func (c *conn) needLogin(cmd Command) error {
	if c.user == "" {
		return protoErr(CodeBadCmd, "%s needs a successful AUTH first", cmd.Verb)
	}
	n, counted := c.srv.store.writes()
	if counted && n == c.checked {
		return nil
	}
	rec, err := c.srv.store.Get(c.user)
	switch {
	case errors.Is(err, ErrNotFound) || (err == nil && rec.Gen != c.gen):
		return c.sessionEnded()
	case err != nil:
		return err
	}
	c.checked = n
	return nil
}

// errSessionEnded is the answer to a session whose account changed.
var errSessionEnded = &ProtoError{Code: CodeAuth, Text: "session ended: the account was deleted or its password changed; log in again"}

// sessionEnded logs the connection out for good reason and says so.
func (c *conn) sessionEnded() error {
	c.srv.log.Info("session ended: the account changed since the login", "remote", c.remote, "user", c.user)
	c.user, c.gen = "", 0
	return errSessionEnded
}
