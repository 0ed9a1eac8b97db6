package policy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/iotbroker/aziot/internal/atomicfile"
	"github.com/iotbroker/aziot/policy/authz"
)

// MaxBundleBytes bounds a bundle archive (compressed and uncompressed).
const MaxBundleBytes = 32 << 20

// KeyConfig is a trusted bundle signing key: OPA's own key configuration (a PEM public
// key or certificate, or an HMAC secret, and its algorithm, e.g. RS256, ES256, HS256).
type KeyConfig = bundle.KeyConfig

// VerifiedBundle is a bundle read by ReadBundle.
type VerifiedBundle struct {
	Bundle   bundle.Bundle
	Revision string
	SHA256   string
	// Signed is true when the bundle carries a signature; Verified when that signature
	// was checked against a trusted key (KeyID) and covers exactly the bundle's files.
	Signed   bool
	Verified bool
	KeyID    string
	// Forced is true when verification or the revision check was overridden.
	Forced bool
}

// BundleError is a refusal of a bundle; Forceable tells whether --force would override it.
type BundleError struct {
	Reason    string
	Forceable bool
}

func (e *BundleError) Error() string { return e.Reason }

func refuse(forceable bool, format string, args ...any) error {
	return &BundleError{Reason: fmt.Sprintf(format, args...), Forceable: forceable}
}

// SignatureBlock is the content of a bundle's .signatures.json.
type SignatureBlock struct {
	Signatures []string `json:"signatures"`
	Plugin     string   `json:"plugin,omitempty"`
}

// ReadBundle reads an OPA bundle (tar.gz) and verifies it with OPA's own signature
// verification against the trusted keys. It fails closed: a signature without a key ID,
// naming a key that is not trusted, signed with another algorithm than the trusted key's,
// or covering a different set of files than the bundle holds, is refused; so is an
// unsigned bundle. With force, an unsigned or unverifiable bundle is accepted (Verified
// false), but a malformed one never is. Delta bundles, Wasm and plan modules, and data
// under aziot.principals are refused.
func ReadBundle(raw []byte, keys map[string]*KeyConfig, force bool) (*VerifiedBundle, error) {
	if len(raw) > MaxBundleBytes {
		return nil, refuse(false, "bundle larger than %d bytes", MaxBundleBytes)
	}
	sum := sha256.Sum256(raw)
	vb := &VerifiedBundle{SHA256: hex.EncodeToString(sum[:])}
	sigs, err := scanBundle(raw)
	if err != nil {
		return nil, err
	}
	verr := checkSignatureBlock(sigs, keys)
	if sigs != nil {
		vb.Signed = true
	}
	if verr == nil {
		vb.KeyID = signatureKeyID(sigs)
		b, err := bundle.NewReader(bytes.NewReader(raw)).
			WithBundleVerificationConfig(bundle.NewVerificationConfig(keys, "", "", nil)).
			WithRegoVersion(ast.RegoV1).
			WithSizeLimitBytes(MaxBundleBytes).
			Read()
		if err != nil {
			verr = refuse(true, "bundle signature: %v", err)
		} else {
			vb.Bundle, vb.Verified = b, true
		}
	}
	if verr != nil {
		if !force {
			return nil, verr
		}
		b, err := bundle.NewReader(bytes.NewReader(raw)).
			WithSkipBundleVerification(true).
			WithRegoVersion(ast.RegoV1).
			WithSizeLimitBytes(MaxBundleBytes).
			Read()
		if err != nil {
			return nil, refuse(false, "bundle: %v", err)
		}
		vb.Bundle, vb.Forced, vb.KeyID = b, true, ""
	}
	b := &vb.Bundle
	if b.Type() != bundle.SnapshotBundleType {
		return nil, refuse(false, "bundle: delta bundles are not supported")
	}
	if len(b.WasmModules) > 0 || len(b.PlanModules) > 0 {
		return nil, refuse(false, "bundle: Wasm and plan modules are not supported; ship Rego")
	}
	if a, ok := b.Data["aziot"].(map[string]any); ok {
		if _, ok := a["principals"]; ok {
			return nil, refuse(false, "bundle: data.aziot.principals is reserved for the principals of the service's config")
		}
	}
	vb.Revision = b.Manifest.Revision
	return vb, nil
}

// scanBundle reads the archive's entries once to find .signatures.json and to refuse
// what OPA's reader would accept but we do not (several signature files, links).
func scanBundle(raw []byte) (*SignatureBlock, error) {
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, refuse(false, "bundle: not a gzip archive: %v", err)
	}
	tr := tar.NewReader(io.LimitReader(zr, MaxBundleBytes+1))
	var sigs *SignatureBlock
	total := int64(0)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, refuse(false, "bundle: not a tar archive: %v", err)
		}
		total += h.Size
		if total > MaxBundleBytes {
			return nil, refuse(false, "bundle larger than %d bytes uncompressed", MaxBundleBytes)
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeDir:
		default:
			return nil, refuse(false, "bundle: %s: only regular files and directories are allowed", h.Name)
		}
		if strings.TrimPrefix(filepath.ToSlash(filepath.Clean("/"+h.Name)), "/") == ".signatures.json" {
			if sigs != nil {
				return nil, refuse(false, "bundle: more than one .signatures.json")
			}
			b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil {
				return nil, refuse(false, "bundle: %v", err)
			}
			sigs, err = ParseSignatureBlock(b)
			if err != nil {
				return nil, err
			}
		}
	}
	return sigs, nil
}

// ParseSignatureBlock parses .signatures.json strictly.
func ParseSignatureBlock(b []byte) (*SignatureBlock, error) {
	var s SignatureBlock
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, refuse(true, "bundle: .signatures.json: %v", err)
	}
	return &s, nil
}

// jwtHeader is the part of a signature's JOSE header we check before OPA does.
type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

type jwtClaims struct {
	KeyID string `json:"keyid"`
	Scope string `json:"scope"`
}

func decodeJWTPart(part string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// checkSignatureBlock refuses, before OPA's verification runs, every signature block that
// OPA might accept on a default: no signature, several, a verifier plugin, no key ID in
// the header, a key ID that is not trusted, an algorithm other than the trusted key's.
func checkSignatureBlock(s *SignatureBlock, keys map[string]*KeyConfig) error {
	if s == nil {
		return refuse(true, "bundle is not signed (no .signatures.json)")
	}
	if s.Plugin != "" && s.Plugin != "_default" { // OPA's signer writes "_default"
		return refuse(true, "bundle signature names verifier plugin %q; only OPA's default verification is accepted", s.Plugin)
	}
	if len(s.Signatures) != 1 {
		return refuse(true, "bundle signature block holds %d signatures; exactly one is required", len(s.Signatures))
	}
	parts := strings.Split(s.Signatures[0], ".")
	if len(parts) != 3 {
		return refuse(true, "bundle signature is not a compact JWS")
	}
	var h jwtHeader
	if err := decodeJWTPart(parts[0], &h); err != nil {
		return refuse(true, "bundle signature header: %v", err)
	}
	var c jwtClaims
	if err := decodeJWTPart(parts[1], &c); err != nil {
		return refuse(true, "bundle signature payload: %v", err)
	}
	if h.Kid == "" {
		return refuse(true, "bundle signature has no key ID (kid); refused")
	}
	if c.KeyID != "" && c.KeyID != h.Kid {
		return refuse(true, "bundle signature names two key IDs (%q, %q)", h.Kid, c.KeyID)
	}
	k, ok := keys[h.Kid]
	if !ok || k == nil {
		return refuse(true, "bundle signed with key %q, which is not trusted", h.Kid)
	}
	if !strings.EqualFold(h.Alg, k.Algorithm) {
		return refuse(true, "bundle signature algorithm %q is not the trusted key's %q", h.Alg, k.Algorithm)
	}
	if c.Scope != k.Scope {
		return refuse(true, "bundle signature scope %q is not the trusted key's %q", c.Scope, k.Scope)
	}
	return nil
}

func signatureKeyID(s *SignatureBlock) string {
	if s == nil || len(s.Signatures) != 1 {
		return ""
	}
	var h jwtHeader
	if err := decodeJWTPart(strings.Split(s.Signatures[0], ".")[0], &h); err != nil {
		return ""
	}
	return h.Kid
}

// BundleLayer turns a verified bundle into the "bundle" layer.
func BundleLayer(vb *VerifiedBundle, source string) *Layer {
	l := &Layer{Modules: map[string]string{}, Tests: map[string]string{}, Data: vb.Bundle.Data, Revision: vb.Revision}
	var files []any
	for _, m := range vb.Bundle.Modules {
		name := "bundle:" + m.Path
		if strings.HasSuffix(m.Path, "_test.rego") {
			l.Tests[name] = string(m.Raw)
		} else {
			l.Modules[name] = string(m.Raw)
		}
		files = append(files, m.Path)
	}
	if l.Data == nil {
		l.Data = map[string]any{}
	}
	l.Data = authz.NormalizeNumbers(deepCopy(l.Data)).(map[string]any)
	l.Meta = map[string]any{"source": source, "sha256": vb.SHA256, "signed": vb.Signed, "verified": vb.Verified,
		"key_id": vb.KeyID, "forced": vb.Forced, "files": files}
	if vb.Bundle.Etag != "" {
		l.Meta["etag"] = vb.Bundle.Etag
	}
	return l
}

// CompareRevisions orders bundle revisions naturally: runs of digits compare as numbers,
// the rest byte-wise (9 < 10, 1.2.9 < 1.2.10, 2024-05-01T10:00Z < 2024-06-01T00:00Z).
func CompareRevisions(a, b string) int {
	for a != "" && b != "" {
		ad, bd := unicode.IsDigit(rune(a[0])), unicode.IsDigit(rune(b[0]))
		switch {
		case ad && bd:
			na, ra := digitRun(a)
			nb, rb := digitRun(b)
			na, nb = strings.TrimLeft(na, "0"), strings.TrimLeft(nb, "0")
			if len(na) != len(nb) {
				return cmpInt(len(na), len(nb))
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = ra, rb
		default:
			if a[0] != b[0] {
				return cmpInt(int(a[0]), int(b[0]))
			}
			a, b = a[1:], b[1:]
		}
	}
	return cmpInt(len(a), len(b))
}

func digitRun(s string) (string, string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ---------------------------------------------------------------- installed bundles

// InstallRecord is install.json beside an installed bundle.
type InstallRecord struct {
	Revision    string    `json:"revision"`
	SHA256      string    `json:"sha256"`
	Forced      bool      `json:"forced"`
	Verified    bool      `json:"verified"`
	KeyID       string    `json:"key_id,omitempty"`
	InstalledAt time.Time `json:"installed_at"`
	InstalledBy int       `json:"installed_by_uid"`
}

// InstalledBundle is the bundle the active pointer of a bundle directory names.
type InstalledBundle struct {
	Dir    string // the version directory
	Record InstallRecord
	Raw    []byte
}

// ReadInstalled reads <bundleDir>/active: (nil, nil) when nothing is installed. The
// archive must have the digest its record names.
func ReadInstalled(bundleDir string) (*InstalledBundle, error) {
	active := filepath.Join(bundleDir, "active")
	target, err := os.Readlink(active)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", active, err)
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(bundleDir, target)
	}
	ib := &InstalledBundle{Dir: target}
	rec, err := os.ReadFile(filepath.Join(target, "install.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(rec, &ib.Record); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(target, "install.json"), err)
	}
	ib.Raw, err = os.ReadFile(filepath.Join(target, "bundle.tar.gz"))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(ib.Raw)
	if hex.EncodeToString(sum[:]) != ib.Record.SHA256 {
		return nil, fmt.Errorf("%s: digest does not match install.json", filepath.Join(target, "bundle.tar.gz"))
	}
	return ib, nil
}

// InstallBundle verifies raw and activates it atomically in bundleDir: the archive and its
// record go to a new version directory, then the `active` symlink is replaced by rename.
// A bundle that is unsigned, wrongly signed, or whose revision is lower than the installed
// one (or equal with other content) is refused unless force. It returns the record.
func InstallBundle(bundleDir string, raw []byte, keys map[string]*KeyConfig, force bool) (*InstallRecord, error) {
	vb, err := ReadBundle(raw, keys, force)
	if err != nil {
		return nil, err
	}
	if vb.Revision == "" && !force {
		return nil, refuse(true, "bundle has no revision in its .manifest; refused")
	}
	cur, err := ReadInstalled(bundleDir)
	if err != nil && !force {
		return nil, fmt.Errorf("installed bundle: %w", err)
	}
	if cur != nil {
		c := CompareRevisions(vb.Revision, cur.Record.Revision)
		switch {
		case c == 0 && cur.Record.SHA256 == vb.SHA256:
			return &cur.Record, nil
		case c < 0 && !force:
			return nil, refuse(true, "bundle revision %q is lower than the installed revision %q", vb.Revision, cur.Record.Revision)
		case c == 0 && !force:
			return nil, refuse(true, "bundle revision %q is installed with other content", vb.Revision)
		}
	}
	rec := &InstallRecord{Revision: vb.Revision, SHA256: vb.SHA256, Forced: vb.Forced || force, Verified: vb.Verified,
		KeyID: vb.KeyID, InstalledAt: time.Now().UTC(), InstalledBy: os.Getuid()}
	// Every write goes through internal/atomicfile: synced files, synced directories,
	// and an error when either sync fails, so that `active` never names a version a
	// power loss could leave half written.
	versions := filepath.Join(bundleDir, "versions")
	if err := atomicfile.MkdirAll(versions, 0o755); err != nil {
		return nil, fmt.Errorf("install bundle: %w", err)
	}
	name := sanitizeRevision(vb.Revision) + "-" + vb.SHA256[:12]
	vdir, err := os.MkdirTemp(versions, ".new-")
	if err != nil {
		return nil, fmt.Errorf("install bundle: %w", err)
	}
	defer os.RemoveAll(vdir)
	if err := os.Chmod(vdir, 0o755); err != nil {
		return nil, fmt.Errorf("install bundle: %w", err)
	}
	recb, _ := json.MarshalIndent(rec, "", "  ")
	if err := atomicfile.Write(filepath.Join(vdir, "bundle.tar.gz"), raw, 0o644); err != nil {
		return nil, fmt.Errorf("install bundle: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(vdir, "install.json"), append(recb, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("install bundle: %w", err)
	}
	final := filepath.Join(versions, name)
	if err := os.RemoveAll(final); err != nil {
		return nil, fmt.Errorf("install bundle: replace %s: %w", final, err)
	}
	if err := atomicfile.Rename(vdir, final); err != nil {
		return nil, fmt.Errorf("install bundle: %w", err)
	}
	link := filepath.Join(bundleDir, ".active-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Symlink(filepath.Join("versions", name), link); err != nil {
		return nil, fmt.Errorf("install bundle: %w", err)
	}
	if err := atomicfile.Rename(link, filepath.Join(bundleDir, "active")); err != nil {
		os.Remove(link)
		return nil, fmt.Errorf("install bundle: activate %s: %w", name, err)
	}
	pruneVersions(versions, name, cur)
	return rec, nil
}

// pruneVersions keeps the active and the previous version.
func pruneVersions(versions, active string, prev *InstalledBundle) {
	entries, err := os.ReadDir(versions)
	if err != nil {
		return
	}
	keep := map[string]bool{active: true}
	if prev != nil {
		keep[filepath.Base(prev.Dir)] = true
	}
	for _, e := range entries {
		if !keep[e.Name()] {
			os.RemoveAll(filepath.Join(versions, e.Name()))
		}
	}
}

func sanitizeRevision(r string) string {
	var b strings.Builder
	for _, c := range r {
		if c < 0x80 && (unicode.IsLetter(c) || unicode.IsDigit(c) || c == '.' || c == '-' || c == '_') {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
		if b.Len() >= 64 {
			break
		}
	}
	if b.Len() == 0 {
		return "norev"
	}
	return b.String()
}
