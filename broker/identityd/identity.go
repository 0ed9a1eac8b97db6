package identityd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/broker/identityd/hubclient"
	"github.com/iotbroker/aziot/broker/identityd/state"
)

// Identity is api-identity.md §2's {"type","spec"}.
type Identity struct {
	Type string       `json:"type"`
	Spec IdentitySpec `json:"spec"`
}

// IdentitySpec is the aziot spec; key order as upstream, absent fields omitted.
type IdentitySpec struct {
	HubName     string        `json:"hubName"`
	GatewayHost string        `json:"gatewayHost"`
	DeviceID    string        `json:"deviceId"`
	ModuleID    string        `json:"moduleId,omitempty"`
	GenID       string        `json:"genId,omitempty"`
	Auth        *IdentityAuth `json:"auth,omitempty"`
}

// IdentityAuth is the auth of an aziot identity: a keyd handle, never a key.
type IdentityAuth struct {
	Type      string `json:"type"`
	KeyHandle string `json:"keyHandle,omitempty"`
	CertID    string `json:"certId,omitempty"`
}

type identityList struct {
	Identities []Identity `json:"identities"`
}

func (s *Service) spec(d *DeviceRecord) IdentitySpec {
	return IdentitySpec{HubName: d.HubName, GatewayHost: d.GatewayHost, DeviceID: d.DeviceID}
}

// ---- device ----

func (s *Service) deviceIdentity(r *broker.Request) (broker.Reply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := s.deviceIdentityLocked(r.Context)
	if err != nil {
		return broker.Reply{}, err
	}
	return broker.Reply{Body: id}, nil
}

func (s *Service) deviceIdentityLocked(ctx context.Context) (*Identity, error) {
	d := s.device
	if d == nil {
		return nil, errDeviceNotFound
	}
	spec := s.spec(d)
	switch d.Auth.Type {
	case "sas":
		h, err := s.keyd.LoadKey(ctx, d.Auth.KeyID)
		if err != nil {
			return nil, keyError(err)
		}
		spec.Auth = &IdentityAuth{Type: "sas", KeyHandle: h}
	case "x509":
		h, err := s.keyd.LoadKeyPair(ctx, d.Auth.KeyID)
		if err != nil {
			return nil, keyError(err)
		}
		spec.Auth = &IdentityAuth{Type: "x509", KeyHandle: h, CertID: d.Auth.CertID}
	case "tpm":
		spec.Auth = &IdentityAuth{Type: "tpm"}
	}
	return &Identity{Type: "aziot", Spec: spec}, nil
}

func (s *Service) callerIdentity(r *broker.Request) (broker.Reply, error) {
	if m, ok := r.Resolved.(callerModule); ok && r.Allowed == 1 {
		s.mu.Lock()
		defer s.mu.Unlock()
		id, err := s.moduleIdentityLocked(r.Context, string(m))
		if err != nil {
			return broker.Reply{}, err
		}
		return broker.Reply{Body: id}, nil
	}
	return s.deviceIdentity(r)
}

// ---- provisioning info and trust bundle ----

func (s *Service) provisioningInfo(*broker.Request) (broker.Reply, error) {
	p := s.config().Provisioning
	switch p.Source {
	case "manual":
		return broker.Reply{Body: struct {
			Source string `json:"source"`
			Auth   string `json:"auth"`
		}{"manual", p.Authentication.Method}}, nil
	case "dps":
		a := p.Attestation
		rid, ok := a.RegistrationID.(string)
		if !ok {
			// dps+x509 without a string registration_id takes the CN of the identity
			// cert from certd: not implemented yet.
			return broker.Reply{}, internal("provisioning info: registration ID from the identity certificate is not implemented")
		}
		var payload json.RawMessage
		if p.Payload != nil && p.Payload.URI != "" {
			var err error
			if payload, err = readPayload(p.Payload.URI); err != nil {
				return broker.Reply{}, broker.InvalidParameter("provisioning.payload", err.Error())
			}
		}
		if payload == nil {
			payload = json.RawMessage("null")
		}
		return broker.Reply{Body: struct {
			Source         string          `json:"source"`
			Auth           string          `json:"auth"`
			Endpoint       string          `json:"endpoint"`
			ScopeID        string          `json:"scope_id"`
			RegistrationID string          `json:"registration_id"`
			Payload        json.RawMessage `json:"payload"`
		}{"dps", a.Method, normalizeURL(p.GlobalEndpoint), p.ScopeID, rid, payload}}, nil
	}
	return broker.Reply{Body: struct {
		Source string `json:"source"`
	}{"none"}}, nil
}

// normalizeURL writes a URL as a URL parser normalizes it (a bare host gets "/").
func normalizeURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	if u.Path == "" && u.Host != "" {
		u.Path = "/"
	}
	return u.String()
}

func readPayload(uri string) (json.RawMessage, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "file" {
		return nil, fmt.Errorf("payload URI %q is not a file:// URL", uri)
	}
	data, err := os.ReadFile(u.Path)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("payload file: %w", err)
	}
	return json.Marshal(v)
}

func trustBundle(*broker.Request) (broker.Reply, error) {
	return broker.Reply{Body: map[string]string{"certificate": ""}}, nil
}

// ---- modules ----

func (s *Service) listModules(r *broker.Request) (broker.Reply, error) {
	if _, err := invalidType(r, "aziot"); err != nil {
		return broker.Reply{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.device
	if d == nil {
		return broker.Reply{}, errDeviceNotFound
	}
	mods, err := s.listModuleRecords(r.Context)
	if err != nil {
		return broker.Reply{}, err
	}
	out := identityList{Identities: []Identity{}}
	for _, m := range mods {
		spec := s.spec(d)
		spec.ModuleID = m.ModuleID
		if m.GenerationID != nil {
			spec.GenID = *m.GenerationID
		}
		out.Identities = append(out.Identities, Identity{Type: "aziot", Spec: spec})
	}
	return broker.Reply{Body: out}, nil
}

// listModuleRecords lists per prefer_module_identity_cache (flows.md §7).
func (s *Service) listModuleRecords(ctx context.Context) ([]state.Module, error) {
	cache := s.cache()
	fromHub := func() ([]state.Module, error) {
		ms, err := s.hub.ListModules(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]state.Module, 0, len(ms))
		for _, m := range ms {
			rec := record(m)
			if err := cache.Write(rec); err != nil {
				s.log.Warn("module cache not refreshed", "module", m.ModuleID, "err", err)
			}
			out = append(out, rec)
		}
		return out, nil
	}
	if s.config().PreferModuleIdentityCache {
		if ms, err := cache.List(); err == nil {
			return ms, nil
		}
		ms, err := fromHub()
		if err != nil {
			return nil, hubError(err)
		}
		return ms, nil
	}
	ms, herr := fromHub()
	if herr == nil {
		return ms, nil
	}
	s.log.Warn("listing modules from the cache: the hub failed", "err", herr)
	ms, err := cache.List()
	if err != nil {
		return nil, hubError(herr)
	}
	return ms, nil
}

// moduleRecord gets one module per prefer_module_identity_cache (flows.md §7).
func (s *Service) moduleRecord(ctx context.Context, id string) (state.Module, error) {
	cache := s.cache()
	fromHub := func() (state.Module, error) {
		m, err := s.hub.GetModule(ctx, id)
		if err != nil {
			return state.Module{}, err
		}
		rec := record(*m)
		if err := cache.Write(rec); err != nil {
			s.log.Warn("module cache not refreshed", "module", id, "err", err)
		}
		return rec, nil
	}
	if s.config().PreferModuleIdentityCache {
		if m, err := cache.Read(id); err == nil {
			return m, nil
		}
		m, err := fromHub()
		if err != nil {
			return state.Module{}, hubError(err)
		}
		return m, nil
	}
	m, herr := fromHub()
	if herr == nil {
		return m, nil
	}
	m, err := cache.Read(id)
	if err != nil {
		return state.Module{}, hubError(herr)
	}
	s.log.Warn("module served from the cache: the hub failed", "module", id, "err", herr)
	return m, nil
}

func record(m hubclient.Module) state.Module {
	rec := state.Module{ModuleID: m.ModuleID, ManagedBy: m.ManagedBy, DeviceID: m.DeviceID}
	if m.GenerationID != "" {
		g := m.GenerationID
		rec.GenerationID = &g
	}
	return rec
}

func (s *Service) cache() state.ModuleCache {
	d := s.device
	return state.ModuleCache{Homedir: s.config().Homedir, Hub: d.HubName, DeviceID: d.DeviceID}
}

func checkModuleID(id string) *broker.Error {
	if strings.TrimSpace(id) == "" {
		return broker.InvalidParameter("module_id", "module name cannot be empty")
	}
	return nil
}

func (s *Service) getModule(r *broker.Request) (broker.Reply, error) {
	typ, err := invalidType(r, "aziot", "local")
	if err != nil {
		return broker.Reply{}, err
	}
	id := r.Params["moduleId"]
	if typ == "local" {
		return broker.Reply{}, s.localIdentity(id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ident, ierr := s.moduleIdentityLocked(r.Context, id)
	if ierr != nil {
		return broker.Reply{}, ierr
	}
	return broker.Reply{Body: ident}, nil
}

// localIdentity answers type=local: local issuance lands with [localid] support; until
// then it answers as upstream does when the module is not a local principal, and 500 (as
// upstream without [localid]) otherwise.
func (s *Service) localIdentity(id string) error {
	if s.isLocalPrincipal(id) {
		return internal("local identity for %q: local identity issuance is not implemented", id)
	}
	return broker.InvalidParameter("moduleId", fmt.Sprintf("local identity for %s doesn't exist", id))
}

// isLocalPrincipal reports whether a principal named id has idtype local.
func (s *Service) isLocalPrincipal(id string) bool {
	for _, p := range s.config().Principals {
		if p.Name == id && slices.Contains(p.IDType, "local") {
			return true
		}
	}
	return false
}

// moduleDevice is what the module create, update and delete routes check first, under
// s.mu: a provisioned device, then a valid module ID.
func (s *Service) moduleDevice(id string) (*DeviceRecord, error) {
	if s.device == nil {
		return nil, errDeviceNotFound
	}
	if err := checkModuleID(id); err != nil {
		return nil, err
	}
	return s.device, nil
}

func (s *Service) moduleIdentityLocked(ctx context.Context, id string) (*Identity, error) {
	if err := checkModuleID(id); err != nil {
		return nil, err
	}
	d := s.device
	if d == nil {
		return nil, errDeviceNotFound
	}
	m, err := s.moduleRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.moduleIdentityOf(ctx, d, m)
}

func (s *Service) moduleIdentityOf(ctx context.Context, d *DeviceRecord, m state.Module) (*Identity, error) {
	if m.GenerationID == nil {
		return nil, broker.BadRequest("module identity not found")
	}
	master, err := s.masterKey(ctx)
	if err != nil {
		return nil, broker.Internal(err)
	}
	h, err := state.DerivePrimaryKey(ctx, s.keyd.DeriveKey, master, m.ModuleID, m.GenerationID)
	if err != nil {
		return nil, broker.Internal(err)
	}
	spec := s.spec(d)
	spec.ModuleID = m.ModuleID
	spec.GenID = *m.GenerationID
	spec.Auth = &IdentityAuth{Type: "sas", KeyHandle: h}
	return &Identity{Type: "aziot", Spec: spec}, nil
}

// masterKey returns the handle of the master key, generated on first use (flows.md §5).
func (s *Service) masterKey(ctx context.Context) (string, error) {
	h, err := s.keyd.CreateKey(ctx, state.MasterKeyID, state.MasterKeyUsage)
	if err != nil {
		return "", fmt.Errorf("master key %s: %w", state.MasterKeyID, err)
	}
	return h, nil
}

func (s *Service) createModule(r *broker.Request) (broker.Reply, error) {
	b := r.Body.(*createModuleRequest)
	id := *b.ModuleID
	switch *b.Type {
	case "aziot":
	case "local":
		if s.isLocalPrincipal(id) {
			return broker.Reply{}, broker.InvalidParameter("moduleId", fmt.Sprintf("local identity for %s already exists", id))
		}
		return broker.Reply{}, internal("local identity for %q: local identity issuance is not implemented", id)
	default:
		return broker.Reply{}, broker.InvalidParameter("type", "invalid type: "+*b.Type)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.moduleDevice(id)
	if err != nil {
		return broker.Reply{}, err
	}
	m, err := s.createHubModule(r.Context, id, false)
	if err != nil {
		return broker.Reply{}, err
	}
	ident, err := s.moduleIdentityOf(r.Context, d, m)
	if err != nil {
		return broker.Reply{}, err
	}
	return broker.Reply{Body: ident}, nil
}

// createHubModule creates module id in the hub, sets keys derived from the master key
// and caches the record (api-identity.md §3.6). adopt keeps a module that already
// exists (reconciliation after a create whose answer was lost).
func (s *Service) createHubModule(ctx context.Context, id string, adopt bool) (state.Module, error) {
	m, err := s.hub.CreateModule(ctx, id)
	var he *hubclient.Error
	if errors.Is(err, hubclient.ErrAlreadyExists) && (adopt || (errors.As(err, &he) && he.Attempts > 1)) {
		// An earlier attempt of ours may have created it: read it back.
		m, err = s.hub.GetModule(ctx, id)
	}
	if err != nil {
		return state.Module{}, hubError(err)
	}
	return s.setModuleKeys(ctx, *m)
}

// setModuleKeys derives both keys for the module's generation and writes them to the
// hub (If-Match: *), then caches the record.
func (s *Service) setModuleKeys(ctx context.Context, m hubclient.Module) (state.Module, error) {
	rec := record(m)
	if rec.GenerationID == nil {
		return state.Module{}, broker.BadRequest("module identity not found")
	}
	master, err := s.masterKey(ctx)
	if err != nil {
		return state.Module{}, broker.Internal(err)
	}
	hs, err := state.DeriveModuleKeys(ctx, s.keyd.DeriveKey, master, m.ModuleID, rec.GenerationID)
	if err != nil {
		return state.Module{}, broker.Internal(err)
	}
	p, err := s.keyd.ExportDerivedKey(ctx, hs.Primary)
	if err != nil {
		return state.Module{}, broker.Internal(fmt.Errorf("export primary key of module %q: %w", m.ModuleID, err))
	}
	sec, err := s.keyd.ExportDerivedKey(ctx, hs.Secondary)
	if err != nil {
		return state.Module{}, broker.Internal(fmt.Errorf("export secondary key of module %q: %w", m.ModuleID, err))
	}
	if _, err := s.hub.SetModuleKeys(ctx, m.ModuleID, b64(p), b64(sec), ""); err != nil {
		return state.Module{}, hubError(err)
	}
	if err := s.cache().Write(rec); err != nil {
		return state.Module{}, broker.Internal(err)
	}
	return rec, nil
}

func (s *Service) updateModule(r *broker.Request) (broker.Reply, error) {
	if _, err := invalidType(r, "aziot"); err != nil {
		return broker.Reply{}, err
	}
	id := r.Params["moduleId"]
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.moduleDevice(id)
	if err != nil {
		return broker.Reply{}, err
	}
	m, err := s.hub.GetModule(r.Context, id)
	if err != nil {
		return broker.Reply{}, hubError(err)
	}
	rec, err := s.setModuleKeys(r.Context, *m)
	if err != nil {
		return broker.Reply{}, err
	}
	ident, err := s.moduleIdentityOf(r.Context, d, rec)
	if err != nil {
		return broker.Reply{}, err
	}
	return broker.Reply{Body: ident}, nil
}

func (s *Service) deleteModule(r *broker.Request) (broker.Reply, error) {
	if _, err := invalidType(r, "aziot"); err != nil {
		return broker.Reply{}, err
	}
	id := r.Params["moduleId"]
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.moduleDevice(id); err != nil {
		return broker.Reply{}, err
	}
	if err := s.hub.DeleteModule(r.Context, id, ""); err != nil {
		return broker.Reply{}, hubError(err)
	}
	if err := s.cache().Remove(id); err != nil {
		return broker.Reply{}, broker.Internal(err)
	}
	return broker.Reply{Status: http.StatusNoContent}, nil
}

func (s *Service) reprovision(r *broker.Request) (broker.Reply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.provisionAndReconcile(r.Context, true, true); err != nil {
		return broker.Reply{}, err
	}
	return broker.Reply{Status: http.StatusNoContent}, nil
}
