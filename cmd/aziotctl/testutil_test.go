package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

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

		now:      func() time.Time { return testNow },
		hostInfo: func() map[string]any { return map[string]any{"os": map[string]any{"id": "test"}} },
		net:      netSettings{AMQPPort: 1, HTTPSPort: 1, MQTTPort: 1},
		latestVersions: func(context.Context, string) ([]byte, error) {
			return nil, errors.New("no network in tests")
		},
	}
	return a, &stdout, &stderr
}
