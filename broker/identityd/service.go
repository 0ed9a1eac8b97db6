// Package identityd is the Identity Service (api-identity.md): the device identity from a
// provisioner, IoT Hub module identities for the configured principals with keys derived
// in keyd, their cache, and reconciliation (flows.md §5, §7, §8).
package identityd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/broker/identityd/hubclient"
	"github.com/iotbroker/aziot/policy"
	"github.com/iotbroker/aziot/policy/authz"
	"github.com/iotbroker/aziot/sdk/keys"
)

// Versions are identityd's api-versions.
var Versions = []string{"2020-09-01", "2021-12-01", "2022-08-01"}

// Options are what the process gives identityd beside its config.
type Options struct {
	Log *slog.Logger
	// Decider authorizes requests; nil builds the default policy engine over the
	// principals' data.
	Decider authz.Decider
	// Provisioner overrides the native provisioner of [provisioning] (DPS flows, tests).
	Provisioner Provisioner
	// HubTLS is the TLS configuration of IoT Hub calls (cloned); nil trusts the system
	// store. Tests set RootCAs to the emulator's root.
	HubTLS *tls.Config
	// HubWaits overrides the hub client's waits; nil derives them from cloud_timeout_sec
	// and cloud_retries with upstream's other values.
	HubWaits *hubclient.Waits
}

// Service is identityd.
type Service struct {
	HTTP *broker.Service

	log    *slog.Logger
	keyd   *keys.Client
	engine *policy.Engine
	opts   Options

	// pmu guards the config and principals, read by every policy decision.
	pmu        sync.RWMutex
	cfg        *Config
	principals *policy.IdentitydPrincipals

	// mu is upstream's single service-wide lock: requests, provisioning and
	// reconciliation run one at a time.
	mu     sync.Mutex
	prov   Provisioner
	device *DeviceRecord
	hub    *hubclient.Client
}

// New builds identityd from a validated config; it contacts nothing (Start provisions).
func New(cfg *Config, opts Options) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Service{
		log:  opts.Log,
		keyd: keys.New(cfg.KeydEndpoint()),
		opts: opts,
		cfg:  cfg,
	}
	s.principals = policy.NewIdentitydPrincipals(cfg.PolicyPrincipals())
	for _, n := range s.principals.Ignored {
		s.log.Warn("ignoring principal without idtype: only the first such entry is kept", "name", n)
	}
	s.prov = opts.Provisioner
	if s.prov == nil {
		s.prov = provisionerFor(cfg.Provisioning)
	}
	decider := opts.Decider
	if decider == nil {
		var err error
		// identityd's default rules read only input.caller.principal, which the service
		// passes with every decision: no policy data is needed.
		if s.engine, err = policy.NewEngine(nil, nil); err != nil {
			return nil, err
		}
		decider = s.engine
	}
	s.HTTP = &broker.Service{
		Name:      "identityd",
		Versions:  Versions,
		Decider:   decider,
		Principal: s.principal,
		Denied:    denied,
		Log:       opts.Log,
		BodyLimit: cfg.Broker.MaxBodyBytes,
		// Upstream's route order (api-identity.md intro).
		Routes: []broker.Route{
			{Pattern: "/identities/modules",
				Get: &broker.Handler{Operation: "identityd.module.list", Resolve: resolveList, Serve: s.listModules},
				Post: &broker.Handler{NewBody: func() any { return new(createModuleRequest) },
					Operation: "identityd.module.create", Resolve: resolveCreate, Serve: s.createModule}},
			{Pattern: "/identities/identity",
				Get: &broker.Handler{Operation: "identityd.device.get", AnyOf: true, Resolve: s.resolveCallerIdentity, Serve: s.callerIdentity}},
			{Pattern: "/identities/device",
				Post: &broker.Handler{NewBody: func() any { return new(deviceRequest) },
					Operation: "identityd.device.get", Resolve: resolveDevice, Serve: s.deviceIdentity}},
			{Pattern: "/identities/provisioning", MinVersion: "2021-12-01",
				Get: &broker.Handler{Operation: "identityd.provisioning.get", Serve: s.provisioningInfo}},
			{Pattern: "/trust-bundle",
				Get: &broker.Handler{Operation: "identityd.trust_bundle.get", Serve: trustBundle}},
			{Pattern: "/identities/modules/{moduleId}",
				Get:    &broker.Handler{Operation: "identityd.module.get", Resolve: resolveModule, Serve: s.getModule},
				Put:    &broker.Handler{Operation: "identityd.module.update", Resolve: resolveModule, Serve: s.updateModule},
				Delete: &broker.Handler{Operation: "identityd.module.delete", Resolve: resolveModule, Serve: s.deleteModule}},
			{Pattern: "/identities/device/reprovision",
				Post: &broker.Handler{Operation: "identityd.device.reprovision", Serve: s.reprovision}},
		},
	}
	s.HTTP.SetMaxRequests(cfg.MaxRequests)
	return s, nil
}

// Engine returns the policy engine (nil when a Decider was given).
func (s *Service) Engine() *policy.Engine { return s.engine }

// Close releases the clients.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hub != nil {
		s.hub.Close()
	}
	s.keyd.Close()
}

// Start runs start-up provisioning and reconciliation (flows.md §8.1). An error means the
// device could not be provisioned; identityd keeps answering "device identity not found".
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.provisionAndReconcile(ctx, false, false)
}

// Reload applies a changed config: principals and settings, then reconciliation with
// start-up's hub-error handling (flows.md §8.1, config file change).
func (s *Service) Reload(ctx context.Context, cfg *Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.setConfig(cfg)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.Provisioner == nil {
		s.prov = provisionerFor(cfg.Provisioning)
	}
	if s.device == nil {
		return nil
	}
	return s.reconcileWithFallback(ctx)
}

func (s *Service) setConfig(cfg *Config) {
	p := policy.NewIdentitydPrincipals(cfg.PolicyPrincipals())
	s.pmu.Lock()
	s.cfg, s.principals = cfg, p
	s.pmu.Unlock()
}

func (s *Service) config() *Config {
	s.pmu.RLock()
	defer s.pmu.RUnlock()
	return s.cfg
}

// principal is input.caller.principal (docs/policy.md, identityd's principal).
func (s *Service) principal(uid uint32) map[string]any {
	s.pmu.RLock()
	defer s.pmu.RUnlock()
	return s.principals.Principal(uid)
}

// PolicyPrincipals converts the [[principal]] entries for the caller resolution.
func (c *Config) PolicyPrincipals() []policy.IdentitydPrincipal {
	out := make([]policy.IdentitydPrincipal, 0, len(c.Principals))
	for _, p := range c.Principals {
		e := policy.IdentitydPrincipal{UID: p.UID, Name: p.Name, IDType: p.IDType}
		if p.IDType != nil && e.IDType == nil {
			e.IDType = []string{}
		}
		if p.LocalID != nil {
			e.LocalID = map[string]string{"type": p.LocalID.Type, "attributes": p.LocalID.Attributes}
		}
		out = append(out, e)
	}
	return out
}

// KeydEndpoint is the keyd socket identityd uses.
func (c *Config) KeydEndpoint() string {
	if c.Endpoints.AziotKeyd != "" {
		return c.Endpoints.AziotKeyd
	}
	return keys.DefaultSocket
}

// hubWaits are the hub client's waits: cloud_timeout_sec and cloud_retries over
// upstream's other values, unless the process gave its own.
func (s *Service) hubWaits(cfg *Config) *hubclient.Waits {
	if s.opts.HubWaits != nil {
		w := *s.opts.HubWaits
		return &w
	}
	w := hubclient.DefaultWaits()
	w.Timeout = time.Duration(cfg.CloudTimeoutSec) * time.Second
	w.Retries = int(cfg.CloudRetries)
	return &w
}

// denied is identityd's refusal of a denied target (api-identity.md §1.2).
func denied(*broker.Request, broker.Target) *broker.Error {
	return broker.Unauthorized("authorization error")
}

// ---- Resolve: what each request acts on, read before any validation (§1.2) ----

// typeRequest carries the `type` query parameter when present: authorization comes
// before its validation.
func typeRequest(r *broker.Request) map[string]any {
	if v, ok := r.QueryValue("type"); ok {
		return map[string]any{"type": v}
	}
	return nil
}

func resolveList(r *broker.Request) ([]broker.Target, error) {
	return r.One(broker.Target{Request: typeRequest(r)}), nil
}

func resolveModule(r *broker.Request) ([]broker.Target, error) {
	return r.One(broker.Target{Resource: map[string]any{"module_id": r.Params["moduleId"]}, Request: typeRequest(r)}), nil
}

func resolveCreate(r *broker.Request) ([]broker.Target, error) {
	b, _ := r.Body.(*createModuleRequest)
	if b == nil {
		// The body rules run before the decision (§1.2).
		return nil, broker.BadRequest("missing request body")
	}
	req := map[string]any{"type": *b.Type}
	if b.LocalIDOpts != nil {
		req["local_id_opts"] = localIDOptsMap(b.LocalIDOpts)
	}
	return r.One(broker.Target{Resource: map[string]any{"module_id": *b.ModuleID}, Request: req}), nil
}

func resolveDevice(r *broker.Request) ([]broker.Target, error) {
	b, _ := r.Body.(*deviceRequest)
	if b == nil {
		return nil, broker.BadRequest("missing request body")
	}
	return r.One(broker.Target{Request: map[string]any{"type": *b.Type}}), nil
}

// resolveCallerIdentity asks upstream's questions of GET /identities/identity, as
// alternatives (AnyOf): GetDevice, then for a host process GetModule of its own name.
func (s *Service) resolveCallerIdentity(r *broker.Request) ([]broker.Target, error) {
	device := broker.Target{Request: map[string]any{"caller_identity": true}}
	p := s.principal(r.Caller.UID)
	if p["kind"] != policy.KindHostProcess {
		return r.One(device), nil
	}
	name, _ := p["name"].(string)
	r.Resolved = callerModule(name)
	return []broker.Target{device, {Operation: "identityd.module.get",
		Resource: map[string]any{"module_id": name},
		Request:  map[string]any{"type": "aziot", "caller_identity": true}}}, nil
}

// callerModule marks GET /identities/identity as answered with a module identity.
type callerModule string

// ---- request bodies ----

type deviceRequest struct {
	Type *string `json:"type" required:"true"`
}

type createModuleRequest struct {
	Type        *string      `json:"type" required:"true"`
	ModuleID    *string      `json:"moduleId" required:"true"`
	LocalIDOpts *localIDOpts `json:"localIdOpts"`
}

type localIDOpts struct {
	Type       string `json:"type"`
	Attributes string `json:"attributes"`
}

func localIDOptsMap(o *localIDOpts) map[string]any {
	m := map[string]any{"type": o.Type}
	if o.Attributes != "" {
		m["attributes"] = o.Attributes
	}
	return m
}

// ---- errors (api-identity.md §5) ----

var errDeviceNotFound = broker.BadRequest("device identity not found")

func invalidType(r *broker.Request, allowed ...string) (string, *broker.Error) {
	v, ok := r.QueryValue("type")
	if !ok {
		return "", broker.InvalidParameter("type", "missing parameter")
	}
	if !slices.Contains(allowed, v) {
		return "", broker.InvalidParameter("type", "invalid type: "+v)
	}
	return v, nil
}

// hubError is upstream's 404 for any IoT Hub failure; the hub client's errors carry no
// token.
func hubError(err error) *broker.Error {
	return &broker.Error{Status: 404, Message: "Hub client error\ncaused by: " + err.Error(), Cause: err}
}

// keyError is upstream's 404 for a keyd failure.
func keyError(err error) *broker.Error {
	msg := err.Error()
	var ae *keys.APIError
	if errors.As(err, &ae) {
		msg = ae.Message
	}
	return &broker.Error{Status: 404, Message: "Key client error\ncaused by: " + msg, Cause: err}
}

func internal(format string, args ...any) *broker.Error {
	return broker.Internal(fmt.Errorf(format, args...))
}
