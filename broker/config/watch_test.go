package config

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Watch reloads when config.toml is replaced (as editors do, by rename) or a file of
// config.d changes; both through internal/fswatch.
func TestWatchReloads(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "config.toml")
	confd := filepath.Join(dir, "config.d")
	if err := os.WriteFile(main, []byte("a = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(confd, 0o700); err != nil {
		t.Fatal(err)
	}
	reloads := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := Watch(ctx, main, confd, 20*time.Millisecond, nil, func() { reloads <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	wait := func(what string) {
		t.Helper()
		select {
		case <-reloads:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no reload", what)
		}
	}
	tmp := filepath.Join(dir, ".config.toml.swp")
	os.WriteFile(tmp, []byte("a = 2\n"), 0o600)
	if err := os.Rename(tmp, main); err != nil {
		t.Fatal(err)
	}
	wait("config.toml replaced")
	if err := os.WriteFile(filepath.Join(confd, "50-x.toml"), []byte("b = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wait("config.d file written")
}
