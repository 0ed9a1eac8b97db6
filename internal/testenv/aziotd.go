// Package testenv starts the real aziotd binary for end-to-end tests and gives them
// clients: the sdk through a validating proxy, and curl as other users.
package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// RepoRoot returns the repository root (the directory holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Aziotd builds cmd/aziotd once per test binary and returns its path.
func Aziotd(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "aziotd-bin-")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(dir, 0o755)
		binPath = filepath.Join(dir, "aziotd")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/aziotd")
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build aziotd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Daemon is a running `aziotd dev`.
type Daemon struct {
	Dir    string
	Bin    string
	cmd    *exec.Cmd
	stderr *syncBuffer
	t      testing.TB
}

// NewStateDir makes a state directory other users can traverse (sockets are reached
// by tests running clients under other uids).
func NewStateDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	return dir
}

// WriteConfig writes DIR/etc/<svc>/config.d/<name> before or while the daemon runs.
func WriteConfig(t testing.TB, dir, svc, name, content string) {
	t.Helper()
	p := filepath.Join(dir, "etc", svc, "config.d", name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// StartDev runs `aziotd dev --state-dir dir` and waits for "ready". Sockets are opened
// to every user so that tests can connect under other uids; the services' own
// authorization is what the tests check.
func StartDev(t testing.TB, dir string, env ...string) *Daemon {
	t.Helper()
	d := &Daemon{Dir: dir, Bin: Aziotd(t), stderr: &syncBuffer{}, t: t}
	d.start(env...)
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			t.Logf("aziotd stderr:\n%s", d.Stderr())
		}
	})
	return d
}

func (d *Daemon) start(env ...string) {
	d.t.Helper()
	cmd := exec.Command(d.Bin, "dev", "--state-dir", d.Dir)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = d.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.cmd = cmd
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if sc.Text() == "ready" && !ok {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			d.t.Fatalf("aziotd exited before ready:\n%s", d.stderr.String())
		}
	case <-time.After(30 * time.Second):
		d.t.Fatalf("aziotd not ready after 30s:\n%s", d.stderr.String())
	}
	for _, svc := range []string{"keyd", "certd", "identityd"} {
		os.Chmod(d.Socket(svc), 0o666)
	}
}

// Socket returns the path of a service's socket.
func (d *Daemon) Socket(svc string) string { return filepath.Join(d.Dir, "run", svc+".sock") }

// Stderr returns what the daemon logged so far.
func (d *Daemon) Stderr() string { return d.stderr.String() }

// Stop ends the daemon with SIGTERM (SIGKILL after 10 s).
func (d *Daemon) Stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
	d.cmd = nil
}

// Kill ends the daemon with SIGKILL at once, as a crash would.
func (d *Daemon) Kill() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Kill()
	d.cmd.Wait()
	d.cmd = nil
}

// Restart starts the daemon again on the same state directory.
func (d *Daemon) Restart(env ...string) {
	d.Stop()
	d.start(env...)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Contains reports whether the daemon's log holds sub.
func (d *Daemon) Contains(sub string) bool { return strings.Contains(d.Stderr(), sub) }
