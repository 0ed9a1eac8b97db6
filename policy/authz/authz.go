// Package authz holds the types of an authorization decision: the input document
// (version 1), the caller facts and the decision. It is a leaf: it imports no OPA, so the
// broker core and tools can name decisions without linking the policy engine.
package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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

// Decision is the answer of the policy for one input.
type Decision struct {
	Allow bool
	// Deny holds the reasons of every deny rule that fired; never sent to the caller.
	Deny []string
	// Revision is the manifest revision of the active bundle ("" without a bundle);
	// PolicyID identifies the whole active policy (modules and policy data).
	Revision string
	PolicyID string
	// Cached is true when the decision came from the decision cache.
	Cached bool
}

// Allowed reports whether the request may go on: allow is true and nothing denies it.
func (d Decision) Allowed() bool { return d.Allow && len(d.Deny) == 0 }

// Decider is what the services ask; tests and benchmarks may substitute their own.
type Decider interface {
	Decide(ctx context.Context, in *Input) (Decision, error)
}

// FactsReader is a Decider that can tell whether the policy in force may read the
// caller's groups or executable. Those cost /proc reads per connection, so the broker
// gathers them only for a policy that can see them; a Decider without this method gets
// them always.
type FactsReader interface {
	ReadsCallerFacts() bool
}

// plainInput is Input without its MarshalJSON, so that encoding/json walks its fields.
type plainInput Input

// MarshalJSON writes the input document as the policy sees it (with input_version).
func (in Input) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		InputVersion int `json:"input_version"`
		plainInput
	}{InputVersion, plainInput(in)})
}

// ParseInput reads an input document (JSON). Unknown fields are refused, so that a typo
// in a hand-written input does not silently evaluate as an absent field; input_version,
// when present, must be InputVersion.
func ParseInput(b []byte) (*Input, error) {
	var doc struct {
		InputVersion *int `json:"input_version"`
		plainInput
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
	in := (*Input)(&doc.plainInput)
	in.Resource, in.Request = normalizeNumbers(in.Resource), normalizeNumbers(in.Request)
	in.Caller.Principal = normalizeNumbers(in.Caller.Principal)
	return in, nil
}

// normalizeNumbers turns json.Number values into int64 or float64.
func normalizeNumbers(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	return NormalizeNumbers(m).(map[string]any)
}

// NormalizeNumbers turns the json.Number values of a document decoded with UseNumber
// into int64 (integers) or float64, in place, as policy inputs and data carry them.
func NormalizeNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = NormalizeNumbers(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = NormalizeNumbers(e)
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
