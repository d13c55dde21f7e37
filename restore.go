package main

// restore.go is "authbox restore": it loads a bbolt db (a server's file,
// or a backup taken from a cluster) into the etcd store a config names,
// so that a user moves from one machine to a cluster; "authbox backup"
// from the cluster is the way back.

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

func restoreCommand(usageErr cli.OnUsageErrorFunc) *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "load a db file into the etcd store of --config (store = \"etcd\"), whose prefix must hold no accounts; run it again to finish one that was cut short",
		ArgsUsage: "DB",
		Flags:     []cli.Flag{newConfigFlag()},
		Action:    cmdRestore,

		OnUsageError: usageErr,
	}
}

func cmdRestore(ctx *cli.Context) error {
	path, err := oneArg(ctx, "DB")
	if err != nil {
		return err
	}
	cfg, err := loadConfig(ctx)
	if err != nil {
		return err
	}
	if cfg.Store != "etcd" {
		return fail(exitOther, `give the config of the cluster with --config: store = "etcd" and its [etcd] table`,
			"restore loads a db into the etcd store, and this config's store is %q", cfg.Store)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		return fail(exitOther, "give the db file to load: a server's db (with the server stopped) or a backup", "no database at %s", path)
	}
	src, err := OpenStore(path)
	if errors.Is(err, ErrDBLocked) {
		return fail(exitOther, "stop the server on it, or load a backup of it (authbox backup FILE)", "database %s is in use by a running server", path)
	}
	var de *DamagedError
	if errors.As(err, &de) {
		return fail(exitOther, de.Hint(), "%s", de)
	}
	if err != nil {
		return fail(exitOther, "check the path and its permissions", "cannot open database %s: %s", path, errText(err))
	}
	defer src.Close()
	dst, err := OpenEtcd(cfg.Etcd)
	if err != nil {
		return fail(exitOther, "check etcd.endpoints and that a majority of the cluster's members is up", "cannot use the etcd store: %s", errText(err))
	}
	defer dst.Close()
	oldCert, _, err := dst.storedIdentity()
	if err != nil {
		return fail(exitOther, "check etcd.endpoints and that a majority of the cluster's members is up", "cannot use the etcd store: %s", errText(err))
	}
	newCert, _, err := src.storedIdentity()
	if err != nil {
		return fail(exitOther, "", "reading %s: %s", path, errText(err))
	}
	res, err := dst.Load(src)
	if errors.Is(err, ErrNotEmpty) {
		return fail(exitOther, fmt.Sprintf("load into a prefix of its own (etcd.prefix), or, if its accounts are to go, empty it first (etcdctl del --prefix %susers/)", dst.prefix),
			"%s holds accounts, and no unfinished restore of this db: a restore fills an empty prefix, or finishes its own interrupted run", dst.Describe())
	}
	if err != nil {
		fmt.Fprintf(ctx.App.Writer, "loaded %d %s before the failure\n", res.Loaded, plural(res.Loaded, "account", "accounts"))
		return fail(exitOther, "run the same restore again: it keeps what is there and adds the rest", "the restore stopped part way: %s", errText(err))
	}
	fmt.Fprintf(ctx.App.Writer, "loaded %d %s from %s into %s", res.Loaded, plural(res.Loaded, "account", "accounts"), path, dst.Describe())
	if res.Kept > 0 {
		fmt.Fprintf(ctx.App.Writer, " (%d were there already, from an earlier run of this restore)", res.Kept)
	}
	fmt.Fprintln(ctx.App.Writer)
	if len(res.Clashed) > 0 {
		fmt.Fprintf(ctx.App.ErrWriter, "authbox: note: %d %s of the db %s registered in the cluster during the restore and kept the cluster's %s: %s\n",
			len(res.Clashed), plural(len(res.Clashed), "name", "names"), plural(len(res.Clashed), "was", "were"),
			plural(len(res.Clashed), "account", "accounts"), printable(strings.Join(res.Clashed, ", ")))
	}
	if oldCert != nil && newCert != nil && !bytes.Equal(oldCert, newCert) {
		fmt.Fprintf(ctx.App.ErrWriter, "authbox: note: the prefix held another TLS identity (%s), made by an earlier fingerprint or users command; it is now the db's (%s), and pins of the old one no longer hold; servers already running on this prefix present the old one until restarted\n",
			certDERFingerprint(oldCert), certDERFingerprint(newCert))
	}
	return nil
}

// certDERFingerprint is the fingerprint of a DER certificate's key, or
// "unreadable".
func certDERFingerprint(der []byte) string {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return "unreadable"
	}
	return certFingerprint(c)
}
