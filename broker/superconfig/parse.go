package superconfig

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// Error is a super-config error that names the file, the line (0 when unknown) and
// the dotted key it concerns.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": key %q", e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// ErrInvalidCharacter is returned for input that is not UTF-8 (upstream's wording).
var ErrInvalidCharacter = errors.New("invalid character in config")

// Parse decodes and validates a super-config. name is the file name used in errors.
// Unknown keys are ignored, as upstream does.
func Parse(name string, data []byte) (*Config, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%s: %w", name, ErrInvalidCharacter)
	}
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: name, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
		}
		return nil, &Error{File: name, Msg: err.Error()}
	}
	d := &decoder{file: name, data: data}
	cfg, err := d.config(node{m: raw})
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

type decoder struct {
	file string
	data []byte
}

// node is a table of the raw document with its path from the root.
type node struct {
	path []string
	m    map[string]any
}

func (n node) child(k string) []string {
	return append(append([]string(nil), n.path...), k)
}

// fail builds an Error for the key at path, looking up its line in the source.
func (d *decoder) fail(path []string, format string, args ...any) error {
	return &Error{File: d.file, Line: keyLine(d.data, path), Key: strings.Join(path, "."), Msg: fmt.Sprintf(format, args...)}
}

// missing reports a required key that is absent, at the line of its table.
func (d *decoder) missing(n node, k string) error {
	return &Error{File: d.file, Line: keyLine(d.data, n.path), Key: strings.Join(n.child(k), "."), Msg: "missing required key"}
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case map[string]any:
		return "table"
	case []map[string]any, []any:
		return "array"
	}
	return "datetime"
}

func (d *decoder) str(n node, k string) (*string, error) {
	v, ok := n.m[k]
	if !ok {
		return nil, nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, d.fail(n.child(k), "expected a string, found %s", typeName(v))
	}
	return &s, nil
}

func (d *decoder) reqStr(n node, k string) (string, error) {
	s, err := d.str(n, k)
	if err != nil {
		return "", err
	}
	if s == nil {
		return "", d.missing(n, k)
	}
	return *s, nil
}

func (d *decoder) integer(n node, k string, lo, hi int64) (*int64, error) {
	v, ok := n.m[k]
	if !ok {
		return nil, nil
	}
	i, ok := v.(int64)
	if !ok {
		return nil, d.fail(n.child(k), "expected an integer, found %s", typeName(v))
	}
	if i < lo || i > hi {
		return nil, d.fail(n.child(k), "integer %d out of range %d..%d", i, lo, hi)
	}
	return &i, nil
}

func (d *decoder) boolean(n node, k string) (*bool, error) {
	v, ok := n.m[k]
	if !ok {
		return nil, nil
	}
	b, ok := v.(bool)
	if !ok {
		return nil, d.fail(n.child(k), "expected a boolean, found %s", typeName(v))
	}
	return &b, nil
}

func (d *decoder) tbl(n node, k string) (*node, error) {
	v, ok := n.m[k]
	if !ok {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, d.fail(n.child(k), "expected a table, found %s", typeName(v))
	}
	return &node{path: n.child(k), m: m}, nil
}

func (d *decoder) reqTbl(n node, k string) (node, error) {
	t, err := d.tbl(n, k)
	if err != nil {
		return node{}, err
	}
	if t == nil {
		return node{}, d.missing(n, k)
	}
	return *t, nil
}

func (d *decoder) strArray(n node, k string) ([]string, bool, error) {
	v, ok := n.m[k]
	if !ok {
		return nil, false, nil
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, true, d.fail(n.child(k), "expected an array of strings, found %s", typeName(v))
	}
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		s, ok := e.(string)
		if !ok {
			return nil, true, d.fail(n.child(k), "expected an array of strings, found an element of type %s", typeName(e))
		}
		out = append(out, s)
	}
	return out, true, nil
}

func (d *decoder) url(n node, k string) (*string, error) {
	s, err := d.str(n, k)
	if err != nil || s == nil {
		return nil, err
	}
	u, err := normalizeURL(*s)
	if err != nil {
		return nil, d.fail(n.child(k), "invalid URL %q: %v", *s, err)
	}
	return &u, nil
}

func (d *decoder) reqURL(n node, k string) (string, error) {
	u, err := d.url(n, k)
	if err != nil {
		return "", err
	}
	if u == nil {
		return "", d.missing(n, k)
	}
	return *u, nil
}

func (d *decoder) keyLoc(n node, k string) (*KeyLocation, error) {
	s, err := d.str(n, k)
	if err != nil || s == nil {
		return nil, err
	}
	loc, err := ParseKeyLocation(*s)
	if err != nil {
		return nil, d.fail(n.child(k), "%v", err)
	}
	return &loc, nil
}

func (d *decoder) reqKeyLoc(n node, k string) (KeyLocation, error) {
	loc, err := d.keyLoc(n, k)
	if err != nil {
		return KeyLocation{}, err
	}
	if loc == nil {
		return KeyLocation{}, d.missing(n, k)
	}
	return *loc, nil
}

// variant reads a tag key (source, method) and checks it against the allowed values.
func (d *decoder) variant(n node, k string, allowed ...string) (string, error) {
	s, err := d.reqStr(n, k)
	if err != nil {
		return "", err
	}
	for _, a := range allowed {
		if s == a {
			return s, nil
		}
	}
	return "", d.fail(n.child(k), "unknown variant %q, expected one of %s", s, quoteList(allowed))
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func (d *decoder) config(root node) (*Config, error) {
	c := &Config{CloudTimeoutSec: 70, CloudRetries: 1, TPM: TPM{TCTI: "device", AuthKeyIndex: 0x100}}
	var err error
	if c.Hostname, err = d.str(root, "hostname"); err != nil {
		return nil, err
	}
	lgw, err := d.str(root, "local_gateway_hostname")
	if err != nil {
		return nil, err
	}
	parent, err := d.str(root, "parent_hostname")
	if err != nil {
		return nil, err
	}
	if lgw != nil && parent != nil {
		return nil, d.fail(root.child("parent_hostname"), "duplicate field: local_gateway_hostname and its alias parent_hostname are both set")
	}
	c.LocalGatewayHostname = lgw
	if parent != nil {
		c.LocalGatewayHostname = parent
	}
	if t, err := d.integer(root, "cloud_timeout_sec", math.MinInt64, math.MaxInt64); err != nil {
		return nil, err
	} else if t != nil {
		if *t < 70 {
			return nil, d.fail(root.child("cloud_timeout_sec"), "cloud_timeout_sec must be at least 70 seconds")
		}
		c.CloudTimeoutSec = uint64(*t)
	}
	if r, err := d.integer(root, "cloud_retries", 0, math.MaxUint32); err != nil {
		return nil, err
	} else if r != nil {
		c.CloudRetries = uint32(*r)
	}
	if b, err := d.boolean(root, "prefer_module_identity_cache"); err != nil {
		return nil, err
	} else if b != nil {
		c.PreferModuleIdentityCache = *b
	}
	if mr, err := d.tbl(root, "aziot_max_requests"); err != nil {
		return nil, err
	} else if mr != nil {
		var vals [4]uint64
		for i, k := range []string{"keyd", "certd", "identityd", "tpmd"} {
			v, err := d.integer(*mr, k, 0, math.MaxInt64)
			if err != nil {
				return nil, err
			}
			if v == nil {
				return nil, d.missing(*mr, k)
			}
			vals[i] = uint64(*v)
		}
		c.MaxRequests = &MaxRequests{Keyd: vals[0], Certd: vals[1], Identityd: vals[2], Tpmd: vals[3]}
	}
	prov, err := d.reqTbl(root, "provisioning")
	if err != nil {
		return nil, err
	}
	if c.Provisioning, err = d.provisioning(prov); err != nil {
		return nil, err
	}
	if l, err := d.tbl(root, "localid"); err != nil {
		return nil, err
	} else if l != nil {
		dom, err := d.reqStr(*l, "domain")
		if err != nil {
			return nil, err
		}
		c.LocalID = &LocalID{Domain: dom}
	}
	if c.AziotKeys, err = d.stringMap(root, "aziot_keys"); err != nil {
		return nil, err
	}
	if pk, err := d.tbl(root, "preloaded_keys"); err != nil {
		return nil, err
	} else if pk != nil {
		c.PreloadedKeys = map[string]KeyLocation{}
		for _, id := range sortedKeys(pk.m) {
			loc, err := d.reqKeyLoc(*pk, id)
			if err != nil {
				return nil, err
			}
			c.PreloadedKeys[id] = loc
		}
	}
	if ci, err := d.tbl(root, "cert_issuance"); err != nil {
		return nil, err
	} else if ci != nil {
		if c.CertIssuance, err = d.certIssuance(*ci); err != nil {
			return nil, err
		}
	}
	if pc, err := d.tbl(root, "preloaded_certs"); err != nil {
		return nil, err
	} else if pc != nil {
		c.PreloadedCerts = map[string]PreloadedCert{}
		for _, id := range sortedKeys(pc.m) {
			if _, isArr := pc.m[id].([]any); isArr {
				ids, _, err := d.strArray(*pc, id)
				if err != nil {
					return nil, err
				}
				c.PreloadedCerts[id] = PreloadedCert{IDs: ids}
				continue
			}
			u, err := d.reqURL(*pc, id)
			if err != nil {
				return nil, err
			}
			c.PreloadedCerts[id] = PreloadedCert{URI: u}
		}
	}
	if t, err := d.tbl(root, "tpm"); err != nil {
		return nil, err
	} else if t != nil {
		if c.TPM, err = d.tpm(*t); err != nil {
			return nil, err
		}
	}
	if b, err := d.tbl(root, "broker"); err != nil {
		return nil, err
	} else if b != nil {
		c.Broker = b.m
	}
	return c, nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (d *decoder) stringMap(n node, k string) (map[string]string, error) {
	t, err := d.tbl(n, k)
	if err != nil || t == nil {
		return nil, err
	}
	out := map[string]string{}
	for _, key := range sortedKeys(t.m) {
		s, err := d.reqStr(*t, key)
		if err != nil {
			return nil, err
		}
		out[key] = s
	}
	return out, nil
}

func (d *decoder) tpm(n node) (TPM, error) {
	t := TPM{TCTI: "device", AuthKeyIndex: 0x100}
	if s, err := d.str(n, "tcti"); err != nil {
		return t, err
	} else if s != nil {
		if strings.ContainsRune(*s, 0) {
			return t, d.fail(n.child("tcti"), "tcti must not contain a NUL character")
		}
		t.TCTI = *s
	}
	if v, ok := n.m["auth_key_index"]; ok {
		i, ok := v.(int64)
		if !ok {
			return t, d.fail(n.child("auth_key_index"), "expected an integer, found %s", typeName(v))
		}
		if i < 0 || i > 0x7FFFFF {
			return t, d.fail(n.child("auth_key_index"), "persistent handle index cannot exceed 0x7F_FF_FF")
		}
		t.AuthKeyIndex = uint32(i)
	}
	if h, err := d.tbl(n, "hierarchy_authorization"); err != nil {
		return t, err
	} else if h != nil {
		for _, f := range []struct {
			k   string
			dst *string
		}{{"endorsement", &t.EndorsementAuth}, {"owner", &t.OwnerAuth}} {
			s, err := d.str(*h, f.k)
			if err != nil {
				return t, err
			}
			if s != nil {
				*f.dst = *s
			}
		}
	}
	return t, nil
}

func (d *decoder) provisioning(n node) (Provisioning, error) {
	p := Provisioning{}
	src, err := d.variant(n, "source", SourceManual, SourceDPS, SourceNone)
	if err != nil {
		return p, err
	}
	p.Source = src
	switch src {
	case SourceManual:
		if cs, err := d.str(n, "connection_string"); err != nil {
			return p, err
		} else if cs != nil {
			parsed, err := ParseConnectionString(*cs)
			if err != nil {
				return p, d.fail(n.child("connection_string"), "invalid connection string: %v", err)
			}
			p.FromConnectionString = true
			p.IothubHostname = parsed.HostName
			p.DeviceID = parsed.DeviceID
			p.ManualAuth = &ManualAuth{Method: MethodSAS, DeviceIDPK: &SymmetricKey{Value: parsed.Key}}
			return p, nil
		}
		if p.IothubHostname, err = d.reqStr(n, "iothub_hostname"); err != nil {
			return p, err
		}
		if p.DeviceID, err = d.reqStr(n, "device_id"); err != nil {
			return p, err
		}
		auth, err := d.reqTbl(n, "authentication")
		if err != nil {
			return p, err
		}
		m, err := d.variant(auth, "method", MethodSAS, MethodX509)
		if err != nil {
			return p, err
		}
		p.ManualAuth = &ManualAuth{Method: m}
		if m == MethodSAS {
			p.ManualAuth.DeviceIDPK, err = d.symmetricKey(auth, "device_id_pk")
		} else {
			p.ManualAuth.X509, err = d.x509Identity(auth)
		}
		return p, err
	case SourceDPS:
		if p.GlobalEndpoint, err = d.reqURL(n, "global_endpoint"); err != nil {
			return p, err
		}
		if p.IDScope, err = d.reqStr(n, "id_scope"); err != nil {
			return p, err
		}
		att, err := d.reqTbl(n, "attestation")
		if err != nil {
			return p, err
		}
		m, err := d.variant(att, "method", MethodSymmetricKey, MethodX509, MethodTPM)
		if err != nil {
			return p, err
		}
		a := &Attestation{Method: m}
		switch m {
		case MethodSymmetricKey, MethodTPM:
			rid, err := d.reqStr(att, "registration_id")
			if err != nil {
				return p, err
			}
			a.RegistrationID = &rid
			if m == MethodSymmetricKey {
				if a.SymmetricKey, err = d.symmetricKey(att, "symmetric_key"); err != nil {
					return p, err
				}
			}
		case MethodX509:
			if a.RegistrationID, err = d.str(att, "registration_id"); err != nil {
				return p, err
			}
			if a.X509, err = d.x509Identity(att); err != nil {
				return p, err
			}
		}
		p.Attestation = a
		if pl, err := d.tbl(n, "payload"); err != nil {
			return p, err
		} else if pl != nil {
			u, err := d.reqURL(*pl, "uri")
			if err != nil {
				return p, err
			}
			p.PayloadURI = &u
		}
	}
	return p, nil
}

// symmetricKey reads { value = "<base64>" } or { uri = "<key URI>" }.
func (d *decoder) symmetricKey(n node, k string) (*SymmetricKey, error) {
	t, err := d.reqTbl(n, k)
	if err != nil {
		return nil, err
	}
	if v, err := d.str(t, "value"); err != nil {
		return nil, err
	} else if v != nil {
		b, err := decodeBase64(*v)
		if err != nil {
			return nil, d.fail(t.child("value"), "invalid base64: %v", err)
		}
		return &SymmetricKey{Value: b}, nil
	}
	loc, err := d.keyLoc(t, "uri")
	if err != nil {
		return nil, err
	}
	if loc == nil {
		return nil, d.fail(t.path, "expected { value = \"<base64>\" } or { uri = \"<key URI>\" }")
	}
	return &SymmetricKey{URI: loc}, nil
}

// x509Identity reads identity_cert (a URL, or a table of issuance options) and, for a
// preloaded cert, identity_pk.
func (d *decoder) x509Identity(n node) (*X509Identity, error) {
	v, ok := n.m["identity_cert"]
	if !ok {
		return nil, d.missing(n, "identity_cert")
	}
	if _, isTable := v.(map[string]any); isTable {
		t, _ := d.tbl(n, "identity_cert")
		o, err := d.issuance(*t, true)
		if err != nil {
			return nil, err
		}
		return &X509Identity{Issued: o}, nil
	}
	cert, err := d.reqURL(n, "identity_cert")
	if err != nil {
		return nil, err
	}
	key, err := d.reqKeyLoc(n, "identity_pk")
	if err != nil {
		return nil, err
	}
	return &X509Identity{Cert: cert, Key: key}, nil
}

// issuance reads cert issuance options (config.md §2.3).
func (d *decoder) issuance(n node, allowAutoRenew bool) (*IssuanceOptions, error) {
	m, err := d.variant(n, "method", IssueEST, IssueLocalCA, IssueSelfSigned)
	if err != nil {
		return nil, err
	}
	o := &IssuanceOptions{Method: m}
	if m == IssueEST {
		if o.URL, err = d.url(n, "url"); err != nil {
			return nil, err
		}
		if o.Auth, err = d.estAuth(n); err != nil {
			return nil, err
		}
	}
	if e, err := d.integer(n, "expiry_days", math.MinInt64, math.MaxInt64); err != nil {
		return nil, err
	} else if e != nil {
		if *e <= 0 || *e > math.MaxUint32 {
			return nil, d.fail(n.child("expiry_days"), "expiry_days must be a positive integer, found %d", *e)
		}
		v := uint32(*e)
		o.ExpiryDays = &v
	}
	if o.CommonName, err = d.str(n, "common_name"); err != nil {
		return nil, err
	}
	if s, err := d.tbl(n, "subject"); err != nil {
		return nil, err
	} else if s != nil {
		if o.CommonName != nil {
			return nil, d.fail(s.path, "common_name and subject are mutually exclusive")
		}
		o.Subject = map[string]string{}
		for _, k := range sortedKeys(s.m) {
			v, err := d.reqStr(*s, k)
			if err != nil {
				return nil, err
			}
			o.Subject[k] = v
		}
	}
	if allowAutoRenew {
		if ar, err := d.tbl(n, "auto_renew"); err != nil {
			return nil, err
		} else if ar != nil {
			r, err := d.autoRenew(*ar)
			if err != nil {
				return nil, err
			}
			o.AutoRenew = &r
		}
	}
	return o, nil
}

func (d *decoder) autoRenew(n node) (AutoRenew, error) {
	var r AutoRenew
	b, err := d.boolean(n, "rotate_key")
	if err != nil {
		return r, err
	}
	if b == nil {
		return r, d.missing(n, "rotate_key")
	}
	r.RotateKey = *b
	for _, f := range []struct {
		k   string
		dst *string
	}{{"threshold", &r.Threshold}, {"retry", &r.Retry}} {
		s, err := d.reqStr(n, f.k)
		if err != nil {
			return r, err
		}
		if *f.dst, err = canonicalPolicy(s); err != nil {
			return r, d.fail(n.child(f.k), "%v", err)
		}
	}
	return r, nil
}

// estAuth reads the flattened EST auth keys of a table. Basic auth needs both
// username and password; the bootstrap pair wins over the identity pair; an
// incomplete pair is ignored, as upstream's untagged parsing does.
func (d *decoder) estAuth(n node) (*ESTAuth, error) {
	a := &ESTAuth{}
	u, err := d.str(n, "username")
	if err != nil {
		return nil, err
	}
	pw, err := d.str(n, "password")
	if err != nil {
		return nil, err
	}
	if u != nil && pw != nil {
		a.Basic = &BasicAuth{Username: *u, Password: *pw}
	}
	for _, form := range []struct {
		bootstrap bool
		cert, key string
	}{{true, "bootstrap_identity_cert", "bootstrap_identity_pk"}, {false, "identity_cert", "identity_pk"}} {
		if _, ok := n.m[form.cert]; !ok {
			continue
		}
		if _, ok := n.m[form.key]; !ok {
			continue
		}
		cert, err := d.reqURL(n, form.cert)
		if err != nil {
			return nil, err
		}
		key, err := d.reqKeyLoc(n, form.key)
		if err != nil {
			return nil, err
		}
		a.X509 = &ESTAuthX509{Bootstrap: form.bootstrap, Cert: cert, Key: key}
		break
	}
	if a.Basic == nil && a.X509 == nil {
		return nil, nil
	}
	return a, nil
}

func (d *decoder) certIssuance(n node) (CertIssuance, error) {
	var ci CertIssuance
	if e, err := d.tbl(n, "est"); err != nil {
		return ci, err
	} else if e != nil {
		est := &EST{IdentityAutoRenew: DefaultAutoRenew}
		certs, _, err := d.strArray(*e, "trusted_certs")
		if err != nil {
			return ci, err
		}
		for i, c := range certs {
			u, err := normalizeURL(c)
			if err != nil {
				return ci, d.fail(e.child("trusted_certs"), "element %d: invalid URL %q: %v", i+1, c, err)
			}
			est.TrustedCerts = append(est.TrustedCerts, u)
		}
		if a, err := d.tbl(*e, "auth"); err != nil {
			return ci, err
		} else if a != nil {
			if est.Auth, err = d.estAuth(*a); err != nil {
				return ci, err
			}
		}
		if ar, err := d.tbl(*e, "identity_auto_renew"); err != nil {
			return ci, err
		} else if ar != nil {
			if est.IdentityAutoRenew, err = d.autoRenew(*ar); err != nil {
				return ci, err
			}
		}
		if us, err := d.tbl(*e, "urls"); err != nil {
			return ci, err
		} else if us != nil {
			est.URLs = map[string]string{}
			for _, k := range sortedKeys(us.m) {
				u, err := d.reqURL(*us, k)
				if err != nil {
					return ci, err
				}
				est.URLs[k] = u
			}
		}
		ci.EST = est
	}
	if l, err := d.tbl(n, "local_ca"); err != nil {
		return ci, err
	} else if l != nil {
		v, ok := l.m["cert"]
		if !ok {
			return ci, d.missing(*l, "cert")
		}
		if _, isTable := v.(map[string]any); isTable {
			t, _ := d.tbl(*l, "cert")
			o, err := d.issuance(*t, false)
			if err != nil {
				return ci, err
			}
			ci.LocalCA = &LocalCA{Issued: o}
		} else {
			cert, err := d.reqURL(*l, "cert")
			if err != nil {
				return ci, err
			}
			key, err := d.reqKeyLoc(*l, "pk")
			if err != nil {
				return ci, err
			}
			ci.LocalCA = &LocalCA{Cert: cert, Key: key}
		}
	}
	return ci, nil
}

// lineProbe fails on purpose when BurntSushi/toml decodes into it: the ParseError it
// turns that failure into carries the line of the key being decoded, which the
// library does not expose otherwise.
type lineProbe struct{}

var errProbe = errors.New("probe")

func (lineProbe) UnmarshalTOML(any) error { return errProbe }

// keyLine returns the line where the key at path is defined, or 0 if unknown.
func keyLine(data []byte, path []string) int {
	if len(path) == 0 {
		return 0
	}
	t := reflect.TypeOf(lineProbe{})
	for i := len(path) - 1; i >= 0; i-- {
		if strings.ContainsAny(path[i], "\"`\\") {
			return 0
		}
		t = reflect.StructOf([]reflect.StructField{{
			Name: "F",
			Type: t,
			Tag:  reflect.StructTag(`toml:"` + path[i] + `"`),
		}})
	}
	_, err := toml.Decode(string(data), reflect.New(t).Interface())
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return pe.Position.Line
	}
	return 0
}
