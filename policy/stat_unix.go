//go:build unix

package policy

import (
	"fmt"
	"io/fs"
	"syscall"
)

// inode identifies a file's inode and its last status change (a rewrite in place that
// keeps size and mtime still changes ctime).
func inode(st fs.FileInfo) string {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("%d:%d:%d.%d", s.Dev, s.Ino, s.Ctim.Sec, s.Ctim.Nsec)
	}
	return ""
}
