package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/iotbroker/aziot/policy"
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

// callerFacts adds what /proc tells about the peer: supplementary groups and executable.
// A pidfd is opened first and checked again after reading /proc: if the pid had been
// recycled in between, the pidfd refers to the dead process and the facts are dropped.
func callerFacts(cred *unix.Ucred) policy.Caller {
	c := policy.Caller{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}
	if cred.Pid <= 0 {
		return c
	}
	pidfd, err := unix.PidfdOpen(int(cred.Pid), 0)
	if err != nil {
		// The peer is gone or in another pid namespace: leave the optional facts out.
		return c
	}
	defer unix.Close(pidfd)
	exe, _ := os.Readlink("/proc/" + strconv.Itoa(int(cred.Pid)) + "/exe")
	groups := procGroups(cred.Pid)
	if unix.PidfdSendSignal(pidfd, 0, nil, 0) != nil {
		return c
	}
	c.Exe = exe
	c.Groups = groups
	return c
}

func procGroups(pid int32) []uint32 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
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
