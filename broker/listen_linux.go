package broker

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// activationFDs are the sockets systemd handed this process, taken once at start.
type activationFDs struct {
	files []*os.File
	names []string
}

// TakeActivation reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, marks the fds
// close-on-exec and clears the variables so that children do not inherit them.
func TakeActivation() *activationFDs {
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return &activationFDs{}
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 1 {
		return &activationFDs{}
	}
	var names []string
	if v := os.Getenv("LISTEN_FDNAMES"); v != "" {
		names = strings.Split(v, ":")
	}
	a := &activationFDs{}
	for i := 0; i < n; i++ {
		fd := 3 + i
		unix.CloseOnExec(fd)
		a.files = append(a.files, os.NewFile(uintptr(fd), "listen-fd-"+strconv.Itoa(fd)))
		name := ""
		if i < len(names) {
			name = names[i]
		}
		a.names = append(a.names, name)
	}
	return a
}

// listener finds the activation socket for a service: the only one when exactly one was
// passed (upstream's rule), else the one whose name matches (our all-in-one mode).
func (a *activationFDs) listener(names ...string) (net.Listener, bool, error) {
	if a == nil || len(a.files) == 0 {
		return nil, false, nil
	}
	pick := -1
	if len(a.files) == 1 && (a.names[0] == "" || matchName(a.names[0], names)) {
		pick = 0
	} else {
		for i, n := range a.names {
			if matchName(n, names) {
				pick = i
				break
			}
		}
	}
	if pick < 0 {
		return nil, false, nil
	}
	l, err := net.FileListener(a.files[pick])
	if err != nil {
		return nil, false, fmt.Errorf("use activation socket %d: %w", pick+3, err)
	}
	return l, true, nil
}

func matchName(got string, want []string) bool {
	for _, w := range want {
		if got == w {
			return true
		}
	}
	return false
}

// bindUnix binds path the way upstream does when there is no activation socket: delete
// what is there (recursively for a directory), bind, chmod 0660.
func bindUnix(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory for %q: %w", path, err)
	}
	// Bind inside a private directory, chmod, then rename into place: the socket is never
	// reachable with the mode the process umask would give it (upstream binds at the path
	// and chmods afterwards, a window in which any user may connect).
	tmp, err := os.MkdirTemp(dir, ".bind-")
	if err != nil {
		return nil, fmt.Errorf("create private directory to bind %q: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	tmpPath := filepath.Join(tmp, "s")
	l, err := net.Listen("unix", tmpPath)
	if err != nil {
		return nil, fmt.Errorf("bind %q: %w", path, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		l.Close()
		return nil, err
	}
	if err := os.Chmod(tmpPath, 0o660); err != nil {
		return fail(fmt.Errorf("chmod %q: %w", path, err))
	}
	if st, err := os.Lstat(path); err == nil && st.IsDir() {
		if err := os.RemoveAll(path); err != nil {
			return fail(fmt.Errorf("remove directory at socket path %q: %w", path, err))
		}
	}
	// rename replaces an old socket or file at path atomically.
	if err := os.Rename(tmpPath, path); err != nil {
		return fail(fmt.Errorf("move socket into place at %q: %w", path, err))
	}
	return &boundListener{Listener: l, addr: &net.UnixAddr{Name: path, Net: "unix"}}, nil
}

// boundListener reports the path the socket was moved to, not the one it was bound at.
type boundListener struct {
	net.Listener
	addr net.Addr
}

func (l *boundListener) Addr() net.Addr { return l.addr }
