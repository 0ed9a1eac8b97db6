package main

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/iotbroker/aziot/broker/config"
	"github.com/iotbroker/aziot/broker/identityd"
	"github.com/iotbroker/aziot/broker/keyd"
	"github.com/iotbroker/aziot/broker/tpmd"
	"github.com/iotbroker/aziot/sdk/certs"
	"github.com/iotbroker/aziot/sdk/keys"
)

// certdConfig is the part of certd's config (config.md §3.2) that check reads.
type certdConfig struct {
	HomedirPath    string         `toml:"homedir_path"`
	CertIssuance   map[string]any `toml:"cert_issuance"`
	PreloadedCerts map[string]any `toml:"preloaded_certs"`
}

func (c *certdConfig) est() map[string]any {
	m, _ := c.CertIssuance["est"].(map[string]any)
	return m
}

func (c *checker) svcPaths(svc string) (string, string) {
	return filepath.Join(c.a.paths.Etc, svc, "config.toml"), filepath.Join(c.a.paths.Etc, svc, "config.d")
}

func (c *checker) socket(svc string) string {
	return filepath.Join(c.a.paths.Run, svc+".sock")
}

// loadConfig merges and decodes a service's config; permission denied is fatal.
func (c *checker) loadConfig(svc string, out any, validate func() error) checkResult {
	main, dir := c.svcPaths(svc)
	if err := config.Load(main, dir, out); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fatal(errDetails(fmt.Sprintf("could not read %s configuration: permission denied (run as root)", svc), err)...)
		}
		return failed(errDetails(fmt.Sprintf("%s configuration is not well-formed", svc), err)...)
	}
	if validate != nil {
		if err := validate(); err != nil {
			return failed(errDetails(fmt.Sprintf("%s configuration is not valid", svc), err)...)
		}
	}
	return ok()
}

func (c *checker) keydConfig() checkResult {
	cfg := &keyd.Config{MaxRequests: 10}
	r := c.loadConfig("keyd", cfg, cfg.Validate)
	if r.Result == "ok" {
		c.keyd = cfg
	}
	return r
}

func (c *checker) certdConfig() checkResult {
	cfg := &certdConfig{}
	r := c.loadConfig("certd", cfg, func() error {
		if cfg.HomedirPath == "" {
			return errors.New("missing field `homedir_path`")
		}
		return nil
	})
	if r.Result == "ok" {
		c.certd = cfg
	}
	return r
}

func (c *checker) tpmdConfig() checkResult {
	cfg := tpmd.DefaultConfig()
	r := c.loadConfig("tpmd", &cfg, cfg.Validate)
	if r.Result == "ok" {
		c.tpmd = &cfg
	}
	return r
}

func (c *checker) identitydConfig() checkResult {
	cfg := identityd.DefaultConfig()
	r := c.loadConfig("identityd", &cfg, cfg.Validate)
	if r.Result != "ok" {
		return r
	}
	c.identityd = &cfg
	prev := identityd.DefaultConfig()
	if err := config.Load(filepath.Join(c.a.paths.Lib, "identityd", "prev_state"), "", &prev); err == nil && prev.Provisioning != nil {
		c.prevState = &prev
	}
	return r
}

func (c *checker) configsUpToDate() checkResult {
	superPath := filepath.Join(c.a.paths.Etc, "config.toml")
	st, err := os.Stat(superPath)
	if err != nil {
		return ignored()
	}
	for _, svc := range []string{"keyd", "certd", "identityd", "tpmd"} {
		p := filepath.Join(c.a.paths.Etc, svc, "config.d", "00-super.toml")
		ss, err := os.Stat(p)
		if err != nil {
			return warning(fmt.Sprintf("%s does not exist.", p),
				"Did you run 'aziotctl config apply' after modifying config.toml?")
		}
		if ss.ModTime().Before(st.ModTime()) {
			return warning(fmt.Sprintf("%s is older than %s.", p, superPath),
				"Did you run 'aziotctl config apply' after modifying config.toml?")
		}
	}
	return ok()
}

func (c *checker) hostnameCheck() checkResult {
	if c.identityd == nil {
		return skipped()
	}
	name := c.identityd.Hostname
	c.info["config_hostname"] = name
	if net.ParseIP(name) != nil {
		return ok()
	}
	machine, err := c.a.hostname()
	if err != nil {
		return failed(errDetails("could not get the machine hostname", err)...)
	}
	c.info["machine_hostname"] = machine
	if !strings.EqualFold(name, machine) && !strings.HasPrefix(strings.ToLower(name), strings.ToLower(machine)+".") {
		return failed(fmt.Sprintf("configuration has hostname %s but device reports hostname %s.", name, machine),
			"Hostname in configuration must either match the device hostname, or be the device hostname with a domain suffix.")
	}
	if !isRFC1035Hostname(name) {
		return warning(fmt.Sprintf("configuration has hostname %s which does not comply with RFC 1035.", name),
			"Hostnames must be made of labels of at most 63 letters, digits and hyphens, each starting with a letter and not ending with a hyphen.")
	}
	if len(name) > 64 {
		return warning(fmt.Sprintf("configuration has hostname %s which is longer than 64 characters.", name),
			"Certificates for local identities use the hostname as common name, which is limited to 64 characters.")
	}
	return ok()
}

func isRFC1035Hostname(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		first, last := label[0], label[len(label)-1]
		if !(first >= 'a' && first <= 'z' || first >= 'A' && first <= 'Z') || last == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-') {
				return false
			}
		}
	}
	return true
}

// ---- certificates ----

// readableBy reports whether the user could read path, walking its parents like
// upstream does (owner, group or world bits; directories need r+x).
func readableBy(path string, uid, gid uint32) error {
	for p := path; ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("could not stat %s: %w", p, err)
		}
		bits := os.FileMode(0o4)
		if st.IsDir() {
			bits = 0o5
		}
		m := st.Mode().Perm()
		ouid, ogid, _ := ownerOf(st)
		if m&bits != bits && !(m&(bits<<3) == bits<<3 && uint32(ogid) == gid) && !(m&(bits<<6) == bits<<6 && uint32(ouid) == uid) {
			return fmt.Errorf("%s is not readable by uid %d (gid %d)", p, uid, gid)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// certFileResult checks a cert file readable by aziotcs and currently valid: expired or
// not yet valid → error; less than 7 days left → warning.
func (c *checker) certFileResult(what, fileURL string) checkResult {
	u, err := url.Parse(fileURL)
	if err != nil || u.Scheme != "file" {
		return failed(fmt.Sprintf("%s %s is not a file:// URI", what, fileURL))
	}
	uid, gid, err := c.a.lookupUser("aziotcs")
	if err != nil {
		return failed(errDetails("could not look up user aziotcs", err)...)
	}
	if err := readableBy(u.Path, uid, gid); err != nil {
		return failed(errDetails(fmt.Sprintf("%s %s is not readable by aziotcs", what, u.Path), err)...)
	}
	data, err := os.ReadFile(u.Path)
	if err != nil {
		return failed(errDetails(fmt.Sprintf("could not read %s %s", what, u.Path), err)...)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return failed(fmt.Sprintf("%s %s does not contain a PEM certificate", what, u.Path))
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return failed(errDetails(fmt.Sprintf("could not parse %s %s", what, u.Path), err)...)
	}
	now := c.a.now()
	c.info[what+" expiry"] = cert.NotAfter.UTC().Format(time.RFC3339)
	switch {
	case now.Before(cert.NotBefore):
		return failed(fmt.Sprintf("%s %s is not yet valid (not before %s)", what, u.Path, cert.NotBefore.UTC().Format(time.RFC3339)))
	case !now.Before(cert.NotAfter):
		return failed(fmt.Sprintf("%s %s expired at %s", what, u.Path, cert.NotAfter.UTC().Format(time.RFC3339)))
	case cert.NotAfter.Sub(now) < 7*24*time.Hour:
		return warning(fmt.Sprintf("%s %s will expire soon (%s)", what, u.Path, cert.NotAfter.UTC().Format(time.RFC3339)))
	}
	return ok()
}

// certIDResult checks the cert with an ID: preloaded file → file rules; otherwise it
// must be issuable by certd.
func (c *checker) certIDResult(what, id string) checkResult {
	if v, ok := c.certd.PreloadedCerts[id].(string); ok {
		return c.certFileResult(what, v)
	}
	if _, issuable := c.certd.CertIssuance[id]; issuable {
		return ok()
	}
	return failed(fmt.Sprintf("%s %q is neither preloaded nor issuable", what, id))
}

func (c *checker) identityCertExpiry() checkResult {
	if c.identityd == nil || c.certd == nil {
		return skipped()
	}
	p := c.identityd.Provisioning
	var id string
	switch {
	case p.Source == "manual" && p.Authentication != nil && p.Authentication.Method == "x509":
		id = p.Authentication.IdentityCert
	case p.Source == "dps" && p.Attestation != nil && p.Attestation.Method == "x509":
		id = p.Attestation.IdentityCert
	default:
		return ignored()
	}
	return c.certIDResult("identity certificate", id)
}

func (c *checker) estCertExpiry() checkResult {
	if c.certd == nil {
		return skipped()
	}
	est := c.certd.est()
	idCert, _ := est["identity_cert"].(string)
	bootCert, _ := est["bootstrap_identity_cert"].(string)
	if idCert == "" && bootCert == "" {
		return ignored()
	}
	if idCert != "" {
		if _, preloaded := c.certd.PreloadedCerts[idCert]; preloaded || bootCert == "" {
			if r := c.certIDResult("EST identity certificate", idCert); r.Result != "ok" {
				return r
			}
		}
	}
	if bootCert != "" {
		return c.certIDResult("EST bootstrap certificate", bootCert)
	}
	return ok()
}

func (c *checker) localCAExpiry() checkResult {
	if c.certd == nil {
		return skipped()
	}
	lca, _ := c.certd.CertIssuance["local_ca"].(map[string]any)
	id, _ := lca["cert"].(string)
	if id == "" {
		return ignored()
	}
	return c.certIDResult("local CA certificate", id)
}

func sortedIDs(m map[string]any) []string {
	ids := make([]string, 0, len(m))
	for k := range m {
		ids = append(ids, k)
	}
	sort.Strings(ids)
	return ids
}

func (c *checker) certsPreloaded() checkResult {
	if c.certd == nil {
		return skipped()
	}
	for _, id := range sortedIDs(c.certd.PreloadedCerts) {
		switch v := c.certd.PreloadedCerts[id].(type) {
		case string:
			if r := c.certFileResult(fmt.Sprintf("preloaded certificate %q", id), v); r.Result != "ok" {
				return r
			}
		case []any:
			// A list of other cert IDs: each is checked under its own ID.
		default:
			return failed(fmt.Sprintf("preloaded certificate %q has an invalid value", id))
		}
	}
	return ok()
}

// ---- services ----

func (c *checker) connect(svc string) checkResult {
	p := c.socket(svc)
	conn, err := net.DialTimeout("unix", p, 5*time.Second)
	if err != nil {
		return failed(errDetails(fmt.Sprintf("could not connect to %s", p), err)...)
	}
	conn.Close()
	return ok()
}

func (c *checker) keydRunningCheck() checkResult {
	r := c.connect("keyd")
	c.keydRunning = r.Result == "ok"
	return r
}

func (c *checker) certdRunningCheck() checkResult {
	r := c.connect("certd")
	c.certdRunning = r.Result == "ok"
	return r
}

func (c *checker) tpmdRunningCheck() checkResult {
	if c.identityd != nil {
		a := c.identityd.Provisioning.Attestation
		if c.identityd.Provisioning.Source != "dps" || a == nil || a.Method != "tpm" {
			return ignored()
		}
	}
	return c.connect("tpmd")
}

func (c *checker) identitydRunningCheck() checkResult { return c.connect("identityd") }

func (c *checker) certsRead() checkResult {
	if c.certd == nil || !c.certdRunning {
		return skipped()
	}
	cl := certs.New(c.socket("certd"))
	defer cl.Close()
	for _, id := range sortedIDs(c.certd.PreloadedCerts) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := cl.Get(ctx, id)
		cancel()
		if err != nil {
			return failed(errDetails(fmt.Sprintf("could not read preloaded certificate %q from certd", id), err)...)
		}
	}
	return ok()
}

func (c *checker) keyPairsRead() checkResult {
	if c.keyd == nil || !c.keydRunning {
		return skipped()
	}
	uid, gid, err := c.a.lookupUser("aziotks")
	if err != nil {
		return failed(errDetails("could not look up user aziotks", err)...)
	}
	ids := make([]string, 0, len(c.keyd.PreloadedKeys))
	for id := range c.keyd.PreloadedKeys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if u, err := url.Parse(c.keyd.PreloadedKeys[id]); err == nil && u.Scheme == "file" {
			if err := readableBy(u.Path, uid, gid); err != nil {
				return failed(errDetails(fmt.Sprintf("preloaded key %q is not readable by aziotks", id), err)...)
			}
		}
	}
	cl := keys.New(c.socket("keyd"))
	defer cl.Close()
	var warnings []string
	for _, id := range ids {
		pub, err := c.publicKey(cl, id)
		if errors.Is(err, keys.ErrUnsupportedKey) {
			warnings = append(warnings, fmt.Sprintf("preloaded key %q is neither an RSA key nor a P-256 EC key", id))
			continue
		}
		if err != nil {
			continue // not a key pair (e.g. a symmetric key), as upstream ignores
		}
		if k, ok := pub.(*rsa.PublicKey); ok && k.N.BitLen() < 2048 {
			warnings = append(warnings, fmt.Sprintf("preloaded key %q is an RSA key of %d bits; use at least 2048", id, k.N.BitLen()))
		}
	}
	if len(warnings) > 0 {
		return warning(warnings...)
	}
	return ok()
}

// publicKey loads a key pair through keyd and rebuilds its public key from the
// parameters keyd exposes (api-keys.md §5.7); keys.ErrUnsupportedKey marks an EC key
// on another curve than P-256 or an unknown type.
func (c *checker) publicKey(cl *keys.Client, id string) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := cl.LoadKeyPair(ctx, id)
	if err != nil {
		return nil, err
	}
	return cl.PublicKey(ctx, h)
}

func (c *checker) estServerHTTPS() checkResult {
	if c.certd == nil || !c.certdRunning {
		return skipped()
	}
	var insecure []string
	if urls, ok := c.certd.est()["urls"].(map[string]any); ok {
		for _, id := range sortedIDs(urls) {
			if s, _ := urls[id].(string); !strings.HasPrefix(strings.ToLower(s), "https:") {
				insecure = append(insecure, s)
			}
		}
	}
	for _, id := range sortedIDs(c.certd.CertIssuance) {
		opts, _ := c.certd.CertIssuance[id].(map[string]any)
		if m, _ := opts["method"].(string); m != "est" {
			continue
		}
		if s, ok := opts["url"].(string); ok && !strings.HasPrefix(strings.ToLower(s), "https:") {
			insecure = append(insecure, s)
		}
	}
	if len(insecure) > 0 {
		return warning(fmt.Sprintf("EST server URLs do not use HTTPS: %s", strings.Join(insecure, ", ")),
			"Requests to an EST server over HTTP are not encrypted.")
	}
	return ok()
}

func (c *checker) certsMatchKeys() checkResult {
	if c.certd == nil || c.keyd == nil || !c.certdRunning || !c.keydRunning {
		return skipped()
	}
	cc := certs.New(c.socket("certd"))
	defer cc.Close()
	kc := keys.New(c.socket("keyd"))
	defer kc.Close()
	for _, id := range sortedIDs(c.certd.PreloadedCerts) {
		if _, ok := c.keyd.PreloadedKeys[id]; !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		pemText, err := cc.Get(ctx, id)
		cancel()
		if err != nil {
			return failed(errDetails(fmt.Sprintf("could not read certificate %q", id), err)...)
		}
		block, _ := pem.Decode([]byte(pemText))
		if block == nil {
			return failed(fmt.Sprintf("certificate %q is not PEM", id))
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return failed(errDetails(fmt.Sprintf("could not parse certificate %q", id), err)...)
		}
		pub, err := c.publicKey(kc, id)
		if err != nil {
			return failed(errDetails(fmt.Sprintf("could not load key pair %q", id), err)...)
		}
		type equaler interface{ Equal(x crypto.PublicKey) bool }
		if e, ok := pub.(equaler); !ok || !e.Equal(cert.PublicKey) {
			return failed(fmt.Sprintf("certificate %q does not match its private key", id))
		}
	}
	return ok()
}
