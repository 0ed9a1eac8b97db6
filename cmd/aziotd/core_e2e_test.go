package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotbroker/aziot/internal/testenv"
)

const keydPrincipals = `
[[principal]]
uid = 1001
keys = ["dev-*", "shared"]

[[principal]]
uid = 1002
keys = ["other-?"]

[[principal]]
uid = 1001
keys = ["extra"]
`

func message(t *testing.T, r testenv.Reply) string {
	t.Helper()
	var m struct {
		Message *string `json:"message"`
	}
	if err := json.Unmarshal(r.Body, &m); err != nil || m.Message == nil {
		t.Fatalf("not an upstream error body: %s", r.Body)
	}
	var raw map[string]any
	json.Unmarshal(r.Body, &raw)
	if len(raw) != 1 {
		t.Fatalf("error body has other fields: %s", r.Body)
	}
	return *m.Message
}

// Upstream's routing, api-version and body rules (api-keys.md §1.3, §1.4).
func TestRoutingAndBodyRules(t *testing.T) {
	dir := testenv.NewStateDir(t)
	d := testenv.StartDev(t, dir)
	keyd := d.Socket("keyd")
	cases := []struct {
		name, method, url, body string
		headers                 []string
		status                  int
		msg                     string
	}{
		{"no api-version", "GET", "/key/x", "", nil, 400, "api-version not specified"},
		{"unknown api-version", "GET", "/key/x?api-version=2099-01-01", "", nil, 400, `invalid api-version "2099-01-01"`},
		{"preview is not keyd's", "GET", "/key/x?api-version=2020-09-01-preview", "", nil, 400, `invalid api-version "2020-09-01-preview"`},
		{"last api-version wins", "GET", "/key/x?api-version=bad&api-version=2020-09-01", "", nil, 400, "a parameter has an invalid value"},
		{"quoted like Rust", "GET", "/key/x?api-version=a%22b%0A", "", nil, 400, `invalid api-version "a\"b\n"`},
		{"unknown route", "GET", "/nothing?api-version=2020-09-01", "", nil, 404, "not found"},
		{"non-UTF-8 id does not route", "GET", "/key/%FF?api-version=2020-09-01", "", nil, 404, "not found"},
		{"GET on a POST route", "GET", "/key?api-version=2020-09-01", "", nil, 400, "method not allowed"},
		{"PATCH", "PATCH", "/key?api-version=2020-09-01", "", nil, 400, "method not allowed"},
		{"DELETE on /key/{id}", "DELETE", "/key/x?api-version=2020-09-01", "", nil, 400, "method not allowed"},
		{"PUT with JSON on a route without PUT", "PUT", "/keypair?api-version=2020-09-01", `{"a":1}`, nil, 400, "method not allowed"},
		{"empty PUT is a JSON EOF", "PUT", "/keypair?api-version=2020-09-01", "", nil, 422, "EOF while parsing a value at line 1 column 0"},
		{"PUT with another type", "PUT", "/keypair?api-version=2020-09-01", `{}`, []string{"Content-Type: text/plain"}, 415, "request body must be application/json"},
		{"missing body", "POST", "/key?api-version=2020-09-01", "", nil, 400, "missing request body"},
		{"non-JSON type counts as no body", "POST", "/key?api-version=2020-09-01", `{"keyId":"a","usage":"sign"}`, []string{"Content-Type: text/plain"}, 400, "missing request body"},
		{"type is case-sensitive", "POST", "/key?api-version=2020-09-01", `{"keyId":"a","usage":"sign"}`, []string{"Content-Type: Application/JSON"}, 400, "missing request body"},
		{"malformed JSON", "POST", "/key?api-version=2020-09-01", `{"keyId":`, nil, 422, "EOF while parsing a value at line 1 column 9"},
		{"wrong type", "POST", "/key?api-version=2020-09-01", `{"keyId":1,"usage":"sign"}`, nil, 422, "invalid type: number, expected a string at line 1 column 10"},
		{"missing field", "POST", "/key?api-version=2020-09-01", `{"keyId":"a"}`, nil, 422, "missing field `usage` at line 1 column 13"},
		{"usage required for import", "POST", "/key?api-version=2020-09-01", `{"keyId":"a","keyBytes":"AAAA"}`, nil, 422, "missing field `usage` at line 1 column 31"},
		{"unknown usage", "POST", "/key?api-version=2020-09-01", `{"keyId":"a","usage":"sign,fly"}`, nil, 422, `invalid value: string "sign,fly", expected a comma-separated list of derive, encrypt, sign`},
		{"unknown algorithm", "POST", "/sign?api-version=2021-05-01", `{"keyHandle":"x","algorithm":"MD5","parameters":{}}`, nil, 422, "unknown variant `MD5`, expected one of `ECDSA`, `HMAC-SHA256`"},
		{"missing parameters", "POST", "/sign?api-version=2021-05-01", `{"keyHandle":"x","algorithm":"ECDSA"}`, nil, 422, "missing field `parameters` at line 1 column 37"},
		{"bad base64", "POST", "/derivedkey?api-version=2021-05-01", `{"baseKeyHandle":"x","derivationData":"***"}`, nil, 422, "illegal base64 data at input byte 0 at line 1 column 44"},
		{"empty preferred algorithms", "POST", "/keypair?api-version=2021-05-01", `{"keyId":"kp","preferredAlgorithms":"dsa:ed25519"}`, nil, 400, "a parameter has an invalid value"},
		{"DELETE body ignored when not JSON", "DELETE", "/key?api-version=2021-05-01", `x`, []string{"Content-Type: text/plain"}, 400, "missing request body"},
		{"NUL in key ID", "POST", "/key?api-version=2021-05-01", `{"keyId":"a\u0000b","usage":"sign"}`, nil, 400, `parameter "id" has an invalid value`},
		{"NUL in path ID", "GET", "/keypair/a%00b?api-version=2021-05-01", "", nil, 400, `parameter "id" has an invalid value`},
	}
	for _, c := range cases {
		r := testenv.Curl(t, -1, keyd, c.method, c.url, c.body, c.headers...)
		if r.Status != c.status || message(t, r) != c.msg {
			t.Errorf("%s: got %v, want %d %q", c.name, r, c.status, c.msg)
		}
	}

	t.Run("body over the limit", func(t *testing.T) {
		big := `{"keyId":"` + strings.Repeat("a", 2<<20) + `","usage":"sign"}`
		f := filepath.Join(t.TempDir(), "big.json")
		os.WriteFile(f, []byte(big), 0o644)
		r := testenv.Curl(t, -1, keyd, "POST", "/key?api-version=2021-05-01", "@"+f)
		if r.Status != 413 || !strings.HasPrefix(message(t, r), "request body exceeds the limit") {
			t.Fatalf("got %v", r)
		}
	})

	t.Run("slow body gets 408", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, keyd)
		fmt.Fprintf(c, "POST /key?api-version=2021-05-01 HTTP/1.1\r\nHost: keyd.sock\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"keyId\"")
		status, body := readAnswer(t, c, 15*time.Second)
		if status != 408 || !strings.Contains(body, `"message":"timed out reading request body"`) {
			t.Fatalf("got %d %s", status, body)
		}
	})

	t.Run("slow headers are cut off", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, keyd)
		fmt.Fprintf(c, "GET /key/x?api-version=2021-05-01 HTTP/1.1\r\nHost: k")
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 512)
		start := time.Now()
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("connection still open after 20s")
				}
				break
			}
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("closed only after %v", time.Since(start))
		}
	})
}

func dialRaw(t *testing.T, socket string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readAnswer(t *testing.T, c net.Conn, within time.Duration) (int, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	var status int
	fmt.Sscanf(line, "HTTP/1.1 %d", &status)
	var body strings.Builder
	for {
		l, err := r.ReadString('\n')
		body.WriteString(l)
		if err != nil {
			break
		}
	}
	return status, body.String()
}

// Authorization by real peer credentials reproduces upstream's keyd rules (api-keys.md §2).
func TestKeydAuthorizationByUID(t *testing.T) {
	dir := testenv.NewStateDir(t)
	testenv.WriteConfig(t, dir, "keyd", "10-principals.toml", keydPrincipals)
	d := testenv.StartDev(t, dir)
	keyd := d.Socket("keyd")
	post := func(uid int, path, body string) testenv.Reply {
		return testenv.Curl(t, uid, keyd, "POST", path+"?api-version=2021-05-01", body)
	}
	denied := func(uid int, id string) string {
		return fmt.Sprintf("user %d is not authorized to access the key %s", uid, id)
	}
	cases := []struct {
		name   string
		uid    int
		path   string
		body   string
		status int
		msg    string
	}{
		{"root creates anything", 0, "/key", `{"keyId":"root-key","usage":"sign"}`, 200, ""},
		{"prefix pattern", 1001, "/key", `{"keyId":"dev-1","usage":"sign"}`, 200, ""},
		{"second entry unioned", 1001, "/keypair", `{"keyId":"extra"}`, 200, ""},
		{"exact pattern", 1001, "/key", `{"keyId":"shared","usage":"sign","keyBytes":"AAAA"}`, 200, ""},
		{"no matching pattern", 1001, "/key", `{"keyId":"prod","usage":"sign"}`, 401, denied(1001, "prod")},
		{"pattern is whole-string", 1001, "/key", `{"keyId":"xdev-1","usage":"sign"}`, 401, denied(1001, "xdev-1")},
		{"question mark is one char", 1002, "/keypair", `{"keyId":"other-1"}`, 200, ""},
		{"question mark not two", 1002, "/keypair", `{"keyId":"other-12"}`, 401, denied(1002, "other-12")},
		{"no principal", 1003, "/key", `{"keyId":"dev-1","usage":"sign"}`, 401, denied(1003, "dev-1")},
		{"authorization before NUL check", 1003, "/key", `{"keyId":"a\u0000","usage":"sign"}`, 401, "user 1003 is not authorized to access the key a\u0000"},
		{"NUL after authorization", 1001, "/key", `{"keyId":"dev-\u0000","usage":"sign"}`, 400, `parameter "id" has an invalid value`},
		{"move needs the source", 1001, "/keypair/dev-dst", `{"from":"root-kp"}`, 401, denied(1001, "root-kp")},
		{"move needs the destination", 1001, "/keypair/prod-dst", `{"from":"extra"}`, 401, denied(1001, "prod-dst")},
		{"identical move is checked first", 1003, "/keypair/same", `{"from":"same"}`, 400, "source and destination for move are identical"},
		{"key type is checked before auth", 1003, "/key/dst", `{"from":"src"}`, 400, `invalid type "key"`},
	}
	if r := post(0, "/keypair", `{"keyId":"root-kp"}`); r.Status != 200 {
		t.Fatal(r)
	}
	for _, c := range cases {
		r := post(c.uid, c.path, c.body)
		if r.Status != c.status || (c.msg != "" && message(t, r) != c.msg) {
			t.Errorf("%s: got %v, want %d %q", c.name, r, c.status, c.msg)
		}
	}
	for _, c := range []struct {
		uid    int
		id     string
		status int
	}{{1001, "dev-1", 200}, {1002, "dev-1", 401}, {1001, "dev-absent", 400}} {
		r := testenv.Curl(t, c.uid, keyd, "GET", "/key/"+c.id+"?api-version=2021-05-01", "")
		if r.Status != c.status {
			t.Errorf("GET /key/%s as %d: %v", c.id, c.uid, r)
		}
	}

	t.Run("a handle is its own authorization", func(t *testing.T) {
		r := post(1001, "/key", `{"keyId":"dev-h","usage":"sign"}`)
		var h struct{ KeyHandle string }
		json.Unmarshal(r.Body, &h)
		for _, uid := range []int{1002, 1003, 4242} {
			r := post(uid, "/sign", `{"keyHandle":"`+h.KeyHandle+`","algorithm":"HMAC-SHA256","parameters":{"message":"aGk="}}`)
			if r.Status != 200 {
				t.Errorf("sign as %d: %v", uid, r)
			}
		}
	})

	t.Run("principals are hot-reloaded", func(t *testing.T) {
		testenv.WriteConfig(t, dir, "keyd", "20-late.toml", "[[principal]]\nuid = 1003\nkeys = [\"late-*\"]\n")
		deadline := time.Now().Add(15 * time.Second)
		for {
			r := post(1003, "/key", `{"keyId":"late-1","usage":"sign"}`)
			if r.Status == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("principal not reloaded: %v", r)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("a config that does not parse keeps the old one", func(t *testing.T) {
		testenv.WriteConfig(t, dir, "keyd", "30-broken.toml", "[[principal]\nuid = ")
		deadline := time.Now().Add(15 * time.Second)
		for !d.Contains("config change refused") {
			if time.Now().After(deadline) {
				t.Fatal("broken config not reported")
			}
			time.Sleep(200 * time.Millisecond)
		}
		if r := post(1003, "/key", `{"keyId":"late-2","usage":"sign"}`); r.Status != 200 {
			t.Fatalf("old principals lost: %v", r)
		}
	})
}

// Throttling: a connection beyond max_requests for one uid is closed unanswered while
// other uids are served; the slot returns when a connection ends (api-keys.md §1.2).
func TestThrottlePerUID(t *testing.T) {
	dir := testenv.NewStateDir(t)
	testenv.WriteConfig(t, dir, "keyd", "10-limit.toml", "max_requests = 2\n")
	d := testenv.StartDev(t, dir)
	keyd := d.Socket("keyd")
	h := holdAs(t, 1001, keyd, 2)

	if r, err := testenv.CurlResult(1001, keyd, "GET", "/key/x?api-version=2021-05-01", ""); err == nil {
		t.Fatalf("third connection of uid 1001 was answered: %v", r)
	}
	if r, err := testenv.CurlResult(1002, keyd, "GET", "/key/x?api-version=2021-05-01", ""); err != nil || r.Status != 401 {
		t.Fatalf("uid 1002 not served: %v %v", r, err)
	}
	if !d.Contains("Max simultaneous connections reached for user 1001") {
		t.Fatalf("no log line:\n%s", d.Stderr())
	}
	h.release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := testenv.CurlResult(1001, keyd, "GET", "/key/x?api-version=2021-05-01", "")
		if err == nil && r.Status == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slots not returned: %v %v", r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Socket activation: systemd-socket-activate hands aziotd its sockets, for the dev mode
// (several, matched by name) and for one service called as aziot-keyd (one, fd 3).
func TestSocketActivation(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatal("systemd-socket-activate is required (Debian package systemd)")
	}
	bin := testenv.Aziotd(t)

	t.Run("dev mode with named sockets", func(t *testing.T) {
		dir := testenv.NewStateDir(t)
		run := filepath.Join(dir, "run")
		os.MkdirAll(run, 0o755)
		cmd := exec.Command(activate, "-l", filepath.Join(run, "keyd.sock"), "-l", filepath.Join(run, "certd.sock"),
			"--fdname=keyd:certd", bin, "dev", "--state-dir", dir)
		log := startActivated(t, cmd, filepath.Join(run, "certd.sock"))
		r := testenv.Curl(t, -1, filepath.Join(run, "keyd.sock"), "POST", "/key?api-version=2021-05-01", `{"keyId":"a","usage":"sign"}`)
		if r.Status != 200 {
			t.Fatal(r)
		}
		waitLog(t, log, "serving the socket passed by systemd socket activation")
	})

	t.Run("aziot-keyd with one socket", func(t *testing.T) {
		dir := testenv.NewStateDir(t)
		link := filepath.Join(dir, "aziot-keyd")
		if err := os.Symlink(bin, link); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(dir, "keyd.toml")
		// Every path the service would take from the packaged defaults stays in the test dir.
		os.WriteFile(cfg, []byte(fmt.Sprintf("[aziot_keys]\nhomedir_path = %q\n\n[broker]\npolicy_dir = %q\npolicy_bundle_dir = %q\npolicy_state_dir = %q\n",
			filepath.Join(dir, "home"), filepath.Join(dir, "policy.d"), filepath.Join(dir, "bundles"), filepath.Join(dir, "policy-state"))), 0o600)
		sock := filepath.Join(dir, "keyd.sock")
		// systemd-socket-activate passes only the variables named with -E.
		cmd := exec.Command(activate, "-l", sock, "-E", "AZIOT_KEYD_CONFIG="+cfg, "-E", "AZIOT_KEYD_CONFIG_DIR="+filepath.Join(dir, "none"), link)
		log := startActivated(t, cmd, sock)
		r := testenv.Curl(t, -1, sock, "POST", "/keypair?api-version=2021-05-01", `{"keyId":"kp"}`)
		if r.Status != 200 {
			t.Fatal(r)
		}
		waitLog(t, log, "serving the socket passed by systemd socket activation")
		if _, err := os.Stat(filepath.Join(dir, "home", "keys")); err != nil {
			t.Fatalf("key not stored in the configured homedir: %v", err)
		}
	})
}

func startActivated(t *testing.T, cmd *exec.Cmd, lastSocket string) *syncLog {
	t.Helper()
	log := &syncLog{}
	cmd.Stderr = log
	cmd.Stdout = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(lastSocket); err == nil {
			return log
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket not created: %s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitLog(t *testing.T, log *syncLog, sub string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), sub) {
		if time.Now().After(deadline) {
			t.Fatalf("log lacks %q:\n%s", sub, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
