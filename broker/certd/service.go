// Package certd is the certificates service (api-certs.md): import, export, delete, and
// issuance from a CSR, with private keys kept in keyd and used through sdk/keys.
package certd

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/internal/atomicfile"
	"github.com/iotbroker/aziot/policy"
	"github.com/iotbroker/aziot/sdk/certs"
	"github.com/iotbroker/aziot/sdk/keys"
)

// Versions are certd's api-versions.
var Versions = []string{"2020-09-01"}

// Service is certd.
type Service struct {
	HTTP *broker.Service

	keyd   *keys.Client
	log    *slog.Logger
	engine *policy.Engine

	mu     sync.RWMutex
	parsed *Parsed
	store  *store
}

// Options are what the process gives certd beside its config.
type Options struct {
	Log     *slog.Logger
	Decider policy.Decider
}

// KeydEndpoint is the keyd socket certd uses.
func (c *Config) KeydEndpoint() string {
	if c.Endpoints.AziotKeyd != "" {
		return c.Endpoints.AziotKeyd
	}
	return keys.DefaultSocket
}

// New builds certd from its config.
func New(cfg *Config, opts Options) (*Service, error) {
	parsed, err := cfg.Parse()
	if err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	// Temp files of writes a crash interrupted are never certs: drop them.
	atomicfile.CleanTemps(filepath.Join(cfg.HomedirPath, "certs"))
	s := &Service{
		keyd:   keys.New(cfg.KeydEndpoint()),
		log:    opts.Log,
		parsed: parsed,
		store:  &store{homedir: cfg.HomedirPath, preloaded: parsed.Preloaded},
	}
	decider := opts.Decider
	if decider == nil {
		if s.engine, err = policy.NewEngine(nil, policy.PrincipalData("certd", parsed.Principals)); err != nil {
			return nil, err
		}
		decider = s.engine
	}
	s.HTTP = &broker.Service{
		Name:      "certd",
		Versions:  Versions,
		Decider:   decider,
		Principal: s.principal,
		Denied:    denied,
		Log:       opts.Log,
		BodyLimit: cfg.Broker.MaxBodyBytes,
		Routes: []broker.Route{
			{Pattern: "/certificates",
				Post: &broker.Handler{NewBody: func() any { return new(certs.CreateCertRequest) },
					Operation: "certd.cert.create", Resolve: resolveCreate, Serve: s.create}},
			{Pattern: "/certificates/{certId}",
				Get: &broker.Handler{Operation: "certd.cert.get", Resolve: resolvePathID, Serve: s.get},
				Put: &broker.Handler{NewBody: func() any { return new(certs.ImportCertRequest) },
					Operation: "certd.cert.import", Resolve: resolvePathID, Serve: s.put},
				Delete: &broker.Handler{Operation: "certd.cert.delete", Resolve: resolvePathID, Serve: s.delete}},
		},
	}
	s.HTTP.SetMaxRequests(cfg.MaxRequests)
	return s, nil
}

// Engine returns the policy engine (nil when a Decider was given).
func (s *Service) Engine() *policy.Engine { return s.engine }

// Reload applies cert_issuance, preloaded_certs and principals from a changed config.
func (s *Service) Reload(cfg *Config) error {
	parsed, err := cfg.Parse()
	if err != nil {
		return err
	}
	if s.engine != nil {
		if err := s.engine.SetData(policy.PrincipalData("certd", parsed.Principals)); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.parsed = parsed
	s.store = &store{homedir: s.store.homedir, preloaded: parsed.Preloaded}
	s.mu.Unlock()
	return nil
}

// Close releases the keyd client.
func (s *Service) Close() { s.keyd.Close() }

func (s *Service) snapshot() (*Parsed, *store) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.parsed, s.store
}

func (s *Service) principal(uid uint32) map[string]any {
	p, _ := s.snapshot()
	if pats, ok := p.Principals[uid]; ok {
		return map[string]any{"certs": pats}
	}
	return nil
}

// denied is certd's refusal of a denied target: upstream's 401 naming the cert.
func denied(r *broker.Request, t broker.Target) *broker.Error {
	id, _ := t.Resource["cert_id"].(string)
	return broker.Unauthorized(fmt.Sprintf("user %d is not authorized to modify the cert %s", r.Caller.UID, id))
}

func resolvePathID(r *broker.Request) ([]broker.Target, error) {
	return []broker.Target{{Resource: map[string]any{"cert_id": r.Params["certId"]}}}, nil
}

// resolveCreate: upstream decides before it parses the CSR.
func resolveCreate(r *broker.Request) ([]broker.Target, error) {
	req, _ := r.Body.(*certs.CreateCertRequest)
	if req == nil {
		return nil, broker.BadRequest("missing request body")
	}
	request := map[string]any{}
	if req.Issuer != nil {
		request["issuer_cert_id"] = *req.Issuer.CertID
	}
	return []broker.Target{{Resource: map[string]any{"cert_id": *req.CertID}, Request: request}}, nil
}

func (s *Service) get(r *broker.Request) (broker.Reply, error) {
	id := r.Params["certId"]
	_, st := s.snapshot()
	b, err := st.get(id)
	if errors.Is(err, errNotFound) {
		return broker.Reply{}, broker.InvalidParameter("id", "not found")
	}
	if err != nil {
		return broker.Reply{}, broker.Internal(err)
	}
	return broker.Reply{Body: certs.CertResponse{PEM: string(b)}}, nil
}

func (s *Service) put(r *broker.Request) (broker.Reply, error) {
	id := r.Params["certId"]
	req := r.Body.(*certs.ImportCertRequest)
	_, st := s.snapshot()
	if err := st.put(id, []byte(*req.PEM)); err != nil {
		return broker.Reply{}, broker.Internal(err)
	}
	return broker.Reply{Status: 201, Body: certs.CertResponse{PEM: *req.PEM}}, nil
}

func (s *Service) delete(r *broker.Request) (broker.Reply, error) {
	id := r.Params["certId"]
	_, st := s.snapshot()
	if err := st.delete(id); err != nil {
		return broker.Reply{}, broker.Internal(err)
	}
	return broker.Reply{}, nil
}

func (s *Service) create(r *broker.Request) (broker.Reply, error) {
	req := r.Body.(*certs.CreateCertRequest)
	id := *req.CertID
	csr, err := parseCSR(*req.CSR)
	if err != nil {
		return broker.Reply{}, broker.InvalidParameter("csr", err.Error())
	}
	parsed, st := s.snapshot()
	opts := parsed.Issuance.Certs[id]
	ctx := r.Context

	var out []byte
	if req.Issuer != nil {
		iss, err := s.explicitIssuer(ctx, st, req.Issuer)
		if err != nil {
			return broker.Reply{}, err
		}
		out, err = s.signWith(ctx, csr, opts, iss, nil)
		if err != nil {
			return broker.Reply{}, broker.Internal(err)
		}
	} else {
		out, err = s.issueConfigured(ctx, st, parsed, id, csr, opts)
		if err != nil {
			// Every failure of configured issuance is a 500 upstream (api-certs.md §4.1).
			return broker.Reply{}, broker.Internal(err)
		}
	}
	if err := st.put(id, out); err != nil {
		return broker.Reply{}, broker.Internal(err)
	}
	return broker.Reply{Status: 201, Body: certs.CertResponse{PEM: string(out)}}, nil
}

func (s *Service) explicitIssuer(ctx context.Context, st *store, ref *certs.Issuer) (*issuer, error) {
	if i := strings.IndexByte(*ref.PrivateKeyHandle, 0); i >= 0 {
		// Upstream turns the handle into a C string first; Rust's NulError is the cause.
		return nil, broker.InvalidParameter("issuer.privateKeyHandle", fmt.Sprintf("nul byte found in provided data at position: %d", i))
	}
	chain, err := st.get(*ref.CertID)
	if errors.Is(err, errNotFound) {
		return nil, broker.InvalidParameter("issuer.certId", "not found")
	}
	if err != nil {
		return nil, broker.Internal(err)
	}
	leaf, err := parseChain(chain)
	if errors.Is(err, errEmptyChain) {
		return nil, broker.InvalidParameter("issuer.certId", "invalid issuer")
	}
	if err != nil {
		return nil, broker.Internal(fmt.Errorf("parse issuer chain %q: %w", *ref.CertID, err))
	}
	signer, err := s.keyd.Signer(ctx, *ref.PrivateKeyHandle)
	if err != nil {
		var apiErr *keys.APIError
		if errors.As(err, &apiErr) && apiErr.Status == 400 {
			// Upstream answers a forged, unknown or unusable handle with 500 when the key
			// is loaded; it is the client's mistake, so we say which parameter and why
			// (docs/RATIONALE.md).
			return nil, broker.InvalidParameter("issuer.privateKeyHandle", lastCause(apiErr.Message))
		}
		return nil, broker.Internal(fmt.Errorf("load issuer key: %w", err))
	}
	signer.Context = ctx
	return &issuer{chainPEM: chain, leaf: leaf, signer: signer}, nil
}

func (s *Service) issueConfigured(ctx context.Context, st *store, parsed *Parsed, id string, csr *x509.CertificateRequest, opts IssuanceOptions) ([]byte, error) {
	if _, ok := parsed.Issuance.Certs[id]; !ok {
		return nil, fmt.Errorf("no [cert_issuance.%s] and no issuer", id)
	}
	switch opts.Method {
	case "self_signed":
		handle, err := s.keyd.LoadKeyPair(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("load key pair %q for self-signing: %w", id, err)
		}
		signer, err := s.keyd.Signer(ctx, handle)
		if err != nil {
			return nil, err
		}
		signer.Context = ctx
		return s.signWith(ctx, csr, opts, nil, signer)
	case "local_ca":
		ca := parsed.Issuance.LocalCA
		if ca == nil {
			return nil, errors.New("method local_ca without [cert_issuance.local_ca]")
		}
		chain, err := st.get(ca.Cert)
		if err != nil {
			return nil, fmt.Errorf("read local CA cert %q: %w", ca.Cert, err)
		}
		leaf, err := parseChain(chain)
		if err != nil {
			return nil, fmt.Errorf("parse local CA cert %q: %w", ca.Cert, err)
		}
		handle, err := s.keyd.LoadKeyPair(ctx, ca.PK)
		if err != nil {
			return nil, fmt.Errorf("load local CA key %q: %w", ca.PK, err)
		}
		signer, err := s.keyd.Signer(ctx, handle)
		if err != nil {
			return nil, err
		}
		signer.Context = ctx
		return s.signWith(ctx, csr, opts, &issuer{chainPEM: chain, leaf: leaf, signer: signer}, nil)
	case "est":
		return nil, errEST
	}
	return nil, fmt.Errorf("unknown issuance method %q", opts.Method)
}

// errEST stands until the EST flow lands: upstream answers 500 when no EST server can be
// reached, and so do we.
var errEST = errors.New("EST enrollment is not available yet")

func (s *Service) signWith(ctx context.Context, csr *x509.CertificateRequest, opts IssuanceOptions, iss *issuer, self *keys.Signer) ([]byte, error) {
	subject, err := configuredSubject(opts)
	if err != nil {
		return nil, err
	}
	if iss != nil {
		cert, err := sign(ctx, csr, subject, opts.ExpiryDays, iss, nil)
		if err != nil {
			return nil, err
		}
		return append(cert, iss.chainPEM...), nil
	}
	return sign(ctx, csr, subject, opts.ExpiryDays, nil, self)
}

// lastCause is the innermost message of an upstream error chain.
func lastCause(msg string) string {
	if i := strings.LastIndex(msg, "\ncaused by: "); i >= 0 {
		return msg[i+len("\ncaused by: "):]
	}
	return msg
}
