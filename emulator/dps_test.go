package emulator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func symEmu(t *testing.T, cfg Config) *Emulator {
	e := startEmu(t, cfg)
	if err := e.AddEnrollment(Enrollment{Attestation: AttestSymmetric, ID: "device-01", PrimaryKey: testKey}); err != nil {
		t.Fatal(err)
	}
	if err := e.AddEnrollment(Enrollment{Attestation: AttestSymmetric, Group: true, ID: "group-a", PrimaryKey: testGroup}); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestDPSEnforcementRows covers rows 1-5 of emulator.md §2 for the register PUT.
func TestDPSEnforcementRows(t *testing.T) {
	e := symEmu(t, Config{})
	c := newClient(t, e, nil, nil)
	good := dpsToken(e, testKey, testScope, "device-01", time.Minute)
	secondary, _ := e.Enrollment("", false, "device-01")
	cases := []struct {
		name, scope, id, api, auth, body string
		status, code                     int
	}{
		{"ok", testScope, "device-01", "2021-06-01", good, `{"registrationId":"device-01"}`, 202, 0},
		{"row1 missing api-version", testScope, "device-01", "", good, `{"registrationId":"device-01"}`, 400, 400001},
		{"row1 unknown api-version", testScope, "device-01", "2018-01-01", good, `{"registrationId":"device-01"}`, 400, 400001},
		{"row1 csr on old api-version", testScope, "device-01", "2021-06-01", good, `{"registrationId":"device-01","csr":"AAAA"}`, 400, 400004},
		{"row2 unknown scope", "0ne00000FFF", "device-01", "2021-06-01", good, `{"registrationId":"device-01"}`, 404, 404001},
		{"row3 not json", testScope, "device-01", "2021-06-01", good, `not json`, 400, 400004},
		{"row3 id mismatch", testScope, "device-01", "2021-06-01", good, `{"registrationId":"device-02"}`, 400, 400004},
		{"row3 tpm without EK", testScope, "device-01", "2021-06-01", good, `{"registrationId":"device-01","tpm":{}}`, 400, 400004},
		{"row4 unknown registration", testScope, "nobody", "2021-06-01", dpsToken(e, testKey, testScope, "nobody", time.Minute), `{"registrationId":"nobody"}`, 401, 401002},
		{"row5 wrong key", testScope, "device-01", "2021-06-01", dpsToken(e, testGroup, testScope, "device-01", time.Minute), `{"registrationId":"device-01"}`, 401, 401002},
		{"row5 expired", testScope, "device-01", "2021-06-01", dpsToken(e, testKey, testScope, "device-01", -time.Second), `{"registrationId":"device-01"}`, 401, 401002},
		{"row5 sr for another registration", testScope, "device-01", "2021-06-01", strings.Replace(dpsToken(e, testKey, testScope, "device-01", time.Minute), "device-01", "device-02", 1), `{"registrationId":"device-01"}`, 401, 401002},
		{"row5 wrong skn", testScope, "device-01", "2021-06-01", strings.Replace(good, "skn=registration", "skn=other", 1), `{"registrationId":"device-01"}`, 401, 401002},
		{"row5 no credentials", testScope, "device-01", "2021-06-01", "", `{"registrationId":"device-01"}`, 401, 401002},
		{"row5 secondary key", testScope, "device-01", "2021-06-01", dpsToken(e, secondary.SecondaryKey, testScope, "device-01", time.Minute), `{"registrationId":"device-01"}`, 202, 0},
		{"node-style case-kept sr", testScope, "device-01", "2019-03-31", nodeDPSToken(e, testKey, testScope, "device-01"), `{"registrationId":"device-01"}`, 202, 0},
		{"c-style encoded sr", testScope, "device-01", "2021-10-01", cDPSToken(e, testKey, testScope, "device-01"), `{"registrationId":"device-01"}`, 202, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{"Content-Type": "application/json"}
			if tc.auth != "" {
				hdr["Authorization"] = tc.auth
			}
			url := e.DPSURL() + "/" + tc.scope + "/registrations/" + tc.id + "/register"
			if tc.api != "" {
				url += "?api-version=" + tc.api
			}
			r := c.do("PUT", url, hdr, []byte(tc.body))
			wantStatus(t, r, tc.status)
			if ct := r.header.Get("Content-Type"); ct != jsonContentType {
				t.Fatalf("Content-Type %q", ct)
			}
			m := r.json(t)
			if tc.code != 0 && int(m["errorCode"].(float64)) != tc.code {
				t.Fatalf("errorCode %v, want %d", m["errorCode"], tc.code)
			}
			if tc.status == 202 && (m["status"] != "assigning" || m["operationId"] == "" || r.header.Get("Retry-After") != "1") {
				t.Fatalf("bad 202: %v %v", m, r.header)
			}
		})
	}
}

func nodeDPSToken(e *Emulator, key, scope, regID string) string {
	raw, _ := base64.StdEncoding.DecodeString(key)
	se := itoa(int(e.Now().Add(time.Hour).Unix()))
	sr := scope + "/registrations/" + regID
	return "SharedAccessSignature sr=" + sr + "&sig=" + strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(SignSAS(raw, sr, se)) + "&skn=registration&se=" + se
}

func cDPSToken(e *Emulator, key, scope, regID string) string {
	raw, _ := base64.StdEncoding.DecodeString(key)
	se := itoa(int(e.Now().Add(time.Hour).Unix()))
	sr := scope + "%2fregistrations%2f" + regID
	return "SharedAccessSignature sr=" + sr + "&sig=" + strings.NewReplacer("+", "%2b", "/", "%2f", "=", "%3d").Replace(SignSAS(raw, sr, se)) + "&se=" + se + "&skn=registration"
}

func TestDPSSymmetricAssignAndHubDevice(t *testing.T) {
	e := symEmu(t, Config{})
	c := newClient(t, e, nil, nil)
	hub := e.HubNames()[0]
	e.AddFault(Fault{Kind: FaultAssignAfter, Polls: 3})
	m := register(t, c, e, "device-01", dpsToken(e, testKey, testScope, "device-01", time.Minute), regBody("device-01"))
	rs := regState(t, m)
	for k, want := range map[string]string{"status": "assigned", "assignedHub": hub, "deviceId": "device-01", "substatus": "initialAssignment", "registrationId": "device-01"} {
		if rs[k] != want {
			t.Errorf("%s = %v, want %s", k, rs[k], want)
		}
	}
	for _, k := range []string{"etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc"} {
		if rs[k] == nil {
			t.Errorf("missing %s", k)
		}
	}
	polls := 0
	for _, le := range e.Log() {
		if le.Route == "operation" {
			polls++
			if le.Status == 202 && !strings.Contains(le.ResponseBody, `"registrationState":{"registrationId":"device-01","status":"assigning"}`) {
				t.Errorf("202 poll without registrationState.registrationId: %s", le.ResponseBody)
			}
		}
	}
	if polls != 4 {
		t.Errorf("%d polls, want 3 assigning + 1 terminal", polls)
	}
	d, _, ok := e.GetDevice(hub, "device-01")
	if !ok || d.Authentication.Type != "sas" || d.Authentication.SymmetricKey.PrimaryKey != testKey {
		t.Fatalf("hub device %+v", d)
	}
	// Group enrollment: the derived key signs, the hub gets the derived key.
	derived, _ := DeriveGroupKey(testGroup, "dev-g1")
	m = register(t, c, e, "dev-g1", dpsToken(e, derived, testScope, "dev-g1", time.Minute), regBody("dev-g1"))
	rs = regState(t, m)
	if rs["status"] != "assigned" || rs["symmetricKey"].(map[string]any)["enrollmentGroupId"] != "group-a" {
		t.Fatalf("group registration: %v", rs)
	}
	d, _, _ = e.GetDevice(hub, "dev-g1")
	if d.Authentication.SymmetricKey.PrimaryKey != derived {
		t.Fatal("hub device of a group registration must carry the derived key")
	}
	// Re-registration to the same hub keeps initialAssignment.
	m = register(t, c, e, "device-01", dpsToken(e, testKey, testScope, "device-01", time.Minute), regBody("device-01"))
	if regState(t, m)["substatus"] != "initialAssignment" {
		t.Fatalf("re-registration substatus %v", regState(t, m)["substatus"])
	}
}

func TestDPSPollRules(t *testing.T) {
	e := symEmu(t, Config{OperationTTL: time.Minute})
	c := newClient(t, e, nil, nil)
	e.AddFault(Fault{Kind: FaultAssignAfter, Never: true, ID: "device-01"})
	tok := dpsToken(e, testKey, testScope, "device-01", 30*time.Second)
	hdr := map[string]string{"Authorization": tok, "Content-Type": "application/json"}
	r := c.do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), hdr, regBody("device-01"))
	wantStatus(t, r, 202)
	op := r.json(t)["operationId"].(string)
	// Node sends a {} body on the poll GET: tolerated.
	wantStatus(t, c.do("GET", opURL(e, testScope, "device-01", op, "2021-06-01"), hdr, []byte("{}")), 202)
	wantStatus(t, c.do("GET", opURL(e, testScope, "device-01", "4.0.nope", "2021-06-01"), hdr, nil), 404)
	// Operation of device-01 polled as another registration: 404 (with that one's token).
	derived, _ := DeriveGroupKey(testGroup, "dev-x")
	other := map[string]string{"Authorization": dpsToken(e, derived, testScope, "dev-x", time.Minute)}
	wantStatus(t, c.do("GET", opURL(e, testScope, "dev-x", op, "2021-06-01"), other, nil), 404)
	// Poll without credentials: 401.
	wantStatus(t, c.do("GET", opURL(e, testScope, "device-01", op, "2021-06-01"), nil, nil), 401)
	// A token that expires between polls is rejected on the poll.
	e.SetClockOffset(31 * time.Second)
	wantStatus(t, c.do("GET", opURL(e, testScope, "device-01", op, "2021-06-01"), hdr, nil), 401)
	// An expired operation is 404 even with a fresh token.
	e.SetClockOffset(2 * time.Minute)
	fresh := map[string]string{"Authorization": dpsToken(e, testKey, testScope, "device-01", time.Minute)}
	wantStatus(t, c.do("GET", opURL(e, testScope, "device-01", op, "2021-06-01"), fresh, nil), 404)
}

func TestDPSAssignAfterDuration(t *testing.T) {
	e := symEmu(t, Config{})
	c := newClient(t, e, nil, nil)
	e.AddFault(Fault{Kind: FaultAssignAfter, For: 10 * time.Second})
	hdr := map[string]string{"Authorization": dpsToken(e, testKey, testScope, "device-01", time.Hour)}
	r := c.do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), hdr, regBody("device-01"))
	op := r.json(t)["operationId"].(string)
	wantStatus(t, c.do("GET", opURL(e, testScope, "device-01", op, "2021-06-01"), hdr, nil), 202)
	e.SetClockOffset(11 * time.Second)
	wantStatus(t, c.do("GET", opURL(e, testScope, "device-01", op, "2021-06-01"), hdr, nil), 200)
}

// TestDPSOperationOutcomes covers rows 6 and 7 and the fail_registration knob.
func TestDPSOperationOutcomes(t *testing.T) {
	cases := []struct {
		name   string
		cfg    Config
		setup  func(e *Emulator)
		status string
		code   float64
		put401 bool
	}{
		{"disabled enrollment", Config{}, func(e *Emulator) { _ = e.DisableEnrollment("", false, "device-01", true) }, "disabled", 0, false},
		{"disabled enrollment switch 401", Config{Switches: Switches{DisabledEnrollment401: true}}, func(e *Emulator) { _ = e.DisableEnrollment("", false, "device-01", true) }, "", 0, true},
		{"no linked hub", Config{Hubs: []HubConfig{{Unlinked: true}}}, nil, "failed", 400208, false},
		{"hub refuses", Config{Hubs: []HubConfig{{RefuseDevices: true}}}, nil, "failed", 400209, false},
		{"fail_registration", Config{}, func(e *Emulator) {
			e.AddFault(Fault{Kind: FaultFailRegistration, ErrorCode: 400299, ErrorMessage: "boom", ID: "device-01", Next: 1})
		}, "failed", 400299, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := symEmu(t, tc.cfg)
			if tc.setup != nil {
				tc.setup(e)
			}
			c := newClient(t, e, nil, nil)
			tok := dpsToken(e, testKey, testScope, "device-01", time.Minute)
			if tc.put401 {
				r := c.do("PUT", registerURL(e, testScope, "device-01", "2021-06-01"), map[string]string{"Authorization": tok}, regBody("device-01"))
				wantStatus(t, r, 401)
				return
			}
			rs := regState(t, register(t, c, e, "device-01", tok, regBody("device-01")))
			if rs["status"] != tc.status {
				t.Fatalf("status %v, want %s (%v)", rs["status"], tc.status, rs)
			}
			if tc.code != 0 && (rs["errorCode"] != tc.code || rs["errorMessage"] == "") {
				t.Fatalf("errorCode %v (%T), want %v", rs["errorCode"], rs["errorCode"], tc.code)
			}
			if _, both := rs["code"]; both {
				t.Fatal("code and errorCode must not both appear")
			}
		})
	}
}

func TestDPSReprovisioning(t *testing.T) {
	cases := []struct {
		policy, second, third string
		modulesKept           bool
	}{
		{ReprovisionMigrate, "deviceDataMigrated", "reprovisionedToInitialAssignment", true},
		{ReprovisionReset, "deviceDataReset", "reprovisionedToInitialAssignment", false},
		{ReprovisionNever, "initialAssignment", "initialAssignment", true},
	}
	for _, tc := range cases {
		t.Run(tc.policy, func(t *testing.T) {
			e := startEmu(t, Config{Hubs: []HubConfig{{}, {}}})
			hubs := e.HubNames()
			if err := e.AddEnrollment(Enrollment{Attestation: AttestSymmetric, ID: "device-01", PrimaryKey: testKey, Reprovision: tc.policy}); err != nil {
				t.Fatal(err)
			}
			c := newClient(t, e, nil, nil)
			tok := func() string { return dpsToken(e, testKey, testScope, "device-01", time.Minute) }
			rs := regState(t, register(t, c, e, "device-01", tok(), regBody("device-01")))
			if rs["assignedHub"] != hubs[0] {
				t.Fatalf("first hub %v", rs["assignedHub"])
			}
			hc := newClient(t, e, nil, nil)
			r := hc.do("PUT", e.HubURL(hubs[0])+"/devices/device-01/modules/m1?api-version=2017-11-08-preview",
				map[string]string{"Authorization": hubToken(e, testKey, hubs[0], "device-01", time.Minute)}, []byte(`{"moduleId":"m1","deviceId":"device-01"}`))
			wantStatus(t, r, 200)
			e.Reassign("device-01", hubs[1])
			rs = regState(t, register(t, c, e, "device-01", tok(), regBody("device-01")))
			if rs["substatus"] != tc.second {
				t.Fatalf("second substatus %v, want %s", rs["substatus"], tc.second)
			}
			if tc.policy != ReprovisionNever {
				if _, _, ok := e.GetDevice(hubs[0], "device-01"); ok {
					t.Fatal("device must be deleted from the old hub")
				}
				_, mods, _ := e.GetDevice(hubs[1], "device-01")
				if (len(mods) == 1) != tc.modulesKept {
					t.Fatalf("modules after %s: %v", tc.policy, mods)
				}
			} else if rs["assignedHub"] != hubs[0] {
				t.Fatal("never-reprovision must keep the old hub")
			}
			e.Reassign("device-01", hubs[0])
			rs = regState(t, register(t, c, e, "device-01", tok(), regBody("device-01")))
			if rs["substatus"] != tc.third || rs["assignedHub"] != hubs[0] {
				t.Fatalf("third: %v", rs)
			}
		})
	}
}

func TestDPSAllocationPolicies(t *testing.T) {
	e := startEmu(t, Config{Hubs: []HubConfig{{}, {}}, CustomAllocator: func(r AllocationRequest) (AllocationResult, error) {
		if strings.Contains(string(r.Payload), "fail") {
			return AllocationResult{Failure: "refused by custom allocator"}, nil
		}
		return AllocationResult{Hub: r.LinkedHubs[1], Payload: []byte(`{"hubLabel":"second"}`)}, nil
	}})
	hubs := e.HubNames()
	_ = e.AddEnrollment(Enrollment{Attestation: AttestSymmetric, Group: true, ID: "custom", PrimaryKey: testGroup, Allocation: AllocCustom})
	c := newClient(t, e, nil, nil)
	k, _ := DeriveGroupKey(testGroup, "dev-c")
	rs := regState(t, register(t, c, e, "dev-c", dpsToken(e, k, testScope, "dev-c", time.Minute), []byte(`{"registrationId":"dev-c","payload":{"a":1}}`)))
	if rs["assignedHub"] != hubs[1] || rs["payload"].(map[string]any)["hubLabel"] != "second" {
		t.Fatalf("custom allocation: %v", rs)
	}
	k2, _ := DeriveGroupKey(testGroup, "dev-f")
	rs = regState(t, register(t, c, e, "dev-f", dpsToken(e, k2, testScope, "dev-f", time.Minute), []byte(`{"registrationId":"dev-f","payload":{"x":"fail"}}`)))
	if rs["status"] != "failed" || rs["errorCode"] != float64(400207) {
		t.Fatalf("custom failure: %v", rs)
	}
	// Hashed allocation is deterministic and stays within the linked hubs.
	_ = e.AddEnrollment(Enrollment{Attestation: AttestSymmetric, ID: "hashed-1", PrimaryKey: testKey, Allocation: AllocHashed})
	rs = regState(t, register(t, c, e, "hashed-1", dpsToken(e, testKey, testScope, "hashed-1", time.Minute), regBody("hashed-1")))
	if rs["assignedHub"] != hubs[0] && rs["assignedHub"] != hubs[1] {
		t.Fatalf("hashed: %v", rs)
	}
	// Default custom allocation (no allocator) echoes the request payload.
	e2 := startEmu(t, Config{})
	_ = e2.AddEnrollment(Enrollment{Attestation: AttestSymmetric, ID: "echo", PrimaryKey: testKey, Allocation: AllocCustom})
	c2 := newClient(t, e2, nil, nil)
	rs = regState(t, register(t, c2, e2, "echo", dpsToken(e2, testKey, testScope, "echo", time.Minute), []byte(`{"registrationId":"echo","payload":{"modelId":"dtmi:x;1"}}`)))
	if rs["payload"].(map[string]any)["modelId"] != "dtmi:x;1" {
		t.Fatalf("echo payload: %v", rs)
	}
}

func TestDPSX509(t *testing.T) {
	e := startEmu(t, Config{})
	hub := e.HubNames()[0]
	selfCert, selfKey, _ := NewSelfSigned("x509-ind", time.Hour)
	otherCert, otherKey, _ := NewSelfSigned("x509-ind", time.Hour)
	groupCA, _ := e.PKI().Root.NewIntermediate("group CA")
	unverCA, _ := NewRootCA("unverified CA")
	_ = e.AddEnrollment(Enrollment{Attestation: AttestX509, ID: "x509-ind", PrimaryCertPEM: string(CertPEM(selfCert))})
	_ = e.AddEnrollment(Enrollment{Attestation: AttestX509, Group: true, ID: "xgroup", SigningCertPEM: string(CertPEM(groupCA.Cert))})
	_ = e.AddEnrollment(Enrollment{Attestation: AttestX509, Group: true, ID: "ugroup", SigningCertPEM: string(CertPEM(unverCA.Cert)), Unverified: true})
	gLeaf, gKey, _ := groupCA.IssueLeaf("x509-grp", time.Hour, nil, nil)
	wrongCN, wrongKey, _ := groupCA.IssueLeaf("someone-else", time.Hour, nil, nil)
	uLeaf, uKey, _ := unverCA.IssueLeaf("x509-unv", time.Hour, nil, nil)
	strangerCA, _ := NewRootCA("stranger")
	sLeaf, sKey, _ := strangerCA.IssueLeaf("x509-str", time.Hour, nil, nil)
	// Checklist: X.509 registration completes with assign_after = 3 as well.
	e.AddFault(Fault{Kind: FaultAssignAfter, Polls: 3})

	cases := []struct {
		name, regID string
		c           *client
		status      int
		msg         string
	}{
		{"individual", "x509-ind", newClient(t, e, selfCert, selfKey), 202, ""},
		{"individual wrong cert", "x509-ind", newClient(t, e, otherCert, otherKey), 401, "Invalid certificate."},
		{"group leaf + chain", "x509-grp", newClient(t, e, gLeaf, gKey, groupCA.Cert), 202, ""},
		{"group CN mismatch", "x509-grp", newClient(t, e, wrongCN, wrongKey, groupCA.Cert), 401, "Invalid certificate."},
		{"unverified group CA", "x509-unv", newClient(t, e, uLeaf, uKey), 401, "CA certificate not found."},
		{"unknown CA", "x509-str", newClient(t, e, sLeaf, sKey), 401, "CA certificate not found."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.c.do("PUT", registerURL(e, testScope, tc.regID, "2021-06-01"), map[string]string{"Content-Type": "application/json"}, regBody(tc.regID))
			wantStatus(t, r, tc.status)
			if tc.msg != "" {
				m := r.json(t)
				if m["message"] != tc.msg || m["errorCode"] != float64(401002) {
					t.Fatalf("error %v", m)
				}
				return
			}
			rs := regState(t, register(t, tc.c, e, tc.regID, "", regBody(tc.regID)))
			if rs["status"] != "assigned" || rs["x509"] == nil {
				t.Fatalf("x509 registration: %v", rs)
			}
			d, _, _ := e.GetDevice(hub, tc.regID)
			if d.Authentication.Type != "selfSigned" || d.Authentication.X509Thumbprint.PrimaryThumbprint == nil {
				t.Fatalf("hub device auth %+v", d.Authentication)
			}
		})
	}
	// Expired leaf (via the clock) is refused.
	e.SetClockOffset(2 * time.Hour)
	r := newClient(t, e, selfCert, selfKey).do("PUT", registerURL(e, testScope, "x509-ind", "2021-06-01"), nil, regBody("x509-ind"))
	wantStatus(t, r, 401)
}

func TestDPSCertificateIssuance(t *testing.T) {
	e := startEmu(t, Config{})
	_ = e.AddEnrollment(Enrollment{Attestation: AttestSymmetric, ID: "device-01", PrimaryKey: testKey, IssueCerts: true})
	c := newClient(t, e, nil, nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "device-01"}}, key)
	body, _ := json.Marshal(map[string]string{"registrationId": "device-01", "csr": base64.StdEncoding.EncodeToString(der)})
	hdr := map[string]string{"Authorization": dpsToken(e, testKey, testScope, "device-01", time.Minute)}
	r := c.do("PUT", registerURL(e, testScope, "device-01", "2025-07-01-preview"), hdr, body)
	wantStatus(t, r, 202)
	op := r.json(t)["operationId"].(string)
	p := c.do("GET", opURL(e, testScope, "device-01", op, "2025-07-01-preview"), hdr, nil)
	rs := regState(t, p.json(t))
	chain, _ := rs["issuedCertificateChain"].([]any)
	if len(chain) != 3 {
		t.Fatalf("issuedCertificateChain %v", rs)
	}
	leafDER, _ := base64.StdEncoding.DecodeString(chain[0].(string))
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil || leaf.Subject.CommonName != "device-01" {
		t.Fatalf("issued leaf: %v", err)
	}
	d, _, _ := e.GetDevice(e.HubNames()[0], "device-01")
	s1, _ := Thumbprints(leaf)
	if *d.Authentication.X509Thumbprint.PrimaryThumbprint != s1 {
		t.Fatal("hub device must carry the issued leaf's thumbprint")
	}
	// CSR with the wrong CN → 400.
	bad, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "other"}}, key)
	body, _ = json.Marshal(map[string]string{"registrationId": "device-01", "csr": base64.StdEncoding.EncodeToString(bad)})
	wantStatus(t, c.do("PUT", registerURL(e, testScope, "device-01", "2025-07-01-preview"), hdr, body), 400)
	// Status lookup: 200 with the registration, and no issued chain; csr there is a 400.
	sl := c.do("POST", e.DPSURL()+"/"+testScope+"/registrations/device-01?api-version=2021-06-01", hdr, regBody("device-01"))
	wantStatus(t, sl, 200)
	if m := sl.json(t); m["assignedHub"] == nil || m["issuedCertificateChain"] != nil {
		t.Fatalf("status lookup %v", m)
	}
	wantStatus(t, c.do("POST", e.DPSURL()+"/"+testScope+"/registrations/device-01?api-version=2025-07-01-preview", hdr, body), 400)
}
