package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

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
	return measureEach(c, window, func(int) func() error { return op })
}

// measureEach is measure with an operation of its own for each goroutine i, so that a
// client can hold its own connection.
func measureEach(c int, window time.Duration, newOp func(i int) func() error) (result, error) {
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
		go func(h *histogram, op func() error) {
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
		}(hists[i], newOp(i))
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

// call is one request both servers are sent byte for byte, and the check of its answer.
type call struct {
	path  string // "/sign" or "/encrypt"
	body  []byte
	check func(answer []byte) error
}

// newSocketClient is one benchmark client: at most one connection, kept between requests
// (keepAlive) or opened for each request and closed after its answer, as upstream's own
// clients do.
func newSocketClient(socket string, keepAlive bool) *http.Client {
	var d net.Dialer
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		DisableKeepAlives:   !keepAlive,
		DisableCompression:  true,
	}}
}

// do sends k over c and checks the answer; it is the same code for keyd and the bare
// server, so that the client's own cost is the same on both sides.
func (k call) do(c *http.Client) error {
	req, err := http.NewRequest(http.MethodPost, "http://aziot"+k.path+"?api-version=2021-05-01", bytes.NewReader(k.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", k.path, resp.StatusCode, data)
	}
	return k.check(data)
}

// drive runs k from c clients against socket for window, each client on its own
// connection(s), and closes them afterwards so that no idle connection outlives the round.
func drive(socket string, c int, keepAlive bool, window time.Duration, k call) (result, error) {
	clients := make([]*http.Client, c)
	for i := range clients {
		clients[i] = newSocketClient(socket, keepAlive)
	}
	defer func() {
		for _, cl := range clients {
			cl.CloseIdleConnections()
		}
	}()
	return measureEach(c, window, func(i int) func() error {
		cl := clients[i]
		return func() error { return k.do(cl) }
	})
}

// Answer checks: the signature or ciphertext field decodes and has the expected shape.
func signatureOf(answer []byte) ([]byte, error) {
	var out struct {
		Signature []byte `json:"signature"`
	}
	err := json.Unmarshal(answer, &out)
	return out.Signature, err
}

func checkHMAC(answer []byte) error {
	sig, err := signatureOf(answer)
	if err == nil && len(sig) != 32 {
		err = fmt.Errorf("HMAC of %d bytes", len(sig))
	}
	return err
}

func checkECDSA(answer []byte) error {
	sig, err := signatureOf(answer)
	if err == nil && (len(sig) < 8 || len(sig) > 72 || sig[0] != 0x30) {
		err = fmt.Errorf("ECDSA signature of %d bytes is not a P-256 DER signature", len(sig))
	}
	return err
}

func checkCiphertext(size int) func([]byte) error {
	return func(answer []byte) error {
		var out struct {
			Ciphertext []byte `json:"ciphertext"`
		}
		err := json.Unmarshal(answer, &out)
		if err == nil && len(out.Ciphertext) != size {
			err = fmt.Errorf("ciphertext of %d bytes, want %d", len(out.Ciphertext), size)
		}
		return err
	}
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
