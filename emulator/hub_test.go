package emulator

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
)

const hubAPI = "?api-version=2017-11-08-preview"

func hubEmu(t *testing.T, cfg Config) (*Emulator, string, *client) {
	e := startEmu(t, cfg)
	hub := e.HubNames()[0]
	for _, id := range []string{"dev-a", "dev-b"} {
		if _, err := e.CreateDevice(hub, id, &Authentication{Type: "sas", SymmetricKey: &SymmetricKey{PrimaryKey: testKey, SecondaryKey: testGroup}}); err != nil {
			t.Fatal(err)
		}
	}
	return e, hub, newClient(t, e, nil, nil)
}

func modURL(e *Emulator, hub, dev, mod string) string {
	return e.HubURL(hub) + "/devices/" + dev + "/modules/" + mod + hubAPI
}

func TestHubModuleSemantics(t *testing.T) {
	e, hub, c := hubEmu(t, Config{})
	auth := map[string]string{"Authorization": hubToken(e, testKey, hub, "dev-a", time.Minute), "Content-Type": "application/json"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range auth {
			m[a] = b
		}
		m[k] = v
		return m
	}
	body := []byte(`{"moduleId":"m1","deviceId":"dev-a"}`)
	// Create: 200 with generationId, etag and generated SAS keys.
	r := c.do("PUT", modURL(e, hub, "dev-a", "m1"), auth, body)
	wantStatus(t, r, 200)
	if r.header.Get("Content-Type") != jsonContentType {
		t.Fatalf("Content-Type %q", r.header.Get("Content-Type"))
	}
	var m Module
	_ = json.Unmarshal(r.body, &m)
	if m.GenerationID == "" || m.Etag == "" || m.Authentication.Type != "sas" || m.Authentication.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("created module %+v", m)
	}
	gen, etag1 := m.GenerationID, m.Etag
	// Create again without If-Match: 409.
	r = c.do("PUT", modURL(e, hub, "dev-a", "m1"), auth, body)
	wantStatus(t, r, 409)
	if r.header.Get("iothub-errorcode") != "ModuleAlreadyExistsOnDevice" || !strings.HasPrefix(r.json(t)["Message"].(string), "ErrorCode:ModuleAlreadyExistsOnDevice;") {
		t.Fatalf("409 shape: %s %v", r.body, r.header)
	}
	if em := r.json(t)["ExceptionMessage"].(string); !strings.HasPrefix(em, "Tracking ID:") || !strings.Contains(em, "-G:0-TimeStamp:") {
		t.Fatalf("ExceptionMessage %q", em)
	}
	// Set keys with unquoted * (upstream) and quoted "*" (azure-iothub): 200, etag bumps,
	// generationId stays.
	keys := []byte(`{"moduleId":"m1","deviceId":"dev-a","authentication":{"symmetricKey":{"primaryKey":"` + testKey + `","secondaryKey":"` + testGroup + `"},"type":"sas"}}`)
	for _, im := range []string{"*", `"*"`} {
		r = c.do("PUT", modURL(e, hub, "dev-a", "m1"), with("If-Match", im), keys)
		wantStatus(t, r, 200)
		_ = json.Unmarshal(r.body, &m)
		if m.GenerationID != gen || m.Etag == etag1 || m.Authentication.SymmetricKey.PrimaryKey != testKey {
			t.Fatalf("update with If-Match %s: %+v", im, m)
		}
		etag1 = m.Etag
	}
	// Quoted current etag: 200; stale etag: 412.
	wantStatus(t, c.do("PUT", modURL(e, hub, "dev-a", "m1"), with("If-Match", `"`+etag1+`"`), keys), 200)
	r = c.do("PUT", modURL(e, hub, "dev-a", "m1"), with("If-Match", `"`+etag1+`"`), keys)
	wantStatus(t, r, 412)
	if r.header.Get("iothub-errorcode") != "PreconditionFailed" {
		t.Fatal("412 must carry PreconditionFailed")
	}
	// Update of an absent module: 412; body/path mismatch: 400; absent device: 404.
	wantStatus(t, c.do("PUT", modURL(e, hub, "dev-a", "nope"), with("If-Match", "*"), []byte(`{"moduleId":"nope","deviceId":"dev-a"}`)), 412)
	wantStatus(t, c.do("PUT", modURL(e, hub, "dev-a", "m2"), auth, body), 400)
	pol := map[string]string{"Authorization": policyToken(e, hub)}
	r = c.do("PUT", modURL(e, hub, "ghost", "m1"), pol, []byte(`{"moduleId":"m1","deviceId":"ghost"}`))
	wantStatus(t, r, 404)
	if r.header.Get("iothub-errorcode") != "DeviceNotFound" {
		t.Fatal("want DeviceNotFound")
	}
	// Get and list.
	r = c.do("GET", modURL(e, hub, "dev-a", "m1"), auth, nil)
	wantStatus(t, r, 200)
	wantStatus(t, c.do("GET", modURL(e, hub, "dev-a", "zz"), auth, nil), 404)
	r = c.do("GET", e.HubURL(hub)+"/devices/dev-a/modules"+hubAPI, auth, nil)
	var list []Module
	if json.Unmarshal(r.body, &list) != nil || len(list) != 1 || list[0].GenerationID != gen {
		t.Fatalf("list %s", r.body)
	}
	// Delete with a specific stale etag: 412; with *: 204; again: 204 (idempotent);
	// absent with a specific etag: 412.
	wantStatus(t, c.do("DELETE", modURL(e, hub, "dev-a", "m1"), with("If-Match", `"bogus"`), nil), 412)
	wantStatus(t, c.do("DELETE", modURL(e, hub, "dev-a", "m1"), with("If-Match", "*"), nil), 204)
	wantStatus(t, c.do("DELETE", modURL(e, hub, "dev-a", "m1"), with("If-Match", "*"), nil), 204)
	wantStatus(t, c.do("DELETE", modURL(e, hub, "dev-a", "m1"), with("If-Match", `"MQ=="`), nil), 412)
	// Recreated module gets a new generationId.
	r = c.do("PUT", modURL(e, hub, "dev-a", "m1"), auth, body)
	_ = json.Unmarshal(r.body, &m)
	if m.GenerationID == gen {
		t.Fatal("a recreated module must get a new generationId")
	}
}

func TestHubSwitches(t *testing.T) {
	e, hub, c := hubEmu(t, Config{Switches: Switches{ModuleCreateExistingOK: true, ModuleUpdateAbsentNotFound: true, HubDisabledDeviceNotFound: true}})
	auth := map[string]string{"Authorization": hubToken(e, testKey, hub, "dev-a", time.Minute)}
	body := []byte(`{"moduleId":"m1","deviceId":"dev-a"}`)
	wantStatus(t, c.do("PUT", modURL(e, hub, "dev-a", "m1"), auth, body), 200)
	wantStatus(t, c.do("PUT", modURL(e, hub, "dev-a", "m1"), auth, body), 200)
	auth["If-Match"] = "*"
	wantStatus(t, c.do("PUT", modURL(e, hub, "dev-a", "m9"), auth, []byte(`{"moduleId":"m9","deviceId":"dev-a"}`)), 404)
	_ = e.SetDeviceStatus(hub, "dev-a", false)
	wantStatus(t, c.do("GET", modURL(e, hub, "dev-a", "m1"), auth, nil), 404)
}

func TestHubAuth(t *testing.T) {
	e, hub, c := hubEmu(t, Config{Hubs: []HubConfig{{Aliases: []string{"alias.example"}}}})
	_, _ = e.CreateDevice(hub, "dev-a", &Authentication{Type: "sas", SymmetricKey: &SymmetricKey{PrimaryKey: testKey, SecondaryKey: testGroup}})
	modKey := "bW9kdWxlLXByaW1hcnkta2V5LWV4YW1wbGUtMzJieXQ="
	pc := c.do("PUT", modURL(e, hub, "dev-a", "mymodule"), map[string]string{"Authorization": policyToken(e, hub)},
		[]byte(`{"moduleId":"mymodule","deviceId":"dev-a","authentication":{"type":"sas","symmetricKey":{"primaryKey":"`+modKey+`","secondaryKey":"`+modKey+`"}}}`))
	wantStatus(t, pc, 200)
	rawMod, _ := base64.StdEncoding.DecodeString(modKey)
	se := e.Now().Add(time.Minute).Unix()
	nodeSR := url.QueryEscape(hub + "/devices/dev-a")
	modSR := url.QueryEscape(hub + "/devices/dev-a/modules/mymodule")
	rawKey, _ := base64.StdEncoding.DecodeString(testKey)
	cases := []struct {
		name, method, path, auth string
		status                   int
	}{
		{"device token on own modules", "GET", "/devices/dev-a/modules", hubToken(e, testKey, hub, "dev-a", time.Minute), 200},
		{"secondary key", "GET", "/devices/dev-a/modules", hubToken(e, testGroup, hub, "dev-a", time.Minute), 200},
		{"node-style encoded sr", "GET", "/devices/dev-a/modules", BuildSAS(rawKey, nodeSR, se, ""), 200},
		{"alias in sr", "GET", "/devices/dev-a/modules", hubToken(e, testKey, "alias.example", "dev-a", time.Minute), 200},
		{"device A token on device B", "GET", "/devices/dev-b/modules", hubToken(e, testKey, hub, "dev-a", time.Minute), 401},
		{"device B's key for device A sr", "GET", "/devices/dev-a/modules", hubToken(e, "AAAA", hub, "dev-a", time.Minute), 401},
		{"expired", "GET", "/devices/dev-a/modules", hubToken(e, testKey, hub, "dev-a", -time.Second), 401},
		{"other hub name", "GET", "/devices/dev-a/modules", hubToken(e, testKey, "other.example", "dev-a", time.Minute), 401},
		{"no auth", "GET", "/devices/dev-a/modules", "", 401},
		{"skn on device token", "GET", "/devices/dev-a/modules", BuildSAS(rawKey, hub+"/devices/dev-a", se, "iothubowner"), 401},
		{"policy token", "GET", "/devices/dev-b/modules", policyToken(e, hub), 200},
		{"module token on module events", "POST", "/devices/dev-a/modules/mymodule/messages/events", BuildSAS(rawMod, modSR, se, ""), 204},
		{"module token on registry", "GET", "/devices/dev-a/modules", BuildSAS(rawMod, modSR, se, ""), 401},
		{"device token on device events", "POST", "/devices/dev-a/messages/events", hubToken(e, testKey, hub, "dev-a", time.Minute), 204},
		{"device token on other device events", "POST", "/devices/dev-b/messages/events", hubToken(e, testKey, hub, "dev-a", time.Minute), 401},
		{"device token GET own device", "GET", "/devices/dev-a", hubToken(e, testKey, hub, "dev-a", time.Minute), 200},
		{"device token PUT own device", "PUT", "/devices/dev-a", hubToken(e, testKey, hub, "dev-a", time.Minute), 401},
		{"policy cannot send telemetry", "POST", "/devices/dev-a/messages/events", policyToken(e, hub), 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.auth != "" {
				hdr["Authorization"] = tc.auth
			}
			r := c.do(tc.method, e.HubURL(hub)+tc.path+"?api-version=2021-04-12", hdr, []byte(`{"deviceId":"dev-a"}`))
			wantStatus(t, r, tc.status)
			if tc.status == 401 && (r.header.Get("iothub-errorcode") != "IotHubUnauthorizedAccess" || r.header.Get("Content-Type") != jsonContentType) {
				t.Fatalf("401 shape %v", r.header)
			}
		})
	}
	if e.TelemetryCount(hub, "dev-a", "mymodule") != 1 || e.TelemetryCount(hub, "dev-a", "") != 1 {
		t.Fatal("telemetry not counted")
	}
	// Missing or unknown api-version: 400 InvalidProtocolVersion.
	for _, q := range []string{"", "?api-version=1999-01-01"} {
		r := c.do("GET", e.HubURL(hub)+"/devices/dev-a/modules"+q, map[string]string{"Authorization": policyToken(e, hub)}, nil)
		wantStatus(t, r, 400)
		if r.header.Get("iothub-errorcode") != "InvalidProtocolVersion" {
			t.Fatal("want InvalidProtocolVersion")
		}
	}
	// Disabled and deleted devices: 401 by default.
	_ = e.SetDeviceStatus(hub, "dev-a", false)
	wantStatus(t, c.do("GET", e.HubURL(hub)+"/devices/dev-a/modules"+hubAPI, map[string]string{"Authorization": hubToken(e, testKey, hub, "dev-a", time.Minute)}, nil), 401)
	_ = e.DropDevice(hub, "dev-a", "")
	wantStatus(t, c.do("GET", e.HubURL(hub)+"/devices/dev-a/modules"+hubAPI, map[string]string{"Authorization": hubToken(e, testKey, hub, "dev-a", time.Minute)}, nil), 401)
}

func TestHubX509Devices(t *testing.T) {
	ca, _ := NewRootCA("hub CA")
	e := startEmu(t, Config{Hubs: []HubConfig{{CACertsPEM: []string{string(CertPEM(ca.Cert))}}}})
	hub := e.HubNames()[0]
	self, selfKey, _ := NewSelfSigned("x-self", time.Hour)
	s1, _ := Thumbprints(self)
	_, s256 := Thumbprints(self)
	lower := strings.ToLower(s256)
	_, _ = e.CreateDevice(hub, "x-self", &Authentication{Type: "selfSigned", X509Thumbprint: &X509Thumbprint{PrimaryThumbprint: &lower}})
	_, _ = e.CreateDevice(hub, "x-ca", &Authentication{Type: "certificateAuthority"})
	caLeaf, caKey, _ := ca.IssueLeaf("x-ca", time.Hour, nil, nil)
	badLeaf, badKey, _ := ca.IssueLeaf("not-x-ca", time.Hour, nil, nil)
	cases := []struct {
		name, dev string
		c         *client
		status    int
	}{
		{"selfSigned sha256 thumbprint (lower-case)", "x-self", newClient(t, e, self, selfKey), 204},
		{"selfSigned wrong cert", "x-self", newClient(t, e, caLeaf, caKey), 401},
		{"CA chain + CN", "x-ca", newClient(t, e, caLeaf, caKey), 204},
		{"CA chain, wrong CN", "x-ca", newClient(t, e, badLeaf, badKey), 401},
		{"CA device, self-signed cert", "x-ca", newClient(t, e, self, selfKey), 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.c.do("POST", e.HubURL(hub)+"/devices/"+tc.dev+"/messages/events?api-version=2021-04-12", nil, []byte("x")), tc.status)
		})
	}
	_ = s1
}

func TestHubDeviceRegistryAndKnobs(t *testing.T) {
	e, hub, c := hubEmu(t, Config{})
	pol := map[string]string{"Authorization": policyToken(e, hub)}
	r := c.do("PUT", e.HubURL(hub)+"/devices/dev-n"+hubAPI, pol, []byte(`{"deviceId":"dev-n","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}}`))
	wantStatus(t, r, 200)
	var d Device
	_ = json.Unmarshal(r.body, &d)
	if d.Authentication.SymmetricKey.PrimaryKey == "" || d.Status != "enabled" || d.GenerationID == "" {
		t.Fatalf("created device %+v", d)
	}
	r = c.do("PUT", e.HubURL(hub)+"/devices/dev-n"+hubAPI, pol, []byte(`{"deviceId":"dev-n"}`))
	wantStatus(t, r, 409)
	if !strings.HasPrefix(r.json(t)["Message"].(string), "ErrorCode:DeviceAlreadyExists;") {
		t.Fatal("409 DeviceAlreadyExists shape")
	}
	wantStatus(t, c.do("DELETE", e.HubURL(hub)+"/devices/dev-n"+hubAPI, pol, nil), 204)
	r = c.do("GET", e.HubURL(hub)+"/devices/dev-n"+hubAPI, pol, nil)
	wantStatus(t, r, 404)
	if !strings.HasPrefix(r.json(t)["Message"].(string), "ErrorCode:DeviceNotFound;") {
		t.Fatal("404 DeviceNotFound shape")
	}
	// generation_change: a module recreated behind the client's back.
	auth := map[string]string{"Authorization": hubToken(e, testKey, hub, "dev-a", time.Minute)}
	r = c.do("PUT", modURL(e, hub, "dev-a", "gm"), auth, []byte(`{"moduleId":"gm","deviceId":"dev-a"}`))
	var m Module
	_ = json.Unmarshal(r.body, &m)
	nm, err := e.RecreateModule(hub, "dev-a", "gm")
	if err != nil || nm.GenerationID == m.GenerationID {
		t.Fatalf("generation_change: %v", err)
	}
	r = c.do("GET", modURL(e, hub, "dev-a", "gm"), auth, nil)
	_ = json.Unmarshal(r.body, &m)
	if m.GenerationID != nm.GenerationID {
		t.Fatal("GET must show the new generationId")
	}
	// etag_conflict: the next conditional PUT gets 412 even with If-Match *.
	e.AddFault(Fault{Kind: FaultEtagConflict, Next: 1})
	auth["If-Match"] = "*"
	wantStatus(t, c.do("PUT", modURL(e, hub, "dev-a", "gm"), auth, []byte(`{"moduleId":"gm","deviceId":"dev-a"}`)), 412)
	wantStatus(t, c.do("PUT", modURL(e, hub, "dev-a", "gm"), auth, []byte(`{"moduleId":"gm","deviceId":"dev-a"}`)), 200)
	// drop_device on a module.
	if err := e.DropDevice(hub, "dev-a", "gm"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, c.do("GET", modURL(e, hub, "dev-a", "gm"), auth, nil), 404)
}
