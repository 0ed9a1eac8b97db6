package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/iotbroker/aziot/internal/testenv"
	"github.com/iotbroker/aziot/policy"
)

// Child mode of the test binary (run before TestMain): send AZIOT_FLOOD_N requests
// `POST /key` with distinct keyIds of AZIOT_FLOOD_SIZE bytes to AZIOT_FLOOD_SOCKET over
// one keep-alive connection, and print "status <code> <count>" per status seen. The
// body is built here: 1 MB does not fit in an argument or an environment variable.
func init() {
	if os.Getenv("AZIOT_FLOOD_SOCKET") != "" {
		os.Exit(floodChild())
	}
}

func floodChild() int {
	socket := os.Getenv("AZIOT_FLOOD_SOCKET")
	n, _ := strconv.Atoi(os.Getenv("AZIOT_FLOOD_N"))
	size, _ := strconv.Atoi(os.Getenv("AZIOT_FLOOD_SIZE"))
	prefix := os.Getenv("AZIOT_FLOOD_PREFIX")
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 1,
	}}
	fill := strings.Repeat("k", size)
	counts := map[int]int{}
	for i := 0; i < n; i++ {
		body := fmt.Sprintf(`{"keyId":"%s-%06d-%s","usage":"sign"}`, prefix, i, fill)
		resp, err := client.Post("http://keyd.sock/key?api-version=2021-05-01", "application/json", strings.NewReader(body))
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		counts[resp.StatusCode]++
	}
	for code, c := range counts {
		fmt.Printf("status %d %d\n", code, c)
	}
	return 0
}

// flood runs floodChild as uid (no principal) and returns the count per status.
func flood(t *testing.T, socket string, uid uint32, prefix string, n, size int) map[int]int {
	t.Helper()
	cmd := exec.Command(childBinary(t))
	cmd.Env = append(os.Environ(), "AZIOT_FLOOD_SOCKET="+socket, "AZIOT_FLOOD_N="+strconv.Itoa(n),
		"AZIOT_FLOOD_SIZE="+strconv.Itoa(size), "AZIOT_FLOOD_PREFIX="+prefix)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("flood child: %v: %s", err, out)
	}
	counts := map[int]int{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var code, c int
		if _, err := fmt.Sscanf(sc.Text(), "status %d %d", &code, &c); err != nil {
			t.Fatalf("flood child said %q", sc.Text())
		}
		counts[code] = c
	}
	return counts
}

// vmRSS reads a process's resident set size in bytes from /proc.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS line %q", line)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// A uid without a principal sends 300 denied `POST /key` with distinct ~1 MB key IDs.
// Before the decision cache was keyed on a hash of the input, each denial kept its whole
// input in the cache and aziotd grew from 22 MiB to 530 MiB; now its resident size
// stays within 100 MiB of what it was before the flood.
func TestPolicyCacheFloodKeepsMemoryBounded(t *testing.T) {
	dir := testenv.NewStateDir(t)
	d := testenv.StartDev(t, dir)
	socket := d.Socket("keyd")
	var st policy.Status
	b, err := os.ReadFile(filepath.Join(dir, "lib", "keyd", "policy", "status.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil || st.PID <= 0 {
		t.Fatalf("status.json: %v %s", err, b)
	}
	const uid = 4242 // no principal in the dev config
	const size = 1000000
	// Warm up: the buffers that any 1 MB request needs are counted in the baseline.
	if c := flood(t, socket, uid, "warm", 5, size); c[401] != 5 {
		t.Fatalf("warm-up statuses %v, want 5 × 401", c)
	}
	base := vmRSS(t, st.PID)
	c := flood(t, socket, uid, "flood", 300, size)
	if c[401] != 300 {
		t.Fatalf("statuses %v, want 300 × 401", c)
	}
	after := vmRSS(t, st.PID)
	t.Logf("aziotd VmRSS: %d MiB before the flood, %d MiB after", base>>20, after>>20)
	if after-base > 100<<20 {
		t.Fatalf("aziotd grew by %d MiB under 300 denied 1 MB requests", (after-base)>>20)
	}
}
