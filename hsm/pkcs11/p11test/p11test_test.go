package p11test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recorder stands in for a test's TB to see how Require ends it.
type recorder struct {
	testing.TB
	failed, skipped string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// requireOn runs Require on a recorder in its own goroutine, as Fatalf ends it.
func requireOn(t *testing.T, tool string) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Require(r, tool)
	}()
	<-done
	return r
}

// A missing tool fails the test whether CI is set or not, and says what to install.
func TestRequireFailsOnMissingTool(t *testing.T) {
	t.Setenv("CI", "")
	t.Setenv("PATH", t.TempDir())
	for tool, pkg := range map[string]string{
		"softhsm2-util": "apt-get install softhsm2",
		"pkcs11-tool":   "apt-get install opensc",
		"swtpm":         "apt-get install swtpm",
	} {
		r := requireOn(t, tool)
		if r.skipped != "" {
			t.Errorf("%s missing: skipped (%s) instead of failing", tool, r.skipped)
			continue
		}
		if !strings.Contains(r.failed, pkg) {
			t.Errorf("%s missing: failure %q does not say %q", tool, r.failed, pkg)
		}
	}
	if r := requireOn(t, "/nonexistent/libsofthsm2.so"); r.failed == "" {
		t.Error("a missing file passed Require")
	}
}
