package main

// adminclient.go is the client side of the admin socket: it runs an admin
// command through a running server, or on the db file when none runs.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

const (
	// adminDialTimeout bounds connecting to the admin socket. It is local:
	// a live server answers at once, so a longer wait means none is there.
	adminDialTimeout = 2 * time.Second
	// adminIdleTimeout bounds the client's wait for the next frame: an
	// import or a backup of a big db does seconds to minutes of work
	// before it answers; this only catches a server that hung.
	adminIdleTimeout = 10 * time.Minute
)

// adminClient runs an admin command the way the situation allows: through
// the running server's admin socket, or else on the db file itself.
type adminClient struct {
	db         string
	iterations int // the config's
	cfg        Config
	out        adminOut
}

func newAdminClient(ctx *cli.Context) (*adminClient, error) {
	cfg, err := loadConfig(ctx)
	if err != nil {
		return nil, err
	}
	db := ctx.String("db")
	if db == "" {
		db = cfg.DB
	} else {
		cfg.Store = "bbolt" // --db names a file, whatever the config's store
	}
	cfg.DB = db
	return &adminClient{db: db, iterations: cfg.Iterations, cfg: cfg, out: adminOut{Stdout: ctx.App.Writer, Stderr: ctx.App.ErrWriter}}, nil
}

// run sends req to the server if one answers on the socket, else opens
// the db. in is an import's input; mayCreate lets an import start a new db.
// Its failures are *cliError, with the exit code the README gives them.
func (ac *adminClient) run(req adminRequest, in io.Reader, mayCreate bool) error {
	return adminCLIError(ac.do(req, in, mayCreate))
}

// adminCLIError turns an admin command's failure into the CLI's: a refusal
// exits 1, any other failure 2.
func adminCLIError(err error) error {
	var ae *AdminError
	if !errors.As(err, &ae) {
		return err
	}
	code := exitOther
	if ae.Kind == AdminRefused {
		code = exitRefused
	}
	return &cliError{code: code, msg: ae.Msg, hint: ae.Hint}
}

func (ac *adminClient) do(req adminRequest, in io.Reader, mayCreate bool) error {
	if ac.cfg.Store == "etcd" {
		return ac.onEtcd(req, in)
	}
	sock := AdminSocketPath(ac.db)
	nc, err := net.DialTimeout("unix", sock, adminDialTimeout)
	if err == nil {
		defer nc.Close()
		if err := checkAdminPeer(nc.(*net.UnixConn), sock); err != nil {
			return err
		}
		return ac.remote(nc.(*net.UnixConn), req, in)
	}
	var store *Store
	openFile := func() (*Store, error) {
		if store != nil {
			return store, nil
		}
		// bbolt makes a db of any empty file it opens: only a command that
		// may create the db may do that.
		fi, err := os.Stat(ac.db)
		switch {
		case errors.Is(err, os.ErrNotExist) && !mayCreate:
			return nil, adminFail(AdminFailed, "give the db with --db, or with --config the config that names it (or an etcd cluster's, store = \"etcd\")", "no database at %s", ac.db)
		case err == nil && fi.Mode().IsRegular() && fi.Size() == 0 && !mayCreate:
			return nil, adminFail(AdminFailed, "give the db with --db, or the config that names it with --config; an import creates a new db",
				"%s is an empty file, not an authbox database", ac.db)
		}
		s, err := OpenStore(ac.db)
		if errors.Is(err, ErrDBLocked) {
			return nil, adminFail(AdminFailed, "a server that is starting or stopping holds it briefly: try again; otherwise find the process holding it (fuser "+ac.db+") and stop it",
				"database %s is locked by another process, and no authbox server answers on its admin socket %s", ac.db, sock)
		}
		var de *DamagedError
		if errors.As(err, &de) {
			return nil, adminFail(AdminFailed, de.Hint(), "%s", de)
		}
		if err != nil {
			msg, hint := dbOpenFailure(ac.db, err)
			return nil, adminFail(AdminFailed, hint, "%s", msg)
		}
		store = s
		return s, nil
	}
	open := func() (Storage, error) {
		s, err := openFile()
		if err != nil {
			return nil, err // not a nil *Store in a non-nil Storage
		}
		return s, nil
	}
	// Offline, the identity is the one the server would present: from
	// the configured files, else from the db (made there if the db has
	// none yet, as the server's first start would).
	err = runAdmin(adminEnv{open: open, identity: ac.identity(open)}, req, in, ac.out)
	if store != nil {
		if cerr := store.Close(); err == nil && cerr != nil {
			return fail(exitOther, "", "closing %s: %s", ac.db, cerr)
		}
	}
	return err
}

// identity is the identity the server would present, read (or made, as
// the server's first start would) through open: from the configured
// files, else from the store.
func (ac *adminClient) identity(open func() (Storage, error)) func() (*ServerIdentity, error) {
	return func() (*ServerIdentity, error) {
		if !ac.cfg.TLS {
			return nil, nil
		}
		var st Storage
		if ac.cfg.TLSCertFile == "" {
			var err error
			if st, err = open(); err != nil {
				return nil, err
			}
		}
		return LoadIdentity(ac.cfg, st)
	}
}

// onEtcd runs an admin command on the etcd store, from any machine that
// reaches the cluster: the servers share nothing else, so no admin socket
// is needed.
func (ac *adminClient) onEtcd(req adminRequest, in io.Reader) error {
	var store *EtcdStore
	open := func() (Storage, error) {
		if store == nil {
			s, err := OpenEtcd(ac.cfg.Etcd)
			if err != nil {
				return nil, adminFail(AdminFailed, "check etcd.endpoints in the config and that a majority of the cluster's members is up", "cannot use the etcd store: %s", err)
			}
			store = s
		}
		return store, nil
	}
	forgive := func(target string) (int, error) {
		if _, err := open(); err != nil {
			return 0, err
		}
		if err := forgiveCluster(store, target); err != nil {
			var ae *AdminError
			if errors.As(err, &ae) {
				return 0, err
			}
			return 0, adminFail(AdminFailed, "check that a majority of the cluster's members is up", "cannot reach the etcd store: %s", err)
		}
		return forgivenOnCluster, nil
	}
	err := runAdmin(adminEnv{open: open, identity: ac.identity(open), forgive: forgive}, req, in, ac.out)
	if store != nil {
		store.Close()
	}
	return err
}

// checkAdminPeer refuses an admin socket served by another user than us or
// root: whoever answers sees the command and, for an import, the
// verifiers, and its answers are taken for the server's.
func checkAdminPeer(nc *net.UnixConn, sock string) error {
	raw, err := nc.SyscallConn()
	var cred *syscall.Ucred
	if err == nil {
		cerr := raw.Control(func(fd uintptr) {
			cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		})
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fail(exitOther, "", "cannot tell who serves the admin socket %s: %s", sock, errText(err))
	}
	return adminPeerAllowed(sock, cred.Uid, os.Geteuid())
}

// adminPeerAllowed is checkAdminPeer's rule: the peer is us, or root.
func adminPeerAllowed(sock string, peer uint32, euid int) error {
	if peer == 0 || int64(peer) == int64(euid) {
		return nil
	}
	return fail(exitOther, "a process of another user listens at the db's socket path: find it (fuser "+sock+") and stop it, then try again",
		"refusing the admin socket %s: it is served by uid %d, not by you (uid %d) or root", sock, peer, euid)
}

// remote sends one request over the admin socket and plays its frames
// back to the user's streams and the output file.
func (ac *adminClient) remote(nc *net.UnixConn, req adminRequest, in io.Reader) error {
	b, _ := json.Marshal(req)
	c := deadlineConn{nc, adminIdleTimeout}
	// The request goes out while the replies come in, so that neither side
	// can block the other with a full socket buffer.
	type upload struct{ readErr, writeErr error }
	sent := make(chan upload, 1)
	go func() {
		var u upload
		_, u.writeErr = c.Write(append(b, '\n'))
		if u.writeErr == nil && in != nil {
			u.readErr, u.writeErr = sendUpload(c, in)
		}
		nc.CloseWrite()
		sent <- u
	}()
	end, err := ac.playFrames(bufio.NewReader(c))
	if err != nil {
		nc.Close() // ends the sender too
		u := <-sent
		if u.readErr != nil {
			return inputError(req.File, u.readErr)
		}
		if u.writeErr != nil && !errors.Is(u.writeErr, net.ErrClosed) {
			err = u.writeErr
		}
		return fail(exitOther, "see the server's log", "the server's admin socket failed mid-command: %s", err)
	}
	// The server hangs up after the end, which ends the upload. An input
	// that could not be read is the user's error, whatever the server made
	// of the upload it cut short.
	if u := <-sent; u.readErr != nil {
		return inputError(req.File, u.readErr)
	}
	if end.Exit != nil && *end.Exit != 0 {
		return &AdminError{Kind: AdminErrorKind(*end.Exit), Msg: end.Error, Hint: end.Hint}
	}
	return nil
}

// playFrames writes the server's frames to the user's streams and the
// output file, up to the end frame, which it returns.
func (ac *adminClient) playFrames(r *bufio.Reader) (adminFrame, error) {
	for {
		f, err := readFrame(r)
		if err != nil || f.End {
			return f, err
		}
		var dst io.Writer
		switch f.Stream {
		case "stdout":
			dst = ac.out.Stdout
		case "stderr":
			dst = ac.out.Stderr
		case "file":
			dst = ac.out.File
		}
		if dst == nil || f.Len < 0 {
			return f, fmt.Errorf("unexpected frame %q", f.Stream)
		}
		if _, err := io.CopyN(dst, r, int64(f.Len)); err != nil {
			return f, err
		}
	}
}
