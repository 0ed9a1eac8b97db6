package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// A config the caller may not read is a fatal result that stops every later check
// (cli.md §5.2). Root reads anything, so the real binary runs as another uid here.
func TestCheckFatalWhenConfigIsUnreadable(t *testing.T) {
	root := t.TempDir()
	for d := root; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	bin := filepath.Join(root, "aziotctl")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	etc := filepath.Join(root, "etc")
	keydDir := filepath.Join(etc, "keyd")
	os.MkdirAll(filepath.Join(keydDir, "config.d"), 0o755)
	// Owned by root, mode 0600: unreadable for uid 1001.
	if err := os.WriteFile(filepath.Join(keydDir, "config.toml"), []byte("max_requests = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "check", "-o", "json")
	cmd.Env = append(os.Environ(), "AZIOTCTL_ETC_DIR="+etc, "AZIOTCTL_RUN_DIR="+filepath.Join(root, "run"),
		"AZIOTCTL_LIB_DIR="+filepath.Join(root, "lib"), "AZIOTCTL_SECRETS_DIR="+filepath.Join(root, "secrets"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1001, Gid: 1001}}
	out, err := cmd.Output()
	if err == nil {
		t.Fatal("check exited 0 after a fatal result")
	}
	var report struct {
		Checks map[string]struct {
			Result struct {
				Result  string   `json:"result"`
				Details []string `json:"details"`
			} `json:"result"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("output is not the json format: %v\n%s", err, out)
	}
	if got := report.Checks["keyd-config-well-formed"].Result.Result; got != "fatal" {
		t.Fatalf("keyd-config-well-formed = %q\n%s", got, out)
	}
	// Nothing runs after a fatal result.
	for id, c := range report.Checks {
		if id != "keyd-config-well-formed" && (c.Result.Result == "ok" || c.Result.Result == "error" || c.Result.Result == "warning") {
			t.Errorf("%s ran after the fatal result: %s", id, c.Result.Result)
		}
	}
}
