package emulator

import (
	"crypto/x509"
	"net/http"
	"sort"
	"strings"
)

// hubErr describes an IoT Hub error answer (cloud-hub.md §8).
type hubErr struct {
	status int
	name   string
	msg    string
}

func (e *Emulator) writeHubError(w http.ResponseWriter, he hubErr) {
	tid := strings.ReplaceAll(trackingID(), "-", "")
	ts := e.clk.Now().UTC().Format("01/02/2006 15:04:05")
	w.Header().Set("iothub-errorcode", he.name)
	writeJSON(w, he.status, map[string]string{
		"Message":          "ErrorCode:" + he.name + ";" + he.msg,
		"ExceptionMessage": "Tracking ID:" + tid + "-G:0-TimeStamp:" + ts,
	})
}

func (e *Emulator) hubShape(w http.ResponseWriter, status int, kind string) {
	switch status {
	case http.StatusTooManyRequests:
		e.writeHubError(w, hubErr{status, "ThrottlingException", "Throttling (fault injection)"})
	case http.StatusServiceUnavailable:
		e.writeHubError(w, hubErr{status, "ServiceUnavailable", "Service unavailable (fault injection)"})
	case http.StatusRequestEntityTooLarge:
		e.writeHubError(w, hubErr{status, "MessageTooLarge", "Request body too large"})
	default:
		e.writeHubError(w, hubErr{status, "ServerError", "Internal server error (fault injection)"})
	}
}

func hubClassify(r *http.Request) (string, string) {
	p := splitPath(r)
	if len(p) < 2 || p[0] != "devices" {
		return "unknown", ""
	}
	switch {
	case len(p) == 2:
		return "device", p[1]
	case len(p) == 3 && p[2] == "modules":
		return "modules", p[1]
	case len(p) == 4 && p[2] == "modules":
		return "module", p[1]
	case len(p) == 4 && p[2] == "messages" && p[3] == "events":
		return "events", p[1]
	case len(p) == 6 && p[2] == "modules" && p[4] == "messages" && p[5] == "events":
		return "module_events", p[1]
	}
	return "unknown", p[1]
}

// principal is who a hub request authenticated as.
type principal struct {
	policy bool
	device string
	module string
}

func (e *Emulator) hubHandler(h *hubState) http.Handler {
	return e.serve("hub", func() string { return h.name }, hubClassify, e.hubShape, func(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
		v := apiVersion(r)
		if !contains(e.cfg.HubAPIVersions, v) && !(v == "" && e.cfg.Switches.HubMissingAPIVersionOK) {
			e.writeHubError(w, hubErr{http.StatusBadRequest, "InvalidProtocolVersion", "Invalid or missing api-version"})
			return
		}
		p := splitPath(r)
		if rc.route == "unknown" {
			e.writeHubError(w, hubErr{http.StatusNotFound, "NotFound", "No such route"})
			return
		}
		dev := p[1]
		mod := ""
		if rc.route == "module" || rc.route == "module_events" {
			mod = p[3]
		}
		pr, he := e.hubAuth(r, rc, h, dev, mod)
		if he != nil {
			e.writeHubError(w, *he)
			return
		}
		if he := authorize(pr, rc.route, r.Method, dev, mod); he != nil {
			rc.setVerdict("not authorised for this route")
			e.writeHubError(w, *he)
			return
		}
		var res hubResult
		switch rc.route {
		case "modules":
			res = e.hubListModules(r, h, dev)
		case "module":
			res = e.hubModule(r, rc, h, dev, mod)
		case "device":
			res = e.hubDevice(r, rc, h, dev)
		case "events", "module_events":
			res = e.hubTelemetry(r, h, dev, mod)
		}
		switch {
		case res.err != nil:
			e.writeHubError(w, *res.err)
		case res.body == nil:
			w.WriteHeader(res.status)
		default:
			if f := rc.fault(FaultMalformed); f != nil && f.Variant == MalformedContentType {
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(res.status)
				return
			}
			writeJSON(w, res.status, res.body)
		}
	})
}

type hubResult struct {
	status int
	body   any
	err    *hubErr
}

func unauthorized(msg string) *hubErr {
	return &hubErr{http.StatusUnauthorized, "IotHubUnauthorizedAccess", msg}
}

// authorize applies the route rules of cloud-hub.md §4.1 and §7.
func authorize(pr *principal, route, method, dev, mod string) *hubErr {
	if pr.policy {
		if route == "events" || route == "module_events" {
			return unauthorized("policy tokens cannot send device telemetry")
		}
		return nil
	}
	if !strings.EqualFold(pr.device, dev) {
		return unauthorized("token does not grant access to this device")
	}
	if pr.module != "" {
		if route == "module_events" && strings.EqualFold(pr.module, mod) {
			return nil
		}
		return unauthorized("module token does not grant access to this route")
	}
	if route == "device" && method != http.MethodGet {
		return unauthorized("device tokens cannot modify the device identity")
	}
	return nil
}

// hubNames returns every name the hub answers to (canonical first).
func (h *hubState) names() []string { return append([]string{h.name}, h.cfg.Aliases...) }

func (e *Emulator) hubAuth(r *http.Request, rc *reqCtx, h *hubState, dev, mod string) (*principal, *hubErr) {
	deny := func(reason string) (*principal, *hubErr) {
		rc.setVerdict(reason)
		return nil, unauthorized(reason)
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return deny("no credentials")
		}
		return e.hubX509(rc, h, dev, r.TLS.PeerCertificates, deny)
	}
	tok, err := ParseSAS(auth)
	if err != nil {
		return deny("unparsable token: " + err.Error())
	}
	if e.clk.tokenExpired(tok) {
		return deny("token expired")
	}
	if tok.HasSKN {
		matched := false
		for _, n := range h.names() {
			matched = matched || strings.EqualFold(tok.SR, n)
		}
		if !matched {
			return deny("policy token sr does not name this hub")
		}
		key, ok := h.cfg.Policies[tok.SKN]
		if !ok || !tok.VerifyAnyKey(key) {
			return deny("policy signature mismatch")
		}
		rc.setVerdict("ok (policy " + tok.SKN + ")")
		return &principal{policy: true}, nil
	}
	var rest string
	for _, n := range h.names() {
		if p := strings.ToLower(n) + "/devices/"; strings.HasPrefix(strings.ToLower(tok.SR), p) {
			rest = tok.SR[len(p):]
			break
		}
	}
	if rest == "" {
		return deny("sr does not name this hub")
	}
	tokDev, tokMod := rest, ""
	if d, m, ok := strings.Cut(rest, "/modules/"); ok {
		tokDev, tokMod = d, m
	}
	if !strings.EqualFold(tokDev, dev) {
		return deny("token is for another device")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	d := h.devices[dev]
	if he := e.deviceUsable(d); he != nil {
		rc.setVerdict("device missing or disabled")
		return nil, he
	}
	if tokMod != "" {
		m := d.Modules[tokMod]
		if m == nil || m.Authentication == nil || m.Authentication.SymmetricKey == nil {
			return deny("module unknown or without keys")
		}
		if !tok.VerifyAnyKey(m.Authentication.SymmetricKey.PrimaryKey, m.Authentication.SymmetricKey.SecondaryKey) {
			return deny("module signature mismatch")
		}
		rc.setVerdict("ok (module)")
		return &principal{device: d.DeviceID, module: m.ModuleID}, nil
	}
	a := d.Authentication
	if a == nil || a.Type != "sas" || a.SymmetricKey == nil {
		return deny("device does not use SAS authentication")
	}
	if !tok.VerifyAnyKey(a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey) {
		return deny("device signature mismatch")
	}
	rc.setVerdict("ok (device)")
	return &principal{device: d.DeviceID}, nil
}

// deviceUsable returns the error for a missing or disabled device: 401 by default, 404
// with Switches.HubDisabledDeviceNotFound (the real status is unverified).
func (e *Emulator) deviceUsable(d *Device) *hubErr {
	if d != nil && d.Status != "disabled" {
		return nil
	}
	if e.cfg.Switches.HubDisabledDeviceNotFound {
		return &hubErr{http.StatusNotFound, "DeviceNotFound", "Device not found or disabled"}
	}
	return unauthorized("device not found or disabled")
}

func (e *Emulator) hubX509(rc *reqCtx, h *hubState, dev string, chain []*x509.Certificate, deny func(string) (*principal, *hubErr)) (*principal, *hubErr) {
	leaf := chain[0]
	if !e.clk.certValid(leaf.NotBefore, leaf.NotAfter) {
		return deny("client certificate outside its validity")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	d := h.devices[dev]
	if he := e.deviceUsable(d); he != nil {
		rc.setVerdict("device missing or disabled")
		return nil, he
	}
	a := d.Authentication
	switch {
	case a != nil && a.Type == "selfSigned" && a.X509Thumbprint != nil:
		s1, s2 := Thumbprints(leaf)
		for _, t := range []*string{a.X509Thumbprint.PrimaryThumbprint, a.X509Thumbprint.SecondaryThumbprint} {
			if t != nil && (strings.EqualFold(*t, s1) || strings.EqualFold(*t, s2)) {
				rc.setVerdict("ok (x509 thumbprint)")
				return &principal{device: d.DeviceID}, nil
			}
		}
		return deny("client certificate thumbprint does not match")
	case a != nil && a.Type == "certificateAuthority":
		if leaf.Subject.CommonName != d.DeviceID {
			return deny("client certificate CN does not equal the device ID")
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, p := range h.cfg.CACertsPEM {
			if cs, err := ParseCertsPEM([]byte(p)); err == nil {
				for _, c := range cs {
					roots.AddCert(c)
				}
			}
		}
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: e.clk.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return deny("client certificate chain not trusted by the hub")
		}
		rc.setVerdict("ok (x509 CA)")
		return &principal{device: d.DeviceID}, nil
	}
	return deny("device does not use X.509 authentication")
}

func (e *Emulator) hubListModules(r *http.Request, h *hubState, dev string) hubResult {
	if r.Method != http.MethodGet {
		return hubResult{err: &hubErr{http.StatusMethodNotAllowed, "MethodNotAllowed", "method not allowed"}}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	d := h.devices[dev]
	if d == nil {
		return hubResult{err: &hubErr{http.StatusNotFound, "DeviceNotFound", "Device " + dev + " not found"}}
	}
	ids := make([]string, 0, len(d.Modules))
	for id := range d.Modules {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]*Module, 0, len(ids))
	for _, id := range ids {
		out = append(out, d.Modules[id])
	}
	return hubResult{status: http.StatusOK, body: out}
}

func (e *Emulator) hubTelemetry(r *http.Request, h *hubState, dev, mod string) hubResult {
	if r.Method != http.MethodPost {
		return hubResult{err: &hubErr{http.StatusMethodNotAllowed, "MethodNotAllowed", "method not allowed"}}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	d := h.devices[dev]
	if d == nil {
		return hubResult{err: &hubErr{http.StatusNotFound, "DeviceNotFound", "Device " + dev + " not found"}}
	}
	if mod != "" {
		h.moduleMessages[d.DeviceID+"/"+mod]++
	} else {
		d.Messages++
	}
	return hubResult{status: http.StatusNoContent}
}
