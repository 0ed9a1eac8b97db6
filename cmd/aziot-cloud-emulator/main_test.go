package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunWithExampleConfig starts the command with the documented example (ports moved to
// ephemeral ones), checks what it prints and that the printed endpoints answer over TLS
// signed by the printed root.
func TestRunWithExampleConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := strings.NewReplacer(
		"/tmp/aziot-emulator", dir,
		`dps = "127.0.0.1:8443"`, `dps = "127.0.0.1:0"`,
		`est = "127.0.0.1:9443"`, `est = "127.0.0.1:0"`,
		`admin = "127.0.0.1:9444"`, `admin = "127.0.0.1:0"`,
		`addr = "127.0.0.1:18443"`, `addr = "127.0.0.1:0"`,
	).Replace(exampleConfig)
	path := filepath.Join(dir, "emulator.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-config", path}, pw); pw.Close() }()
	lines := map[string]string{}
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if sc.Text() == "ready" {
			break
		}
		k, v, _ := strings.Cut(sc.Text(), " = ")
		lines[k] = v
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	rootPEM, err := os.ReadFile(lines["root_ca"])
	if err != nil {
		t.Fatalf("root CA path %q: %v (output %v)", lines["root_ca"], err, lines)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootPEM)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for u, want := range map[string]int{
		// A poll for an unknown operation of a configured scope: 404.
		lines["dps"] + "/0ne00000A0A/registrations/device-01/operations/x?api-version=2021-06-01": 404,
		lines["est"] + "/cacerts": 200,
	} {
		res, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d", u, res.StatusCode, want)
		}
	}
	if lines["hub localhost:18443"] == "" {
		t.Fatalf("hub endpoint not printed: %v", lines)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown key":  "bogus = 1\n",
		"bad duration": "operation_ttl = \"soon\"\n",
		"bad ip":       "ip_addresses = [\"nope\"]\n",
		"bad validity": "[[est_labels]]\nvalidity = \"x\"\n",
		"missing cert": "[[enrollments]]\nattestation = \"x509\"\nid = \"a\"\nprimary_cert = \"/does/not/exist\"\n",
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".toml")
		_ = os.WriteFile(p, []byte(body), 0o600)
		if _, _, err := loadConfig(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := run(context.Background(), nil, io.Discard); err == nil {
		t.Error("missing -config accepted")
	}
}
