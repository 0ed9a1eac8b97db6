// Package policy decides every request with Open Policy Agent (architecture.md §4): it
// defines the input document (version 1), embeds the default policy that reproduces
// upstream's authorization, and evaluates prepared queries.
package policy

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
)

// InputVersion is the version of the input document below; policies may check it.
const InputVersion = 1

// Input is the document a policy sees as `input`. It never carries secret bytes.
type Input struct {
	Service    string         `json:"service"`
	Operation  string         `json:"operation"`
	APIVersion string         `json:"api_version"`
	Caller     Caller         `json:"caller"`
	Resource   map[string]any `json:"resource,omitempty"`
	Request    map[string]any `json:"request,omitempty"`
}

// Caller holds the facts about the peer of a connection. UID and GID come from
// SO_PEERCRED; the rest is best effort and absent when it cannot be had.
type Caller struct {
	UID       uint32         `json:"uid"`
	GID       uint32         `json:"gid"`
	Groups    []uint32       `json:"groups,omitzero"`
	PID       int32          `json:"pid,omitempty"`
	Exe       string         `json:"exe,omitempty"`
	Principal map[string]any `json:"principal,omitempty"`
}

// Value builds the OPA value directly: it is several times cheaper than letting rego
// convert a Go struct through JSON on every request.
func (in *Input) Value() ast.Value {
	terms := [][2]*ast.Term{
		{ast.StringTerm("input_version"), ast.IntNumberTerm(InputVersion)},
		{ast.StringTerm("service"), ast.StringTerm(in.Service)},
		{ast.StringTerm("operation"), ast.StringTerm(in.Operation)},
		{ast.StringTerm("api_version"), ast.StringTerm(in.APIVersion)},
		{ast.StringTerm("caller"), ast.NewTerm(in.Caller.value())},
	}
	if in.Resource != nil {
		terms = append(terms, [2]*ast.Term{ast.StringTerm("resource"), anyTerm(in.Resource)})
	}
	if in.Request != nil {
		terms = append(terms, [2]*ast.Term{ast.StringTerm("request"), anyTerm(in.Request)})
	}
	return ast.NewObject(terms...)
}

func (c *Caller) value() ast.Value {
	terms := [][2]*ast.Term{
		{ast.StringTerm("uid"), ast.UIntNumberTerm(uint64(c.UID))},
		{ast.StringTerm("gid"), ast.UIntNumberTerm(uint64(c.GID))},
	}
	if c.Groups != nil {
		gs := make([]*ast.Term, len(c.Groups))
		for i, g := range c.Groups {
			gs[i] = ast.UIntNumberTerm(uint64(g))
		}
		terms = append(terms, [2]*ast.Term{ast.StringTerm("groups"), ast.ArrayTerm(gs...)})
	}
	if c.PID != 0 {
		terms = append(terms, [2]*ast.Term{ast.StringTerm("pid"), ast.IntNumberTerm(int(c.PID))})
	}
	if c.Exe != "" {
		terms = append(terms, [2]*ast.Term{ast.StringTerm("exe"), ast.StringTerm(c.Exe)})
	}
	if c.Principal != nil {
		terms = append(terms, [2]*ast.Term{ast.StringTerm("principal"), anyTerm(c.Principal)})
	}
	return ast.NewObject(terms...)
}

func anyTerm(v any) *ast.Term {
	switch x := v.(type) {
	case string:
		return ast.StringTerm(x)
	case bool:
		return ast.BooleanTerm(x)
	case int:
		return ast.IntNumberTerm(x)
	case uint32:
		return ast.UIntNumberTerm(uint64(x))
	case int64:
		return ast.IntNumberTerm(int(x))
	case uint64:
		return ast.UIntNumberTerm(x)
	case float64:
		return ast.FloatNumberTerm(x)
	case map[string]string:
		terms := make([][2]*ast.Term, 0, len(x))
		for k, v := range x {
			terms = append(terms, [2]*ast.Term{ast.StringTerm(k), ast.StringTerm(v)})
		}
		return ast.ObjectTerm(terms...)
	case []string:
		ts := make([]*ast.Term, len(x))
		for i, s := range x {
			ts[i] = ast.StringTerm(s)
		}
		return ast.ArrayTerm(ts...)
	case map[string]any:
		terms := make([][2]*ast.Term, 0, len(x))
		for k, v := range x {
			terms = append(terms, [2]*ast.Term{ast.StringTerm(k), anyTerm(v)})
		}
		return ast.ObjectTerm(terms...)
	case []any:
		ts := make([]*ast.Term, len(x))
		for i, e := range x {
			ts[i] = anyTerm(e)
		}
		return ast.ArrayTerm(ts...)
	case nil:
		return ast.NullTerm()
	default:
		t, err := ast.InterfaceToValue(x)
		if err != nil {
			return ast.NullTerm()
		}
		return ast.NewTerm(t)
	}
}

// document is the JSON form of an input (what `input` is in Rego).
type document struct {
	InputVersion int            `json:"input_version"`
	Service      string         `json:"service"`
	Operation    string         `json:"operation"`
	APIVersion   string         `json:"api_version"`
	Caller       Caller         `json:"caller"`
	Resource     map[string]any `json:"resource,omitempty"`
	Request      map[string]any `json:"request,omitempty"`
}

// MarshalJSON writes the input document as the policy sees it (with input_version).
func (in Input) MarshalJSON() ([]byte, error) {
	return json.Marshal(document{InputVersion: InputVersion, Service: in.Service, Operation: in.Operation,
		APIVersion: in.APIVersion, Caller: in.Caller, Resource: in.Resource, Request: in.Request})
}

// ParseInput reads an input document (JSON). Unknown fields are refused, so that a typo
// in a hand-written input does not silently evaluate as an absent field; input_version,
// when present, must be InputVersion.
func ParseInput(b []byte) (*Input, error) {
	var doc struct {
		InputVersion *int `json:"input_version"`
		document
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("input: trailing data after the document")
	}
	if doc.InputVersion != nil && *doc.InputVersion != InputVersion {
		return nil, fmt.Errorf("input: input_version %d is not %d", *doc.InputVersion, InputVersion)
	}
	in := &Input{Service: doc.Service, Operation: doc.Operation, APIVersion: doc.APIVersion,
		Caller: doc.Caller, Resource: normalizeNumbers(doc.Resource), Request: normalizeNumbers(doc.Request)}
	in.Caller.Principal = normalizeNumbers(in.Caller.Principal)
	return in, nil
}

// normalizeNumbers turns json.Number values into int64 or float64.
func normalizeNumbers(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	return normalize(m).(map[string]any)
}

func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}
