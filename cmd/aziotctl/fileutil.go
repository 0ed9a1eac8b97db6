package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/iotbroker/aziot/internal/atomicfile"
)

// writeFileAtomic writes data to path so that a crash leaves the old or the new file,
// never a torn one, owned by uid:gid (uid < 0 keeps the caller's ownership).
func writeFileAtomic(path string, data []byte, mode os.FileMode, uid, gid int) error {
	if err := atomicfile.WriteOwned(path, data, mode, uid, gid); err != nil {
		return fmt.Errorf("could not write %s: %w", path, err)
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
