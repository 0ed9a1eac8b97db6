package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// ifMatch returns the If-Match value without quotes (or a W/ prefix) and whether the
// header was present. `azure-iothub` quotes it, upstream does not: both are accepted.
func ifMatch(r *http.Request) (string, bool) {
	v, ok := r.Header["If-Match"]
	if !ok || len(v) == 0 {
		return "", false
	}
	s := strings.TrimSpace(v[0])
	s = strings.TrimPrefix(s, "W/")
	return strings.Trim(s, `"`), true
}

func preconditionFailed(what string) *hubErr {
	return &hubErr{http.StatusPreconditionFailed, "PreconditionFailed", "Precondition failed: " + what}
}

// normalizeAuth turns a request's authentication into what the hub stores: absent or
// key-less SAS gets generated keys (cloud-hub.md §5.2).
func (e *Emulator) normalizeAuthLocked(a *Authentication) (*Authentication, *hubErr) {
	if a == nil || a.Type == "" {
		a = &Authentication{Type: "sas"}
	}
	switch a.Type {
	case "sas":
		sk := a.SymmetricKey
		if sk == nil {
			sk = &SymmetricKey{}
		}
		if sk.PrimaryKey == "" {
			sk.PrimaryKey = e.randomKeyLocked()
		}
		if sk.SecondaryKey == "" {
			sk.SecondaryKey = e.randomKeyLocked()
		}
		return &Authentication{Type: "sas", SymmetricKey: sk, X509Thumbprint: &X509Thumbprint{}}, nil
	case "selfSigned", "certificateAuthority", "none":
		return &Authentication{Type: a.Type, X509Thumbprint: a.X509Thumbprint, SymmetricKey: a.SymmetricKey}, nil
	}
	return nil, &hubErr{http.StatusBadRequest, "ArgumentInvalid", "unknown authentication type " + a.Type}
}

func (e *Emulator) hubModule(r *http.Request, rc *reqCtx, h *hubState, dev, mod string) hubResult {
	e.mu.Lock()
	defer func() { _ = e.persistLocked(); e.mu.Unlock() }()
	d := h.devices[dev]
	if d == nil {
		return hubResult{err: &hubErr{http.StatusNotFound, "DeviceNotFound", "Device " + dev + " not found"}}
	}
	m := d.Modules[mod]
	etag, conditional := ifMatch(r)
	switch r.Method {
	case http.MethodGet:
		if m == nil {
			return hubResult{err: &hubErr{http.StatusNotFound, "ModuleNotFound", "Module " + mod + " on device " + dev + " not found"}}
		}
		return hubResult{status: http.StatusOK, body: m}
	case http.MethodDelete:
		if conditional && rc.fault(FaultEtagConflict) != nil {
			return hubResult{err: preconditionFailed("etag conflict (fault injection)")}
		}
		if m == nil {
			if conditional && etag != "*" {
				return hubResult{err: preconditionFailed("module does not exist")}
			}
			return hubResult{status: http.StatusNoContent} // delete is idempotent
		}
		if conditional && etag != "*" && etag != m.Etag {
			return hubResult{err: preconditionFailed("etag mismatch")}
		}
		delete(d.Modules, mod)
		return hubResult{status: http.StatusNoContent}
	case http.MethodPut:
	default:
		return hubResult{err: &hubErr{http.StatusMethodNotAllowed, "MethodNotAllowed", "method not allowed"}}
	}
	var body Module
	if err := json.Unmarshal(rc.body, &body); err != nil {
		return hubResult{err: &hubErr{http.StatusBadRequest, "ArgumentInvalid", "invalid module body"}}
	}
	if body.ModuleID != mod || body.DeviceID != dev {
		return hubResult{err: &hubErr{http.StatusBadRequest, "ArgumentInvalid", "moduleId/deviceId in the body do not match the path"}}
	}
	if conditional && rc.fault(FaultEtagConflict) != nil {
		return hubResult{err: preconditionFailed("etag conflict (fault injection)")}
	}
	auth, he := e.normalizeAuthLocked(body.Authentication)
	if he != nil {
		return hubResult{err: he}
	}
	switch {
	case !conditional && m != nil && !e.cfg.Switches.ModuleCreateExistingOK:
		return hubResult{err: &hubErr{http.StatusConflict, "ModuleAlreadyExistsOnDevice", "Module " + mod + " already exists on device " + dev}}
	case conditional && m == nil && e.cfg.Switches.ModuleUpdateAbsentNotFound:
		return hubResult{err: &hubErr{http.StatusNotFound, "ModuleNotFound", "Module " + mod + " on device " + dev + " not found"}}
	case conditional && m == nil:
		return hubResult{err: preconditionFailed("module does not exist")}
	case conditional && etag != "*" && etag != m.Etag:
		return hubResult{err: preconditionFailed("etag mismatch")}
	}
	if m == nil {
		m = &Module{ModuleID: mod, DeviceID: d.DeviceID, GenerationID: e.generationIDLocked(), ConnectionState: "Disconnected",
			ConnectionStateUpdatedTime: zeroTime, LastActivityTime: zeroTime}
		d.Modules[mod] = m
	}
	m.Authentication, m.ManagedBy = auth, body.ManagedBy
	e.bumpModuleLocked(m)
	return hubResult{status: http.StatusOK, body: m}
}

func (e *Emulator) hubDevice(r *http.Request, rc *reqCtx, h *hubState, dev string) hubResult {
	e.mu.Lock()
	defer func() { _ = e.persistLocked(); e.mu.Unlock() }()
	d := h.devices[dev]
	etag, conditional := ifMatch(r)
	notFound := &hubErr{http.StatusNotFound, "DeviceNotFound", "Device " + dev + " not found"}
	switch r.Method {
	case http.MethodGet:
		if d == nil {
			return hubResult{err: notFound}
		}
		return hubResult{status: http.StatusOK, body: d}
	case http.MethodDelete:
		if d == nil {
			return hubResult{err: notFound}
		}
		if conditional && etag != "*" && etag != d.Etag {
			return hubResult{err: preconditionFailed("etag mismatch")}
		}
		delete(h.devices, dev)
		return hubResult{status: http.StatusNoContent}
	case http.MethodPut:
	default:
		return hubResult{err: &hubErr{http.StatusMethodNotAllowed, "MethodNotAllowed", "method not allowed"}}
	}
	var body Device
	if err := json.Unmarshal(rc.body, &body); err != nil {
		return hubResult{err: &hubErr{http.StatusBadRequest, "ArgumentInvalid", "invalid device body"}}
	}
	if body.DeviceID != dev {
		return hubResult{err: &hubErr{http.StatusBadRequest, "ArgumentInvalid", "deviceId in the body does not match the path"}}
	}
	auth, he := e.normalizeAuthLocked(body.Authentication)
	if he != nil {
		return hubResult{err: he}
	}
	switch {
	case !conditional && d != nil:
		return hubResult{err: &hubErr{http.StatusConflict, "DeviceAlreadyExists", "Device " + dev + " already exists"}}
	case conditional && d == nil:
		return hubResult{err: preconditionFailed("device does not exist")}
	case conditional && etag != "*" && etag != d.Etag:
		return hubResult{err: preconditionFailed("etag mismatch")}
	}
	if d == nil {
		d = e.newDeviceLocked(dev)
		h.devices[dev] = d
	}
	d.Authentication = auth
	if body.Status == "disabled" || body.Status == "enabled" {
		d.Status = body.Status
	}
	if body.Capabilities != nil {
		d.Capabilities = body.Capabilities
	}
	e.bumpDeviceLocked(d)
	return hubResult{status: http.StatusOK, body: d}
}

// --- Go control API for hubs -------------------------------------------------------

func (e *Emulator) hubLocked(name string) (*hubState, error) {
	h := e.hubByName[strings.ToLower(name)]
	if h == nil {
		return nil, fmt.Errorf("unknown hub %q", name)
	}
	return h, nil
}

// CreateDevice adds (or replaces) a device with the given authentication (nil = SAS with
// generated keys) and returns a copy.
func (e *Emulator) CreateDevice(hub, deviceID string, auth *Authentication) (Device, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, err := e.hubLocked(hub)
	if err != nil {
		return Device{}, err
	}
	a, he := e.normalizeAuthLocked(auth)
	if he != nil {
		return Device{}, fmt.Errorf("create device %q: %s", deviceID, he.msg)
	}
	d := h.devices[deviceID]
	if d == nil {
		d = e.newDeviceLocked(deviceID)
		h.devices[deviceID] = d
	}
	d.Authentication = a
	e.bumpDeviceLocked(d)
	return *d, e.persistLocked()
}

// GetDevice returns a copy of a device and its modules.
func (e *Emulator) GetDevice(hub, deviceID string) (Device, map[string]Module, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, err := e.hubLocked(hub)
	if err != nil || h.devices[deviceID] == nil {
		return Device{}, nil, false
	}
	d := h.devices[deviceID]
	mods := map[string]Module{}
	for id, m := range d.Modules {
		mods[id] = *m
	}
	return *d, mods, true
}

// DeviceCount returns the number of devices in a hub.
func (e *Emulator) DeviceCount(hub string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, err := e.hubLocked(hub)
	if err != nil {
		return 0
	}
	return len(h.devices)
}

// TelemetryCount returns accepted messages for a device ("" module) or a module.
func (e *Emulator) TelemetryCount(hub, deviceID, moduleID string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, err := e.hubLocked(hub)
	if err != nil {
		return 0
	}
	if moduleID != "" {
		return h.moduleMessages[deviceID+"/"+moduleID]
	}
	if d := h.devices[deviceID]; d != nil {
		return d.Messages
	}
	return 0
}

// DropDevice deletes a device (moduleID "") or one module from its hub (drop_device knob).
func (e *Emulator) DropDevice(hub, deviceID, moduleID string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, err := e.hubLocked(hub)
	if err != nil {
		return err
	}
	d := h.devices[deviceID]
	if d == nil {
		return fmt.Errorf("no device %q on %s", deviceID, hub)
	}
	if moduleID == "" {
		delete(h.devices, deviceID)
	} else {
		delete(d.Modules, moduleID)
	}
	return e.persistLocked()
}

// SetDeviceStatus enables or disables a hub device.
func (e *Emulator) SetDeviceStatus(hub, deviceID string, enabled bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, err := e.hubLocked(hub)
	if err != nil {
		return err
	}
	d := h.devices[deviceID]
	if d == nil {
		return fmt.Errorf("no device %q on %s", deviceID, hub)
	}
	d.Status = "enabled"
	if !enabled {
		d.Status = "disabled"
	}
	e.bumpDeviceLocked(d)
	return e.persistLocked()
}

// RecreateModule deletes and re-creates a module behind the client's back: new
// generationId, new etag, new keys (generation_change knob).
func (e *Emulator) RecreateModule(hub, deviceID, moduleID string) (Module, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, err := e.hubLocked(hub)
	if err != nil {
		return Module{}, err
	}
	d := h.devices[deviceID]
	if d == nil || d.Modules[moduleID] == nil {
		return Module{}, fmt.Errorf("no module %s/%s on %s", deviceID, moduleID, hub)
	}
	old := d.Modules[moduleID]
	auth, _ := e.normalizeAuthLocked(nil)
	m := &Module{ModuleID: moduleID, DeviceID: deviceID, GenerationID: e.generationIDLocked(), ConnectionState: "Disconnected",
		ConnectionStateUpdatedTime: zeroTime, LastActivityTime: zeroTime, Authentication: auth, ManagedBy: old.ManagedBy, version: old.version}
	e.bumpModuleLocked(m)
	d.Modules[moduleID] = m
	return *m, e.persistLocked()
}

// PolicyKey returns the key of a hub's shared access policy (default iothubowner).
func (e *Emulator) PolicyKey(hub, policy string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, err := e.hubLocked(hub)
	if err != nil {
		return ""
	}
	return h.cfg.Policies[policy]
}
