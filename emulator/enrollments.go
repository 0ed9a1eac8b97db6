package emulator

import (
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
)

func enrollmentKey(scope string, group bool, id string) string {
	kind := "individual"
	if group {
		kind = "group"
	}
	return strings.ToLower(scope) + "|" + kind + "|" + strings.ToLower(id)
}

// AddEnrollment adds or replaces an enrollment. IDScope defaults to the first configured
// scope.
func (e *Emulator) AddEnrollment(en Enrollment) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en.IDScope == "" {
		en.IDScope = e.cfg.IDScopes[0]
	}
	c, ok := e.scopes[strings.ToLower(en.IDScope)]
	if !ok {
		return fmt.Errorf("enrollment %q: unknown ID scope %q", en.ID, en.IDScope)
	}
	en.IDScope = c
	if en.ID == "" {
		return fmt.Errorf("enrollment without id")
	}
	switch en.Attestation {
	case AttestSymmetric:
		if en.PrimaryKey == "" {
			en.PrimaryKey = e.randomKeyLocked()
		}
		if en.SecondaryKey == "" {
			en.SecondaryKey = e.randomKeyLocked()
		}
		for _, k := range []string{en.PrimaryKey, en.SecondaryKey} {
			if _, err := base64.StdEncoding.DecodeString(k); err != nil {
				return fmt.Errorf("enrollment %q: key is not base64: %w", en.ID, err)
			}
		}
	case AttestX509:
		pems := []string{en.PrimaryCertPEM, en.SecondaryCertPEM}
		if en.Group {
			pems = []string{en.SigningCertPEM}
			if en.SigningCertPEM == "" {
				return fmt.Errorf("enrollment group %q: signing certificate required", en.ID)
			}
		} else if en.PrimaryCertPEM == "" {
			return fmt.Errorf("enrollment %q: primary certificate required", en.ID)
		}
		for _, p := range pems {
			if p == "" {
				continue
			}
			if _, err := ParseCertsPEM([]byte(p)); err != nil {
				return fmt.Errorf("enrollment %q: %w", en.ID, err)
			}
		}
	case AttestTPM:
		if en.Group {
			return fmt.Errorf("enrollment %q: TPM enrollment groups are not supported by DPS", en.ID)
		}
		if _, err := base64.StdEncoding.DecodeString(en.EndorsementKey); err != nil || en.EndorsementKey == "" {
			return fmt.Errorf("enrollment %q: endorsementKey must be base64 TPM2B_PUBLIC", en.ID)
		}
	default:
		return fmt.Errorf("enrollment %q: unknown attestation %q", en.ID, en.Attestation)
	}
	if en.Allocation == "" {
		en.Allocation = AllocStatic
	}
	if en.Reprovision == "" {
		en.Reprovision = ReprovisionMigrate // the real service's default policy
	}
	cp := en
	e.enrollments[enrollmentKey(en.IDScope, en.Group, en.ID)] = &cp
	return e.persistLocked()
}

// RemoveEnrollment deletes an enrollment.
func (e *Emulator) RemoveEnrollment(scope string, group bool, id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if scope == "" {
		scope = e.cfg.IDScopes[0]
	}
	delete(e.enrollments, enrollmentKey(scope, group, id))
	_ = e.persistLocked()
}

// Enrollment returns a copy of an enrollment.
func (e *Emulator) Enrollment(scope string, group bool, id string) (Enrollment, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if scope == "" {
		scope = e.cfg.IDScopes[0]
	}
	en, ok := e.enrollments[enrollmentKey(scope, group, id)]
	if !ok {
		return Enrollment{}, false
	}
	return *en, true
}

// Enrollments lists all enrollments sorted by key.
func (e *Emulator) Enrollments() []Enrollment {
	e.mu.Lock()
	defer e.mu.Unlock()
	keys := make([]string, 0, len(e.enrollments))
	for k := range e.enrollments {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]Enrollment, 0, len(keys))
	for _, k := range keys {
		out = append(out, *e.enrollments[k])
	}
	return out
}

// DisableEnrollment flips an enrollment's enabled flag and, when it has a device, the hub
// device's status too (disable_enrollment knob).
func (e *Emulator) DisableEnrollment(scope string, group bool, id string, disabled bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if scope == "" {
		scope = e.cfg.IDScopes[0]
	}
	en, ok := e.enrollments[enrollmentKey(scope, group, id)]
	if !ok {
		return fmt.Errorf("no enrollment %q", id)
	}
	en.Disabled = disabled
	status := "enabled"
	if disabled {
		status = "disabled"
	}
	for _, reg := range e.registrations {
		if reg.EnrollmentKey != enrollmentKey(scope, group, id) {
			continue
		}
		if h := e.hubByName[strings.ToLower(reg.AssignedHub)]; h != nil {
			if d := h.devices[reg.DeviceID]; d != nil {
				d.Status = status
				e.bumpDeviceLocked(d)
			}
		}
	}
	return e.persistLocked()
}

// RotateEnrollmentKeys replaces an enrollment's symmetric keys and, for individual
// enrollments already assigned, the hub device's keys (rotate_keys knob). Empty
// arguments get fresh random keys. It returns the keys now in force.
func (e *Emulator) RotateEnrollmentKeys(scope string, group bool, id, primary, secondary string) (string, string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if scope == "" {
		scope = e.cfg.IDScopes[0]
	}
	en, ok := e.enrollments[enrollmentKey(scope, group, id)]
	if !ok || en.Attestation != AttestSymmetric {
		return "", "", fmt.Errorf("no symmetric-key enrollment %q", id)
	}
	if primary == "" {
		primary = e.randomKeyLocked()
	}
	if secondary == "" {
		secondary = e.randomKeyLocked()
	}
	en.PrimaryKey, en.SecondaryKey = primary, secondary
	for _, reg := range e.registrations {
		if reg.EnrollmentKey != enrollmentKey(scope, group, id) {
			continue
		}
		h := e.hubByName[strings.ToLower(reg.AssignedHub)]
		if h == nil || h.devices[reg.DeviceID] == nil {
			continue
		}
		p, s := primary, secondary
		if group {
			p, _ = DeriveGroupKey(primary, reg.RegistrationID)
			s, _ = DeriveGroupKey(secondary, reg.RegistrationID)
		}
		d := h.devices[reg.DeviceID]
		d.Authentication = &Authentication{Type: "sas", SymmetricKey: &SymmetricKey{PrimaryKey: p, SecondaryKey: s}}
		e.bumpDeviceLocked(d)
	}
	return primary, secondary, e.persistLocked()
}

// Reassign makes the next registration of regID go to hub (reassign knob). The
// enrollment's reprovision policy then decides migrate/reset/never.
func (e *Emulator) Reassign(regID, hub string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reassign[strings.ToLower(regID)] = hub
}

// Registration returns DPS's record for a registration ID in the first (or given) scope.
func (e *Emulator) Registration(scope, regID string) (Registration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if scope == "" {
		scope = e.cfg.IDScopes[0]
	}
	r, ok := e.registrations[regKey(scope, regID)]
	if !ok {
		return Registration{}, false
	}
	return *r, true
}
