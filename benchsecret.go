package main

// benchsecret.go is the password of the bench accounts. It is made from a
// random secret kept in a file beside known_servers (mode 0600, made at
// first use), never written in the source: anyone can read the source, and
// bench accounts left on a real server must not be anyone's to log in to.
// "bench populate" and "bench" read the same file, so the accounts one
// writes are the ones the other logs in to.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// benchSecretFile is the secret's file name, in known_servers' directory.
const benchSecretFile = "bench_secret"

// benchSecretLen is the secret's size in bytes; the file holds it in hex.
const benchSecretLen = 32

var (
	// ErrBenchSecretMode is returned when the bench secret's file can be
	// read by others than its owner.
	ErrBenchSecretMode = errors.New("is readable by group or others")
	// ErrBenchSecretBad is returned when the bench secret's file does not
	// hold a secret as benchSecret writes one.
	ErrBenchSecretBad = errors.New("does not hold a bench secret")
)

// benchSecretPath is where the bench secret is kept: beside the
// known_servers file that cfg and the environment name.
func benchSecretPath(cfg ClientConfig) (string, error) {
	ks, err := KnownServersPath(cfg.KnownServers)
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(ks), benchSecretFile), nil
}

// benchSecret returns the bench password kept at path, making a new
// random one if there is none. The file appears whole or not at all (a
// hard link of a written temporary file), so two first runs at once agree
// on one secret.
func benchSecret(path string) (password string, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := makeBenchSecret(path); err != nil {
			return "", err
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s %w (mode %04o)", path, ErrBenchSecretMode, fi.Mode().Perm())
	}
	s := strings.TrimSpace(string(b))
	if raw, err := hex.DecodeString(s); err != nil || len(raw) != benchSecretLen {
		return "", fmt.Errorf("%s %w", path, ErrBenchSecretBad)
	}
	// A fixed prefix keeps the password within any password policy.
	return "Bench-" + s, nil
}

func makeBenchSecret(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	raw := make([]byte, benchSecretLen)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, benchSecretFile+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600.
	_, err = tmp.WriteString(hex.EncodeToString(raw) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// benchPassword is benchSecret for the bench commands, with the CLI's
// messages.
func benchPassword(cfg ClientConfig) (password, path string, err error) {
	if path, err = benchSecretPath(cfg); err != nil {
		return "", "", fail(exitOther, "set AUTHBOX_KNOWN_SERVERS or client.known_servers to a file path: the bench secret is kept beside it", "%s", err)
	}
	password, err = benchSecret(path)
	switch {
	case errors.Is(err, ErrBenchSecretMode):
		return "", "", fail(exitOther, "chmod 600 "+path, "the bench secret %s", err)
	case errors.Is(err, ErrBenchSecretBad):
		return "", "", fail(exitOther, "delete it, and the next bench run makes a new one (bench accounts made with the old one then no longer log in)", "%s", err)
	case err != nil:
		return "", "", fail(exitOther, "", "cannot read or make the bench secret: %s", err)
	}
	return password, path, nil
}
