// Package atomicfile writes files so that a crash at any instant leaves either the old
// or the new content, whole (architecture.md §6): temp file in the same directory, fsync,
// rename over the target, fsync the directory.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data, created with mode perm.
func Write(path string, data []byte, perm os.FileMode) error {
	return WriteOwned(path, data, perm, -1, -1)
}

// WriteOwned is Write with the new file owned by uid:gid (-1 keeps the caller's), set
// before the rename so that the file never appears with the wrong owner.
func WriteOwned(path string, data []byte, perm os.FileMode, uid, gid int) error {
	tmp, err := writeTemp(path, data, perm, uid, gid)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename temp file onto %q: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// WriteNew creates path with data unless something is there already, in which case it
// returns an error that matches fs.ErrExist and leaves the file alone. The content is
// written and synced under a temp name and hard-linked into place, so that of concurrent
// creators exactly one wins and a crash leaves no partial file. On a file system without
// hard links it falls back to Write's rename, which is not exclusive.
func WriteNew(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(path, data, perm, -1, -1)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("rename temp file onto %q: %w", path, err)
		}
	}
	return SyncDir(filepath.Dir(path))
}

// writeTemp writes data to a synced, closed temp file beside path and returns its name.
func writeTemp(path string, data []byte, perm os.FileMode, uid, gid int) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("create temp file for %q: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return "", fmt.Errorf("chmod temp file for %q: %w", path, err)
	}
	if uid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return "", fmt.Errorf("chown temp file for %q: %w", path, err)
		}
	}
	if _, err := f.Write(data); err != nil {
		return "", fmt.Errorf("write temp file for %q: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("sync temp file for %q: %w", path, err)
	}
	ok = true
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("close temp file for %q: %w", path, err)
	}
	return tmp, nil
}

// Rename moves from onto to and makes the rename durable.
func Rename(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	if err := SyncDir(filepath.Dir(to)); err != nil {
		return err
	}
	if filepath.Dir(from) != filepath.Dir(to) {
		return SyncDir(filepath.Dir(from))
	}
	return nil
}

// Remove deletes path (a missing file is not an error) and makes the removal durable.
func Remove(path string) error {
	if err := os.Remove(path); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir fsyncs a directory so that entries created, renamed or removed in it survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %q: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %q: %w", dir, err)
	}
	return nil
}

// CleanTemps removes temp files left in dir by a Write that was interrupted by a crash.
func CleanTemps(dir string) {
	matches, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	for _, m := range matches {
		os.Remove(m)
	}
}

// MkdirAll creates dir and any missing parents, fsyncing each parent that gained an
// entry, so that a file written into a new directory survives a power loss.
func MkdirAll(dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%q is not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create directory %q: %w", dir, err)
	}
	return SyncDir(parent)
}
