package main

// knownservers.go is the client's known_servers file: one pinned server a
// line, "host:port SHA256:…", with blank lines and # comments allowed, as
// SSH's known_hosts. It is rewritten whole, atomically, mode 0600.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// knownServersEnv overrides where the file is.
const knownServersEnv = "AUTHBOX_KNOWN_SERVERS"

// KnownServer is one pinned server and the line it is on.
type KnownServer struct {
	Addr, Fingerprint string
	Line              int
}

// KnownServers is a known_servers file as read.
type KnownServers struct {
	Path    string
	entries []KnownServer
}

// KnownServersPath is where the client keeps its pins: AUTHBOX_KNOWN_SERVERS,
// else client.known_servers, else $XDG_CONFIG_HOME/authbox/known_servers,
// else ~/.config/authbox/known_servers.
func KnownServersPath(configured string) (string, error) {
	if p := os.Getenv(knownServersEnv); p != "" {
		return p, nil
	}
	if configured != "" {
		return configured, nil
	}
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "authbox", "known_servers"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no home directory for known_servers: %w (set %s)", err, knownServersEnv)
	}
	return filepath.Join(home, ".config", "authbox", "known_servers"), nil
}

// LoadKnownServers reads the file at path; a missing file has no entries.
// A malformed line is an error that names it: this file decides whom the
// client trusts, so it is never read past.
func LoadKnownServers(path string) (*KnownServers, error) {
	k := &KnownServers{Path: path}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return k, nil
	}
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("%s line %d: want \"host:port SHA256:...\"", path, n)
		}
		fp, err := NormalizeFingerprint(f[1])
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %v", path, n, err)
		}
		k.entries = append(k.entries, KnownServer{Addr: f[0], Fingerprint: fp, Line: n})
	}
	return k, sc.Err()
}

// Lookup returns the first pin for addr.
func (k *KnownServers) Lookup(addr string) (KnownServer, bool) {
	for _, e := range k.entries {
		if e.Addr == addr {
			return e, true
		}
	}
	return KnownServer{}, false
}

// Add pins addr to fp: it appends a line to the file as it is on disk now
// (another client may have written since it was read) and replaces the
// file atomically, so a crash leaves the old file or the new one, never
// half of one. An existing pin for addr is never overwritten. Two clients
// making first contact at once would each append to the file they read and
// the second rename would drop the first pin, so the read-modify-write runs
// under an exclusive lock on a sibling lock file. A symlinked file is
// written through: the link stays and its target is replaced.
func (k *KnownServers) Add(addr, fp string) error {
	path, err := resolveLink(k.Path)
	if err != nil {
		return err
	}
	unlock, err := lockFile(path + ".lock")
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := LoadKnownServers(path)
	if err != nil {
		return err
	}
	if e, ok := cur.Lookup(addr); ok {
		if e.Fingerprint != fp {
			return &FingerprintError{Addr: addr, Want: e.Fingerprint, Got: fp, File: k.Path, Line: e.Line}
		}
		*k = *cur
		return nil
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	data := append(old, addr+" "+fp+"\n"...)
	if err := writeFileAtomic(path, data); err != nil {
		return err
	}
	added, err := LoadKnownServers(path)
	if err != nil {
		return err
	}
	added.Path = k.Path
	*k = *added
	return nil
}

// resolveLink follows path if it is a symlink, so that the atomic rename
// replaces the file the link points to rather than the link itself; a
// missing file is returned as is.
func resolveLink(path string) (string, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return path, nil
	}
	if err != nil {
		return "", err
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return path, nil
	}
	return filepath.EvalSymlinks(path)
}

// lockFile takes an exclusive flock on path, creating it (and its
// directory) if needed, and returns the function that releases it.
func lockFile(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, synced and renamed over it, mode 0600; the directory is made
// 0700 if missing.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
