package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeAdoptsEmptyDBPrivately: an empty file made with a common umask
// (0644) that serve turns into the db ends up 0600, and serve does not warn
// about it; a db it creates is 0600 as before.
func TestServeAdoptsEmptyDBPrivately(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil { // whatever the umask made it
		t.Fatal(err)
	}
	writeConfig(t, dir, "")
	db := filepath.Join(dir, "adopted.db")
	writeFile(t, db, "")
	if err := os.Chmod(db, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := serveInProcess(t, dir, "--config", "auth.toml", "--db", db)
	if srv.stop(t) != 0 {
		t.Fatalf("serve failed:\n%s", srv.log)
	}
	if strings.Contains(srv.log.String(), "other users can") {
		t.Errorf("warned about a file it made private:\n%s", srv.log)
	}
	if fi, err := os.Stat(db); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Fatalf("adopted db: %v %v", fi.Mode(), err)
	}
}

// TestServeWarnsOnSharedDB: serve starts, but warns at start, when other
// users can read the db or write its directory; a private one gets no
// warning.
func TestServeWarnsOnSharedDB(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil { // whatever the umask made it
		t.Fatal(err)
	}
	writeConfig(t, dir, "")
	db := filepath.Join(dir, "authbox.db")
	mustCLI(t, 0, dir, "", "users", "import", "--format", "seed-csv",
		writeFile(t, filepath.Join(dir, "u.csv"), legacyCSV([]legacyUser{newLegacyUser(t, "alice", "Alice-pw1")})))
	serveLog := func() string {
		t.Helper()
		srv := serveInProcess(t, dir, "--config", "auth.toml")
		srv.stop(t)
		return srv.log.String()
	}
	if log := serveLog(); strings.Contains(log, "level=WARN") && strings.Contains(log, "other users") {
		t.Fatalf("a private db warned:\n%s", log)
	}

	if err := os.Chmod(db, 0o644); err != nil {
		t.Fatal(err)
	}
	log := serveLog()
	if !strings.Contains(log, "database authbox.db has mode 0644: other users can read it") || !strings.Contains(log, "chmod 600 authbox.db") {
		t.Fatalf("no warning for a 0644 db:\n%s", log)
	}
	if fi, _ := os.Stat(db); fi.Mode().Perm() != 0o644 {
		t.Fatalf("a db with accounts had its mode changed to %v", fi.Mode())
	}

	if err := os.Chmod(db, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	log = serveLog()
	if !strings.Contains(log, dir+", has mode 0777: other users can replace the database; chmod go-w "+dir) || strings.Contains(log, "other users can read") {
		t.Fatalf("no warning (or the wrong one) for a 0777 directory:\n%s", log)
	}
}

func TestDBModeWarningsReadOnlyDirIsFine(t *testing.T) {
	dir := t.TempDir()
	db := writeFile(t, filepath.Join(dir, "x.db"), "x")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(db, 0o620); err != nil {
		t.Fatal(err)
	}
	w := dbModeWarnings(db)
	if len(w) != 1 || !strings.Contains(w[0], "mode 0620: other users can change it") {
		t.Fatalf("%q", w)
	}
}

// TestEtcdServeHasNoDBModeWarning: with the etcd store the db path names
// no file in use, so its directory's mode is not the server's business.
func TestEtcdServeHasNoDBModeWarning(t *testing.T) {
	c := startEtcd(t, 1)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Listen = "127.0.0.1:0"
	cfg.DB = filepath.Join(dir, "unused.db")
	cfg.Store = "etcd"
	cfg.Etcd = c.config("/mode/")
	// What serve logs as it opens, before it serves.
	opened := func() string {
		t.Helper()
		var logs syncBuffer
		ln, store, srv, admin, err := openServe(cfg, slog.New(newLogHandler(&logs, false)))
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		if admin != nil {
			admin.Shutdown(context.Background())
		}
		srv.Shutdown(context.Background())
		store.Close()
		return logs.String()
	}
	if logs := opened(); strings.Contains(logs, "other users can") {
		t.Fatalf("a db-mode warning with the etcd store:\n%s", logs)
	}
	cfg.Store, cfg.DB = "bbolt", filepath.Join(dir, "used.db")
	if logs := opened(); !strings.Contains(logs, "other users can replace the database") {
		t.Fatalf("no db-mode warning for a bbolt file in a 0777 directory:\n%s", logs)
	}
}
