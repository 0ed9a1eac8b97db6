package emulator

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// persistedDevice is a device plus its modules as stored on disk.
type persistedDevice struct {
	Device  *Device            `json:"device"`
	Modules map[string]*Module `json:"modules"`
}

// persisted is the on-disk form of the cloud state (optional, Config.StateDir).
type persisted struct {
	Enrollments   []*Enrollment                         `json:"enrollments"`
	Registrations []*Registration                       `json:"registrations"`
	Hubs          map[string]map[string]persistedDevice `json:"hubs"`
}

func (e *Emulator) statePath() string { return filepath.Join(e.cfg.StateDir, "state.json") }

// persistLocked writes the state file when persistence is on. Writes go to a temporary
// file renamed into place so a crash never leaves half a file.
func (e *Emulator) persistLocked() error {
	if e.cfg.StateDir == "" {
		return nil
	}
	p := persisted{Hubs: map[string]map[string]persistedDevice{}}
	for _, en := range e.enrollments {
		p.Enrollments = append(p.Enrollments, en)
	}
	for _, r := range e.registrations {
		p.Registrations = append(p.Registrations, r)
	}
	for _, h := range e.hubs {
		devs := map[string]persistedDevice{}
		for id, d := range h.devices {
			devs[id] = persistedDevice{Device: d, Modules: d.Modules}
		}
		p.Hubs[h.name] = devs
	}
	if e.pendingHubs != nil {
		for name, devs := range e.pendingHubs {
			if _, ok := p.Hubs[name]; !ok {
				p.Hubs[name] = devs
			}
		}
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := os.MkdirAll(e.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	tmp := e.statePath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp, e.statePath()); err != nil {
		return fmt.Errorf("replace state: %w", err)
	}
	return nil
}

func (e *Emulator) saveState() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.persistLocked()
}

// loadState reads enrollments and registrations; devices wait for their hubs (Listen).
func (e *Emulator) loadState() error {
	b, err := os.ReadFile(e.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("decode %s: %w", e.statePath(), err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, en := range p.Enrollments {
		e.enrollments[enrollmentKey(en.IDScope, en.Group, en.ID)] = en
	}
	for _, r := range p.Registrations {
		e.registrations[regKey(r.IDScope, r.RegistrationID)] = r
	}
	e.pendingHubs = p.Hubs
	return nil
}

func (e *Emulator) loadHubState() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, devs := range e.pendingHubs {
		h := e.hubByName[strings.ToLower(name)]
		if h == nil {
			continue // kept in pendingHubs so a later save does not lose it
		}
		for id, pd := range devs {
			d := pd.Device
			d.Modules = pd.Modules
			if d.Modules == nil {
				d.Modules = map[string]*Module{}
			}
			d.version = etagVersion(d.Etag)
			for _, m := range d.Modules {
				m.version = etagVersion(m.Etag)
			}
			h.devices[id] = d
		}
		delete(e.pendingHubs, name)
	}
	return nil
}

func etagVersion(etag string) int {
	b, err := base64.StdEncoding.DecodeString(etag)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(string(b))
	return n
}
