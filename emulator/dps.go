package emulator

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DPS error codes (cloud-dps.md §4.4; only 401002 is confirmed from real responses).
const (
	dpsCodeBadRequest   = 400004
	dpsCodeAPIVersion   = 400001
	dpsCodeUnauthorized = 401002
	dpsCodeNotFound     = 404001
	dpsCodeThrottled    = 429001
	dpsCodeServerError  = 500001
	dpsCodeNoHub        = 400208
	dpsCodeHubRefused   = 400209
	dpsCodeCustomFailed = 400207
)

// registerBody is DeviceRegistration (cloud-dps.md §2.2).
type registerBody struct {
	RegistrationID string `json:"registrationId"`
	TPM            *struct {
		EndorsementKey string `json:"endorsementKey"`
		StorageRootKey string `json:"storageRootKey"`
	} `json:"tpm"`
	Payload json.RawMessage `json:"payload"`
	CSR     string          `json:"csr"`
}

// operation is one registration operation started by a register PUT.
type operation struct {
	id          string
	scope       string
	regID       string
	att         *attestation
	created     time.Time
	pollsLeft   int
	until       time.Time
	never       bool
	fail        *Fault
	payload     json.RawMessage
	csr         *x509.CertificateRequest
	terminal    []byte // cached final operation body
	terminalSet bool
}

type dpsError struct {
	ErrorCode    int    `json:"errorCode"`
	TrackingID   string `json:"trackingId"`
	Message      string `json:"message"`
	TimestampUTC string `json:"timestampUtc"`
}

func (e *Emulator) writeDPSError(w http.ResponseWriter, status, code int, msg string) {
	tid := trackingID()
	w.Header().Set("x-ms-error-code", strconv.Itoa(code))
	writeJSON(w, status, dpsError{ErrorCode: code, TrackingID: tid, Message: msg, TimestampUTC: dpsTime(e.clk.Now())})
}

func (e *Emulator) dpsShape(w http.ResponseWriter, status int, kind string) {
	switch status {
	case http.StatusTooManyRequests:
		e.writeDPSError(w, status, dpsCodeThrottled, "Throttled")
	case http.StatusRequestEntityTooLarge:
		e.writeDPSError(w, status, dpsCodeBadRequest, "Request body too large")
	default:
		e.writeDPSError(w, status, status*1000+1, "Internal server error")
	}
}

func dpsClassify(r *http.Request) (string, string) {
	p := splitPath(r)
	switch {
	case len(p) == 4 && p[1] == "registrations" && p[3] == "register":
		return "register", p[2]
	case len(p) == 5 && p[1] == "registrations" && p[3] == "operations":
		return "operation", p[2]
	case len(p) == 3 && p[1] == "registrations":
		return "status", p[2]
	}
	return "unknown", ""
}

func (e *Emulator) dpsHandler() http.Handler {
	return e.serve("dps", func() string { return "dps" }, dpsClassify, e.dpsShape, func(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
		p := splitPath(r)
		switch {
		case rc.route == "register" && r.Method == http.MethodPut:
			e.dpsRegister(w, r, rc, p[0], p[2])
		case rc.route == "operation" && r.Method == http.MethodGet:
			e.dpsPoll(w, r, rc, p[0], p[2], p[4])
		case rc.route == "status" && r.Method == http.MethodPost:
			e.dpsStatus(w, r, rc, p[0], p[2])
		default:
			e.writeDPSError(w, http.StatusNotFound, dpsCodeNotFound, "Not found")
		}
	})
}

func (e *Emulator) dpsAPIVersionOK(v string) bool { return contains(e.cfg.DPSAPIVersions, v) }

// csrAPIVersionOK: `csr` exists from 2025-07-01-preview on; versions are ISO dates so a
// string compare orders them.
func csrAPIVersionOK(v string) bool { return v >= "2025-07-01-preview" }

func (e *Emulator) lookupScope(s string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.scopes[strings.ToLower(s)]
	return c, ok
}

// dpsPrologue applies enforcement rows 1-3 shared by register and status lookup.
func (e *Emulator) dpsPrologue(w http.ResponseWriter, r *http.Request, rc *reqCtx, scopeRaw, regID string, needBody bool) (*registerBody, bool) {
	v := apiVersion(r)
	if !e.dpsAPIVersionOK(v) {
		e.writeDPSError(w, http.StatusBadRequest, dpsCodeAPIVersion, fmt.Sprintf("Invalid or missing api-version %q", v))
		return nil, false
	}
	var body registerBody
	jsonErr := json.Unmarshal(rc.body, &body)
	if jsonErr == nil && body.CSR != "" && !csrAPIVersionOK(v) && !e.cfg.Switches.AllowCSRAnyAPIVersion {
		e.writeDPSError(w, http.StatusBadRequest, dpsCodeBadRequest, "csr is not supported by api-version "+v)
		return nil, false
	}
	if _, ok := e.lookupScope(scopeRaw); !ok {
		e.writeDPSError(w, http.StatusNotFound, dpsCodeNotFound, "ID scope not found")
		return nil, false
	}
	if !needBody {
		return nil, true
	}
	switch {
	case jsonErr != nil:
		e.writeDPSError(w, http.StatusBadRequest, dpsCodeBadRequest, "Invalid request body")
		return nil, false
	case body.RegistrationID != regID:
		e.writeDPSError(w, http.StatusBadRequest, dpsCodeBadRequest, "registrationId in the body does not match the path")
		return nil, false
	case body.TPM != nil && body.TPM.EndorsementKey == "":
		e.writeDPSError(w, http.StatusBadRequest, dpsCodeBadRequest, "tpm.endorsementKey is required")
		return nil, false
	}
	return &body, true
}

func (e *Emulator) dpsRegister(w http.ResponseWriter, r *http.Request, rc *reqCtx, scopeRaw, regID string) {
	body, ok := e.dpsPrologue(w, r, rc, scopeRaw, regID, true)
	if !ok {
		return
	}
	scope, _ := e.lookupScope(scopeRaw)
	var csr *x509.CertificateRequest
	if body.CSR != "" {
		var err error
		if csr, err = parseCSRBase64(body.CSR); err != nil || csr.Subject.CommonName != regID {
			e.writeDPSError(w, http.StatusBadRequest, dpsCodeBadRequest, "Invalid csr")
			return
		}
	}
	att, ok := e.attest(w, r, rc, scopeRaw, scope, regID, body)
	if !ok {
		return
	}
	if att.enrollment.Disabled && e.cfg.Switches.DisabledEnrollment401 {
		rc.setVerdict("enrollment disabled")
		e.writeDPSError(w, http.StatusUnauthorized, dpsCodeUnauthorized, "Unauthorized")
		return
	}
	now := e.clk.Now()
	op := &operation{scope: scope, regID: regID, att: att, created: now, payload: body.Payload, csr: csr, fail: rc.fault(FaultFailRegistration)}
	if f := rc.fault(FaultAssignAfter); f != nil {
		op.pollsLeft, op.never = f.Polls, f.Never
		if f.For > 0 {
			op.until = now.Add(f.For)
		}
	}
	e.mu.Lock()
	op.id = e.newOperationIDLocked()
	e.operations[op.id] = op
	e.mu.Unlock()

	w.Header().Set("Retry-After", strconv.Itoa(e.cfg.RetryAfter))
	resp := map[string]any{"operationId": op.id, "status": "assigning"}
	if f := rc.fault(FaultMalformed); f != nil && f.Variant == MalformedMissingStatus {
		delete(resp, "status")
	}
	e.writeDPSMaybeMalformed(w, rc, http.StatusAccepted, resp)
}

// writeDPSMaybeMalformed writes a DPS JSON answer, applying the generic malformed
// variants (wrong Content-Type, non-JSON body).
func (e *Emulator) writeDPSMaybeMalformed(w http.ResponseWriter, rc *reqCtx, status int, v any) {
	if f := rc.fault(FaultMalformed); f != nil {
		switch f.Variant {
		case MalformedContentType:
			b, _ := json.Marshal(v)
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(status)
			_, _ = w.Write(b)
			return
		case MalformedNonJSON:
			w.Header().Set("Content-Type", jsonContentType)
			w.WriteHeader(status)
			_, _ = w.Write([]byte("<html>not json</html>"))
			return
		}
	}
	writeJSON(w, status, v)
}

func (e *Emulator) newOperationIDLocked() string {
	e.opCounter++
	if e.cfg.FixedOperationIDs {
		return fmt.Sprintf("4.0000000000000000.00000000-0000-4000-8000-%012d", e.opCounter)
	}
	return fmt.Sprintf("4.%x.%s", e.randomBytesLocked(8), e.uuidLocked())
}

func (e *Emulator) dpsPoll(w http.ResponseWriter, r *http.Request, rc *reqCtx, scopeRaw, regID, opID string) {
	if _, ok := e.dpsPrologue(w, r, rc, scopeRaw, regID, false); !ok {
		return
	}
	scope, _ := e.lookupScope(scopeRaw)
	e.mu.Lock()
	op := e.operations[opID]
	e.mu.Unlock()
	now := e.clk.Now()
	if op == nil || op.scope != scope || !strings.EqualFold(op.regID, regID) || now.Sub(op.created) > e.cfg.OperationTTL {
		e.writeDPSError(w, http.StatusNotFound, dpsCodeNotFound, "Operation not found")
		return
	}
	// Polls are authenticated like the PUT, expiry included (emulator.md §2).
	if _, ok := e.attest(w, r, rc, scopeRaw, scope, regID, nil); !ok {
		return
	}
	e.mu.Lock()
	assigning := !op.terminalSet && (op.never || op.pollsLeft > 0 || now.Before(op.until))
	if assigning && op.pollsLeft > 0 {
		op.pollsLeft--
	}
	var final []byte
	var err error
	if !assigning {
		final, err = e.completeLocked(op)
	}
	e.mu.Unlock()
	if err != nil {
		e.writeDPSError(w, http.StatusInternalServerError, dpsCodeServerError, err.Error())
		return
	}
	if assigning {
		w.Header().Set("Retry-After", strconv.Itoa(e.cfg.RetryAfter))
		resp := map[string]any{"operationId": op.id, "status": "assigning",
			"registrationState": map[string]any{"registrationId": op.regID, "status": "assigning"}}
		if f := rc.fault(FaultMalformed); f != nil {
			switch f.Variant {
			case MalformedMissingStatus:
				delete(resp, "status")
			case MalformedMissingRegState:
				delete(resp, "registrationState")
			}
		}
		e.writeDPSMaybeMalformed(w, rc, http.StatusAccepted, resp)
		return
	}
	if f := rc.fault(FaultMalformed); f != nil {
		var m map[string]any
		_ = json.Unmarshal(final, &m)
		switch f.Variant {
		case MalformedMissingStatus:
			delete(m, "status")
		case MalformedErrorCodeString:
			if rs, ok := m["registrationState"].(map[string]any); ok {
				if c, ok := rs["errorCode"].(float64); ok {
					rs["errorCode"] = strconv.Itoa(int(c))
				}
			}
		}
		e.writeDPSMaybeMalformed(w, rc, http.StatusOK, m)
		return
	}
	w.Header().Set("Content-Type", jsonContentType)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(final)
}

// dpsStatus is the registration status lookup (POST without an operation). The real
// answer for a device never registered is unverified; the emulator answers 404.
func (e *Emulator) dpsStatus(w http.ResponseWriter, r *http.Request, rc *reqCtx, scopeRaw, regID string) {
	body, ok := e.dpsPrologue(w, r, rc, scopeRaw, regID, true)
	if !ok {
		return
	}
	if body.CSR != "" {
		e.writeDPSError(w, http.StatusBadRequest, dpsCodeBadRequest, "csr is not allowed in a status lookup")
		return
	}
	scope, _ := e.lookupScope(scopeRaw)
	if _, ok := e.attest(w, r, rc, scopeRaw, scope, regID, body); !ok {
		return
	}
	e.mu.Lock()
	reg := e.registrations[regKey(scope, regID)]
	e.mu.Unlock()
	if reg == nil || len(reg.LastState) == 0 {
		e.writeDPSError(w, http.StatusNotFound, dpsCodeNotFound, "Registration not found")
		return
	}
	var st map[string]any
	_ = json.Unmarshal(reg.LastState, &st)
	delete(st, "issuedCertificateChain") // not part of status-lookup answers (cloud-dps.md §9)
	writeJSON(w, http.StatusOK, st)
}

func regKey(scope, regID string) string { return strings.ToLower(scope) + "|" + strings.ToLower(regID) }

func parseCSRBase64(s string) (*x509.CertificateRequest, error) {
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("csr is not base64: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("parse csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr signature: %w", err)
	}
	return csr, nil
}
