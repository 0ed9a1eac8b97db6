package emulator

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFaultThrottleAndServerError(t *testing.T) {
	e := symEmu(t, Config{})
	_, _ = e.CreateDevice(e.HubNames()[0], "dev-a", &Authentication{Type: "sas", SymmetricKey: &SymmetricKey{PrimaryKey: testKey, SecondaryKey: testKey}})
	c := newClient(t, e, nil, nil)
	hub := e.HubNames()[0]
	dpsPut := func() resp {
		return c.do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), map[string]string{"Authorization": dpsToken(e, testKey, testScope, "device-01", time.Minute)}, regBody("device-01"))
	}
	hubGet := func() resp {
		return c.do("GET", e.HubURL(hub)+"/devices/dev-a/modules"+hubAPI, map[string]string{"Authorization": hubToken(e, testKey, hub, "dev-a", time.Minute)}, nil)
	}
	cases := []struct {
		name   string
		fault  Fault
		call   func() resp
		status int
		check  func(t *testing.T, r resp)
	}{
		{"dps throttle", Fault{Kind: FaultThrottle, Endpoint: "dps", RetryAfter: 42, Next: 1}, dpsPut, 429, func(t *testing.T, r resp) {
			if r.header.Get("Retry-After") != "42" || r.json(t)["errorCode"] != float64(429001) {
				t.Fatalf("throttle answer %v %s", r.header, r.body)
			}
		}},
		{"hub throttle", Fault{Kind: FaultThrottle, Endpoint: hub, RetryAfter: 5, Next: 1}, hubGet, 429, func(t *testing.T, r resp) {
			if r.header.Get("iothub-errorcode") != "ThrottlingException" || r.header.Get("Retry-After") != "5" {
				t.Fatalf("hub throttle %v", r.header)
			}
		}},
		{"dps 500", Fault{Kind: FaultServerError, Endpoint: "dps", Next: 1}, dpsPut, 500, nil},
		{"dps 503", Fault{Kind: FaultServerError, Endpoint: "dps", Status: 503, Next: 1}, dpsPut, 503, nil},
		{"hub 500 JSON Message", Fault{Kind: FaultServerError, Endpoint: "hub", Next: 1}, hubGet, 500, func(t *testing.T, r resp) {
			if !strings.HasPrefix(r.json(t)["Message"].(string), "ErrorCode:ServerError;") || r.header.Get("Content-Type") != jsonContentType {
				t.Fatalf("hub 500 body %s", r.body)
			}
		}},
		{"hub 503", Fault{Kind: FaultServerError, Endpoint: "hub", Status: 503, Next: 1}, hubGet, 503, nil},
		{"route targeting misses", Fault{Kind: FaultServerError, Route: "operation", Next: 1}, dpsPut, 202, nil},
		{"id targeting misses", Fault{Kind: FaultServerError, ID: "someone-else", Next: 1}, dpsPut, 202, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.ClearFaults()
			e.AddFault(tc.fault)
			r := tc.call()
			wantStatus(t, r, tc.status)
			if tc.check != nil {
				tc.check(t, r)
			}
			if tc.fault.Next == 1 && tc.status >= 400 {
				// "next N": only the first matching request is hit.
				if r2 := tc.call(); r2.status >= 400 {
					t.Fatalf("second request still faulted: %d", r2.status)
				}
			}
		})
	}
}

func TestFaultTargetingWindows(t *testing.T) {
	e := symEmu(t, Config{})
	c := newClient(t, e, nil, nil)
	pattern := func() string {
		var b strings.Builder
		for i := 0; i < 8; i++ {
			r := c.do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), map[string]string{"Authorization": dpsToken(e, testKey, testScope, "device-01", time.Minute)}, regBody("device-01"))
			if r.status == 503 {
				b.WriteByte('x')
			} else {
				b.WriteByte('.')
			}
		}
		return b.String()
	}
	e.AddFault(Fault{Kind: FaultServerError, Status: 503, From: 3, To: 5})
	if p := pattern(); p != "..xxx..." {
		t.Fatalf("requests 3..5: %s", p)
	}
	e.ClearFaults()
	e.AddFault(Fault{Kind: FaultServerError, Status: 503, Next: 2})
	if p := pattern(); p != "xx......" {
		t.Fatalf("next 2: %s", p)
	}
	e.ClearFaults()
	e.AddFault(Fault{Kind: FaultServerError, Status: 503, Probability: 0.5, Seed: 7})
	p1 := pattern()
	e.ClearFaults()
	e.AddFault(Fault{Kind: FaultServerError, Status: 503, Probability: 0.5, Seed: 7})
	if p2 := pattern(); p1 != p2 || !strings.Contains(p1, "x") || !strings.Contains(p1, ".") {
		t.Fatalf("seeded probability must repeat and mix: %s vs %s", p1, p2)
	}
}

func TestFaultDelayAndReset(t *testing.T) {
	e := symEmu(t, Config{})
	short := newClient(t, e, nil, nil)
	short.http.Timeout = 300 * time.Millisecond
	put := func(c *client) (resp, error) {
		return c.try("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), map[string]string{"Authorization": dpsToken(e, testKey, testScope, "device-01", time.Minute)}, regBody("device-01"))
	}
	e.AddFault(Fault{Kind: FaultDelay, Delay: 2 * time.Second, Next: 1})
	if _, err := put(short); err == nil {
		t.Fatal("delay before headers must trip a short client timeout")
	}
	// Mid-body: headers arrive, then the body stalls.
	e.AddFault(Fault{Kind: FaultDelay, Delay: time.Second, MidBody: true, Next: 1})
	start := time.Now()
	r, err := put(newClient(t, e, nil, nil))
	if err != nil || r.status != 202 || time.Since(start) < 900*time.Millisecond {
		t.Fatalf("mid-body delay: %v %d %v", err, r.status, time.Since(start))
	}
	for _, point := range []string{ResetBeforeRead, ResetAfterRead, ResetAfterHeaders} {
		e.AddFault(Fault{Kind: FaultReset, ResetPoint: point, Next: 1})
		if _, err := put(newClient(t, e, nil, nil)); err == nil {
			t.Fatalf("reset %s: request succeeded", point)
		}
	}
	if r, err := put(newClient(t, e, nil, nil)); err != nil || r.status != 202 {
		t.Fatalf("after faults: %v", err)
	}
}

func TestFaultTLS(t *testing.T) {
	e := symEmu(t, Config{})
	for _, mode := range []string{TLSUntrusted, TLSWrongHost, TLSExpired} {
		t.Run(mode, func(t *testing.T) {
			e.AddFault(Fault{Kind: FaultTLSFail, Endpoint: "dps", TLSMode: mode, Next: 1})
			_, err := newClient(t, e, nil, nil).try("GET", e.DPSURL()+"/x", nil, nil)
			var verr *tls.CertificateVerificationError
			if !errors.As(err, &verr) {
				t.Fatalf("want a certificate verification error, got %v", err)
			}
			var hostErr x509.HostnameError
			var invalid x509.CertificateInvalidError
			var unknown x509.UnknownAuthorityError
			switch mode {
			case TLSWrongHost:
				if !errors.As(err, &hostErr) {
					t.Fatalf("want host name error: %v", err)
				}
			case TLSExpired:
				if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
					t.Fatalf("want expired: %v", err)
				}
			case TLSUntrusted:
				if !errors.As(err, &unknown) {
					t.Fatalf("want unknown authority: %v", err)
				}
			}
			r, err := newClient(t, e, nil, nil).try("GET", e.DPSURL()+"/x", nil, nil)
			if err != nil || r.status != 404 {
				t.Fatalf("next handshake must be normal: %v", err)
			}
		})
	}
}

func TestFaultMalformedDPS(t *testing.T) {
	e := symEmu(t, Config{})
	c := newClient(t, e, nil, nil)
	c.lax = true
	hdr := map[string]string{"Authorization": dpsToken(e, testKey, testScope, "device-01", time.Hour)}
	start := func() string {
		r := c.do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), hdr, regBody("device-01"))
		return r.json(t)["operationId"].(string)
	}
	poll := func(op string) resp { return c.do("GET", opURL(e, testScope, "device-01", op, "2021-06-01"), hdr, nil) }
	cases := []struct {
		variant, route string
		prep           func()
		check          func(t *testing.T, r resp)
	}{
		{MalformedContentType, "register", nil, func(t *testing.T, r resp) {
			if r.header.Get("Content-Type") != "text/plain" {
				t.Fatal("want text/plain")
			}
		}},
		{MalformedNonJSON, "register", nil, func(t *testing.T, r resp) {
			if strings.HasPrefix(string(r.body), "{") {
				t.Fatal("want non-JSON")
			}
		}},
		{MalformedMissingStatus, "register", nil, func(t *testing.T, r resp) {
			if _, ok := r.json(t)["status"]; ok {
				t.Fatal("status present")
			}
		}},
		{MalformedMissingRegState, "operation", func() { e.AddFault(Fault{Kind: FaultAssignAfter, Polls: 1, Next: 1}) }, func(t *testing.T, r resp) {
			if m := r.json(t); m["status"] != "assigning" || m["registrationState"] != nil {
				t.Fatalf("want assigning without registrationState: %v", m)
			}
		}},
		{MalformedErrorCodeString, "operation", func() { e.AddFault(Fault{Kind: FaultFailRegistration, ErrorCode: 400209, Next: 1}) }, func(t *testing.T, r resp) {
			if rs := r.json(t)["registrationState"].(map[string]any); rs["errorCode"] != "400209" {
				t.Fatalf("want string errorCode: %v", rs)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.variant, func(t *testing.T) {
			if tc.prep != nil {
				tc.prep()
			}
			e.AddFault(Fault{Kind: FaultMalformed, Variant: tc.variant, Route: tc.route, Next: 1})
			var r resp
			if tc.route == "register" {
				r = c.do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), hdr, regBody("device-01"))
			} else {
				r = poll(start())
			}
			tc.check(t, r)
		})
	}
}

func TestStateKnobs(t *testing.T) {
	e := symEmu(t, Config{})
	hub := e.HubNames()[0]
	c := newClient(t, e, nil, nil)
	register(t, c, e, "device-01", dpsToken(e, testKey, testScope, "device-01", time.Minute), regBody("device-01"))
	get := func(key string) int {
		return c.do("GET", e.HubURL(hub)+"/devices/device-01/modules"+hubAPI, map[string]string{"Authorization": hubToken(e, key, hub, "device-01", time.Minute)}, nil).status
	}
	if get(testKey) != 200 {
		t.Fatal("provisioned device cannot reach the hub")
	}
	// rotate_keys: old key fails on DPS and hub; the new one works after re-registration.
	newKey, _, err := e.RotateEnrollmentKeys("", false, "device-01", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if get(testKey) != 401 || get(newKey) != 200 {
		t.Fatal("rotate_keys must switch the hub device keys")
	}
	wantStatus(t, c.do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), map[string]string{"Authorization": dpsToken(e, testKey, testScope, "device-01", time.Minute)}, regBody("device-01")), 401)
	register(t, c, e, "device-01", dpsToken(e, newKey, testScope, "device-01", time.Minute), regBody("device-01"))
	// expire_now: every token counts as expired.
	e.SetExpireNow(true)
	if get(newKey) != 401 {
		t.Fatal("expire_now must reject hub tokens")
	}
	e.SetExpireNow(false)
	// clock_offset: a token valid for a minute of real time is expired when the server
	// clock is 2 min ahead, and valid again once the offset is gone.
	raw, _ := base64.StdEncoding.DecodeString(newKey)
	tok := BuildSAS(raw, strings.ToLower(hub+"/devices/device-01"), time.Now().Add(time.Minute).Unix(), "")
	getTok := func() int {
		return c.do("GET", e.HubURL(hub)+"/devices/device-01/modules"+hubAPI, map[string]string{"Authorization": tok}, nil).status
	}
	e.SetClockOffset(2 * time.Minute)
	if getTok() != 401 {
		t.Fatal("clock_offset must expire the token")
	}
	e.SetClockOffset(0)
	if getTok() != 200 {
		t.Fatal("token valid without offset")
	}
	// disable_enrollment: the hub device is disabled too → 401.
	if err := e.DisableEnrollment("", false, "device-01", true); err != nil {
		t.Fatal(err)
	}
	if get(newKey) != 401 {
		t.Fatal("disable_enrollment must disable the hub device")
	}
	_ = e.DisableEnrollment("", false, "device-01", false)
	if get(newKey) != 200 {
		t.Fatal("re-enabled")
	}
	// drop_device: the device disappears → 401 at start-up reconciliation.
	_ = e.DropDevice(hub, "device-01", "")
	if get(newKey) != 401 {
		t.Fatal("drop_device")
	}
	// Reset drops everything.
	e.Reset()
	if len(e.Enrollments()) != 0 || len(e.Log()) != 0 {
		t.Fatal("reset")
	}
}

func TestRequestLog(t *testing.T) {
	e := symEmu(t, Config{})
	c := newClient(t, e, nil, nil)
	hub := e.HubNames()[0]
	cert, key, _ := NewSelfSigned("logged", time.Hour)
	_, _ = e.CreateDevice(hub, "dev-a", nil)
	cc := newClient(t, e, cert, key)
	c.do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), map[string]string{"Authorization": dpsToken(e, testKey, testScope, "device-01", time.Minute), "User-Agent": "ua/1", "Content-Type": "application/json"}, regBody("device-01"))
	cc.do("DELETE", e.HubURL(hub)+"/devices/dev-a/modules/m"+hubAPI, map[string]string{"Authorization": policyToken(e, hub), "If-Match": "*"}, nil)
	log := e.Log()
	if len(log) != 2 {
		t.Fatalf("%d entries", len(log))
	}
	d := log[0]
	if d.Listener != "dps" || d.Method != "PUT" || d.Query != "api-version=2021-06-01" || d.Auth.SR != "0ne00000a0a/registrations/device-01" ||
		d.Auth.SKN != "registration" || d.Auth.Verdict != "ok" || d.Headers["User-Agent"] != "ua/1" || d.Body != `{"registrationId":"device-01"}` || d.Status != 202 || d.ResponseBody == "" {
		t.Fatalf("dps entry %+v %+v", d, d.Auth)
	}
	h := log[1]
	if h.Listener != "hub:"+hub || h.Headers["If-Match"] != "*" || h.ClientCert == nil || h.ClientCert.Subject != "CN=logged" || h.Auth.SKN != "iothubowner" || h.Status != 204 {
		t.Fatalf("hub entry %+v", h)
	}
	// Bodies are capped.
	e2 := startEmu(t, Config{LogBodyCap: 4})
	newClient(t, e2, nil, nil).do("PUT", registerURL(e2, testScope, "x", "2021-06-01"), nil, regBody("x"))
	if got := e2.Log()[0].Body; got != `{"re` {
		t.Fatalf("capped body %q", got)
	}
	_ = http.MethodGet
}
