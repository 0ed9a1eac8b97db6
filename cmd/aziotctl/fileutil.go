package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// writeFileAtomic writes data to path so that a crash leaves the old or the new file,
// never a torn one: temp file in the same directory, fsync, chown/chmod, rename,
// fsync of the directory. uid < 0 keeps the caller's ownership.
func writeFileAtomic(path string, data []byte, mode os.FileMode, uid, gid int) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("could not create %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("could not write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("could not set permissions on %s: %w", path, err)
	}
	if uid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return fmt.Errorf("could not set ownership on %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("could not sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("could not write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("could not create %s: %w", path, err)
	}
	ok = true
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("could not open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("could not sync %s: %w", dir, err)
	}
	return nil
}

// ensureDir creates dir (and its parents), then gives dir itself the owner and mode.
// Parents that the owner could not traverse are made world r+x, as upstream does, so
// the service can reach its files.
func ensureDir(dir string, mode os.FileMode, uid, gid int) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("could not create %s directory: %w", dir, err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("could not set ownership on %s directory: %w", dir, err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("could not set permissions on %s directory: %w", dir, err)
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if err := makeTraversable(p, uid, gid); err != nil {
			return err
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func makeTraversable(dir string, uid, gid int) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("could not stat %s: %w", dir, err)
	}
	m := st.Mode().Perm()
	o, g, w := m&0o500 == 0o500, m&0o050 == 0o050, m&0o005 == 0o005
	suid, sgid, _ := ownerOf(st)
	if w || (g && sgid == gid) || (o && suid == uid) {
		return nil
	}
	if err := os.Chmod(dir, m|0o005); err != nil {
		return fmt.Errorf("could not set permissions on %s: %w", dir, err)
	}
	return nil
}
