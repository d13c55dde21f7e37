package main

// dbmode.go keeps the db file private. The db holds every verifier and the
// server's TLS key, so it is as secret as an ssh private key: a file that
// bbolt makes is 0600, an empty file it adopts is made 0600 too (it was made
// for the db, and its mode came from a umask, not a choice), and serve warns
// at start, as ssh does for keys, when the file or its directory lets other
// users in.

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// dbFileMode is the mode of a db file authbox makes or adopts.
const dbFileMode = 0o600

// privatizeEmptyDB makes path mode 0600 if it is an empty regular file,
// which bbolt would otherwise fill with a db and leave at its old mode. A
// file that does not exist is left to bbolt, which makes it 0600; a
// non-empty one keeps the mode its owner gave it (serve warns about it).
func privatizeEmptyDB(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		// Missing, or not ours to change: bbolt's open says what is wrong.
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 || fi.Mode().Perm() == dbFileMode {
		return nil
	}
	if err := f.Chmod(dbFileMode); err != nil {
		return fmt.Errorf("make the empty file %s private (mode 0600): %w", path, err)
	}
	return nil
}

// dbModeWarnings says what in the db file's mode or its directory's lets
// users other than its owner read or change it; nothing when all is
// private. A directory others can read lists the file's name only, which
// hides nothing, so for the directory only write access counts: with it
// they can replace the file.
func dbModeWarnings(path string) []string {
	var warns []string
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o066 != 0 {
		warns = append(warns, fmt.Sprintf("database %s has mode %04o: other users can %s it, and it holds every verifier and the server's TLS key; chmod 600 %s",
			path, fi.Mode().Perm(), access(fi.Mode(), 0o044, 0o022), path))
	}
	dir := filepath.Dir(path)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs // "." would say little in a log
	}
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o022 != 0 {
		warns = append(warns, fmt.Sprintf("the directory of database %s, %s, has mode %04o: other users can replace the database; chmod go-w %s",
			path, dir, fi.Mode().Perm(), dir))
	}
	return warns
}

// access names what the group and other bits of m allow.
func access(m fs.FileMode, read, write fs.FileMode) string {
	r, w := m&read != 0, m&write != 0
	switch {
	case r && w:
		return "read and change"
	case w:
		return "change"
	}
	return "read"
}
