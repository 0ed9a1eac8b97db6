package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// SpecDir is where upstream's OpenAPI files are: verbatim copies in the repo's testdata,
// so that a plain clone tests itself (testdata/README.md says where they came from).
func SpecDir() string { return filepath.Join(RepoRoot(), "testdata", "openapi") }

// Spec is one upstream OpenAPI file, used to validate answers.
type Spec struct {
	doc *openapi3.T
}

// LoadSpec loads openapi/<rel>. certd's file refers to keyd's schema at its place in
// upstream's tree; the reference is mended here, the file itself stays untouched.
func LoadSpec(t testing.TB, rel string) *Spec {
	t.Helper()
	path := filepath.Join(SpecDir(), rel)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read spec: %v", err)
	}
	// pathcheck:ok: upstream's reference inside the YAML, relative to its own tree.
	data = []byte(strings.ReplaceAll(string(data), "../../../key/aziot-keyd/openapi/", "../keyd/"))
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = true
	doc, err := loader.LoadFromDataWithPath(data, &url.URL{Path: path})
	if err != nil {
		t.Fatalf("load spec %s: %v", rel, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("spec %s is invalid: %v", rel, err)
	}
	return &Spec{doc: doc}
}

// Describes reports whether the spec documents this method, path and status.
func (s *Spec) Describes(method, path string, status int) bool {
	_, ok := s.response(method, path, status)
	return ok
}

func (s *Spec) response(method, path string, status int) (*openapi3.Response, bool) {
	for key, item := range s.doc.Paths.Map() {
		tmpl, _, _ := strings.Cut(key, "?")
		if !templateMatches(tmpl, path) {
			continue
		}
		op := item.GetOperation(strings.ToUpper(method))
		if op == nil {
			return nil, false
		}
		r := op.Responses.Value(strconv.Itoa(status))
		if r == nil || r.Value == nil {
			return nil, false
		}
		return r.Value, true
	}
	return nil, false
}

func templateMatches(tmpl, path string) bool {
	a := strings.Split(strings.Trim(tmpl, "/"), "/")
	b := strings.Split(strings.Trim(path, "/"), "/")
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if strings.HasPrefix(a[i], "{") || a[i] == b[i] {
			continue
		}
		return false
	}
	return true
}

// ValidateResponse checks an answer against the spec: the status must be documented for
// the route and a JSON body must fit its schema. It returns an error for an undocumented
// status so that callers decide whether that is expected (error answers are not in the
// upstream files).
func (s *Spec) ValidateResponse(method, path string, status int, body []byte) error {
	r, ok := s.response(method, path, status)
	if !ok {
		return fmt.Errorf("%s %s %d is not described by the spec", method, path, status)
	}
	mt := r.Content.Get("application/json")
	if mt == nil || mt.Schema == nil {
		if len(body) != 0 {
			return fmt.Errorf("%s %s %d: the spec has no body but got %q", method, path, status, body)
		}
		return nil
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s %s %d: body is not JSON: %v", method, path, status, err)
	}
	if err := mt.Schema.Value.VisitJSON(v); err != nil {
		return fmt.Errorf("%s %s %d: body does not fit the schema: %v", method, path, status, err)
	}
	return nil
}
