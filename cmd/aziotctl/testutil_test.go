package main

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
)

// testApp is an app rooted in a temp dir with fixed users and hostname.
func testApp(t *testing.T) (*app, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	root := t.TempDir()
	var stdout, stderr bytes.Buffer
	users := map[string]uint32{"aziotks": 5554, "aziotcs": 5555, "aziotid": 5556, "aziottpm": 5557}
	a := &app{
		stdout: &stdout,
		stderr: &stderr,
		paths: paths{
			Etc:     filepath.Join(root, "etc"),
			Secrets: filepath.Join(root, "secrets"),
			Run:     filepath.Join(root, "run"),
			Lib:     filepath.Join(root, "lib"),
		},
		lookupUser: func(name string) (uint32, uint32, error) {
			if u, ok := users[name]; ok {
				return u, u, nil
			}
			return 0, 0, errors.New("no such user " + name)
		},
		hostname: func() (string, error) { return "my-device", nil },
		geteuid:  func() int { return 0 },
		restart:  func(a *app) error { a.stdout.Write([]byte("(restarted)\n")); return nil },
	}
	return a, &stdout, &stderr
}
