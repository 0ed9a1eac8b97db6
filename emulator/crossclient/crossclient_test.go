package crossclient

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotbroker/aziot/emulator"
)

const (
	scope    = "0ne00000C0C"
	dpsHost  = "127.6.0.1"
	hubHost  = "127.6.0.2"
	hub2Host = "127.6.0.3"
	altDPS   = "127.6.0.4"
	indivKey = "dGhpcy1pcy1hLXRlc3Qta2V5LWZvci1kcHMtc2FzLXRva2Vucw=="
	groupKey = "dGhpcy1pcy1hLXRlc3QtZ3JvdXAtZW5yb2xsbWVudC1rZXktZm9yLWRwcy14eXo="
)

// nodeEnv finds node and the installed packages; their absence fails the suite
// (.ci/run installs them: npm ci in every folder with a committed lock file).
func nodeEnv(t *testing.T) (string, string) {
	t.Helper()
	node, err := exec.LookPath("node")
	dir, _ := filepath.Abs("testdata")
	_, statErr := os.Stat(filepath.Join(dir, "node_modules", "azure-iot-provisioning-device-http"))
	if err != nil || statErr != nil {
		t.Fatalf("node (%v) or the npm packages (%v) missing: run npm ci in %s (as .ci/run does)", err, statErr, dir)
	}
	return node, dir
}

type suite struct {
	t    *testing.T
	e    *emulator.Emulator
	node string
	dir  string
	ca   string
}

func start(t *testing.T, cfg emulator.Config) *suite {
	t.Helper()
	node, dir := nodeEnv(t)
	cfg.RetryAfter = 1
	e, err := emulator.Start(cfg)
	if err != nil {
		t.Fatalf("start emulator on port 443 (needs root or a lowered ip_unprivileged_port_start): %v", err)
	}
	t.Cleanup(e.Stop)
	ca, err := e.RootCAPath()
	if err != nil {
		t.Fatal(err)
	}
	return &suite{t: t, e: e, node: node, dir: dir, ca: ca}
}

type nodeResult struct {
	OK           bool                       `json:"ok"`
	Name         string                     `json:"name"`
	Message      string                     `json:"message"`
	State        map[string]any             `json:"state"`
	Steps        map[string]json.RawMessage `json:"steps"`
	ResponseBody any                        `json:"responseBody"`
}

func (s *suite) run(cmd map[string]any) nodeResult {
	s.t.Helper()
	b, _ := json.Marshal(cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, s.node, "run.js", string(b))
	c.Dir = s.dir
	c.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+s.ca)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	var res nodeResult
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &res); jerr != nil {
		s.t.Fatalf("node output not JSON (%v, exit %v): %s\nstderr: %s", jerr, err, out, stderr.String())
	}
	return res
}

func baseConfig() emulator.Config {
	return emulator.Config{
		DPSAddr:  dpsHost + ":443",
		ESTAddr:  "off",
		IDScopes: []string{scope},
		Hubs:     []emulator.HubConfig{{Name: hubHost, Addr: hubHost + ":443"}, {Name: hub2Host, Addr: hub2Host + ":443"}},
	}
}

func derive(t *testing.T, key, id string) string {
	k, err := emulator.DeriveGroupKey(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestNodeSuite runs cases 1-5 of emulator.md §7 against one emulator on port 443.
func TestNodeSuite(t *testing.T) {
	s := start(t, baseConfig())
	e := s.e
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.AddEnrollment(emulator.Enrollment{Attestation: emulator.AttestSymmetric, ID: "node-sym", PrimaryKey: indivKey}))
	must(e.AddEnrollment(emulator.Enrollment{Attestation: emulator.AttestSymmetric, Group: true, ID: "node-group", PrimaryKey: groupKey, Hubs: []string{hub2Host}}))
	e.AddFault(emulator.Fault{Kind: emulator.FaultAssignAfter, Polls: 3})

	t.Run("1 symmetric individual and group, then device-http", func(t *testing.T) {
		for _, tc := range []struct{ regID, key, hub string }{
			{"node-sym", indivKey, hubHost},
			{"node-grp-1", derive(t, groupKey, "node-grp-1"), hub2Host},
		} {
			r := s.run(map[string]any{"op": "register", "host": dpsHost, "scope": scope, "regId": tc.regID, "key": tc.key})
			if !r.OK || r.State["status"] != "assigned" || r.State["assignedHub"] != tc.hub || r.State["deviceId"] != tc.regID {
				t.Fatalf("register %s: %+v", tc.regID, r)
			}
			r = s.run(map[string]any{"op": "send", "host": r.State["assignedHub"], "deviceId": r.State["deviceId"], "key": tc.key})
			if !r.OK || e.TelemetryCount(tc.hub, tc.regID, "") != 1 {
				t.Fatalf("sendEvent %s: %+v", tc.regID, r)
			}
		}
		// A device token built upstream-style (lower-case raw sr) works with
		// Client.fromSharedAccessSignature as well.
		raw, _ := base64.StdEncoding.DecodeString(indivKey)
		tok := emulator.BuildSAS(raw, strings.ToLower(hubHost+"/devices/node-sym"), time.Now().Add(time.Hour).Unix(), "")
		if r := s.run(map[string]any{"op": "send", "sas": tok}); !r.OK || e.TelemetryCount(hubHost, "node-sym", "") != 2 {
			t.Fatalf("fromSharedAccessSignature with an upstream-style token: %+v", r)
		}
		// What the Node client sent: api-version 2019-03-31, case-kept sr, a {} body on polls.
		polls := 0
		for _, le := range e.Log() {
			if le.Listener == "dps" && le.Route == "operation" && strings.Contains(le.Path, "node-sym") {
				polls++
				if le.Body != "{}" || !strings.Contains(le.Query, "api-version=2019-03-31") || le.Auth.SR != scope+"/registrations/node-sym" {
					t.Fatalf("unexpected Node poll: %+v", le)
				}
			}
		}
		if polls != 4 {
			t.Fatalf("%d Node polls, want 4 (assign_after=3)", polls)
		}
	})

	t.Run("2 x509 individual and group, then device-http", func(t *testing.T) {
		self, selfKey, err := emulator.NewSelfSigned("node-x509", time.Hour)
		must(err)
		groupCA, err := e.PKI().Root.NewIntermediate("node group CA")
		must(err)
		must(e.AddEnrollment(emulator.Enrollment{Attestation: emulator.AttestX509, ID: "node-x509", PrimaryCertPEM: string(emulator.CertPEM(self))}))
		must(e.AddEnrollment(emulator.Enrollment{Attestation: emulator.AttestX509, Group: true, ID: "node-xgroup", SigningCertPEM: string(emulator.CertPEM(groupCA.Cert))}))
		gLeaf, gKey, err := groupCA.IssueLeaf("node-x509-grp", time.Hour, nil, nil)
		must(err)
		for _, tc := range []struct {
			regID, cert string
			key         crypto.Signer
		}{
			{"node-x509", string(emulator.CertPEM(self)), selfKey},
			{"node-x509-grp", string(emulator.CertPEM(gLeaf, groupCA.Cert)), gKey},
		} {
			kp, err := emulator.KeyPEM(tc.key)
			must(err)
			r := s.run(map[string]any{"op": "register", "host": dpsHost, "scope": scope, "regId": tc.regID, "cert": tc.cert, "key": string(kp)})
			if !r.OK || r.State["status"] != "assigned" {
				t.Fatalf("x509 register %s: %+v", tc.regID, r)
			}
			r = s.run(map[string]any{"op": "send", "host": r.State["assignedHub"], "deviceId": tc.regID, "cert": tc.cert, "key": string(kp)})
			if !r.OK {
				for _, le := range e.Log() {
					t.Logf("%s %s %s %d %v %s", le.Listener, le.Method, le.Path, le.Status, le.ClientCert, le.ResponseBody)
				}
				t.Fatalf("x509 sendEvent %s: %+v", tc.regID, r)
			}
		}
		// A chain the group does not validate: 401.
		stranger, _ := emulator.NewRootCA("stranger")
		sLeaf, sKey, _ := stranger.IssueLeaf("node-x509-grp", time.Hour, nil, nil)
		kp, _ := emulator.KeyPEM(sKey)
		r := s.run(map[string]any{"op": "register", "host": dpsHost, "scope": scope, "regId": "node-x509-grp", "cert": string(emulator.CertPEM(sLeaf)), "key": string(kp)})
		if r.OK || r.Name != "UnauthorizedError" {
			t.Fatalf("bad chain must give UnauthorizedError: %+v", r)
		}
	})

	t.Run("3 azure-iothub registry", func(t *testing.T) {
		r := s.run(map[string]any{"op": "registry", "host": hubHost, "policyKey": e.PolicyKey(hubHost, "iothubowner"), "deviceId": "node-reg-dev"})
		if !r.OK {
			t.Fatalf("registry run: %+v", r)
		}
		want := map[string]string{"create": "ok", "createAgain": "DeviceAlreadyExistsError", "get": "ok", "addM1": "ok", "addM2": "ok",
			"list": "ok", "update": "ok", "stale": "InvalidEtagError", "force": "ok", "removeM2": "ok", "delete": "ok", "getAfterDelete": "DeviceNotFoundError"}
		for k, w := range want {
			var st nodeResult
			if err := json.Unmarshal(r.Steps[k], &st); err != nil {
				t.Fatalf("step %s missing: %s", k, r.Steps[k])
			}
			got := "ok"
			if !st.OK {
				got = st.Name
			}
			if got != w {
				t.Errorf("step %s: got %s, want %s (%s)", k, got, w, r.Steps[k])
			}
		}
		var list struct {
			R []map[string]any `json:"r"`
		}
		_ = json.Unmarshal(r.Steps["list"], &list)
		if len(list.R) != 2 || list.R[0]["generationId"] == "" {
			t.Fatalf("module list: %s", r.Steps["list"])
		}
		quoted := 0
		for _, le := range e.Log() {
			if im := le.Headers["If-Match"]; strings.HasPrefix(im, `"`) && strings.HasSuffix(im, `"`) {
				quoted++
			}
		}
		if quoted < 3 {
			t.Fatalf("azure-iothub should send quoted If-Match (%d seen)", quoted)
		}
	})

	t.Run("4 upstream-style modules seen by azure-iothub, module token accepted", func(t *testing.T) {
		hc := goClient(t, e)
		tok := func() string {
			raw, _ := base64.StdEncoding.DecodeString(indivKey)
			return emulator.BuildSAS(raw, strings.ToLower(hubHost+"/devices/node-sym"), time.Now().Add(30*time.Second).Unix(), "")
		}
		// Upstream: create (no If-Match) then set derived keys with If-Match: *.
		r := do(t, hc, "PUT", "https://"+hubHost+"/devices/node-sym/modules/hostmod?api-version=2017-11-08-preview", tok(), "", `{"moduleId":"hostmod","deviceId":"node-sym"}`)
		var m emulator.Module
		_ = json.Unmarshal(r, &m)
		master := []byte("local-master-key-for-module-derivation")
		mac := hmac.New(sha256.New, master)
		mac.Write([]byte("hostmod" + m.GenerationID))
		derived := base64.StdEncoding.EncodeToString(mac.Sum(nil))
		do(t, hc, "PUT", "https://"+hubHost+"/devices/node-sym/modules/hostmod?api-version=2017-11-08-preview", tok(), "*",
			`{"moduleId":"hostmod","deviceId":"node-sym","authentication":{"symmetricKey":{"primaryKey":"`+derived+`","secondaryKey":"`+derived+`"},"type":"sas"}}`)
		res := s.run(map[string]any{"op": "registry", "mode": "list", "host": hubHost, "policyKey": e.PolicyKey(hubHost, "iothubowner"), "deviceId": "node-sym"})
		var list struct {
			R []map[string]any `json:"r"`
		}
		_ = json.Unmarshal(res.Steps["list"], &list)
		if len(list.R) != 1 || list.R[0]["generationId"] != m.GenerationID || list.R[0]["authentication"].(map[string]any)["type"] != "sas" {
			t.Fatalf("azure-iothub module list: %s", res.Steps["list"])
		}
		raw, _ := base64.StdEncoding.DecodeString(derived)
		sr := url.QueryEscape(hubHost + "/devices/node-sym/modules/hostmod")
		modTok := emulator.BuildSAS(raw, sr, time.Now().Add(time.Minute).Unix(), "")
		do(t, hc, "POST", "https://"+hubHost+"/devices/node-sym/modules/hostmod/messages/events?api-version=2021-04-12", modTok, "", "x")
		if e.TelemetryCount(hubHost, "node-sym", "hostmod") != 1 {
			t.Fatal("module telemetry not accepted")
		}
	})

	t.Run("5 negatives", func(t *testing.T) {
		e.ClearFaults()
		cases := []struct {
			name  string
			cmd   map[string]any
			setup func()
			want  string
		}{
			{"wrong key", map[string]any{"regId": "node-sym", "key": groupKey}, nil, "UnauthorizedError"},
			{"throttled (429 with DPS error body)", map[string]any{"regId": "node-sym", "key": indivKey}, func() {
				e.AddFault(emulator.Fault{Kind: emulator.FaultThrottle, Endpoint: "dps", RetryAfter: 1, Next: 1})
			}, "ThrottlingError"},
			{"sr for another registration", map[string]any{"regId": "node-sym", "tokenRegId": "node-grp-1", "key": derive(t, groupKey, "node-grp-1")}, nil, "UnauthorizedError"},
			{"expired se", map[string]any{"regId": "node-sym", "key": indivKey}, func() { e.SetClockOffset(2 * time.Hour) }, "UnauthorizedError"},
			{"disabled enrollment", map[string]any{"regId": "node-sym", "key": indivKey}, func() {
				e.SetClockOffset(0)
				must(e.DisableEnrollment("", false, "node-sym", true))
			}, "disabled"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				if tc.setup != nil {
					tc.setup()
				}
				cmd := map[string]any{"op": "register", "host": dpsHost, "scope": scope}
				for k, v := range tc.cmd {
					cmd[k] = v
				}
				r := s.run(cmd)
				if r.OK {
					t.Fatalf("registration must fail: %+v", r)
				}
				if tc.want == "disabled" {
					last := e.Log()[len(e.Log())-1]
					if !strings.Contains(last.ResponseBody, `"status":"disabled"`) {
						t.Fatalf("last answer %s; Node error %+v", last.ResponseBody, r)
					}
					return
				}
				if r.Name != tc.want {
					t.Fatalf("got %s (%s), want %s", r.Name, r.Message, tc.want)
				}
			})
		}
		// Device client with a wrong key: 401 → UnauthorizedError.
		r := s.run(map[string]any{"op": "send", "host": hubHost, "deviceId": "node-sym", "key": groupKey, "noRetry": true})
		if r.OK || r.Name != "UnauthorizedError" {
			t.Fatalf("device-http with a wrong key: %+v", r)
		}
	})
}

// TestNodeWrongAPIVersion: an emulator whose allow-list lacks Node's 2019-03-31 answers 400.
func TestNodeWrongAPIVersion(t *testing.T) {
	cfg := emulator.Config{DPSAddr: altDPS + ":443", ESTAddr: "off", IDScopes: []string{scope}, DPSAPIVersions: []string{"2021-06-01"},
		Hubs: []emulator.HubConfig{{Name: "127.6.0.5", Addr: "127.6.0.5:443"}}}
	s := start(t, cfg)
	if err := s.e.AddEnrollment(emulator.Enrollment{Attestation: emulator.AttestSymmetric, ID: "node-sym", PrimaryKey: indivKey}); err != nil {
		t.Fatal(err)
	}
	r := s.run(map[string]any{"op": "register", "host": altDPS, "scope": scope, "regId": "node-sym", "key": indivKey})
	last := s.e.Log()[len(s.e.Log())-1]
	if r.OK || last.Status != 400 {
		t.Fatalf("want a 400 failure: %+v (last status %d)", r, last.Status)
	}
}

func goClient(t *testing.T, e *emulator.Emulator) *http.Client {
	p := x509.NewCertPool()
	p.AddCert(e.PKI().Root.Cert)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p}}}
}

func do(t *testing.T, c *http.Client, method, u, auth, ifMatch, body string) []byte {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(res.Body)
	if res.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, u, res.StatusCode, buf.String())
	}
	return buf.Bytes()
}
