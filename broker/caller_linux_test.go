package broker

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// connectAndExitEnv makes the test binary a helper process (see init) instead of
// running tests.
const connectAndExitEnv = "AZIOT_CONNECT_AND_EXIT"

// The helper dispatch runs from init, before any test, so that it is not itself a
// test that passes when run without its variable. init rather than TestMain: the
// package's other test files may want a TestMain of their own.
func init() {
	if path := os.Getenv(connectAndExitEnv); path != "" {
		connectAndExit(path)
	}
}

// connectAndExit connects to path and exits without closing: the kernel closes the
// socket, and the peer record in the listener's backlog stays.
func connectAndExit(path string) {
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper: connect to %s: %v\n", path, err)
		os.Exit(2)
	}
	_ = c
	fmt.Println("connected")
	os.Exit(0)
}

func acceptPair(t *testing.T) (*net.UnixListener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

// The facts of a live peer: our own process.
func TestCallerFactsOfLivePeer(t *testing.T) {
	l, path := acceptPair(t)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	cred, err := peerCredentials(sc)
	if err != nil {
		t.Fatal(err)
	}
	if int(cred.Pid) != os.Getpid() || int(cred.Uid) != os.Getuid() {
		t.Fatalf("cred %+v", cred)
	}
	self, _ := os.Executable()
	for _, conn := range []*net.UnixConn{sc, nil} { // SO_PEERPIDFD, and the pidfd_open fallback
		f := callerFacts(conn, cred)
		if f.Exe != self || f.Groups == nil || int(f.PID) != os.Getpid() {
			t.Errorf("facts %+v (exe want %s)", f, self)
		}
		want, _ := os.Getgroups()
		for _, g := range want {
			if !slices.Contains(f.Groups, uint32(g)) {
				t.Errorf("group %d missing from %v", g, f.Groups)
			}
		}
	}
	if peerPidfd(sc) < 0 {
		t.Log("kernel without SO_PEERPIDFD: fallback path only")
	}
}

// A peer that connected and exited before the accept lends no facts, even when its pid
// has been reused since; uid and gid stay (SO_PEERCRED keeps them).
func TestCallerFactsOfExitedPeer(t *testing.T) {
	l, path := acceptPair(t)
	// A child connects and exits; the connection waits in the backlog.
	// -test.run=^$: should the dispatch not happen, the child runs no test and the
	// missing "connected" says so.
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), connectAndExitEnv+"="+path)
	out, err := child.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "connected" {
		t.Fatalf("helper process: %v: %q", err, out)
	}
	// The connection is in the backlog by now; a deadline turns a missing one into a
	// failure instead of a hang.
	if err := l.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	sc, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	cred, err := peerCredentials(sc)
	if err != nil {
		t.Fatal(err)
	}
	f := callerFacts(sc, cred)
	if f.Exe != "" || f.Groups != nil {
		t.Fatalf("facts of a dead peer: %+v", f)
	}
	if f.UID != cred.Uid || f.GID != cred.Gid {
		t.Fatalf("%+v", f)
	}
	// The fallback path with a pid that now names another process (ours) of another
	// uid: refused.
	fake := *cred
	fake.Pid = int32(os.Getpid())
	fake.Uid = cred.Uid + 1
	if f := callerFacts(nil, &fake); f.Exe != "" || f.Groups != nil {
		t.Fatalf("facts of another uid's process: %+v", f)
	}
}

func TestPidfdPid(t *testing.T) {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if got := pidfdPid(fd); got != os.Getpid() {
		t.Fatalf("pidfdPid = %d", got)
	}
}
