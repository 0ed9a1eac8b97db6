package bench

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
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

// rounds of keyd and of the bare server per configuration, interleaved, so that a burst
// of other load on this shared machine hits both sides of a ratio alike. Single rounds
// of one configuration moved by ±15 % here; five give a median that a single burst cannot
// move. BENCH_ROUNDS changes it (odd, so the median is a round's).
var rounds = func() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 5
}()

// connModes: one persistent connection per client, or a new connection per request as
// upstream's own clients make them.
var connModes = []struct {
	name      string
	keepAlive bool
}{{"keep-alive", true}, {"new-conn", false}}

// row is one configuration's figures, the medians of its rounds; bench/results.json holds
// them so that README's table can be regenerated.
type row struct {
	Op          string    `json:"op"`
	Clients     int       `json:"clients"`
	Connection  string    `json:"connection"`
	BrokerRPS   float64   `json:"broker_rps"`
	BareRPS     float64   `json:"bare_rps"`
	Ratio       float64   `json:"ratio"`        // median of the rounds' keyd/bare req/s
	RatioRounds []float64 `json:"ratio_rounds"` // each round's, for the spread
	P50us       float64   `json:"p50_us"`
	P99us       float64   `json:"p99_us"`
	BareP50us   float64   `json:"bare_p50_us"`
	BareP99us   float64   `json:"bare_p99_us"`
	P99Ratio    float64   `json:"p99_ratio"` // median of the rounds' keyd/bare p99
	InProcOps   float64   `json:"inproc_ops"`
}

type results struct {
	Machine     string `json:"machine"`
	Go          string `json:"go"`
	Commit      string `json:"commit"` // what keyd was built from; "+dirty" with local changes
	Window      string `json:"window"`
	Rounds      int    `json:"rounds"`
	MaxRequests int    `json:"max_requests"`
	LoadBefore  string `json:"loadavg_before"` // /proc/loadavg: other work on the machine
	LoadAfter   string `json:"loadavg_after"`
	Rows        []row  `json:"configurations"`
}

// BenchmarkBroker measures keyd's /sign through its socket against the bare server
// (bench/cmd/bare: net/http, the same JSON and the same crypto with keys in memory, no
// authorization) with the same client code and the same request bodies, at 1, 8 and 64
// clients, each keeping one connection or opening one per request. Each configuration
// runs rounds×(keyd, bare) of the -benchtime window each; it reports the medians and the
// keyd/bare ratios, prints README's table and writes results.json. The same crypto
// in-process is measured beside it. BENCH_OPS=hmac,ecdsa,aead adds AEAD /encrypt.
func BenchmarkBroker(b *testing.B) {
	window := measureWindow()
	res := results{
		Machine: fmt.Sprintf("%d CPUs (%s), GOMAXPROCS %d, %s/%s", runtime.NumCPU(), cpuModel(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH),
		Go:      runtime.Version(), Commit: commit(), Window: window.String(), Rounds: rounds, MaxRequests: benchMaxRequests,
		LoadBefore: loadavg(),
	}
	dir := testenv.NewStateDir(b)
	testenv.WriteConfig(b, dir, "keyd", "50-bench.toml", fmt.Sprintf("max_requests = %d\n", benchMaxRequests))
	d := testenv.StartDev(b, dir)
	keydSocket := d.Socket("keyd")
	bare := startBare(b)
	// Printed, not logged: a parent benchmark's log shows only with -v.
	fmt.Printf("machine: %s, %s, commit %s; load average before: %s\nkeyd max_requests raised to %d in config.d (dev default 10, upstream's) so that 64 concurrent clients are served\neach configuration: %d interleaved rounds of keyd and bare, %v each; clients, bare server and in-process work share this machine with aziotd\n",
		res.Machine, res.Go, res.Commit, res.LoadBefore, benchMaxRequests, rounds, window)

	ctx := context.Background()
	setup := keys.New(keydSocket)
	hmacKey := bytes.Repeat([]byte{0x5a}, 32)
	hmacHandle, err := setup.ImportKey(ctx, "bench-hmac", hmacKey, "sign")
	if err != nil {
		b.Fatal(err)
	}
	ecHandle, err := setup.CreateKeyPair(ctx, "bench-ecdsa", "ec-p256")
	if err != nil {
		b.Fatal(err)
	}
	aeadHandle, err := setup.CreateKey(ctx, "bench-aead", "encrypt")
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
	iv, aad, plaintext := bytes.Repeat([]byte{1}, 12), []byte("bench"), bytes.Repeat([]byte{2}, 64)

	type op struct {
		name   string
		call   call // sent as is to both servers; the bare server ignores the handle
		inProc func() error
	}
	ops := []op{
		{"hmac", call{"/sign", signBody(hmacHandle, keys.AlgHMACSHA256, "message", message), checkHMAC}, func() error {
			mac := hmac.New(sha256.New, hmacKey)
			mac.Write(message)
			mac.Sum(nil)
			return nil
		}},
		{"ecdsa", call{"/sign", signBody(ecHandle, keys.AlgECDSA, "digest", digest[:]), checkECDSA}, func() error {
			_, err := ecdsa.SignASN1(rand.Reader, ecKey, digest[:])
			return err
		}},
		{"aead", call{"/encrypt", encryptBody(aeadHandle, iv, aad, plaintext), checkCiphertext(1 + len(plaintext) + 16)}, func() error {
			block, err := aes.NewCipher(hmacKey)
			if err != nil {
				return err
			}
			gcm, err := cipher.NewGCMWithNonceSize(block, len(iv))
			if err != nil {
				return err
			}
			gcm.Seal(nil, iv, plaintext, aad)
			return nil
		}},
	}
	want := strings.Split(orDefault(os.Getenv("BENCH_OPS"), "hmac,ecdsa"), ",")
	ops = slices.DeleteFunc(ops, func(o op) bool { return !slices.Contains(want, o.name) })

	for _, o := range ops {
		for _, c := range concurrency {
			var inProc float64
			b.Run(fmt.Sprintf("%s/c=%d/in-process", o.name, c), func(b *testing.B) {
				r, err := measure(c, window, o.inProc)
				if err != nil {
					b.Fatal(err)
				}
				r.report(b)
				inProc = r.rate()
			})
			for _, m := range connModes {
				b.Run(fmt.Sprintf("%s/c=%d/%s", o.name, c, m.name), func(b *testing.B) {
					var keydRounds, bareRounds []result
					for range rounds {
						for _, side := range []struct {
							socket string
							into   *[]result
						}{{keydSocket, &keydRounds}, {bare.socket, &bareRounds}} {
							r, err := drive(side.socket, c, m.keepAlive, window, o.call)
							if err != nil {
								b.Fatalf("%s: %v", side.socket, err)
							}
							*side.into = append(*side.into, r)
						}
					}
					rw := summarize(keydRounds, bareRounds)
					rw.Op, rw.Clients, rw.Connection, rw.InProcOps = o.name, c, m.name, inProc
					b.ReportMetric(rw.BrokerRPS, "req/s")
					b.ReportMetric(rw.BareRPS, "bare-req/s")
					b.ReportMetric(rw.Ratio, "keyd/bare")
					b.ReportMetric(rw.P50us, "p50-µs")
					b.ReportMetric(rw.P99us, "p99-µs")
					b.ReportMetric(rw.BareP99us, "bare-p99-µs")
					b.ReportMetric(rw.P99Ratio, "p99-keyd/bare")
					b.ReportMetric(1e9/rw.BrokerRPS, "ns/op")
					res.Rows = append(res.Rows, rw)
				})
			}
		}
	}
	res.LoadAfter = loadavg()
	fmt.Printf("load average after: %s\n%s\n", res.LoadAfter, table(res.Rows))
	out, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile("results.json", append(out, '\n'), 0o644); err != nil {
		b.Error(err)
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// summarize takes the medians of each side's rounds and of the rounds' ratios: each keyd
// round is paired with the bare round that followed it.
func summarize(keydRounds, bareRounds []result) row {
	var rw row
	var rps, bareRPS, ratio, p50, p99, bareP50, bareP99, p99Ratio []float64
	for i, k := range keydRounds {
		bb := bareRounds[i]
		rps, bareRPS = append(rps, k.rate()), append(bareRPS, bb.rate())
		ratio = append(ratio, k.rate()/bb.rate())
		rw.RatioRounds = append(rw.RatioRounds, round2(k.rate()/bb.rate()))
		p50, p99 = append(p50, us(k.p50)), append(p99, us(k.p99))
		bareP50, bareP99 = append(bareP50, us(bb.p50)), append(bareP99, us(bb.p99))
		p99Ratio = append(p99Ratio, float64(k.p99)/float64(bb.p99))
	}
	rw.BrokerRPS, rw.BareRPS = median(rps), median(bareRPS)
	rw.Ratio = round2(median(ratio))
	rw.P50us, rw.P99us, rw.BareP50us, rw.BareP99us = median(p50), median(p99), median(bareP50), median(bareP99)
	rw.P99Ratio = round2(median(p99Ratio))
	return rw
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// table renders rows as README's performance table.
func table(rows []row) string {
	var sb strings.Builder
	sb.WriteString("| op | clients | connection | keyd req/s | p50 µs | p99 µs | bare req/s | bare p99 µs | keyd/bare (rounds) | p99 keyd/bare | in-process op/s |\n|---|--:|---|--:|--:|--:|--:|--:|---|--:|--:|\n")
	for _, r := range rows {
		spread := make([]string, len(r.RatioRounds))
		for i, x := range r.RatioRounds {
			spread[i] = fmt.Sprintf("%.2f", x)
		}
		fmt.Fprintf(&sb, "| %s | %d | %s | %.0f | %.0f | %.0f | %.0f | %.0f | **%.2f** (%s) | %.2f | %.0f |\n",
			r.Op, r.Clients, r.Connection, r.BrokerRPS, r.P50us, r.P99us, r.BareRPS, r.BareP99us,
			r.Ratio, strings.Join(spread, ", "), r.P99Ratio, r.InProcOps)
	}
	return sb.String()
}

// commit is the repository's HEAD, "+dirty" when files differ from it: other engineers'
// uncommitted work changes what is measured.
func commit() string {
	git := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = testenv.RepoRoot()
		out, _ := cmd.Output()
		return strings.TrimSpace(string(out))
	}
	c := git("rev-parse", "--short", "HEAD")
	if git("status", "--porcelain", "--untracked-files=no") != "" {
		c += "+dirty"
	}
	return c
}

// loadavg is the 1, 5 and 15 minute load average: what else ran on the machine.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}
