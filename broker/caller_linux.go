package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/iotbroker/aziot/policy/authz"
)

// peerCredentials reads SO_PEERCRED of a Unix connection: the kernel's record of the
// peer at connect time, which a client cannot forge.
func peerCredentials(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", serr)
	}
	return cred, nil
}

// peerPidfd returns a pidfd of the exact process that connected (SO_PEERPIDFD, Linux ≥
// 6.5), or -1 when the kernel cannot give one.
func peerPidfd(c *net.UnixConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	pidfd := -1
	raw.Control(func(fd uintptr) {
		if v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD); err == nil {
			pidfd = v
		}
	})
	return pidfd
}

// callerFacts adds what /proc tells about the peer: supplementary groups and executable
// (docs/policy.md §4). They are read under a pidfd of the peer, so that a recycled pid
// cannot lend another process's facts:
//
//   - SO_PEERPIDFD gives a pidfd of the process that connected, whatever happened to its
//     pid since;
//   - otherwise (older kernels) pidfd_open(pid) names whatever process has the pid now:
//     it is accepted only if it has the peer's effective uid and gid, which narrows, but
//     does not close, the window in which the peer exits and its pid is reused (by a
//     process of the same uid and gid) before the accept;
//   - after reading /proc, the pidfd's process must still be alive: if it had exited, its
//     pid could already name another process, and the facts are dropped.
//
// A fact that cannot be had (the peer in another pid namespace, or gone) is left out.
func callerFacts(c *net.UnixConn, cred *unix.Ucred) authz.Caller {
	caller := authz.Caller{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}
	if cred.Pid <= 0 {
		caller.PID = 0
		return caller
	}
	pid := int(cred.Pid)
	pidfd := -1
	if c != nil {
		pidfd = peerPidfd(c)
	}
	exact := pidfd >= 0
	if exact {
		if pidfdPid(pidfd) != pid {
			// Exited already (-1), or another pid namespace's view: nothing to read.
			unix.Close(pidfd)
			return caller
		}
	} else {
		var err error
		if pidfd, err = unix.PidfdOpen(pid, 0); err != nil {
			return caller
		}
	}
	defer unix.Close(pidfd)
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return caller
	}
	exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if !exact && !sameProcess(status, cred) {
		return caller
	}
	if unix.PidfdSendSignal(pidfd, 0, nil, 0) != nil {
		return caller
	}
	caller.Exe = exe
	caller.Groups = statusGroups(status)
	return caller
}

// pidfdPid reads the pid a pidfd refers to from /proc/self/fdinfo (-1: exited).
func pidfdPid(pidfd int) int {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(pidfd))
	if err != nil {
		return -1
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("Pid:")); ok {
			n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// sameProcess checks, without SO_PEERPIDFD, that the process now holding pid could be the
// peer: the same effective uid and gid as SO_PEERCRED recorded at connect.
func sameProcess(status []byte, cred *unix.Ucred) bool {
	return field(status, "Uid:", 1) == strconv.FormatUint(uint64(cred.Uid), 10) &&
		field(status, "Gid:", 1) == strconv.FormatUint(uint64(cred.Gid), 10)
}

func field(status []byte, key string, n int) string {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte(key)); ok {
			f := bytes.Fields(v)
			if n < len(f) {
				return string(f[n])
			}
			return ""
		}
	}
	return ""
}

// statusGroups parses the Groups: line of /proc/<pid>/status (empty, not nil, when the
// process has no supplementary group).
func statusGroups(status []byte) []uint32 {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("Groups:")) {
			continue
		}
		groups := []uint32{}
		for _, f := range bytes.Fields(line[len("Groups:"):]) {
			if g, err := strconv.ParseUint(string(f), 10, 32); err == nil {
				groups = append(groups, uint32(g))
			}
		}
		return groups
	}
	return nil
}
