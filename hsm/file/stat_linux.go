package file

import (
	"io/fs"
	"syscall"
)

// statPath is one stat(2) of path, without the allocation of os.Stat: it runs on every
// use of a cached key.
func statPath(path string) (fingerprint, bool, error) {
	var st syscall.Stat_t
	for {
		err := syscall.Stat(path, &st)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fingerprint{}, false, &fs.PathError{Op: "stat", Path: path, Err: err}
		}
		return fromStat(&st), true, nil
	}
}

func fingerprintOf(fi fs.FileInfo) (fingerprint, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fingerprint{}, false
	}
	return fromStat(st), true
}

func fromStat(st *syscall.Stat_t) fingerprint {
	return fingerprint{
		dev:   uint64(st.Dev),
		ino:   uint64(st.Ino),
		mtime: st.Mtim.Nano(),
		ctime: st.Ctim.Nano(),
		size:  st.Size,
	}
}
