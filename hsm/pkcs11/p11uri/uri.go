// Package p11uri parses the subset of RFC 7512 PKCS#11 URIs that keyd accepts
// (config.md §4): path attributes token, slot-id and object, and the pin-value query
// attribute. It imports nothing from hsm so that the keystore can validate URIs at
// start-up without pulling in cgo.
package p11uri

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// URI is a parsed pkcs11: URI.
type URI struct {
	// SlotID is set when the URI has slot-id; it wins over Token.
	SlotID    uint
	HasSlotID bool
	Token     string
	HasToken  bool
	// Object is the object label; HasObject distinguishes an empty label from none.
	Object    string
	HasObject bool
	PIN       string
	HasPIN    bool
}

// Parse reads a pkcs11: URI. Unknown attributes are ignored, as upstream does; one of
// slot-id and token is required. Errors never contain the PIN.
func Parse(s string) (*URI, error) {
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return nil, errors.New(`PKCS#11 URI must start with "pkcs11:"`)
	}
	path, query, _ := strings.Cut(rest, "?")
	u := &URI{}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			name, raw, ok := strings.Cut(attr, "=")
			if !ok {
				return nil, fmt.Errorf("PKCS#11 URI path attribute %q has no value", name)
			}
			v, err := unescape(raw)
			if err != nil {
				return nil, fmt.Errorf("PKCS#11 URI attribute %q: %w", name, err)
			}
			switch name {
			case "token":
				u.Token, u.HasToken = v, true
			case "object":
				u.Object, u.HasObject = v, true
			case "slot-id":
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil || uint64(uint(n)) != n {
					return nil, fmt.Errorf("PKCS#11 URI slot-id %q is not a slot number", v)
				}
				u.SlotID, u.HasSlotID = uint(n), true
			}
		}
	}
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			name, raw, _ := strings.Cut(attr, "=")
			if name != "pin-value" {
				continue
			}
			v, err := unescape(raw)
			if err != nil {
				// Never echo the value: it is a PIN.
				return nil, errors.New("PKCS#11 URI pin-value is not validly percent-encoded")
			}
			u.PIN, u.HasPIN = v, true
		}
	}
	if !u.HasSlotID && !u.HasToken {
		return nil, errors.New("PKCS#11 URI needs a slot-id or a token attribute")
	}
	return u, nil
}

// unescape percent-decodes v (RFC 3986; a '+' stays a '+').
func unescape(v string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+2 >= len(v) {
			return "", errors.New("truncated percent-escape")
		}
		hi, ok1 := unhex(v[i+1])
		lo, ok2 := unhex(v[i+2])
		if !ok1 || !ok2 {
			return "", errors.New("invalid percent-escape")
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Escape percent-encodes every byte that is not an ASCII letter or digit, as upstream's
// config apply does.
func Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// format serializes u canonically, with or without the PIN.
func (u *URI) format(withPIN bool) string {
	var parts []string
	if u.HasSlotID {
		parts = append(parts, "slot-id="+strconv.FormatUint(uint64(u.SlotID), 10))
	} else {
		parts = append(parts, "token="+Escape(u.Token))
	}
	if u.HasObject {
		parts = append(parts, "object="+Escape(u.Object))
	}
	s := "pkcs11:" + strings.Join(parts, ";")
	if u.HasPIN {
		if withPIN {
			s += "?pin-value=" + Escape(u.PIN)
		} else {
			s += "?pin-value=REDACTED"
		}
	}
	return s
}

// Format is the canonical URI including the PIN: for building locations, never for logs.
func (u *URI) Format() string { return u.format(true) }

// String is the canonical URI with the PIN redacted, for logs and errors.
func (u *URI) String() string { return u.format(false) }

// WithObject returns a copy of u addressing the object labelled label.
func (u *URI) WithObject(label string) *URI {
	c := *u
	c.Object, c.HasObject = label, true
	return &c
}

// TokenKey identifies the token u names, for pooling: the slot-id when present, else
// the label.
func (u *URI) TokenKey() string {
	if u.HasSlotID {
		return "slot-id=" + strconv.FormatUint(uint64(u.SlotID), 10)
	}
	return "token=" + u.Token
}
