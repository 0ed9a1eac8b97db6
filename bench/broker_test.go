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
	"flag"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

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

// measureWindow is the -benchtime duration (default 1 s): each configuration is measured
// once for that long, which also keeps the framework from running it again.
func measureWindow() time.Duration {
	if f := flag.Lookup("test.benchtime"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 {
			return d
		}
	}
	return time.Second
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return "unknown CPU"
}

// result is one configuration's measurement.
type result struct {
	ops      uint64
	elapsed  time.Duration
	p50, p99 time.Duration
}

func (r result) rate() float64 { return float64(r.ops) / r.elapsed.Seconds() }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func (r result) report(b *testing.B) {
	b.ReportMetric(r.rate(), "req/s")
	b.ReportMetric(us(r.p50), "p50-µs")
	b.ReportMetric(us(r.p99), "p99-µs")
	b.ReportMetric(float64(r.elapsed.Nanoseconds())/float64(r.ops), "ns/op")
}

// measure runs op from c goroutines for window after a short warm-up (connections
// opened, first requests served) and returns throughput and latency quantiles.
func measure(c int, window time.Duration, op func() error) (result, error) {
	var (
		ready, done sync.WaitGroup
		start       = make(chan struct{})
		deadline    time.Time
		errMu       sync.Mutex
		firstErr    error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	hists := make([]*histogram, c)
	for i := range hists {
		hists[i] = new(histogram)
		ready.Add(1)
		done.Add(1)
		go func(h *histogram) {
			defer done.Done()
			var warmErr error
			for k := 0; k < 5 && warmErr == nil; k++ {
				warmErr = op()
			}
			ready.Done()
			if warmErr != nil {
				fail(warmErr)
				return
			}
			<-start
			t0 := time.Now()
			for t0.Before(deadline) {
				if err := op(); err != nil {
					fail(err)
					return
				}
				t1 := time.Now()
				h.add(t1.Sub(t0))
				t0 = t1
			}
		}(hists[i])
	}
	ready.Wait()
	begin := time.Now()
	deadline = begin.Add(window)
	close(start)
	done.Wait()
	elapsed := time.Since(begin)
	if firstErr != nil {
		return result{}, firstErr
	}
	total := new(histogram)
	for _, h := range hists {
		total.merge(h)
	}
	if total.n == 0 {
		return result{}, fmt.Errorf("no operation completed in %v", window)
	}
	return result{ops: total.n, elapsed: elapsed, p50: total.quantile(0.50), p99: total.quantile(0.99)}, nil
}

// histogram is a log-linear latency histogram: exact below 128 ns, then 64 buckets per
// power of two (under 1.6 % error), so that millions of samples cost no memory.
type histogram struct {
	counts [128 + 57*64]uint64
	n      uint64
}

func bucket(d time.Duration) int {
	u := uint64(max(d, 0))
	if u < 128 {
		return int(u)
	}
	shift := bits.Len64(u) - 7 // u>>shift is in [64, 128)
	return 128 + (shift-1)*64 + int(u>>shift) - 64
}

func bucketValue(i int) time.Duration {
	if i < 128 {
		return time.Duration(i)
	}
	k := i - 128
	shift := k/64 + 1
	m := uint64(k%64 + 64)
	return time.Duration(m<<shift + (uint64(1)<<shift)/2) // the bucket's midpoint
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucket(d)]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

func (h *histogram) quantile(q float64) time.Duration {
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return bucketValue(i)
		}
	}
	return bucketValue(len(h.counts) - 1)
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

// The histogram must place values where quantiles can be read back within its error.
func TestHistogram(t *testing.T) {
	var h histogram
	var all []time.Duration
	for i := 1; i <= 100000; i++ {
		d := time.Duration(i*i%9973+1) * time.Microsecond
		h.add(d)
		all = append(all, d)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	for _, q := range []float64{0.5, 0.99} {
		want := all[int(q*float64(len(all)))-1]
		got := h.quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.02 || diff < -0.02 {
			t.Errorf("q%.2f: %v, want %v", q, got, want)
		}
	}
	for _, d := range []time.Duration{0, 1, 127, 128, 129, 1000, time.Millisecond, time.Second, time.Minute} {
		if v := bucketValue(bucket(d)); float64(v-d) > 0.016*float64(d)+1 || float64(d-v) > 0.016*float64(d)+1 {
			t.Errorf("%v lands in a bucket worth %v", d, v)
		}
	}
}
