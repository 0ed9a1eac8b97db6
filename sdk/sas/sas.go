// Package sas builds Shared Access Signature tokens for DPS and IoT Hub the way the
// upstream identity service does (flows.md §2.1, cloud-hub.md §4). The HMAC is computed by
// a caller-supplied function, so the key can stay in keyd (sdk/keys SignHMAC) or a TPM.
package sas

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Lifetime is how long upstream's tokens live: a fresh one is minted per Hub request.
const Lifetime = 30 * time.Second

// SignFunc returns HMAC-SHA256(key, data) for a key the caller holds (raw MAC bytes).
type SignFunc func(ctx context.Context, data []byte) ([]byte, error)

// DeviceAudience is the audience of a device token: "<hub>/devices/<device>". hub is the
// real hub name, never a nested gateway (cloud-hub.md §4.1).
func DeviceAudience(hub, deviceID string) string { return hub + "/devices/" + deviceID }

// ModuleAudience is the audience of a module token (cloud-hub.md §4.3).
func ModuleAudience(hub, deviceID, moduleID string) string {
	return hub + "/devices/" + deviceID + "/modules/" + moduleID
}

// DPSAudience is the audience of a DPS registration token.
func DPSAudience(scopeID, registrationID string) string {
	return scopeID + "/registrations/" + registrationID
}

// DPSKeyName is the skn upstream sends with DPS tokens.
const DPSKeyName = "registration"

// Resource returns upstream's sr for an audience: lower-cased, then percent-encoded with
// upstream's small set (controls, space, " < > ` # ? { } =, and every non-ASCII byte);
// '/' and everything else stay as they are.
func Resource(audience string) string {
	return EscapeSmallSet(strings.ToLower(audience))
}

// EscapeSmallSet percent-encodes (upper-case hex) the bytes upstream encodes in SAS
// resources and Hub path segments.
func EscapeSmallSet(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if inSmallSet(c) {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func inSmallSet(c byte) bool {
	if c < 0x20 || c >= 0x7f {
		return true
	}
	switch c {
	case ' ', '"', '<', '>', '`', '#', '?', '{', '}', '=':
		return true
	}
	return false
}

// StringToSign is the signed text: the sr exactly as it appears in the token, "\n", se.
func StringToSign(sr string, se int64) []byte {
	return []byte(sr + "\n" + strconv.FormatInt(se, 10))
}

// Token is the pieces of a token; String formats it.
type Token struct {
	SR        string // resource as sent (already encoded)
	Signature []byte // raw HMAC bytes
	Expiry    int64  // se, Unix seconds
	KeyName   string // skn; empty for device and module tokens
}

// String formats the token in upstream's field order, sr&sig&se[&skn], with the base64
// signature form-urlencoded (+ / = become %2B %2F %3D).
func (t Token) String() string {
	s := "SharedAccessSignature sr=" + t.SR +
		"&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(t.Signature)) +
		"&se=" + strconv.FormatInt(t.Expiry, 10)
	if t.KeyName != "" {
		s += "&skn=" + url.QueryEscape(t.KeyName)
	}
	return s
}

// SignResource signs an already-encoded sr (for clients that encode it differently from
// upstream, e.g. the module tokens of cloud-hub.md §4.3).
func SignResource(ctx context.Context, sr string, expiry time.Time, keyName string, sign SignFunc) (Token, error) {
	if sign == nil {
		return Token{}, errors.New("sas: no signer")
	}
	se := expiry.Unix()
	sig, err := sign(ctx, StringToSign(sr, se))
	if err != nil {
		// The signer's error is wrapped as is: it comes from keyd/tpmd and holds no key.
		return Token{}, fmt.Errorf("sas: signing token for %q: %w", sr, err)
	}
	if len(sig) == 0 {
		return Token{}, fmt.Errorf("sas: signer returned an empty signature for %q", sr)
	}
	return Token{SR: sr, Signature: sig, Expiry: se, KeyName: keyName}, nil
}

// New builds upstream's token for an audience, valid until expiry (upstream: now +
// Lifetime). keyName is "" for Hub tokens and DPSKeyName for DPS.
func New(ctx context.Context, audience string, expiry time.Time, keyName string, sign SignFunc) (string, error) {
	t, err := SignResource(ctx, Resource(audience), expiry, keyName, sign)
	if err != nil {
		return "", err
	}
	return t.String(), nil
}
