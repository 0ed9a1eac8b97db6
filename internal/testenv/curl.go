package testenv

import (
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Reply is an answer seen by curl.
type Reply struct {
	Status int
	Body   []byte
}

func (r Reply) String() string { return fmt.Sprintf("%d %s", r.Status, r.Body) }

// Curl sends a request with `curl --unix-socket` as the given uid (and gid = uid); uid
// -1 runs it as the test's own user. body "" sends none; a body gets the JSON type
// unless headers name another.
func Curl(t testing.TB, uid int, socket, method, url, body string, headers ...string) Reply {
	t.Helper()
	r, err := CurlResult(uid, socket, method, url, body, headers...)
	if err != nil {
		t.Fatalf("%s %s as uid %d: %v", method, url, uid, err)
	}
	return r
}

// CurlResult is Curl that returns transport failures (curl's exit status) instead of
// failing the test: a connection closed without an answer is such a failure.
func CurlResult(uid int, socket, method, url, body string, headers ...string) (Reply, error) {
	args := []string{"-sS", "--max-time", "20", "--unix-socket", socket, "-X", method, "-o", "-", "-w", "\n%{http_code}"}
	if body != "" {
		args = append(args, "--data-binary", body)
		if !hasHeader(headers, "Content-Type") {
			args = append(args, "-H", "Content-Type: application/json")
		}
	}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	args = append(args, "http://localhost"+url)
	cmd := exec.Command("curl", args...)
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Reply{}, fmt.Errorf("curl: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	i := bytes.LastIndexByte(out, '\n')
	status, err := strconv.Atoi(strings.TrimSpace(string(out[i+1:])))
	if err != nil {
		return Reply{}, fmt.Errorf("curl output %q", out)
	}
	return Reply{Status: status, Body: out[:i]}, nil
}

func hasHeader(hs []string, name string) bool {
	for _, h := range hs {
		if strings.HasPrefix(strings.ToLower(h), strings.ToLower(name)+":") {
			return true
		}
	}
	return false
}
