package keyd

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/iotbroker/aziot/hsm"
)

// HandleValidationKeyID is the symmetric key whose HMAC makes handles unforgeable.
const HandleValidationKeyID = "handle-validation-key"

// KeyKind is what a handle names.
type KeyKind int

const (
	KindKey KeyKind = iota
	KindKeyPair
	KindDerived
)

func (k KeyKind) String() string {
	switch k {
	case KindKey:
		return "key"
	case KindKeyPair:
		return "keypair"
	default:
		return "derived"
	}
}

// Handle is a validated key handle.
type Handle struct {
	Kind KeyKind
	// ID is the key ID; for a derived handle, the base key's ID.
	ID string
	// Base is the base handle of a derived handle (a Key or KeyPair).
	Base *Handle
	// Data is the derivation data of a derived handle.
	Data []byte
}

// srJSON mirrors upstream's serialization: {"key_id":{"<Kind>":...},"nonce":"..."}.
type srJSON struct {
	KeyID map[string]json.RawMessage `json:"key_id"`
	Nonce string                     `json:"nonce"`
}

var errInvalidHandle = errors.New("invalid handle")

// errNested is upstream's message for a derived key over a derived key.
var errNested = errors.New("nested derived keys are not supported, import the outer derived key first")

// handles issues and validates handles with the handle-validation key.
type handles struct {
	keys *hsm.Keystore
	// created is set once the validation key is known to exist, so that every request
	// does not pay for a create-if-absent (a deleted key is recreated on the next failure).
	created atomic.Bool
}

func (h *handles) sign(sr []byte) ([]byte, error) {
	if h.created.Load() {
		if sig, err := h.keys.HMAC(HandleValidationKeyID, sr); err == nil {
			return sig, nil
		}
		h.created.Store(false)
	}
	// Created on first use, as upstream does (also while rejecting a forged handle).
	if err := h.keys.CreateKey(HandleValidationKeyID, hsm.UsageSign); err != nil {
		return nil, fmt.Errorf("create handle validation key: %w", err)
	}
	sig, err := h.keys.HMAC(HandleValidationKeyID, sr)
	if err == nil {
		h.created.Store(true)
	}
	return sig, err
}

func marshalCompact(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// issue returns a new handle string for kind and id (or a derived one over base).
func (h *handles) issue(kind KeyKind, id string, base string, data []byte) (string, error) {
	var keyID map[string]any
	switch kind {
	case KindKey:
		keyID = map[string]any{"Key": id}
	case KindKeyPair:
		keyID = map[string]any{"KeyPair": id}
	case KindDerived:
		arr := make([]int, len(data))
		for i, b := range data {
			arr[i] = int(b)
		}
		keyID = map[string]any{"Derived": []any{base, arr}}
	}
	nonce := make([]byte, 64)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	sr := marshalCompact(struct {
		KeyID map[string]any `json:"key_id"`
		Nonce string         `json:"nonce"`
	}{keyID, base64.StdEncoding.EncodeToString(nonce)})
	sig, err := h.sign(sr)
	if err != nil {
		return "", err
	}
	return "sr=" + base64.StdEncoding.EncodeToString(sr) + "&sig=" + base64.StdEncoding.EncodeToString(sig), nil
}

// decodeBufs recycles validate's decoding buffers: what a handle names is copied out of
// them, so they are free once validate returns.
var decodeBufs = sync.Pool{New: func() any { return new([2][]byte) }}

// validate checks a handle string; errors are errInvalidHandle, errNested, or an
// internal error from the key store.
func (h *handles) validate(s string) (*Handle, error) {
	bp := decodeBufs.Get().(*[2][]byte)
	defer decodeBufs.Put(bp)
	sr, sig := bp[0][:0], bp[1][:0]
	defer func() { bp[0], bp[1] = sr[:0], sig[:0] }()
	var haveSR, haveSig bool
	for rest := s; ; {
		part, more, found := strings.Cut(rest, "&")
		var err error
		switch {
		case strings.HasPrefix(part, "sr="):
			sr, err = base64.StdEncoding.AppendDecode(sr[:0], []byte(part[3:]))
			haveSR = true
		case strings.HasPrefix(part, "sig="):
			sig, err = base64.StdEncoding.AppendDecode(sig[:0], []byte(part[4:]))
			haveSig = true
		}
		if err != nil {
			return nil, errInvalidHandle
		}
		if !found {
			break
		}
		rest = more
	}
	if !haveSR || !haveSig {
		return nil, errInvalidHandle
	}
	want, err := h.sign(sr)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal(want, sig) {
		return nil, errInvalidHandle
	}
	if kind, id, ok := plainSR(sr); ok {
		return &Handle{Kind: kind, ID: id}, nil
	}
	var parsed srJSON
	if err := json.Unmarshal(sr, &parsed); err != nil || len(parsed.KeyID) != 1 {
		return nil, errInvalidHandle
	}
	for kind, raw := range parsed.KeyID {
		switch kind {
		case "Key", "KeyPair":
			var id string
			if err := json.Unmarshal(raw, &id); err != nil {
				return nil, errInvalidHandle
			}
			if kind == "Key" {
				return &Handle{Kind: KindKey, ID: id}, nil
			}
			return &Handle{Kind: KindKeyPair, ID: id}, nil
		case "Derived":
			var pair []json.RawMessage
			if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
				return nil, errInvalidHandle
			}
			var baseStr string
			var data []byte
			if err := json.Unmarshal(pair[0], &baseStr); err != nil {
				return nil, errInvalidHandle
			}
			// The derivation data is a JSON array of byte values, not base64.
			var ints []int
			if err := json.Unmarshal(pair[1], &ints); err != nil {
				return nil, errInvalidHandle
			}
			data = make([]byte, len(ints))
			for i, v := range ints {
				if v < 0 || v > 255 {
					return nil, errInvalidHandle
				}
				data[i] = byte(v)
			}
			base, err := h.validate(baseStr)
			if err != nil {
				return nil, err
			}
			if base.Kind == KindDerived {
				return nil, errNested
			}
			return &Handle{Kind: KindDerived, ID: base.ID, Base: base, Data: data}, nil
		}
	}
	return nil, errInvalidHandle
}

// plainSR reads the common signed record, a Key or KeyPair handle whose ID needs no JSON
// unescaping, without a JSON decoder; anything else (escapes, control characters,
// invalid UTF-8, a derived handle, another layout) is left to the decoder. It runs only
// on a record whose signature was verified, so it can trust the layout keyd (and
// upstream's serde) writes: {"key_id":{"<Kind>":"<id>"},"nonce":"<base64>"}.
func plainSR(sr []byte) (KeyKind, string, bool) {
	rest, ok := bytes.CutPrefix(sr, []byte(`{"key_id":{"`))
	if !ok {
		return 0, "", false
	}
	var kind KeyKind
	switch {
	case bytes.HasPrefix(rest, []byte(`Key":"`)):
		kind, rest = KindKey, rest[len(`Key":"`):]
	case bytes.HasPrefix(rest, []byte(`KeyPair":"`)):
		kind, rest = KindKeyPair, rest[len(`KeyPair":"`):]
	default:
		return 0, "", false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return 0, "", false
	}
	id, tail := rest[:end], rest[end:]
	for _, c := range id {
		if c < 0x20 || c == '\\' {
			return 0, "", false
		}
	}
	if !utf8.Valid(id) {
		return 0, "", false
	}
	nonce, ok := bytes.CutPrefix(tail, []byte(`"},"nonce":"`))
	if !ok || !bytes.HasSuffix(nonce, []byte(`"}`)) {
		return 0, "", false
	}
	for _, c := range nonce[:len(nonce)-2] {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=') {
			return 0, "", false
		}
	}
	return kind, string(id), true
}
