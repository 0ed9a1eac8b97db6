package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Child modes: the test binary re-executes itself under another uid to act as a client
// whose peer credentials are real (SPIRE's peertracker tests do the same).
func TestMain(m *testing.M) {
	switch os.Getenv("AZIOT_TEST_CHILD") {
	case "hold":
		holdConnections()
		return
	case "denials":
		sendDenials()
		return
	}
	os.Exit(m.Run())
}

// holdConnections opens AZIOT_TEST_N connections to AZIOT_TEST_SOCKET, says "held" and
// keeps them until its stdin closes.
func holdConnections() {
	n, _ := strconv.Atoi(os.Getenv("AZIOT_TEST_N"))
	var conns []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.Dial("unix", os.Getenv("AZIOT_TEST_SOCKET"))
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		conns = append(conns, c)
	}
	fmt.Println("held")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}

var childBin string

// childBinary copies the test binary where other uids can execute it.
func childBinary(t *testing.T) string {
	t.Helper()
	if childBin != "" {
		return childBin
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "aziotd-child-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	childBin = filepath.Join(dir, "child")
	if err := os.WriteFile(childBin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return childBin
}

// holder is a child process holding connections as some uid.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

func holdAs(t *testing.T, uid int, socket string, n int) *holder {
	t.Helper()
	cmd := exec.Command(childBinary(t))
	cmd.Env = append(os.Environ(), "AZIOT_TEST_CHILD=hold", "AZIOT_TEST_SOCKET="+socket, "AZIOT_TEST_N="+strconv.Itoa(n))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "held\n" {
		t.Fatalf("holder: %q", line)
	}
	h := &holder{cmd: cmd, stdin: stdin}
	t.Cleanup(h.release)
	return h
}

func (h *holder) release() {
	if h.cmd == nil {
		return
	}
	h.stdin.Close()
	h.cmd.Wait()
	h.cmd = nil
}

// sendDenials sends AZIOT_TEST_N `GET /key/x` on one keep-alive connection to
// AZIOT_TEST_SOCKET and prints the statuses as "<status> x<count>" (one group per status).
func sendDenials() {
	n, _ := strconv.Atoi(os.Getenv("AZIOT_TEST_N"))
	c, err := net.Dial("unix", os.Getenv("AZIOT_TEST_SOCKET"))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	r := bufio.NewReader(c)
	counts := map[int]int{}
	for i := 0; i < n; i++ {
		fmt.Fprint(c, "GET /key/x?api-version=2021-05-01 HTTP/1.1\r\nHost: keyd.sock\r\n\r\n")
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		counts[resp.StatusCode]++
	}
	var parts []string
	for status, k := range counts {
		parts = append(parts, fmt.Sprintf("%d x%d", status, k))
	}
	sort.Strings(parts)
	fmt.Println(strings.Join(parts, ", "))
}

// runAs runs sendDenials as uid and returns what it printed.
func runAs(t *testing.T, uid int, socket string, n int) string {
	t.Helper()
	cmd := exec.Command(childBinary(t))
	cmd.Env = append(os.Environ(), "AZIOT_TEST_CHILD=denials", "AZIOT_TEST_SOCKET="+socket, "AZIOT_TEST_N="+strconv.Itoa(n))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}
