package keyd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/iotbroker/aziot/sdk/keys"
)

// keydOnSocket serves keyd (the real default policy) on a Unix socket in a temp dir and
// returns the socket path.
func keydOnSocket(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	cfg := &Config{AziotKeys: map[string]string{"homedir_path": filepath.Join(dir, "keys")}, MaxRequests: 1024}
	s, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "keyd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.HTTP.Serve(ctx, l); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return sock
}

// BenchmarkSignOverSocket is one keep-alive client signing through keyd's whole request
// path in this process: the allocation and CPU profile of the hot path (`go test
// -bench SignOverSocket -benchmem -cpuprofile`). The cross-process figures against a
// bare server are bench/'s.
func BenchmarkSignOverSocket(b *testing.B) {
	sock := keydOnSocket(b)
	ctx := context.Background()
	cl := keys.New(sock)
	defer cl.Close()
	hk, err := cl.ImportKey(ctx, "hmac", bytes.Repeat([]byte{1}, 32), "sign")
	if err != nil {
		b.Fatal(err)
	}
	hp, err := cl.CreateKeyPair(ctx, "ec", "ec-p256")
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))
	raw := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	for _, c := range []struct{ name, body string }{
		{"HMAC", `{"keyHandle":"` + hk + `","algorithm":"HMAC-SHA256","parameters":{"message":"aGVsbG8="}}`},
		{"ECDSA", `{"keyHandle":"` + hp + `","algorithm":"ECDSA","parameters":{"digest":"` + base64.StdEncoding.EncodeToString(digest[:]) + `"}}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				postSign(b, raw, c.body)
			}
		})
		b.Run(c.name+"-8clients", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(8 / runtime.GOMAXPROCS(0))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					postSign(b, raw, c.body)
				}
			})
		})
	}
}

func postSign(b *testing.B, c *http.Client, body string) {
	resp, err := c.Post("http://keyd.sock/sign?api-version=2021-05-01", "application/json", strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}
