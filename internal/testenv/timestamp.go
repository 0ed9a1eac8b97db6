package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// WaitNewTimestamp returns once the file system stamps a new write beside path with a
// time later than path's mtime, so that a rewrite of path is not within the timestamp
// granularity: the residual window of keyd's key cache (docs/RATIONALE.md), which tests
// of the other cases must step out of.
func WaitNewTimestamp(t testing.TB, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// Beside the file: the same file system stamps with the same granularity.
	probe := filepath.Join(filepath.Dir(path), "probe")
	defer os.Remove(probe)
	for {
		if err := os.WriteFile(probe, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := os.Stat(probe)
		if err != nil {
			t.Fatal(err)
		}
		if p.ModTime().After(st.ModTime()) {
			return
		}
	}
}
