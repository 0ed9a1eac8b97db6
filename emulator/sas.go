package emulator

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// SASToken is a parsed "SharedAccessSignature ..." value. The raw fields keep the exact
// text the client sent, because the signature covers the undecoded `sr` (cloud-dps.md §3,
// cloud-hub.md §4.1): every client encodes `sr` differently and all forms must verify.
type SASToken struct {
	RawSR  string // sr exactly as sent
	SR     string // sr percent-decoded once
	RawSig string // sig exactly as sent
	Sig    []byte // decoded signature bytes
	RawSE  string // se exactly as sent
	Expiry int64  // se as Unix seconds
	SKN    string // key name; empty when absent
	HasSKN bool
}

const sasPrefix = "SharedAccessSignature "

// ParseSAS parses an Authorization header value. Parameter order is free; sr, sig and se
// are required; duplicate or unknown parameters are rejected (an emulator choice, the real
// service's handling is unverified).
func ParseSAS(header string) (*SASToken, error) {
	if !strings.HasPrefix(header, sasPrefix) {
		return nil, errors.New("sas: missing SharedAccessSignature prefix")
	}
	t := &SASToken{}
	seen := map[string]bool{}
	for _, part := range strings.Split(header[len(sasPrefix):], "&") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("sas: parameter %q has no '='", part)
		}
		if seen[k] {
			return nil, fmt.Errorf("sas: duplicate parameter %q", k)
		}
		seen[k] = true
		switch k {
		case "sr":
			t.RawSR = v
		case "sig":
			t.RawSig = v
		case "se":
			t.RawSE = v
		case "skn":
			t.SKN, t.HasSKN = v, true
		default:
			return nil, fmt.Errorf("sas: unknown parameter %q", k)
		}
	}
	for _, k := range []string{"sr", "sig", "se"} {
		if !seen[k] {
			return nil, fmt.Errorf("sas: missing parameter %q", k)
		}
	}
	var err error
	// PathUnescape, not QueryUnescape: a literal '+' in sig or sr must stay a '+'.
	if t.SR, err = url.PathUnescape(t.RawSR); err != nil {
		return nil, fmt.Errorf("sas: decoding sr: %w", err)
	}
	sig, err := url.PathUnescape(t.RawSig)
	if err != nil {
		return nil, fmt.Errorf("sas: decoding sig: %w", err)
	}
	if t.Sig, err = base64.StdEncoding.DecodeString(sig); err != nil {
		return nil, fmt.Errorf("sas: sig is not base64: %w", err)
	}
	if t.RawSE == "" || strings.TrimLeft(t.RawSE, "0123456789") != "" {
		return nil, fmt.Errorf("sas: se %q is not a decimal integer", t.RawSE)
	}
	if t.Expiry, err = strconv.ParseInt(t.RawSE, 10, 64); err != nil {
		return nil, fmt.Errorf("sas: se out of range: %w", err)
	}
	if t.SKN != "" {
		if t.SKN, err = url.PathUnescape(t.SKN); err != nil {
			return nil, fmt.Errorf("sas: decoding skn: %w", err)
		}
	}
	return t, nil
}

// SignSAS computes base64(HMAC-SHA256(key, sr + "\n" + se)) over the raw sr text.
func SignSAS(key []byte, rawSR, rawSE string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(rawSR + "\n" + rawSE))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// VerifyKey reports whether the token was signed with key (constant-time compare).
func (t *SASToken) VerifyKey(key []byte) bool {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(t.RawSR + "\n" + t.RawSE))
	return hmac.Equal(m.Sum(nil), t.Sig)
}

// VerifyAnyKey tries each base64 key (primary, secondary, ...); empty or undecodable keys
// never match.
func (t *SASToken) VerifyAnyKey(b64Keys ...string) bool {
	for _, k := range b64Keys {
		if k == "" {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			continue
		}
		if t.VerifyKey(raw) {
			return true
		}
	}
	return false
}

// Expired reports whether se <= now (no skew: the contracts say reject when se <= now).
func (t *SASToken) Expired(now time.Time) bool {
	return t.Expiry <= now.Unix()
}

// DeriveGroupKey returns base64(HMAC-SHA256(base64decode(groupKey), registrationId)),
// the per-device key of a symmetric enrollment group (cloud-dps.md §5).
func DeriveGroupKey(groupKey, registrationID string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(groupKey)
	if err != nil {
		return "", fmt.Errorf("group key is not base64: %w", err)
	}
	m := hmac.New(sha256.New, raw)
	m.Write([]byte(registrationID))
	return base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}

// BuildSAS builds a token in the given parameter order, e.g. "sr,sig,se,skn". It is a test
// and tool helper; rawSR is used verbatim and sig is percent-encoded.
func BuildSAS(key []byte, rawSR string, se int64, skn string) string {
	rawSE := strconv.FormatInt(se, 10)
	sig := url.QueryEscape(SignSAS(key, rawSR, rawSE))
	s := sasPrefix + "sr=" + rawSR + "&sig=" + sig + "&se=" + rawSE
	if skn != "" {
		s += "&skn=" + skn
	}
	return s
}
