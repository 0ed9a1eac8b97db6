package superconfig

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// KeyLocation is a preloaded key URI (config.md §4): a file path or a PKCS#11 URI.
type KeyLocation struct {
	Path string // file://
	// PKCS#11
	PKCS11   bool
	SlotID   *uint64
	Token    *string
	Object   *string
	PinValue *string
}

// ParseKeyLocation parses a `file://` or `pkcs11:` key URI.
func ParseKeyLocation(s string) (KeyLocation, error) {
	switch {
	case strings.HasPrefix(s, "pkcs11:"):
		return parsePKCS11(s)
	case strings.HasPrefix(strings.ToLower(s), "file:"):
		u, err := url.Parse(s)
		if err != nil {
			return KeyLocation{}, fmt.Errorf("invalid file URI %q: %w", s, err)
		}
		if u.Host != "" && u.Host != "localhost" {
			return KeyLocation{}, fmt.Errorf("invalid file URI %q: host must be empty", s)
		}
		if !strings.HasPrefix(u.Path, "/") {
			return KeyLocation{}, fmt.Errorf("invalid file URI %q: path must be absolute", s)
		}
		return KeyLocation{Path: u.Path}, nil
	}
	return KeyLocation{}, fmt.Errorf("unsupported key URI %q: expected a file:// or pkcs11: URI", s)
}

func parsePKCS11(s string) (KeyLocation, error) {
	loc := KeyLocation{PKCS11: true}
	rest := strings.TrimPrefix(s, "pkcs11:")
	path, query, _ := strings.Cut(rest, "?")
	for _, attr := range strings.Split(path, ";") {
		if attr == "" {
			continue
		}
		name, raw, ok := strings.Cut(attr, "=")
		if !ok {
			return KeyLocation{}, fmt.Errorf("invalid PKCS#11 URI %q: path attribute %q has no value", s, attr)
		}
		val, err := url.PathUnescape(raw)
		if err != nil {
			return KeyLocation{}, fmt.Errorf("invalid PKCS#11 URI %q: attribute %q: %w", s, name, err)
		}
		switch name {
		case "slot-id":
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return KeyLocation{}, fmt.Errorf("invalid PKCS#11 URI %q: slot-id %q is not a number", s, val)
			}
			loc.SlotID = &n
		case "token":
			loc.Token = &val
		case "object":
			loc.Object = &val
		}
	}
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			name, raw, _ := strings.Cut(attr, "=")
			if name != "pin-value" {
				continue
			}
			val, err := url.PathUnescape(raw)
			if err != nil {
				return KeyLocation{}, fmt.Errorf("invalid PKCS#11 URI %q: pin-value: %w", s, err)
			}
			loc.PinValue = &val
		}
	}
	if loc.SlotID == nil && loc.Token == nil {
		return KeyLocation{}, fmt.Errorf("invalid PKCS#11 URI %q: one of slot-id or token is required", s)
	}
	return loc, nil
}

// String re-serializes the location canonically, as upstream's apply does.
func (k KeyLocation) String() string {
	if !k.PKCS11 {
		return (&url.URL{Scheme: "file", Path: k.Path}).String()
	}
	var b strings.Builder
	b.WriteString("pkcs11:")
	if k.SlotID != nil {
		b.WriteString("slot-id=" + strconv.FormatUint(*k.SlotID, 10))
	} else if k.Token != nil {
		b.WriteString("token=" + pctEncode(*k.Token))
	}
	if k.Object != nil {
		b.WriteString(";object=" + pctEncode(*k.Object))
	}
	if k.PinValue != nil {
		b.WriteString("?pin-value=" + pctEncode(*k.PinValue))
	}
	return b.String()
}

// pctEncode escapes every byte that is not an ASCII letter or digit (config.md §4).
func pctEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

var errNoScheme = errors.New("relative URL without a base")

// normalizeURL parses an absolute URL and writes it back the way the WHATWG parser
// upstream uses does for the common cases: lower-case scheme and host, the default
// port dropped, and "/" as the path of a special-scheme URL that has none.
func normalizeURL(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return "", err
	}
	if u.Scheme == "" {
		return "", errNoScheme
	}
	u.Scheme = strings.ToLower(u.Scheme)
	special := map[string]string{"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21", "file": ""}
	port, isSpecial := special[u.Scheme]
	if !isSpecial {
		return u.String(), nil
	}
	if u.Scheme != "file" && u.Host == "" {
		return "", errors.New("empty host")
	}
	u.Host = strings.ToLower(u.Host)
	if port != "" && u.Port() == port {
		u.Host = u.Hostname()
	}
	if u.Path == "" && u.Opaque == "" {
		u.Path = "/"
	}
	return u.String(), nil
}
