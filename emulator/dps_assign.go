package emulator

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"
)

type certInfoJSON struct {
	SubjectName      string `json:"subjectName"`
	SHA1Thumbprint   string `json:"sha1Thumbprint"`
	SHA256Thumbprint string `json:"sha256Thumbprint"`
	IssuerName       string `json:"issuerName"`
	NotBeforeUTC     string `json:"notBeforeUtc"`
	NotAfterUTC      string `json:"notAfterUtc"`
	SerialNumber     string `json:"serialNumber"`
	Version          int    `json:"version"`
}

func certInfoOf(c *x509.Certificate) *certInfoJSON {
	s1, s2 := Thumbprints(c)
	return &certInfoJSON{
		SubjectName: c.Subject.String(), SHA1Thumbprint: s1, SHA256Thumbprint: s2,
		IssuerName: c.Issuer.String(), NotBeforeUTC: dpsTime(c.NotBefore), NotAfterUTC: dpsTime(c.NotAfter),
		SerialNumber: strings.ToUpper(c.SerialNumber.Text(16)), Version: c.Version,
	}
}

// registrationState is DeviceRegistrationResult (cloud-dps.md §4.2).
type registrationState struct {
	RegistrationID string `json:"registrationId"`
	Created        string `json:"createdDateTimeUtc,omitempty"`
	AssignedHub    string `json:"assignedHub,omitempty"`
	DeviceID       string `json:"deviceId,omitempty"`
	Status         string `json:"status"`
	Substatus      string `json:"substatus,omitempty"`
	ErrorCode      int    `json:"errorCode,omitempty"`
	ErrorMessage   string `json:"errorMessage,omitempty"`
	LastUpdated    string `json:"lastUpdatedDateTimeUtc,omitempty"`
	Etag           string `json:"etag,omitempty"`
	SymmetricKey   *struct {
		EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	} `json:"symmetricKey,omitempty"`
	X509 *struct {
		CertificateInfo        *certInfoJSON `json:"certificateInfo,omitempty"`
		EnrollmentGroupID      string        `json:"enrollmentGroupId,omitempty"`
		SigningCertificateInfo *certInfoJSON `json:"signingCertificateInfo,omitempty"`
	} `json:"x509,omitempty"`
	TPM *struct {
		AuthenticationKey string `json:"authenticationKey"`
	} `json:"tpm,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
	IssuedCertificateChain []string        `json:"issuedCertificateChain,omitempty"`
}

// completeLocked computes (once) the terminal answer of an operation: allocation, hub
// device creation, reprovisioning, certificate issuance (emulator.md §2).
func (e *Emulator) completeLocked(op *operation) ([]byte, error) {
	if op.terminalSet {
		return op.terminal, nil
	}
	now := e.clk.Now()
	st := registrationState{RegistrationID: op.regID, Created: dpsTime(op.created), LastUpdated: dpsTime(now), Etag: e.dpsEtagLocked()}
	en := e.enrollments[op.att.enKey]
	status := e.assignLocked(op, en, &st, now)
	st.Status = status
	b, err := json.Marshal(map[string]any{"operationId": op.id, "status": status, "registrationState": st})
	if err != nil {
		return nil, fmt.Errorf("encode operation result: %w", err)
	}
	op.terminal, op.terminalSet = b, true
	if reg := e.registrations[regKey(op.scope, op.regID)]; reg != nil {
		reg.LastState, _ = json.Marshal(st)
	} else {
		rs, _ := json.Marshal(st)
		e.registrations[regKey(op.scope, op.regID)] = &Registration{IDScope: op.scope, RegistrationID: op.regID, EnrollmentKey: op.att.enKey, Created: op.created, Updated: now, Etag: st.Etag, LastState: rs}
	}
	_ = e.persistLocked()
	return b, nil
}

func (e *Emulator) dpsEtagLocked() string {
	return base64.StdEncoding.EncodeToString([]byte(`"` + e.uuidLocked() + `"`))
}

func failState(st *registrationState, code int, msg string) string {
	st.ErrorCode, st.ErrorMessage = code, msg
	return "failed"
}

func (e *Emulator) assignLocked(op *operation, en *Enrollment, st *registrationState, now time.Time) string {
	if en == nil {
		return failState(st, dpsCodeUnauthorized, "Enrollment not found.")
	}
	if en.Disabled {
		// Emulator default (real behaviour unverified): the operation ends "disabled";
		// Switches.DisabledEnrollment401 answers the PUT with 401 instead.
		return "disabled"
	}
	if op.fail != nil {
		code := op.fail.ErrorCode
		if code == 0 {
			code = dpsCodeHubRefused
		}
		msg := op.fail.ErrorMessage
		if msg == "" {
			msg = "Registration failed (fault injection)."
		}
		return failState(st, code, msg)
	}
	target, payload, deviceID, code, msg := e.allocateLocked(op, en)
	if code != 0 {
		return failState(st, code, msg)
	}
	hub := e.hubByName[strings.ToLower(target)]
	if hub == nil || hub.cfg.Unlinked {
		return failState(st, dpsCodeNoHub, "No linked IoT hub could be assigned.")
	}
	if hub.cfg.RefuseDevices {
		return failState(st, dpsCodeHubRefused, "The IoT hub refused the device.")
	}
	if deviceID == "" {
		deviceID = en.DeviceID
	}
	if deviceID == "" {
		deviceID = op.regID
	}

	// Reprovisioning (emulator convention for the substatus, see emulator.md §2).
	key := regKey(op.scope, op.regID)
	prev := e.registrations[key]
	substatus, initial := "initialAssignment", hub.name
	var carried map[string]*Module
	if prev != nil && prev.AssignedHub != "" {
		initial = prev.InitialHub
		substatus = prev.Substatus
		if !strings.EqualFold(prev.AssignedHub, hub.name) {
			oldHub := e.hubByName[strings.ToLower(prev.AssignedHub)]
			switch en.Reprovision {
			case ReprovisionNever:
				if oldHub != nil {
					hub = oldHub
				}
			default:
				if oldHub != nil {
					if old := oldHub.devices[prev.DeviceID]; old != nil {
						if en.Reprovision == ReprovisionMigrate {
							carried = old.Modules
						}
						delete(oldHub.devices, prev.DeviceID)
					}
				}
				substatus = "deviceDataMigrated"
				if en.Reprovision == ReprovisionReset {
					substatus = "deviceDataReset"
				}
				if strings.EqualFold(hub.name, initial) {
					substatus = "reprovisionedToInitialAssignment"
				}
			}
		}
	}

	auth, tpmBlob, issued, err := e.deviceAuthLocked(op)
	if err != nil {
		return failState(st, dpsCodeHubRefused, err.Error())
	}
	d := hub.devices[deviceID]
	if d == nil {
		d = e.newDeviceLocked(deviceID)
		hub.devices[deviceID] = d
	}
	d.Authentication = auth
	d.Capabilities = map[string]bool{"iotEdge": en.IoTEdge}
	for id, m := range carried {
		if _, ok := d.Modules[id]; !ok {
			d.Modules[id] = m
		}
	}
	e.bumpDeviceLocked(d)

	st.AssignedHub, st.DeviceID, st.Substatus = hub.name, deviceID, substatus
	st.Payload = payload
	switch op.att.kind {
	case AttestSymmetric:
		if en.Group {
			st.SymmetricKey = &struct {
				EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
			}{en.ID}
		}
	case AttestX509:
		st.X509 = &struct {
			CertificateInfo        *certInfoJSON `json:"certificateInfo,omitempty"`
			EnrollmentGroupID      string        `json:"enrollmentGroupId,omitempty"`
			SigningCertificateInfo *certInfoJSON `json:"signingCertificateInfo,omitempty"`
		}{CertificateInfo: certInfoOf(op.att.leaf)}
		if en.Group {
			st.X509.EnrollmentGroupID = en.ID
			st.X509.SigningCertificateInfo = certInfoOf(op.att.signing)
		}
	case AttestTPM:
		st.TPM = &struct {
			AuthenticationKey string `json:"authenticationKey"`
		}{base64.StdEncoding.EncodeToString(tpmBlob)}
	}
	st.IssuedCertificateChain = issued

	if prev == nil {
		prev = &Registration{IDScope: op.scope, RegistrationID: op.regID, Created: op.created}
		e.registrations[key] = prev
	}
	prev.EnrollmentKey, prev.DeviceID, prev.AssignedHub, prev.Substatus = op.att.enKey, deviceID, hub.name, substatus
	if prev.InitialHub == "" {
		prev.InitialHub = initial
	}
	prev.Updated, prev.Etag = now, st.Etag
	return "assigned"
}

// allocateLocked picks the target hub per the enrollment's policy and the reassign knob.
func (e *Emulator) allocateLocked(op *operation, en *Enrollment) (hub string, payload json.RawMessage, deviceID string, code int, msg string) {
	var linked []string
	if len(en.Hubs) > 0 {
		linked = append(linked, en.Hubs...)
	} else {
		for _, h := range e.hubs {
			if !h.cfg.Unlinked {
				linked = append(linked, h.name)
			}
		}
	}
	if r, ok := e.reassign[strings.ToLower(op.regID)]; ok {
		delete(e.reassign, strings.ToLower(op.regID))
		return r, nil, "", 0, ""
	}
	switch en.Allocation {
	case AllocHashed:
		if len(linked) == 0 {
			return "", nil, "", dpsCodeNoHub, "No linked IoT hub."
		}
		h := fnv.New32a()
		h.Write([]byte(strings.ToLower(op.regID)))
		return linked[int(h.Sum32())%len(linked)], nil, "", 0, ""
	case AllocCustom:
		if e.cfg.CustomAllocator != nil {
			res, err := e.cfg.CustomAllocator(AllocationRequest{RegistrationID: op.regID, Enrollment: *en, Payload: op.payload, LinkedHubs: linked})
			if err != nil {
				return "", nil, "", dpsCodeCustomFailed, "Custom allocation failed: " + err.Error()
			}
			if res.Failure != "" {
				c := res.ErrorCode
				if c == 0 {
					c = dpsCodeCustomFailed
				}
				return "", nil, "", c, res.Failure
			}
			return res.Hub, res.Payload, res.DeviceID, 0, ""
		}
		target := en.CustomHub
		if target == "" && len(linked) > 0 {
			target = linked[0]
		}
		// Default custom allocation echoes the request payload (emulator.md §2).
		return target, op.payload, "", 0, ""
	}
	if len(linked) == 0 {
		return "", nil, "", dpsCodeNoHub, "No linked IoT hub."
	}
	return linked[0], nil, "", 0, ""
}

// deviceAuthLocked builds the hub device's authentication for an attestation, plus the
// TPM-wrapped hub key and the issued certificate chain when applicable.
func (e *Emulator) deviceAuthLocked(op *operation) (*Authentication, []byte, []string, error) {
	var issued []string
	var issuedLeaf *x509.Certificate
	en := e.enrollments[op.att.enKey]
	if op.csr != nil && en != nil && en.IssueCerts {
		ca := e.pki.DPSCA
		now := e.clk.Now()
		leaf, err := ca.Issue(&x509.Certificate{
			Subject: op.csr.Subject, KeyUsage: keyUsageFor(op.csr.PublicKey),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true,
		}, op.csr.PublicKey, now.Add(-time.Minute), now.Add(30*24*time.Hour))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("certificate issuance failed: %w", err)
		}
		issuedLeaf = leaf
		for _, c := range append([]*x509.Certificate{leaf, ca.Cert}, ca.Chain...) {
			issued = append(issued, base64.StdEncoding.EncodeToString(c.Raw))
		}
	}
	thumb := func(c *x509.Certificate) *Authentication {
		s1, _ := Thumbprints(c)
		return &Authentication{Type: "selfSigned", X509Thumbprint: &X509Thumbprint{PrimaryThumbprint: &s1}}
	}
	if issuedLeaf != nil {
		return thumb(issuedLeaf), nil, issued, nil
	}
	switch op.att.kind {
	case AttestSymmetric:
		return &Authentication{Type: "sas", SymmetricKey: &SymmetricKey{PrimaryKey: op.att.deviceKeys[0], SecondaryKey: op.att.deviceKeys[1]}}, nil, nil, nil
	case AttestX509:
		// Even CA-based groups end up selfSigned with the presented leaf (cloud-dps.md §8).
		return thumb(op.att.leaf), nil, nil, nil
	case AttestTPM:
		key := e.randomBytesLocked(32)
		blob, err := MakeTPMAuthenticationKey(op.att.ek, op.att.srk, key, e.randomBytesLocked)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("wrapping the hub key for the TPM: %w", err)
		}
		k := base64.StdEncoding.EncodeToString(key)
		return &Authentication{Type: "sas", SymmetricKey: &SymmetricKey{PrimaryKey: k, SecondaryKey: k}}, blob, nil, nil
	}
	return nil, nil, nil, fmt.Errorf("unknown attestation %q", op.att.kind)
}

// newDeviceLocked creates an enabled device with a fresh generationId.
func (e *Emulator) newDeviceLocked(id string) *Device {
	return &Device{
		DeviceID: id, GenerationID: e.generationIDLocked(), ConnectionState: "Disconnected", Status: "enabled",
		ConnectionStateUpdatedTime: zeroTime, StatusUpdatedTime: zeroTime, LastActivityTime: zeroTime,
		Capabilities: map[string]bool{"iotEdge": false}, Modules: map[string]*Module{},
	}
}

func (e *Emulator) generationIDLocked() string {
	// Real generation IDs are 18 decimal digits (a .NET tick count).
	return "6" + strconv.FormatUint(e.rng.Uint64N(1e17)+1e16, 10)
}

func (e *Emulator) bumpDeviceLocked(d *Device) {
	d.version++
	d.Etag = base64.StdEncoding.EncodeToString([]byte(strconv.Itoa(d.version)))
}

func (e *Emulator) bumpModuleLocked(m *Module) {
	m.version++
	m.Etag = base64.StdEncoding.EncodeToString([]byte(strconv.Itoa(m.version)))
}
