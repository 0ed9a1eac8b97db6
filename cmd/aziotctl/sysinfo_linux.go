package main

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// systemInfo reports RAM, swap and the root disk for check's additional_info.
func systemInfo() map[string]any {
	out := map[string]any{}
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) == nil {
		unit := uint64(si.Unit)
		out["total_memory"] = uint64(si.Totalram) * unit
		out["used_memory"] = (uint64(si.Totalram) - uint64(si.Freeram)) * unit
		out["total_swap"] = uint64(si.Totalswap) * unit
		out["used_swap"] = (uint64(si.Totalswap) - uint64(si.Freeswap)) * unit
	}
	var fs syscall.Statfs_t
	if syscall.Statfs("/", &fs) == nil {
		out["disks"] = []map[string]any{{
			"name":            "/",
			"total_space":     fs.Blocks * uint64(fs.Bsize),
			"available_space": fs.Bavail * uint64(fs.Bsize),
		}}
	}
	return out
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
