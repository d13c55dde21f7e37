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
// half of one. An existing pin for addr is never overwritten.
func (k *KnownServers) Add(addr, fp string) error {
	cur, err := LoadKnownServers(k.Path)
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
	old, err := os.ReadFile(k.Path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	data := append(old, addr+" "+fp+"\n"...)
	if err := writeFileAtomic(k.Path, data); err != nil {
		return err
	}
	added, err := LoadKnownServers(k.Path)
	if err != nil {
		return err
	}
	*k = *added
	return nil
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
