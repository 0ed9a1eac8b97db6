// Package keyd is the keys service (api-keys.md): keys and key pairs by ID, handles,
// and every signing and encryption mechanism, over an hsm.Keystore.
package keyd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"sync"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/internal/atomicfile"
	"github.com/iotbroker/aziot/policy"
	"github.com/iotbroker/aziot/sdk/keys"
)

// Versions are keyd's api-versions, oldest first.
var Versions = []string{"2020-09-01", "2021-05-01"}

// Service is keyd.
type Service struct {
	HTTP *broker.Service

	keys    *hsm.Keystore
	handles *handles
	log     *slog.Logger
	engine  *policy.Engine

	mu sync.RWMutex
	// principals is the policy input's caller.principal per uid, built on (re)load so a
	// request does not build it.
	principals map[uint32]map[string]any
}

// Options are what the process gives keyd beside its config.
type Options struct {
	Log *slog.Logger
	// PKCS11 is the PKCS#11 backend, nil when no library is configured.
	PKCS11 hsm.Backend
	// Decider overrides the policy engine (benchmarks compare against allow-all).
	Decider policy.Decider
}

// New builds keyd from its config.
func New(cfg *Config, opts Options) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if home := cfg.KeystoreConfig().HomedirPath; home != "" {
		// Temp files of writes a crash interrupted are never keys: drop them.
		atomicfile.CleanTemps(filepath.Join(home, "keys"))
	}
	ks, err := hsm.NewKeystore(cfg.KeystoreConfig(), fileBackend(), opts.PKCS11)
	if err != nil {
		return nil, err
	}
	s := &Service{keys: ks, handles: &handles{keys: ks}, log: opts.Log}
	patterns := principalPatterns(cfg.Principals)
	s.setPrincipals(patterns)
	decider := opts.Decider
	if decider == nil {
		s.engine, err = policy.NewEngine(nil, policy.PrincipalData("keyd", patterns))
		if err != nil {
			return nil, err
		}
		decider = s.engine
	}
	s.HTTP = &broker.Service{
		Name:      "keyd",
		Versions:  Versions,
		Routes:    s.routes(),
		Decider:   decider,
		Principal: s.principal,
		Denied:    denied,
		Log:       opts.Log,
		BodyLimit: cfg.Broker.MaxBodyBytes,
	}
	s.HTTP.SetMaxRequests(cfg.MaxRequests)
	return s, nil
}

// Engine returns the policy engine (nil when a Decider was given).
func (s *Service) Engine() *policy.Engine { return s.engine }

// Reload applies a changed config: keyd takes only the principals live (config.md §1.3).
func (s *Service) Reload(cfg *Config) error {
	patterns := principalPatterns(cfg.Principals)
	if s.engine != nil {
		if err := s.engine.SetData(policy.PrincipalData("keyd", patterns)); err != nil {
			return err
		}
	}
	s.setPrincipals(patterns)
	return nil
}

func (s *Service) setPrincipals(patterns map[uint32][]string) {
	principals := make(map[uint32]map[string]any, len(patterns))
	for uid, p := range patterns {
		principals[uid] = map[string]any{"keys": p}
	}
	s.mu.Lock()
	s.principals = principals
	s.mu.Unlock()
}

// principal is the caller.principal of uid; shared between requests, never modified.
func (s *Service) principal(uid uint32) map[string]any {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.principals[uid]
}

// routes declares every endpoint with its policy operation and what it acts on; the
// broker core makes the decision between Resolve and Serve (architecture.md §3).
func (s *Service) routes() []broker.Route {
	return []broker.Route{
		{Pattern: "/key",
			Post: &broker.Handler{NewBody: func() any { return new(keys.CreateKeyRequest) },
				Operation: "keyd.key.create", Resolve: s.resolveCreateKey, Serve: s.createKey},
			Delete: &broker.Handler{NewBody: func() any { return new(keys.HandleRequest) },
				Operation: "keyd.key.delete", Resolve: s.resolveHandleBody(nil), Serve: s.deleteKey(KindKey)}},
		{Pattern: "/keypair",
			Post: &broker.Handler{NewBody: func() any { return new(keys.CreateKeyPairRequest) },
				Operation: "keyd.keypair.create", Resolve: s.resolveCreateKeyPair, Serve: s.createKeyPair},
			Delete: &broker.Handler{NewBody: func() any { return new(keys.HandleRequest) },
				Operation: "keyd.keypair.delete", Resolve: s.resolveHandleBody(nil), Serve: s.deleteKey(KindKeyPair)}},
		{Pattern: "/derivedkey",
			Post: &broker.Handler{NewBody: func() any { return new(keys.DeriveKeyRequest) },
				Operation: "keyd.derivedkey.create", Resolve: s.resolveDerive, Serve: s.deriveKey}},
		{Pattern: "/decrypt",
			Post: &broker.Handler{NewBody: func() any { return new(keys.DecryptRequest) },
				Operation: "keyd.decrypt", Resolve: s.resolveDecrypt, Serve: s.decrypt}},
		{Pattern: "/encrypt",
			Post: &broker.Handler{NewBody: func() any { return new(keys.EncryptRequest) },
				Operation: "keyd.encrypt", Resolve: s.resolveEncrypt, Serve: s.encrypt}},
		{Pattern: "/derivedkey/export",
			Post: &broker.Handler{NewBody: func() any { return new(keys.HandleRequest) },
				Operation: "keyd.derivedkey.export", Resolve: s.resolveHandleBody(nil), Serve: s.exportDerived}},
		{Pattern: "/parameters/{parameterName}",
			Post: &broker.Handler{NewBody: func() any { return new(keys.HandleRequest) },
				Operation: "keyd.parameters.get", Resolve: s.resolveHandleBody(func(r *broker.Request) map[string]any {
					return map[string]any{"parameter": r.Params["parameterName"]}
				}), Serve: s.parameter}},
		{Pattern: "/key/{keyId}",
			Get: &broker.Handler{Operation: "keyd.key.load", Resolve: resolvePathID, Serve: s.loadKey(KindKey)},
			Post: &broker.Handler{NewBody: func() any { return new(keys.MoveKeyPairRequest) },
				Operation: "keyd.keypair.move", Resolve: resolveMove(KindKey), Serve: s.move}},
		{Pattern: "/keypair/{keyId}",
			Get: &broker.Handler{Operation: "keyd.keypair.load", Resolve: resolvePathID, Serve: s.loadKey(KindKeyPair)},
			Post: &broker.Handler{NewBody: func() any { return new(keys.MoveKeyPairRequest) },
				Operation: "keyd.keypair.move", Resolve: resolveMove(KindKeyPair), Serve: s.move}},
		{Pattern: "/sign",
			Post: &broker.Handler{NewBody: func() any { return new(signRequest) },
				Operation: "keyd.sign", Resolve: s.resolveSign, Serve: s.sign}},
	}
}

// --- errors in upstream's words ---

func missingBody() error { return broker.BadRequest("missing request body") }

func notAuthorized(uid uint32, id string) *broker.Error {
	return broker.Unauthorized(fmt.Sprintf("user %d is not authorized to access the key %s", uid, id))
}

// denied is keyd's refusal of a denied target: upstream's 401 naming the key.
func denied(r *broker.Request, t broker.Target) *broker.Error {
	id, _ := t.Resource["key_id"].(string)
	return notAuthorized(r.Caller.UID, id)
}

func invalidHandle(detail string) error { return broker.InvalidParameter("handle", detail) }

func wrongMechanism() error {
	return broker.InvalidParameter("mechanism", "mechanism cannot be used with this key type")
}

// storeError maps a key-store failure: the client's mistakes are 400, the rest 500.
func storeError(err error) error {
	switch {
	case errors.Is(err, hsm.ErrNotFound), errors.Is(err, hsm.ErrInvalid), errors.Is(err, hsm.ErrAuthentication):
		return broker.InvalidValue(err)
	}
	return broker.Internal(err)
}

// checkID refuses what upstream refuses (NUL) and the handle-validation key, which must
// never be reachable by ID (docs/RATIONALE.md).
func checkID(r *broker.Request, id string) error {
	if strings.ContainsRune(id, 0) {
		return broker.InvalidParameter("id", "")
	}
	if id == HandleValidationKeyID {
		return notAuthorized(r.Caller.UID, id)
	}
	return nil
}

// idTarget is the decision on an operation naming key id.
func idTarget(id string, request map[string]any) []broker.Target {
	return []broker.Target{{Resource: map[string]any{"key_id": id}, Request: request}}
}

// resolveHandle validates a handle and names the key it stands for; Serve finds the
// handle in r.Resolved.
func (s *Service) resolveHandle(r *broker.Request, raw string, request map[string]any) ([]broker.Target, error) {
	h, err := s.handles.validate(raw)
	switch {
	case errors.Is(err, errInvalidHandle):
		return nil, invalidHandle("invalid handle")
	case errors.Is(err, errNested):
		return nil, invalidHandle(errNested.Error())
	case err != nil:
		return nil, broker.Internal(err)
	}
	r.Resolved = h
	return r.One(broker.Target{Resource: map[string]any{"key_id": h.ID, "key_kind": h.Kind.String()}, Request: request}), nil
}

// resolveHandleBody is Resolve for routes whose body is just {"keyHandle"}.
func (s *Service) resolveHandleBody(request func(*broker.Request) map[string]any) func(*broker.Request) ([]broker.Target, error) {
	return func(r *broker.Request) ([]broker.Target, error) {
		req, _ := r.Body.(*keys.HandleRequest)
		if req == nil {
			return nil, missingBody()
		}
		var extra map[string]any
		if request != nil {
			extra = request(r)
		}
		return s.resolveHandle(r, *req.KeyHandle, extra)
	}
}

func resolvePathID(r *broker.Request) ([]broker.Target, error) {
	return idTarget(r.Params["keyId"], nil), nil
}

func (s *Service) issue(kind KeyKind, id string) (broker.Reply, error) {
	h, err := s.handles.issue(kind, id, "", nil)
	if err != nil {
		return broker.Reply{}, broker.Internal(err)
	}
	return broker.Reply{Body: keys.KeyHandleResponse{KeyHandle: h}}, nil
}

// --- handlers: Resolve runs before the decision, Serve after it ---

func (s *Service) resolveCreateKey(r *broker.Request) ([]broker.Target, error) {
	req, _ := r.Body.(*keys.CreateKeyRequest)
	if req == nil {
		return nil, missingBody()
	}
	usage, err := hsm.ParseUsage(*req.Usage)
	if err != nil {
		return nil, broker.Unprocessable(fmt.Sprintf("invalid value: string %q, expected a comma-separated list of derive, encrypt, sign", *req.Usage))
	}
	r.Resolved = usage
	t := idTarget(*req.KeyID, nil)
	if req.KeyBytes != nil {
		t[0].Operation = "keyd.key.import"
	}
	return t, nil
}

func (s *Service) createKey(r *broker.Request) (broker.Reply, error) {
	req := r.Body.(*keys.CreateKeyRequest)
	usage := r.Resolved.(hsm.Usage)
	if err := checkID(r, *req.KeyID); err != nil {
		return broker.Reply{}, err
	}
	var err error
	if req.KeyBytes != nil {
		err = s.keys.ImportKey(*req.KeyID, req.KeyBytes, usage)
	} else {
		err = s.keys.CreateKey(*req.KeyID, usage)
	}
	if err != nil {
		return broker.Reply{}, storeError(err)
	}
	return s.issue(KindKey, *req.KeyID)
}

func (s *Service) resolveCreateKeyPair(r *broker.Request) ([]broker.Target, error) {
	req, _ := r.Body.(*keys.CreateKeyPairRequest)
	if req == nil {
		return nil, missingBody()
	}
	pref := "*"
	if req.PreferredAlgorithms != nil {
		pref = *req.PreferredAlgorithms
	}
	r.Resolved = pref
	return idTarget(*req.KeyID, map[string]any{"preferred_algorithms": pref}), nil
}

func (s *Service) createKeyPair(r *broker.Request) (broker.Reply, error) {
	req := r.Body.(*keys.CreateKeyPairRequest)
	if err := checkID(r, *req.KeyID); err != nil {
		return broker.Reply{}, err
	}
	algs := hsm.ParsePreferredAlgorithms(r.Resolved.(string))
	if err := s.keys.CreateKeyPair(*req.KeyID, algs); err != nil {
		return broker.Reply{}, storeError(err)
	}
	return s.issue(KindKeyPair, *req.KeyID)
}

func (s *Service) loadKey(kind KeyKind) func(*broker.Request) (broker.Reply, error) {
	return func(r *broker.Request) (broker.Reply, error) {
		id := r.Params["keyId"]
		if err := checkID(r, id); err != nil {
			return broker.Reply{}, err
		}
		var err error
		if kind == KindKey {
			err = s.keys.LoadKey(id)
		} else {
			err = s.keys.LoadKeyPair(id)
		}
		if err != nil {
			return broker.Reply{}, storeError(err)
		}
		return s.issue(kind, id)
	}
}

func (s *Service) deleteKey(kind KeyKind) func(*broker.Request) (broker.Reply, error) {
	return func(r *broker.Request) (broker.Reply, error) {
		h := r.Resolved.(*Handle)
		if h.Kind != kind {
			if kind == KindKey {
				return broker.Reply{}, invalidHandle("handle is not for a key")
			}
			return broker.Reply{}, invalidHandle("handle is not for a key pair")
		}
		if h.ID == HandleValidationKeyID {
			return broker.Reply{}, notAuthorized(r.Caller.UID, h.ID)
		}
		var err error
		if kind == KindKey {
			err = s.keys.DeleteKey(h.ID)
		} else {
			err = s.keys.DeleteKeyPair(h.ID)
		}
		if err != nil {
			return broker.Reply{}, storeError(err)
		}
		return broker.Reply{}, nil
	}
}

// resolveMove keeps upstream's order (api-keys.md §5.6): identical IDs, then the key
// type, then authorization of the source and then of the destination.
func resolveMove(kind KeyKind) func(*broker.Request) ([]broker.Target, error) {
	return func(r *broker.Request) ([]broker.Target, error) {
		req, _ := r.Body.(*keys.MoveKeyPairRequest)
		if req == nil {
			return nil, missingBody()
		}
		to, from := r.Params["keyId"], *req.From
		if from == to {
			return nil, broker.BadRequest("source and destination for move are identical")
		}
		if kind == KindKey {
			return nil, broker.BadRequest(`invalid type "key"`)
		}
		extra := map[string]any{"from": from, "to": to}
		return []broker.Target{
			{Resource: map[string]any{"key_id": from}, Request: extra},
			{Resource: map[string]any{"key_id": to}, Request: extra},
		}, nil
	}
}

func (s *Service) move(r *broker.Request) (broker.Reply, error) {
	to, from := r.Params["keyId"], *r.Body.(*keys.MoveKeyPairRequest).From
	for _, id := range []string{from, to} {
		if err := checkID(r, id); err != nil {
			return broker.Reply{}, err
		}
	}
	if err := s.keys.MoveKeyPair(from, to); err != nil {
		return broker.Reply{}, storeError(err)
	}
	return broker.Reply{}, nil
}

var p256OID = []byte{0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07}

func (s *Service) parameter(r *broker.Request) (broker.Reply, error) {
	name := r.Params["parameterName"]
	h := r.Resolved.(*Handle)
	pub, err := s.keys.PublicKey(h.ID)
	if err != nil {
		return broker.Reply{}, storeError(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	var value string
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch name {
		case "algorithm":
			value = "ECDSA"
		case "ec-curve-oid":
			if k.Curve != elliptic.P256() {
				return broker.Reply{}, broker.InvalidValue(errors.New("curve is not P-256"))
			}
			value = b64(p256OID)
		case "ec-point":
			raw, err := k.Bytes()
			if err != nil {
				return broker.Reply{}, broker.Internal(err)
			}
			x, y := new(big.Int).SetBytes(raw[1:1+(len(raw)-1)/2]), new(big.Int).SetBytes(raw[1+(len(raw)-1)/2:])
			value = b64(elliptic.MarshalCompressed(k.Curve, x, y))
		default:
			return broker.Reply{}, broker.InvalidValue(fmt.Errorf("parameter %q of an EC key", name))
		}
	case *rsa.PublicKey:
		switch name {
		case "algorithm":
			value = "RSA"
		case "rsa-modulus":
			value = b64(k.N.Bytes())
		case "rsa-exponent":
			value = b64(big.NewInt(int64(k.E)).Bytes())
		default:
			return broker.Reply{}, broker.InvalidValue(fmt.Errorf("parameter %q of an RSA key", name))
		}
	default:
		return broker.Reply{}, broker.InvalidValue(fmt.Errorf("unsupported key type %T", pub))
	}
	return broker.Reply{Body: keys.ParameterResponse{Value: value}}, nil
}

func (s *Service) resolveDerive(r *broker.Request) ([]broker.Target, error) {
	req, _ := r.Body.(*keys.DeriveKeyRequest)
	if req == nil {
		return nil, missingBody()
	}
	return s.resolveHandle(r, *req.BaseKeyHandle, nil)
}

func (s *Service) deriveKey(r *broker.Request) (broker.Reply, error) {
	req := r.Body.(*keys.DeriveKeyRequest)
	h := r.Resolved.(*Handle)
	switch h.Kind {
	case KindDerived:
		return broker.Reply{}, invalidHandle(errNested.Error())
	case KindKeyPair:
		// Upstream would key an HMAC with the PEM private key and let it be exported.
		return broker.Reply{}, invalidHandle("keys cannot be derived from a key pair")
	}
	out, err := s.handles.issue(KindDerived, "", *req.BaseKeyHandle, req.DerivationData)
	if err != nil {
		return broker.Reply{}, broker.Internal(err)
	}
	return broker.Reply{Body: keys.KeyHandleResponse{KeyHandle: out}}, nil
}

// derivedKey computes HMAC-SHA256(base, data) for a derived handle.
func (s *Service) derivedKey(h *Handle) ([]byte, error) {
	if h.Base.Kind != KindKey {
		return nil, invalidHandle("keys cannot be derived from a key pair")
	}
	d, err := s.keys.HMAC(h.ID, h.Data)
	if err != nil {
		return nil, storeError(err)
	}
	return d, nil
}

func (s *Service) exportDerived(r *broker.Request) (broker.Reply, error) {
	h := r.Resolved.(*Handle)
	if h.Kind != KindDerived {
		return broker.Reply{}, invalidHandle("handle is not for a derived key")
	}
	d, err := s.derivedKey(h)
	if err != nil {
		return broker.Reply{}, err
	}
	return broker.Reply{Body: keys.ExportResponse{Key: d}}, nil
}

func unknownAlgorithm(alg string, expected ...string) error {
	return broker.Unprocessable(fmt.Sprintf("unknown variant `%s`, expected one of `%s`", alg, strings.Join(expected, "`, `")))
}

func missingField(name string) error {
	return broker.Unprocessable(fmt.Sprintf("missing field `%s`", name))
}

// algorithmRequest is input.request of each known mechanism, built once: the decision
// reads it and nothing writes it.
var algorithmRequest = func() map[string]map[string]any {
	m := map[string]map[string]any{}
	for _, alg := range []string{keys.AlgECDSA, keys.AlgHMACSHA256, keys.AlgAEAD, keys.AlgRSAPKCS1, keys.AlgRSANoPadding} {
		m[alg] = map[string]any{"algorithm": alg}
	}
	return m
}()

func (s *Service) resolveSign(r *broker.Request) ([]broker.Target, error) {
	sr, _ := r.Body.(*signRequest)
	req := (*keys.SignRequest)(sr)
	if req == nil {
		return nil, missingBody()
	}
	alg := *req.Algorithm
	switch alg {
	case keys.AlgECDSA:
		if req.Parameters.Digest == nil {
			return nil, missingField("digest")
		}
	case keys.AlgHMACSHA256:
		if req.Parameters.Message == nil {
			return nil, missingField("message")
		}
	default:
		return nil, unknownAlgorithm(alg, keys.AlgECDSA, keys.AlgHMACSHA256)
	}
	return s.resolveHandle(r, *req.KeyHandle, algorithmRequest[alg])
}

func (s *Service) sign(r *broker.Request) (broker.Reply, error) {
	req := (*keys.SignRequest)(r.Body.(*signRequest))
	alg := *req.Algorithm
	h := r.Resolved.(*Handle)
	var sig []byte
	var err error
	switch {
	case alg == keys.AlgECDSA && h.Kind == KindKeyPair:
		sig, err = s.keys.SignECDSA(h.ID, req.Parameters.Digest)
	case alg == keys.AlgHMACSHA256 && h.Kind == KindKey:
		sig, err = s.keys.HMAC(h.ID, req.Parameters.Message)
	case alg == keys.AlgHMACSHA256 && h.Kind == KindDerived:
		var d []byte
		if d, err = s.derivedKey(h); err != nil {
			return broker.Reply{}, err
		}
		sig = hsm.HMACSHA256(d, req.Parameters.Message)
	default:
		return broker.Reply{}, wrongMechanism()
	}
	if err != nil {
		return broker.Reply{}, storeError(err)
	}
	return broker.Reply{Body: signResponse{Signature: sig}}, nil
}

// resolveCipher checks what /encrypt and /decrypt share before the decision: the
// algorithm is known, AEAD has its parameters, and the handle is valid.
func (s *Service) resolveCipher(r *broker.Request, handle, alg *string, params *keys.AEADParameters) ([]broker.Target, error) {
	switch *alg {
	case keys.AlgAEAD:
		if params == nil {
			return nil, missingField("parameters")
		}
	case keys.AlgRSAPKCS1, keys.AlgRSANoPadding:
	default:
		return nil, unknownAlgorithm(*alg, keys.AlgAEAD, keys.AlgRSAPKCS1, keys.AlgRSANoPadding)
	}
	return s.resolveHandle(r, *handle, algorithmRequest[*alg])
}

func (s *Service) resolveEncrypt(r *broker.Request) ([]broker.Target, error) {
	req, _ := r.Body.(*keys.EncryptRequest)
	if req == nil {
		return nil, missingBody()
	}
	return s.resolveCipher(r, req.KeyHandle, req.Algorithm, req.Parameters)
}

func (s *Service) resolveDecrypt(r *broker.Request) ([]broker.Target, error) {
	req, _ := r.Body.(*keys.DecryptRequest)
	if req == nil {
		return nil, missingBody()
	}
	return s.resolveCipher(r, req.KeyHandle, req.Algorithm, req.Parameters)
}

func (s *Service) encrypt(r *broker.Request) (broker.Reply, error) {
	req := r.Body.(*keys.EncryptRequest)
	h := r.Resolved.(*Handle)
	var out []byte
	var err error
	switch alg := *req.Algorithm; {
	case alg == keys.AlgAEAD && h.Kind == KindKey:
		out, err = s.keys.AEADEncrypt(h.ID, req.Parameters.IV, req.Parameters.AAD, req.Plaintext)
	case alg == keys.AlgAEAD && h.Kind == KindDerived:
		var d []byte
		if d, err = s.derivedKey(h); err != nil {
			return broker.Reply{}, err
		}
		out, err = hsm.SealV2(d, req.Parameters.IV, req.Parameters.AAD, req.Plaintext)
	case alg == keys.AlgRSAPKCS1 && h.Kind == KindKeyPair:
		out, err = s.keys.RSAPrivate(h.ID, hsm.RSAPKCS1, req.Plaintext)
	case alg == keys.AlgRSANoPadding && h.Kind == KindKeyPair:
		out, err = s.keys.RSAPrivate(h.ID, hsm.RSANoPadding, req.Plaintext)
	default:
		return broker.Reply{}, wrongMechanism()
	}
	if err != nil {
		return broker.Reply{}, storeError(err)
	}
	return broker.Reply{Body: keys.EncryptResponse{Ciphertext: out}}, nil
}

func (s *Service) decrypt(r *broker.Request) (broker.Reply, error) {
	req := r.Body.(*keys.DecryptRequest)
	h := r.Resolved.(*Handle)
	var out []byte
	var err error
	switch alg := *req.Algorithm; {
	case alg == keys.AlgAEAD && h.Kind == KindKey:
		out, err = s.keys.AEADDecrypt(h.ID, req.Parameters.IV, req.Parameters.AAD, req.Ciphertext)
	case alg == keys.AlgAEAD && h.Kind == KindDerived:
		var d []byte
		if d, err = s.derivedKey(h); err != nil {
			return broker.Reply{}, err
		}
		out, err = hsm.OpenVersioned(d, req.Parameters.IV, req.Parameters.AAD, req.Ciphertext, true)
	default:
		return broker.Reply{}, wrongMechanism()
	}
	if err != nil {
		return broker.Reply{}, storeError(err)
	}
	return broker.Reply{Body: keys.DecryptResponse{Plaintext: out}}, nil
}
