package main

import (
	"os"
	"syscall"
)

// ownerOf returns the uid and gid of a stat result.
func ownerOf(st os.FileInfo) (uid, gid int, ok bool) {
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return -1, -1, false
	}
	return int(s.Uid), int(s.Gid), true
}
