package bench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/iotbroker/aziot/internal/testenv"
	"github.com/iotbroker/aziot/sdk/keys"
)

// benchMaxRequests replaces the dev default (10 per uid, upstream's) so that 64 clients,
// each on its own connection, are all served: beyond max_requests keyd closes a
// connection unanswered.
const benchMaxRequests = 128

var concurrency = []int{1, 8, 64}

// BenchmarkBroker measures signing through keyd's socket against the same operation
// in-process and against a bare net/http echo server on a Unix socket, all in one run.
// Each configuration runs for the -benchtime duration (one measurement, no ramp-up
// repetitions) with its own latency histogram; it reports req/s, p50-µs and p99-µs, and
// ns/op as the inverse of the throughput.
func BenchmarkBroker(b *testing.B) {
	window := measureWindow()
	dir := testenv.NewStateDir(b)
	testenv.WriteConfig(b, dir, "keyd", "50-bench.toml", fmt.Sprintf("max_requests = %d\n", benchMaxRequests))
	d := testenv.StartDev(b, dir)
	socket := d.Socket("keyd")
	// Printed, not logged: a parent benchmark's log shows only with -v.
	fmt.Printf("machine: %d CPUs (%s), GOMAXPROCS %d, %s/%s\nkeyd max_requests raised to %d in config.d (dev default 10, upstream's) so that 64 concurrent clients are served\neach configuration measured for %v; clients, echo server and in-process work share this machine with aziotd\n",
		runtime.NumCPU(), cpuModel(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, benchMaxRequests, window)

	ctx := context.Background()
	setup := keys.New(socket)
	hmacKey := bytes.Repeat([]byte{0x5a}, 32)
	hmacHandle, err := setup.ImportKey(ctx, "bench-hmac", hmacKey, "sign")
	if err != nil {
		b.Fatal(err)
	}
	ecHandle, err := setup.CreateKeyPair(ctx, "bench-ecdsa", "ec-p256")
	if err != nil {
		b.Fatal(err)
	}
	setup.Close()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	message := []byte("iothub.example.net%2Fdevices%2Fbench-device\n1767225600")
	digest := sha256.Sum256(message)
	// The echo server gets the body keyd's HMAC request carries.
	alg := keys.AlgHMACSHA256
	echoBody, _ := json.Marshal(keys.SignRequest{KeyHandle: &hmacHandle, Algorithm: &alg, Parameters: &keys.SignParameters{Message: message}})
	echoSocket := startEcho(b)

	results := map[string]result{}
	run := func(name string, c int, newOp func() (op func() error, done func())) {
		b.Run(name, func(b *testing.B) {
			op, done := newOp()
			defer done()
			res, err := measure(c, window, op)
			if err != nil {
				b.Fatal(err)
			}
			res.report(b)
			results[name] = res
		})
	}
	overSocket := func(c int, sign func(*keys.Client) error) func() (func() error, func()) {
		return func() (func() error, func()) {
			client := keys.NewWithConns(socket, c)
			return func() error { return sign(client) }, client.Close
		}
	}
	inProcess := func(op func() error) func() (func() error, func()) {
		return func() (func() error, func()) { return op, func() {} }
	}
	signHMAC := func(k *keys.Client) error {
		sig, err := k.SignHMAC(ctx, hmacHandle, message)
		if err == nil && len(sig) != 32 {
			err = fmt.Errorf("HMAC of %d bytes", len(sig))
		}
		return err
	}
	signECDSA := func(k *keys.Client) error {
		_, err := k.SignECDSA(ctx, ecHandle, digest[:])
		return err
	}
	for _, c := range concurrency {
		run(fmt.Sprintf("socket/hmac/c=%d", c), c, overSocket(c, signHMAC))
		run(fmt.Sprintf("socket/ecdsa/c=%d", c), c, overSocket(c, signECDSA))
		run(fmt.Sprintf("inproc/hmac/c=%d", c), c, inProcess(func() error {
			mac := hmac.New(sha256.New, hmacKey)
			mac.Write(message)
			mac.Sum(nil)
			return nil
		}))
		run(fmt.Sprintf("inproc/ecdsa/c=%d", c), c, inProcess(func() error {
			_, err := ecdsa.SignASN1(rand.Reader, ecKey, digest[:])
			return err
		}))
		run(fmt.Sprintf("echo/c=%d", c), c, func() (func() error, func()) {
			client := unixClient(echoSocket, c)
			return func() error { return echo(client, echoBody) }, client.CloseIdleConnections
		})
	}

	// The broker's overhead as ratios, for README's performance section.
	var sb strings.Builder
	fmt.Fprintf(&sb, "broker = keyd over its socket through sdk/keys; ratios are of req/s\n| clients | op | broker req/s | p50 µs | p99 µs | echo req/s | in-process req/s | broker/echo | broker/in-process |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range concurrency {
		for _, op := range []string{"hmac", "ecdsa"} {
			s, ok1 := results[fmt.Sprintf("socket/%s/c=%d", op, c)]
			e, ok2 := results[fmt.Sprintf("echo/c=%d", c)]
			p, ok3 := results[fmt.Sprintf("inproc/%s/c=%d", op, c)]
			if !ok1 || !ok2 || !ok3 {
				continue
			}
			fmt.Fprintf(&sb, "| %d | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.2f | %.4f |\n",
				c, op, s.rate(), us(s.p50), us(s.p99), e.rate(), p.rate(), s.rate()/e.rate(), s.rate()/p.rate())
		}
	}
	fmt.Println(sb.String())
}

// startEcho serves a bare net/http handler that sends the request body back, on a Unix
// socket of its own.
func startEcho(b *testing.B) string {
	path := filepath.Join(b.TempDir(), "echo.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return path
}

// unixClient is an HTTP client bounded to conns connections, as sdk/keys builds its own.
func unixClient(path string, conns int) *http.Client {
	var d net.Dialer
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
		MaxConnsPerHost:     conns,
		MaxIdleConnsPerHost: conns,
	}}
}

func echo(c *http.Client, body []byte) error {
	resp, err := c.Post("http://echo/sign?api-version=2021-05-01", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || len(got) != len(body) {
		return fmt.Errorf("echo: %d, %d bytes", resp.StatusCode, len(got))
	}
	return nil
}
