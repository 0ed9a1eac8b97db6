// Package policy decides every request with Open Policy Agent (architecture.md §4): it
// defines the input document (version 1), embeds the default policy that reproduces
// upstream's authorization, and evaluates prepared queries.
package policy

import (
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/iotbroker/aziot/policy/authz"
)

// The input types live in the leaf package authz; these names keep policy's API whole.
type (
	Input    = authz.Input
	Caller   = authz.Caller
	Decision = authz.Decision
	Decider  = authz.Decider
)

// InputVersion is the version of the input document.
const InputVersion = authz.InputVersion

// ParseInput reads an input document (JSON); see authz.ParseInput.
func ParseInput(b []byte) (*Input, error) { return authz.ParseInput(b) }

// Value builds the OPA value directly: it is several times cheaper than letting rego
// convert a Go struct through JSON on every request.
func inputValue(in *Input) ast.Value {
	terms := [][2]*ast.Term{
		{ast.StringTerm("input_version"), ast.IntNumberTerm(InputVersion)},
		{ast.StringTerm("service"), ast.StringTerm(in.Service)},
		{ast.StringTerm("operation"), ast.StringTerm(in.Operation)},
		{ast.StringTerm("api_version"), ast.StringTerm(in.APIVersion)},
		{ast.StringTerm("caller"), ast.NewTerm(callerValue(&in.Caller))},
	}
	if in.Resource != nil {
		terms = append(terms, [2]*ast.Term{ast.StringTerm("resource"), anyTerm(in.Resource)})
	}
	if in.Request != nil {
		terms = append(terms, [2]*ast.Term{ast.StringTerm("request"), anyTerm(in.Request)})
	}
	return ast.NewObject(terms...)
}

func callerValue(c *Caller) ast.Value {
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
