package hubclient

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotbroker/aziot/emulator"
	"github.com/iotbroker/aziot/sdk/sas"
)

const (
	devKey  = "dGhpcy1pcy1hLXRlc3Qta2V5LWZvci1kcHMtc2FzLXRva2Vucw=="
	devKey2 = "bW9kdWxlLXByaW1hcnkta2V5LWV4YW1wbGUtMzJieXQ="
	device  = "dev-01"
)

func hmacSigner(b64 string) sas.SignFunc {
	key, _ := base64.StdEncoding.DecodeString(b64)
	return func(_ context.Context, data []byte) ([]byte, error) {
		m := hmac.New(sha256.New, key)
		m.Write(data)
		return m.Sum(nil), nil
	}
}

// startHub runs an in-process hub (no DPS, no EST) with one SAS device.
func startHub(t *testing.T, cfg emulator.Config) (*emulator.Emulator, string) {
	t.Helper()
	cfg.DPSAddr, cfg.ESTAddr = "off", "off"
	e, err := emulator.Start(cfg)
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(e.Stop)
	hub := e.HubNames()[0]
	if _, err := e.CreateDevice(hub, device, &emulator.Authentication{Type: "sas",
		SymmetricKey: &emulator.SymmetricKey{PrimaryKey: devKey, SecondaryKey: devKey2}}); err != nil {
		t.Fatal(err)
	}
	return e, hub
}

func fastWaits() *Waits {
	return &Waits{
		Timeout:         5 * time.Second,
		Retries:         2,
		RetryDelay:      time.Millisecond,
		ThrottleBackoff: []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, 4 * time.Millisecond},
		RetryAfterUnit:  time.Millisecond,
		RetryAfterMax:   50 * time.Millisecond,
	}
}

// sleeps records every wait the client asks for (and really waits it).
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return sleepCtx(ctx, d)
}

func (s *sleeps) get() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

func rootTLS(e *emulator.Emulator) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(e.PKI().Root.Cert)
	return &tls.Config{RootCAs: pool}
}

func newSASClient(t *testing.T, e *emulator.Emulator, hub string, edit func(*Config)) (*Client, *sleeps) {
	t.Helper()
	cfg := Config{HubName: hub, DeviceID: device, Sign: hmacSigner(devKey), TLSConfig: rootTLS(e), Waits: fastWaits()}
	if edit != nil {
		edit(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s := &sleeps{}
	c.sleep = s.sleep
	return c, s
}

// hubLog returns the hub requests the emulator saw for a route.
func hubLog(e *emulator.Emulator, route string) []emulator.LogEntry {
	var out []emulator.LogEntry
	for _, l := range e.Log() {
		if strings.HasPrefix(l.Listener, "hub:") && (route == "" || l.Route == route) {
			out = append(out, l)
		}
	}
	return out
}

func TestModuleRoundTrip(t *testing.T) {
	e, hub := startHub(t, emulator.Config{})
	c, _ := newSASClient(t, e, hub, nil)
	ctx := context.Background()

	d, err := c.GetDevice(ctx)
	if err != nil || d.DeviceID != device || d.Authentication == nil || d.Authentication.Type != AuthSAS {
		t.Fatalf("get device: %+v %v", d, err)
	}
	if ms, err := c.ListModules(ctx); err != nil || len(ms) != 0 {
		t.Fatalf("list on a new device: %v %v", ms, err)
	}
	m1, err := c.CreateModule(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if m1.ModuleID != "m1" || m1.DeviceID != device || m1.GenerationID == "" || m1.Etag == "" ||
		m1.Authentication == nil || m1.Authentication.SymmetricKey == nil || m1.Authentication.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("created module %+v", m1)
	}
	if _, err := c.CreateModule(ctx, "m1"); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("second create: %v", err)
	}
	// Upstream's set-keys PUT: If-Match *, exact body.
	e.ClearLog()
	m1b, err := c.SetModuleKeys(ctx, "m1", devKey, devKey2, "")
	if err != nil {
		t.Fatal(err)
	}
	if m1b.GenerationID != m1.GenerationID || m1b.Etag == m1.Etag || m1b.Authentication.SymmetricKey.PrimaryKey != devKey {
		t.Fatalf("after set keys %+v (before %+v)", m1b, m1)
	}
	l := hubLog(e, "module")
	if len(l) != 1 {
		t.Fatalf("log %+v", l)
	}
	wantBody := `{"moduleId":"m1","deviceId":"dev-01","authentication":{"symmetricKey":{"primaryKey":"` + devKey + `","secondaryKey":"` + devKey2 + `"},"type":"sas"}}`
	if l[0].Method != "PUT" || l[0].Body != wantBody || l[0].Headers["If-Match"] != "*" ||
		l[0].Headers["Content-Type"] != "application/json" || l[0].Query != "api-version=2017-11-08-preview" || l[0].Path != "/devices/dev-01/modules/m1" {
		t.Fatalf("set keys on the wire: %+v", l[0])
	}
	if a := l[0].Auth; a == nil || a.Scheme != "SharedAccessSignature" || a.SR != strings.ToLower(hub)+"/devices/dev-01" || a.SKN != "" {
		t.Fatalf("auth on the wire: %+v", l[0].Auth)
	}

	// A stale etag is a typed error; the current one (sent quoted) succeeds.
	_, err = c.SetModuleKeys(ctx, "m1", devKey2, devKey, m1.Etag)
	var he *Error
	if !errors.Is(err, ErrPreconditionFailed) || !errors.As(err, &he) || he.Status != 412 || he.Code != "PreconditionFailed" || IsNetwork(err) {
		t.Fatalf("stale etag: %#v", err)
	}
	managed := "iotedge"
	m1c, err := c.UpdateModule(ctx, Module{ModuleID: "m1", ManagedBy: &managed, Authentication: m1b.Authentication}, m1b.Etag)
	if err != nil || m1c.ManagedBy == nil || *m1c.ManagedBy != managed {
		t.Fatalf("update with the current etag: %+v %v", m1c, err)
	}
	if l := hubLog(e, "module"); l[len(l)-1].Headers["If-Match"] != `"`+m1b.Etag+`"` {
		t.Fatalf("If-Match for a specific etag: %q", l[len(l)-1].Headers["If-Match"])
	}

	// IDs with characters the hub must decode; the server stores them decoded.
	odd := "m 2={x}#?%/é"
	if _, err := c.CreateModule(ctx, odd); err != nil {
		t.Fatal(err)
	}
	if _, mods, _ := e.GetDevice(hub, device); mods[odd].ModuleID != odd {
		t.Fatalf("module %q not stored under its name: %v", odd, mods)
	}
	got, err := c.GetModule(ctx, odd)
	if err != nil || got.ModuleID != odd {
		t.Fatalf("get %q: %+v %v", odd, got, err)
	}
	ms, err := c.ListModules(ctx)
	if err != nil || len(ms) != 2 {
		t.Fatalf("list: %+v %v", ms, err)
	}

	if err := c.DeleteModule(ctx, "m1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetModule(ctx, "m1"); !errors.Is(err, ErrNotFound) || IsNetwork(err) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := c.DeleteModule(ctx, "m1", ""); err != nil {
		t.Fatalf("delete is idempotent with If-Match *: %v", err)
	}
	if err := c.DeleteModule(ctx, odd, "not-the-etag"); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("delete with a stale etag: %v", err)
	}
}

// The module keys we set are the ones the hub checks module tokens against: a module token
// from sdk/sas authenticates module telemetry.
func TestModuleTokenFromSetKeys(t *testing.T) {
	e, hub := startHub(t, emulator.Config{})
	c, _ := newSASClient(t, e, hub, nil)
	ctx := context.Background()
	if _, err := c.CreateModule(ctx, "mod"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetModuleKeys(ctx, "mod", devKey2, devKey, ""); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{devKey2, devKey} {
		tok, err := sas.New(ctx, sas.ModuleAudience(hub, device, "mod"), time.Now().Add(time.Minute), "", hmacSigner(key))
		if err != nil {
			t.Fatal(err)
		}
		p, err := emulator.ParseSAS(tok)
		if err != nil || !p.VerifyAnyKey(devKey2, devKey) {
			t.Fatalf("module token not accepted: %v", err)
		}
	}
}

func TestThrottleHonoursRetryAfter(t *testing.T) {
	e, hub := startHub(t, emulator.Config{})
	// A clock that moves a second per reading shows each request minting its own token.
	var mu sync.Mutex
	clock := time.Now()
	c, s := newSASClient(t, e, hub, func(cfg *Config) {
		cfg.Now = func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			clock = clock.Add(time.Second)
			return clock
		}
	})
	e.AddFault(emulator.Fault{Kind: emulator.FaultThrottle, Endpoint: "hub", Route: "modules", RetryAfter: 7, Next: 2})
	if _, err := c.ListModules(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := s.get(); len(got) != 2 || got[0] != 7*time.Millisecond || got[1] != 7*time.Millisecond {
		t.Fatalf("waits %v, want Retry-After (7 units) twice", got)
	}
	l := hubLog(e, "modules")
	if len(l) != 3 {
		t.Fatalf("hub saw %d requests, want 3", len(l))
	}
	ses := map[string]bool{}
	for _, r := range l {
		ses[r.Auth.SE] = true
	}
	if len(ses) != 3 {
		t.Fatalf("the resends reused a token: %+v", l)
	}

	// A long Retry-After is capped; after every back-off the 429 is returned.
	e.ClearLog()
	e.AddFault(emulator.Fault{Kind: emulator.FaultThrottle, Endpoint: "hub", Route: "module", RetryAfter: 3600, Next: 10})
	s.d = nil
	_, err := c.GetModule(context.Background(), "m")
	var he *Error
	if !errors.Is(err, ErrThrottled) || !errors.As(err, &he) || he.Attempts != 5 || he.Code != "ThrottlingException" {
		t.Fatalf("throttled to the end: %v", err)
	}
	for _, d := range s.get() {
		if d != 50*time.Millisecond {
			t.Fatalf("waits %v, want the 50ms cap", s.get())
		}
	}
	if n := len(hubLog(e, "module")); n != 5 {
		t.Fatalf("hub saw %d requests, want 1 + 4 resends", n)
	}
}

func TestThrottleWaitTable(t *testing.T) {
	c := &Client{waits: DefaultWaits(), now: func() time.Time { return time.Unix(1000, 0) }}
	for i, base := range []time.Duration{60, 120, 180, 300} {
		d := c.throttleWait(i, "")
		if d < base*time.Second || d >= base*time.Second+c.waits.ThrottleJitter[i] {
			t.Errorf("back-off %d: %v, want [%v, +%v)", i, d, base*time.Second, c.waits.ThrottleJitter[i])
		}
	}
	for ra, want := range map[string]time.Duration{
		"5": 5 * time.Second, "0": 0, "99999": 300 * time.Second, "9223372036854775807": 300 * time.Second,
		time.Unix(1010, 0).UTC().Format(http.TimeFormat): 10 * time.Second, time.Unix(900, 0).UTC().Format(http.TimeFormat): 0,
	} {
		if got := c.throttleWait(0, ra); got != want {
			t.Errorf("Retry-After %q: %v, want %v", ra, got, want)
		}
	}
	if d := c.throttleWait(1, "soon"); d < 120*time.Second {
		t.Errorf("unusable Retry-After must fall back to the table, got %v", d)
	}
}

func TestServerErrorsRetried(t *testing.T) {
	e, hub := startHub(t, emulator.Config{})
	c, s := newSASClient(t, e, hub, nil)
	ctx := context.Background()
	// Two 500s then success: cloud_retries = 2 covers them.
	e.AddFault(emulator.Fault{Kind: emulator.FaultServerError, Endpoint: "hub", Route: "module", Next: 2})
	if _, err := c.CreateModule(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if got := s.get(); len(got) != 2 || got[0] != time.Millisecond {
		t.Fatalf("waits %v, want RetryDelay twice", got)
	}
	// More 503s than retries: the last answer is returned, counted.
	e.AddFault(emulator.Fault{Kind: emulator.FaultServerError, Endpoint: "hub", Route: "module", Status: 503, Next: 5})
	_, err := c.GetModule(ctx, "m")
	var he *Error
	if !errors.As(err, &he) || he.Status != 503 || he.Attempts != 3 || he.Code != "ServiceUnavailable" {
		t.Fatalf("after retries: %#v", err)
	}
	// A 500 with a JSON Message on GET is a network error in upstream's sense; on DELETE
	// it is not (cloud-hub.md §8).
	e.AddFault(emulator.Fault{Kind: emulator.FaultServerError, Endpoint: "hub", Next: 3})
	if _, err := c.GetModule(ctx, "m"); !IsNetwork(err) {
		t.Fatalf("500 on GET: %v", err)
	}
	e.AddFault(emulator.Fault{Kind: emulator.FaultServerError, Endpoint: "hub", Next: 3})
	if err := c.DeleteModule(ctx, "m", ""); err == nil || IsNetwork(err) {
		t.Fatalf("500 on DELETE: %v", err)
	}
}

func TestConnectionResetRetried(t *testing.T) {
	e, hub := startHub(t, emulator.Config{})
	c, _ := newSASClient(t, e, hub, nil)
	ctx := context.Background()
	// Resets before the hub acted: the create is simply resent.
	for _, point := range []string{emulator.ResetBeforeRead, emulator.ResetAfterRead} {
		e.AddFault(emulator.Fault{Kind: emulator.FaultReset, Endpoint: "hub", Route: "module", ResetPoint: point, Next: 2})
		if _, err := c.CreateModule(ctx, "m-"+point); err != nil {
			t.Fatalf("reset %s twice, 2 retries: %v", point, err)
		}
	}
	// A body cut short is a failed attempt too.
	e.AddFault(emulator.Fault{Kind: emulator.FaultReset, Endpoint: "hub", Route: "module", ResetPoint: emulator.ResetAfterHeaders, Next: 2})
	if m, err := c.GetModule(ctx, "m-"+emulator.ResetAfterRead); err != nil || m.GenerationID == "" {
		t.Fatalf("reset after headers twice, 2 retries: %+v %v", m, err)
	}
	e.AddFault(emulator.Fault{Kind: emulator.FaultReset, Endpoint: "hub", Route: "module", Next: 3})
	err := c.DeleteModule(ctx, "m-"+emulator.ResetAfterRead, "")
	var he *Error
	if !errors.As(err, &he) || !he.Network || he.Status != 0 || he.Attempts != 3 || he.Err == nil {
		t.Fatalf("reset on every attempt: %#v", err)
	}
	if !strings.Contains(err.Error(), `delete module "m-after_read" of device "dev-01"`) {
		t.Fatalf("error without context: %v", err)
	}
}

func TestAttemptTimeout(t *testing.T) {
	e, hub := startHub(t, emulator.Config{})
	c, _ := newSASClient(t, e, hub, func(cfg *Config) {
		// Long enough for a handshake on a loaded machine, far below the 5 s delay.
		cfg.Waits.Timeout = 250 * time.Millisecond
	})
	e.AddFault(emulator.Fault{Kind: emulator.FaultDelay, Endpoint: "hub", Delay: 5 * time.Second, Next: 1})
	if _, err := c.ListModules(context.Background()); err != nil {
		t.Fatalf("one slow answer, then a retry: %v", err)
	}
	e.AddFault(emulator.Fault{Kind: emulator.FaultDelay, Endpoint: "hub", Delay: 5 * time.Second, MidBody: true, Next: 3})
	start := time.Now()
	_, err := c.ListModules(context.Background())
	if !IsNetwork(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow body on every attempt: %v", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("timeouts not applied per attempt: %v", el)
	}
	// The caller's cancellation stops at once and is not a network error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.ListModules(ctx); !errors.Is(err, context.Canceled) || IsNetwork(err) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestTokensNeverInErrors(t *testing.T) {
	e, hub := startHub(t, emulator.Config{})
	ctx := context.Background()
	wrong, _ := newSASClient(t, e, hub, func(cfg *Config) {
		cfg.Sign = hmacSigner(base64.StdEncoding.EncodeToString([]byte("wrong-key-wrong-key-wrong-key-32")))
	})
	_, err := wrong.GetModule(ctx, "m")
	if !errors.Is(err, ErrUnauthorized) || IsNetwork(err) {
		t.Fatalf("wrong key: %v", err)
	}
	errs := []error{err}
	c, _ := newSASClient(t, e, hub, nil)
	// Next: 10, more than any attempts: the transport's own resend of a GET on a reused
	// connection must not let the call succeed.
	e.AddFault(emulator.Fault{Kind: emulator.FaultReset, Endpoint: "hub", Next: 10})
	_, err = c.ListModules(ctx)
	errs = append(errs, err)
	e.ClearFaults()
	e.AddFault(emulator.Fault{Kind: emulator.FaultServerError, Endpoint: "hub", Next: 10})
	_, err = c.CreateModule(ctx, "m")
	errs = append(errs, err)
	e.ClearFaults()
	_, err = c.UpdateModule(ctx, Module{ModuleID: "absent"}, "")
	errs = append(errs, err)

	var secrets []string
	for _, l := range hubLog(e, "") {
		if tok := l.Headers["Authorization"]; tok != "" {
			secrets = append(secrets, tokenSecrets(tok)...)
		}
	}
	if len(secrets) < 8 {
		t.Fatalf("expected the log to hold the tokens sent, got %d", len(secrets))
	}
	for _, err := range errs {
		if err == nil {
			t.Fatal("expected an error")
		}
		for _, s := range append(secrets, devKey, devKey2) {
			if strings.Contains(err.Error(), s) {
				t.Fatalf("error %q holds a secret", err)
			}
		}
	}
	// A transport error that quotes the token (a proxy echoing headers, say) is redacted.
	tok := "SharedAccessSignature sr=h/devices/d&sig=abc%2Bdef%3D&se=1"
	red := redactErr(errors.New("proxy said: "+tok+" / abc+def="), tokenSecrets(tok))
	if strings.Contains(red.Error(), "abc") {
		t.Fatalf("not redacted: %v", red)
	}
}

// X.509 devices authenticate with the TLS client certificate and send no Authorization;
// requests go to the gateway while a SAS audience would name the hub.
func TestX509AndGateway(t *testing.T) {
	e, hub := startHub(t, emulator.Config{})
	cert, key, err := emulator.NewSelfSigned("dev-x509", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, sha256Hex := emulator.Thumbprints(cert)
	if _, err := e.CreateDevice(hub, "dev-x509", &emulator.Authentication{Type: "selfSigned",
		X509Thumbprint: &emulator.X509Thumbprint{PrimaryThumbprint: &sha256Hex}}); err != nil {
		t.Fatal(err)
	}
	tc := rootTLS(e)
	tc.Certificates = []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}
	u, _ := url.Parse(e.HubURL(hub))
	c, err := New(Config{HubName: "not-resolvable.example:1", Gateway: "127.0.0.1:" + u.Port(), DeviceID: "dev-x509", TLSConfig: tc, Waits: fastWaits()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.CreateModule(context.Background(), "mx"); err != nil {
		t.Fatal(err)
	}
	l := hubLog(e, "module")
	if len(l) != 1 || l[0].Headers["Authorization"] != "" || l[0].ClientCert == nil {
		t.Fatalf("x509 request: %+v", l)
	}
	if _, err := New(Config{HubName: hub, DeviceID: "d", TLSConfig: rootTLS(e)}); err == nil {
		t.Fatal("a client without credentials was built")
	}

	// Gateway for a SAS device: the audience still names the hub.
	e.ClearLog()
	sc, _ := newSASClient(t, e, hub, func(cfg *Config) { cfg.Gateway = "127.0.0.1:" + u.Port() })
	if _, err := sc.ListModules(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l := hubLog(e, "modules"); l[0].Auth.SR != strings.ToLower(hub)+"/devices/"+device {
		t.Fatalf("audience %q", l[0].Auth.SR)
	}
}

// With no RootCAs the system trust store is used, which honours SSL_CERT_FILE, and
// HTTPS_PROXY is honoured with CONNECT and Basic credentials. Both are read once per
// process, so the client runs in a child process. The hub has a non-loopback name because
// Go never proxies requests to localhost.
func TestSystemTrustStoreAndProxy(t *testing.T) {
	if gw := os.Getenv("HUBCLIENT_CHILD_GATEWAY"); gw != "" {
		c, err := New(Config{HubName: "myhub.test", Gateway: gw, DeviceID: device, Sign: hmacSigner(devKey), Waits: fastWaits()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetDevice(context.Background()); err != nil {
			t.Fatalf("through the proxy with SSL_CERT_FILE: %v", err)
		}
		return
	}
	e, _ := startHub(t, emulator.Config{Hubs: []emulator.HubConfig{{Name: "myhub.test"}}})
	root, err := e.RootCAPath()
	if err != nil {
		t.Fatal(err)
	}
	hubURL, _ := url.Parse(e.HubURL("myhub.test"))
	var mu sync.Mutex
	var connects []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		connects = append(connects, r.Method+" "+r.Host+" "+r.Header.Get("Proxy-Authorization"))
		mu.Unlock()
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		up, err := net.Dial("tcp", hubURL.Host) // myhub.test does not resolve: the proxy knows where it is
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		go func() { _, _ = io.Copy(up, brw); up.Close() }()
		_, _ = io.Copy(conn, up)
		conn.Close()
	}))
	defer proxy.Close()
	gateway := "myhub.test:" + hubURL.Port()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSystemTrustStoreAndProxy$", "-test.count=1")
	cmd.Env = append(os.Environ(), "HUBCLIENT_CHILD_GATEWAY="+gateway, "SSL_CERT_FILE="+root, "SSL_CERT_DIR=/nonexistent",
		"HTTPS_PROXY=http://proxyuser:proxypass@"+strings.TrimPrefix(proxy.URL, "http://"), "https_proxy=", "NO_PROXY=", "no_proxy=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	want := "CONNECT " + gateway + " Basic " + base64.StdEncoding.EncodeToString([]byte("proxyuser:proxypass"))
	if len(connects) != 1 || connects[0] != want {
		t.Fatalf("proxy saw %q, want %q", connects, want)
	}

	// Without the root the handshake fails: a network error, retried cloud_retries times.
	c, err := New(Config{HubName: "myhub.test", Gateway: "localhost:" + hubURL.Port(), DeviceID: device, Sign: hmacSigner(devKey),
		TLSConfig: &tls.Config{RootCAs: x509.NewCertPool()}, Waits: fastWaits()})
	if err != nil {
		t.Fatal(err)
	}
	var he *Error
	if _, err := c.GetDevice(context.Background()); !errors.As(err, &he) || !he.Network || he.Attempts != 3 {
		t.Fatalf("untrusted server: %v", err)
	}
}
