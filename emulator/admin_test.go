package emulator

import (
	"encoding/json"
	"testing"
	"time"
)

func TestAdminAPI(t *testing.T) {
	e := startEmu(t, Config{AdminAddr: "127.0.0.1:0", AdminToken: "s3cret"})
	c := newClient(t, e, nil, nil)
	auth := map[string]string{"Authorization": "Bearer s3cret"}
	post := func(path string, body any) resp {
		b, _ := json.Marshal(body)
		return c.do("POST", e.AdminURL()+path, auth, b)
	}
	wantStatus(t, c.do("GET", e.AdminURL()+"/admin/log", map[string]string{"Authorization": "Bearer nope"}, nil), 401)
	wantStatus(t, post("/admin/enrollments", map[string]any{"enrollment": Enrollment{Attestation: AttestSymmetric, ID: "device-01", PrimaryKey: testKey}}), 200)
	wantStatus(t, post("/admin/enrollments", map[string]any{"enrollment": Enrollment{Attestation: "bogus", ID: "x"}}), 400)
	wantStatus(t, post("/admin/faults", map[string]any{"fault": Fault{Kind: FaultThrottle, Endpoint: "dps", Next: 1}}), 200)
	dc := newClient(t, e, nil, nil)
	tok := map[string]string{"Authorization": dpsToken(e, testKey, testScope, "device-01", time.Minute)}
	wantStatus(t, dc.do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), tok, regBody("device-01")), 429)
	rs := regState(t, register(t, dc, e, "device-01", tok["Authorization"], regBody("device-01")))
	if rs["status"] != "assigned" {
		t.Fatal(rs)
	}
	hub := e.HubNames()[0]
	r := c.do("GET", e.AdminURL()+"/admin/device?hub="+hub+"&device=device-01", auth, nil)
	wantStatus(t, r, 200)
	wantStatus(t, post("/admin/enrollments/disable", map[string]any{"id": "device-01", "disabled": true}), 200)
	if d, _, _ := e.GetDevice(hub, "device-01"); d.Status != "disabled" {
		t.Fatal("disable via admin")
	}
	wantStatus(t, post("/admin/clock/offset", map[string]any{"seconds": 90}), 200)
	if time.Until(e.Now()) < 80*time.Second {
		t.Fatal("clock offset via admin")
	}
	var log []LogEntry
	r = c.do("GET", e.AdminURL()+"/admin/log", auth, nil)
	if err := json.Unmarshal(r.body, &log); err != nil || len(log) == 0 {
		t.Fatalf("log via admin: %v", err)
	}
	wantStatus(t, post("/admin/reset", nil), 200)
	if len(e.Enrollments()) != 0 {
		t.Fatal("reset via admin")
	}
	wantStatus(t, post("/admin/nope", nil), 400)
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	// Enrollments from the configuration (as the command passes them) must not wipe the
	// persisted state on restart.
	cfg := Config{StateDir: dir, PKIDir: dir + "/pki", Hubs: []HubConfig{{Name: "persist-hub.example"}},
		Enrollments: []Enrollment{{Attestation: AttestSymmetric, ID: "device-01", PrimaryKey: testKey}}}
	e, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, e, nil, nil)
	register(t, c, e, "device-01", dpsToken(e, testKey, testScope, "device-01", time.Minute), regBody("device-01"))
	r := c.do("PUT", e.HubURL("persist-hub.example")+"/devices/device-01/modules/m1"+hubAPI,
		map[string]string{"Authorization": hubToken(e, testKey, "persist-hub.example", "device-01", time.Minute)}, []byte(`{"moduleId":"m1","deviceId":"device-01"}`))
	wantStatus(t, r, 200)
	var m Module
	_ = json.Unmarshal(r.body, &m)
	root := e.PKI().Root.Cert
	e.Stop()

	e2 := startEmu(t, cfg)
	if !e2.PKI().Root.Cert.Equal(root) {
		t.Fatal("restarted emulator must keep its root CA")
	}
	if _, ok := e2.Enrollment("", false, "device-01"); !ok {
		t.Fatal("enrollment lost")
	}
	if reg, ok := e2.Registration("", "device-01"); !ok || reg.AssignedHub != "persist-hub.example" {
		t.Fatal("registration lost")
	}
	_, mods, ok := e2.GetDevice("persist-hub.example", "device-01")
	if !ok || mods["m1"].GenerationID != m.GenerationID || mods["m1"].Etag != m.Etag {
		t.Fatalf("device/module lost: %v", mods)
	}
	// The etag counter continues after a restart.
	c2 := newClient(t, e2, nil, nil)
	r = c2.do("PUT", e2.HubURL("persist-hub.example")+"/devices/device-01/modules/m1"+hubAPI,
		map[string]string{"Authorization": hubToken(e2, testKey, "persist-hub.example", "device-01", time.Minute), "If-Match": "*"}, []byte(`{"moduleId":"m1","deviceId":"device-01"}`))
	wantStatus(t, r, 200)
	var m2 Module
	_ = json.Unmarshal(r.body, &m2)
	if m2.Etag == m.Etag {
		t.Fatal("etag must bump after restart")
	}
}
