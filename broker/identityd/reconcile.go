package identityd

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"

	"github.com/BurntSushi/toml"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/broker/identityd/hubclient"
	"github.com/iotbroker/aziot/broker/identityd/state"
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// provisionAndReconcile provisions the device and reconciles its modules (flows.md §8.1).
// reprovision (POST /identities/device/reprovision) first clears device_info and the
// device's module cache and returns every error; at start a network error leaves the
// device running offline and another hub error provisions once more.
func (s *Service) provisionAndReconcile(ctx context.Context, reprovision, strict bool) error {
	cfg := s.config()
	if reprovision && s.device != nil {
		if err := s.cache().Clear(); err != nil {
			return broker.Internal(err)
		}
		if err := state.RemoveDeviceInfo(cfg.Homedir); err != nil {
			return broker.Internal(err)
		}
	}
	if err := s.provision(ctx, reprovision); err != nil {
		return err
	}
	if s.device == nil {
		return nil
	}
	if strict {
		return s.reconcile(ctx)
	}
	return s.reconcileWithFallback(ctx)
}

// provision asks the provisioner and sets the device, its hub client and its cache.
func (s *Service) provision(ctx context.Context, reprovision bool) error {
	rec, err := s.prov.Provision(ctx, reprovision)
	if errors.Is(err, errNoSource) {
		s.setDevice(nil, nil)
		return nil
	}
	if err != nil {
		s.setDevice(nil, nil)
		return internal("provision device: %w", err)
	}
	hub, err := s.newHubClient(rec)
	if err != nil {
		s.setDevice(nil, nil)
		return broker.Internal(err)
	}
	s.setDevice(rec, hub)
	if err := s.cache().SetDevice(); err != nil {
		return broker.Internal(err)
	}
	return nil
}

func (s *Service) setDevice(rec *DeviceRecord, hub *hubclient.Client) {
	if s.hub != nil {
		s.hub.Close()
	}
	s.device, s.hub = rec, hub
}

func (s *Service) newHubClient(rec *DeviceRecord) (*hubclient.Client, error) {
	cfg := hubclient.Config{
		HubName:   rec.HubName,
		DeviceID:  rec.DeviceID,
		TLSConfig: s.opts.HubTLS,
		Waits:     s.hubWaits(s.config()),
	}
	if rec.GatewayHost != rec.HubName {
		cfg.Gateway = rec.GatewayHost
	}
	switch rec.Auth.Type {
	case "sas":
		keyID := rec.Auth.KeyID
		// The key is loaded for each token (a keyd round trip next to a hub call), so a
		// re-imported device key is picked up without a restart.
		cfg.Sign = func(ctx context.Context, data []byte) ([]byte, error) {
			h, err := s.keyd.LoadKey(ctx, keyID)
			if err != nil {
				return nil, fmt.Errorf("load device key %q: %w", keyID, err)
			}
			return s.keyd.SignHMAC(ctx, h, data)
		}
	default:
		return nil, fmt.Errorf("iot hub client: device authentication %q is not implemented yet", rec.Auth.Type)
	}
	return hubclient.New(cfg)
}

// reconcileWithFallback is start-up's (and a config change's) hub-error handling
// (flows.md §8.1): a network error leaves the device offline, served from the cache;
// any other error provisions once more and reconciles again.
func (s *Service) reconcileWithFallback(ctx context.Context) error {
	err := s.reconcile(ctx)
	if err == nil {
		return nil
	}
	if hubclient.IsNetwork(err) {
		s.log.Warn("reconciliation skipped: the hub is unreachable; running offline", "err", err)
		return nil
	}
	s.log.Warn("reconciliation failed; provisioning again", "err", err)
	if err := s.provision(ctx, true); err != nil {
		return err
	}
	if s.device == nil {
		return nil
	}
	if err := s.reconcile(ctx); err != nil {
		if hubclient.IsNetwork(err) {
			s.log.Warn("reconciliation skipped: the hub is unreachable; running offline", "err", err)
			return nil
		}
		return err
	}
	return nil
}

// reconcile is flows.md §8.2: create the modules of the current principals, delete the
// ones identityd created for principals that are gone, leave others' modules alone.
func (s *Service) reconcile(ctx context.Context) error {
	cfg := s.config()
	d := s.device
	info := state.DeviceInfo{HubName: d.HubName, LocalGatewayHostname: d.GatewayHost, DeviceID: d.DeviceID}

	current := map[string]bool{}
	for _, p := range cfg.Principals {
		if slices.Contains(p.IDType, "module") {
			current[p.Name] = true
		}
	}
	prev, why := state.PrevModules(cfg.Homedir, info)
	if why != nil {
		s.log.Info("no previous module set", "reason", why)
	}
	hubMods, err := s.hub.ListModules(ctx)
	if err != nil {
		return hubError(err)
	}
	kept := map[string]bool{}
	for _, m := range hubMods {
		id := m.ModuleID
		switch {
		case current[id] && prev[id]:
			kept[id] = true
			// Keys are not rewritten: the module and its generation stay as they are.
			if err := s.cache().Write(record(m)); err != nil {
				return broker.Internal(err)
			}
		case prev[id] || current[id]:
			// Gone from the config, or not known to be ours: delete (recreated below
			// when current).
			if err := s.hub.DeleteModule(ctx, id, ""); err != nil {
				return hubError(err)
			}
			if err := s.cache().Remove(id); err != nil {
				return broker.Internal(err)
			}
		}
	}
	for _, p := range cfg.Principals {
		if !current[p.Name] || kept[p.Name] {
			continue
		}
		if _, err := s.createHubModule(ctx, p.Name, false); err != nil {
			return err
		}
		s.log.Info("module identity created", "module", p.Name)
	}
	settings, err := settingsTOML(cfg)
	if err != nil {
		return broker.Internal(err)
	}
	if err := state.WriteReconciled(cfg.Homedir, info, settings); err != nil {
		return broker.Internal(err)
	}
	return nil
}

// settingsTOML serializes the settings reconciled, for prev_state. Only the principal
// list is read back (state.DecodePrevModules); the [broker] table is ours and left out.
func settingsTOML(cfg *Config) ([]byte, error) {
	c := cfg
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(prevSettings{
		Hostname: c.Hostname, Homedir: c.Homedir, PreferModuleIdentityCache: c.PreferModuleIdentityCache,
		CloudTimeoutSec: c.CloudTimeoutSec, CloudRetries: c.CloudRetries,
		Provisioning: c.Provisioning, Principals: c.Principals, LocalID: c.LocalID,
	}); err != nil {
		return nil, fmt.Errorf("encode prev_state: %w", err)
	}
	return b.Bytes(), nil
}

type prevSettings struct {
	Hostname                  string        `toml:"hostname"`
	Homedir                   string        `toml:"homedir"`
	PreferModuleIdentityCache bool          `toml:"prefer_module_identity_cache"`
	CloudTimeoutSec           int64         `toml:"cloud_timeout_sec"`
	CloudRetries              int64         `toml:"cloud_retries"`
	Provisioning              *Provisioning `toml:"provisioning"`
	Principals                []Principal   `toml:"principal"`
	LocalID                   *LocalID      `toml:"localid,omitempty"`
}
