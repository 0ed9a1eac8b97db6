package main

import (
	"context"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/broker/certd"
	"github.com/iotbroker/aziot/broker/identityd"
	"github.com/iotbroker/aziot/broker/keyd"
	"github.com/iotbroker/aziot/internal/testenv"
	"github.com/iotbroker/aziot/policy"
	"github.com/iotbroker/aziot/policy/authz"
	"github.com/iotbroker/aziot/sdk/keys"
)

const denyAllPolicy = "package aziot.authz\nimport rego.v1\ndeny contains \"deny-all\" if true\n"

// routeTable builds keyd, certd and identityd as the daemon does and lists their routes, so the
// walk below covers every route the services declare, including ones added later.
func routeTable(t *testing.T) map[string][]broker.Route {
	t.Helper()
	dir := t.TempDir()
	allow := authz.Decider(nil)
	k, err := keyd.New(&keyd.Config{AziotKeys: map[string]string{"homedir_path": filepath.Join(dir, "keyd")}}, keyd.Options{Decider: allow})
	if err != nil {
		t.Fatal(err)
	}
	c, err := certd.New(&certd.Config{HomedirPath: filepath.Join(dir, "certd")}, certd.Options{Decider: allow})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	icfg := identityd.DefaultConfig()
	icfg.Hostname, icfg.Homedir = "h", filepath.Join(dir, "identityd")
	icfg.Provisioning = &identityd.Provisioning{Source: "none"}
	i, err := identityd.New(&icfg, identityd.Options{Decider: allow})
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close()
	return map[string][]broker.Route{"keyd": k.HTTP.Routes, "certd": c.HTTP.Routes, "identityd": i.HTTP.Routes}
}

// Every route of every service is decided by the policy: under a deny-all policy each
// answers its service's 401 (or the upstream refusal that precedes authorization on that
// route), and each request that reached the decision is in the decision log.
func TestEveryRouteIsDecided(t *testing.T) {
	e := startPolicyDaemon(t, "", "")
	keydSock, certdSock := e.d.Socket("keyd"), e.d.Socket("certd")
	post := func(path, body string) testenv.Reply {
		return testenv.Curl(t, -1, keydSock, "POST", path+keydAPI, body)
	}
	hKey := handleOf(t, post("/key", `{"keyId":"k","usage":"derive,encrypt,sign"}`))
	hPair := handleOf(t, post("/keypair", `{"keyId":"kp","preferredAlgorithms":"rsa-2048"}`))
	hDerived := handleOf(t, post("/derivedkey", `{"baseKeyHandle":"`+hKey+`","derivationData":"AA=="}`))
	csr := makeCSR(t, newECKey(t), pkix.Name{CommonName: "c"})

	e.change(t, func() { e.writePolicy(t, "deny-all.rego", denyAllPolicy) })

	keyDenied := func(id string) string { return "user 0 is not authorized to access the key " + id }
	certDenied := func(id string) string { return "user 0 is not authorized to modify the cert " + id }
	type sample struct {
		path, body string
		status     int
		msg        string
		op         string // the operation the decision log must show ("" = refused before)
	}
	aead := `"algorithm":"AEAD","parameters":{"iv":"AAAAAAAAAAAAAAAA","aad":"AA=="}`
	samples := map[string]map[string]sample{
		"keyd": {
			"POST /key":                        {"/key", `{"keyId":"k2","usage":"sign"}`, 401, keyDenied("k2"), "keyd.key.create"},
			"DELETE /key":                      {"/key", `{"keyHandle":"` + hKey + `"}`, 401, keyDenied("k"), "keyd.key.delete"},
			"POST /keypair":                    {"/keypair", `{"keyId":"kp2"}`, 401, keyDenied("kp2"), "keyd.keypair.create"},
			"DELETE /keypair":                  {"/keypair", `{"keyHandle":"` + hPair + `"}`, 401, keyDenied("kp"), "keyd.keypair.delete"},
			"POST /derivedkey":                 {"/derivedkey", `{"baseKeyHandle":"` + hKey + `","derivationData":"AA=="}`, 401, keyDenied("k"), "keyd.derivedkey.create"},
			"POST /decrypt":                    {"/decrypt", `{"keyHandle":"` + hKey + `",` + aead + `,"ciphertext":"AAAA"}`, 401, keyDenied("k"), "keyd.decrypt"},
			"POST /encrypt":                    {"/encrypt", `{"keyHandle":"` + hKey + `",` + aead + `,"plaintext":"AAAA"}`, 401, keyDenied("k"), "keyd.encrypt"},
			"POST /derivedkey/export":          {"/derivedkey/export", `{"keyHandle":"` + hDerived + `"}`, 401, keyDenied("k"), "keyd.derivedkey.export"},
			"POST /parameters/{parameterName}": {"/parameters/algorithm", `{"keyHandle":"` + hPair + `"}`, 401, keyDenied("kp"), "keyd.parameters.get"},
			"GET /key/{keyId}":                 {"/key/k", "", 401, keyDenied("k"), "keyd.key.load"},
			"POST /key/{keyId}":                {"/key/k3", `{"from":"k"}`, 400, `invalid type "key"`, ""},
			"GET /keypair/{keyId}":             {"/keypair/kp", "", 401, keyDenied("kp"), "keyd.keypair.load"},
			"POST /keypair/{keyId}":            {"/keypair/kp3", `{"from":"kp"}`, 401, keyDenied("kp"), "keyd.keypair.move"},
			"POST /sign":                       {"/sign", signBody(hKey), 401, keyDenied("k"), "keyd.sign"},
		},
		"certd": {
			"POST /certificates":            {"/certificates", `{"certId":"c","csr":` + string(mustJSON(t, csr)) + `}`, 401, certDenied("c"), "certd.cert.create"},
			"GET /certificates/{certId}":    {"/certificates/c", "", 401, certDenied("c"), "certd.cert.get"},
			"PUT /certificates/{certId}":    {"/certificates/c", `{"pem":"x"}`, 401, certDenied("c"), "certd.cert.import"},
			"DELETE /certificates/{certId}": {"/certificates/c", "", 401, certDenied("c"), "certd.cert.delete"},
		},
		"identityd": {
			"GET /identities/modules":               {"/identities/modules", "", 401, "authorization error", "identityd.module.list"},
			"POST /identities/modules":              {"/identities/modules", `{"type":"aziot","moduleId":"m"}`, 401, "authorization error", "identityd.module.create"},
			"GET /identities/identity":              {"/identities/identity", "", 401, "authorization error", "identityd.device.get"},
			"POST /identities/device":               {"/identities/device", `{"type":"aziot"}`, 401, "authorization error", "identityd.device.get"},
			"GET /identities/provisioning":          {"/identities/provisioning", "", 401, "authorization error", "identityd.provisioning.get"},
			"GET /trust-bundle":                     {"/trust-bundle", "", 401, "authorization error", "identityd.trust_bundle.get"},
			"GET /identities/modules/{moduleId}":    {"/identities/modules/m", "", 401, "authorization error", "identityd.module.get"},
			"PUT /identities/modules/{moduleId}":    {"/identities/modules/m", "{}", 401, "authorization error", "identityd.module.update"},
			"DELETE /identities/modules/{moduleId}": {"/identities/modules/m", "", 401, "authorization error", "identityd.module.delete"},
			"POST /identities/device/reprovision":   {"/identities/device/reprovision", "", 401, "authorization error", "identityd.device.reprovision"},
		},
	}
	sockets := map[string]string{"keyd": keydSock, "certd": certdSock, "identityd": e.d.Socket("identityd")}
	apis := map[string]string{"keyd": keydAPI, "certd": certdAPI, "identityd": identitydAPI}
	walked := 0
	for svc, routes := range routeTable(t) {
		var names []string
		for _, rt := range routes {
			for m := range rt.Handlers() {
				names = append(names, m+" "+rt.Pattern)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			s, ok := samples[svc][name]
			if !ok {
				t.Errorf("%s %s: no sample request; add one so the route is proven decided", svc, name)
				continue
			}
			method, _, _ := strings.Cut(name, " ")
			before := len(decisionLines(t, e, svc))
			r := testenv.Curl(t, -1, sockets[svc], method, s.path+apis[svc], s.body)
			if r.Status != s.status || message(t, r) != s.msg {
				t.Errorf("%s %s: got %v, want %d %q", svc, name, r, s.status, s.msg)
			}
			after := decisionLines(t, e, svc)
			switch {
			case s.op == "" && len(after) != before:
				t.Errorf("%s %s: refused before authorization, yet decided: %+v", svc, name, after[before:])
			case s.op != "" && (len(after) == before || after[len(after)-1].Operation != s.op || after[len(after)-1].Result != "deny"):
				t.Errorf("%s %s: no %s denial in the decision log: %+v", svc, name, s.op, after[before:])
			}
			walked++
		}
	}
	if walked < 28 {
		t.Fatalf("walked only %d routes", walked)
	}
}

// decisionLines reads a service's decision log, empty while nothing was decided (the
// log is written before the answer is sent).
func decisionLines(t *testing.T, e *policyEnv, svc string) []policy.DecisionEntry {
	t.Helper()
	if st, err := os.Stat(filepath.Join(e.dir, "log", svc+"-decisions.log")); err != nil || st.Size() == 0 {
		return nil
	}
	return e.decisions(t, svc)
}

// A request that declares a body it never sends cannot hold its connection (and its
// throttle slot): it is answered, then the connection is closed within seconds.
func TestSilentBodiesDoNotPinConnections(t *testing.T) {
	dir := testenv.NewStateDir(t)
	testenv.WriteConfig(t, dir, "keyd", "10-limit.toml", "max_requests = 3\n")
	d := testenv.StartDev(t, dir)
	keydSock := d.Socket("keyd")
	cases := []struct {
		name, head string
		status     int
	}{
		{"GET with a body never sent", "GET /key/x?api-version=2021-05-01 HTTP/1.1\r\nHost: keyd.sock\r\nContent-Length: 100\r\n\r\n", 400},
		{"POST refused before its body", "POST /key HTTP/1.1\r\nHost: keyd.sock\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", 400},
		{"POST refused by route before its body", "POST /nothing?api-version=2021-05-01 HTTP/1.1\r\nHost: keyd.sock\r\nContent-Length: 100\r\n\r\n", 404},
		{"POST whose body never comes", "POST /key?api-version=2021-05-01 HTTP/1.1\r\nHost: keyd.sock\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"keyId\"", 408},
		{"chunked body never finished", "POST /sign?api-version=2021-05-01 HTTP/1.1\r\nHost: keyd.sock\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"key", 408},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			conn := dialRaw(t, keydSock)
			start := time.Now()
			fmt.Fprint(conn, c.head)
			conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			b, err := io.ReadAll(conn)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection still open after 20 s; read %q", b)
			}
			var status int
			fmt.Sscanf(string(b), "HTTP/1.1 %d", &status)
			if status != c.status {
				t.Fatalf("got %q, want status %d", b, c.status)
			}
			if took := time.Since(start); took > 12*time.Second {
				t.Fatalf("closed only after %v", took)
			}
		})
	}
	// All of them ran at once with max_requests = 3: had any kept its slot, this
	// connection would be dropped unanswered.
	t.Run("slots returned", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			if r, err := testenv.CurlResult(-1, keydSock, "GET", "/key/x?api-version=2021-05-01", ""); err != nil || r.Status != 400 {
				t.Fatalf("not served after the silent bodies: %v %v", r, err)
			}
		}
	})
}

// Two SDK clients of one uid share that uid's max_requests: an idle keep-alive connection
// of the uid gives way to a new one instead of starving it, and the SDK keeps few idle
// connections, so every call of a storm of signs succeeds.
func TestSDKStormUnderOneUID(t *testing.T) {
	dir := testenv.NewStateDir(t)
	d := testenv.StartDev(t, dir)
	ctx := context.Background()
	setup := keys.New(d.Socket("keyd"))
	h, err := setup.CreateKey(ctx, "storm", "sign")
	if err != nil {
		t.Fatal(err)
	}
	setup.Close()
	const clients, workers, calls = 2, 8, 300
	var failed atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		cl := keys.New(d.Socket("keyd"))
		defer cl.Close()
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < calls; i++ {
					if _, err := cl.SignHMAC(ctx, h, []byte("storm")); err != nil {
						failed.Add(1)
						firstErr.Do(func() { t.Errorf("first failure: %v", err) })
					}
				}
			}()
		}
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d calls failed", n, clients*workers*calls)
	}
}

// What an unprivileged caller can make the service log is bounded: a flood of denied
// requests and of dropped connections writes a bounded number of lines.
func TestLogFloodIsBounded(t *testing.T) {
	dir := testenv.NewStateDir(t)
	testenv.WriteConfig(t, dir, "keyd", "10-limit.toml", "max_requests = 2\n")
	d := testenv.StartDev(t, dir)
	keydSock := d.Socket("keyd")
	// At most 20 lines per 10 s window (broker's logBurst, logWindow): a slow machine
	// may spread a flood over more windows.
	allowed := func(start time.Time) int { return 20 * (1 + int(time.Since(start)/(10*time.Second))) }
	// 200 denials on one keep-alive connection of uid 1003 (no principal).
	start := time.Now()
	out := runAs(t, 1003, keydSock, 200)
	if out != "401 x200" {
		t.Fatalf("flood: %s", out)
	}
	if n, max := strings.Count(d.Stderr(), "request denied by policy"), allowed(start); n == 0 || n > max {
		t.Fatalf("%d denial lines for 200 denials (want 1..%d)", n, max)
	}
	// 100 connections over the limit of uid 1001.
	holdAs(t, 1001, keydSock, 2)
	start = time.Now()
	for i := 0; i < 100; i++ {
		testenv.CurlResult(1001, keydSock, "GET", "/key/x"+keydAPI, "")
	}
	if n, max := strings.Count(d.Stderr(), "Max simultaneous connections reached for user 1001"), allowed(start); n == 0 || n > max {
		t.Fatalf("%d drop lines for 100 dropped connections (want 1..%d)", n, max)
	}
}
