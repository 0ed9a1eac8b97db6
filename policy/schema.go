package policy

import (
	_ "embed"
	"encoding/json"
	"strings"
)

//go:embed input.schema.json
var inputSchema []byte

// InputSchema returns the JSON Schema (draft 2020-12) of the input document, version 1.
func InputSchema() []byte { return inputSchema }

// SchemaID is the $id of the input schema.
const SchemaID = "https://github.com/iotbroker/aziot/policy/input.schema.json"

var fieldSchemas = map[string]any{
	"key_id":               map[string]any{"type": "string", "description": "the key ID the request names, or the ID in the validated handle (for a derived handle: its base key's ID)"},
	"key_kind":             map[string]any{"enum": []any{"key", "keypair", "derived"}, "description": "the kind of the validated handle"},
	"cert_id":              map[string]any{"type": "string", "description": "the target cert ID"},
	"module_id":            map[string]any{"type": "string", "description": "the module ID the request names (not validated yet: authorization comes first)"},
	"preferred_algorithms": map[string]any{"type": "string", "description": "as sent, or \"*\" when absent"},
	"from":                 map[string]any{"type": "string", "description": "source key pair ID of a move"},
	"to":                   map[string]any{"type": "string", "description": "destination key pair ID of a move"},
	"parameter":            map[string]any{"type": "string", "description": "the parameterName of the route"},
	"algorithm":            map[string]any{"type": "string", "description": "the mechanism of the request (HMAC-SHA256, ECDSA, AEAD, RSA-PKCS1, RSA-NO-PADDING)"},
	"issuer_cert_id":       map[string]any{"type": "string", "description": "issuer.certId of the request, when it names an issuer"},
	"type":                 map[string]any{"type": "string", "description": "the identity type as sent (query parameter, or body for create); absent when missing; not validated yet"},
	"caller_identity":      map[string]any{"const": true, "description": "set when the question is asked for GET /identities/identity"},
	"local_id_opts": map[string]any{"type": "object", "description": "localIdOpts of a create request", "properties": map[string]any{
		"type": map[string]any{"type": "string"}, "attributes": map[string]any{"type": "string"},
	}},
}

// GenerateInputSchema builds the schema from the operation catalogue; input.schema.json is
// its output (TestSchemaIsGenerated keeps them equal).
func GenerateInputSchema() ([]byte, error) {
	var opNames []any
	var perOp []any
	for _, op := range Operations {
		opNames = append(opNames, op.Name)
		then := map[string]any{"properties": map[string]any{"service": map[string]any{"const": op.Service}}}
		props := then["properties"].(map[string]any)
		var required []any
		required = append(required, "service")
		if len(op.Resource) > 0 {
			props["resource"] = fieldsObject(op.Resource)
			required = append(required, "resource")
		} else {
			props["resource"] = map[string]any{"type": "object", "maxProperties": 0}
		}
		if len(op.Request) > 0 {
			props["request"] = fieldsObject(op.Request)
		} else {
			props["request"] = map[string]any{"type": "object", "maxProperties": 0}
		}
		then["required"] = required
		perOp = append(perOp, map[string]any{
			"if":   map[string]any{"properties": map[string]any{"operation": map[string]any{"const": op.Name}}, "required": []any{"operation"}},
			"then": then,
		})
	}
	uint32s := map[string]any{"type": "integer", "minimum": 0, "maximum": 4294967295}
	var services []any
	for _, s := range Services {
		services = append(services, s)
	}
	schema := map[string]any{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"$id":                  SchemaID,
		"title":                "aziot policy input, version 1",
		"description":          "The document a policy sees as `input` (docs/policy.md). Generated from policy/operations.go; never holds secret bytes, handles, tokens or passwords.",
		"type":                 "object",
		"required":             []any{"input_version", "service", "operation", "api_version", "caller"},
		"additionalProperties": false,
		"properties": map[string]any{
			"input_version": map[string]any{"const": InputVersion},
			"service":       map[string]any{"enum": services},
			"operation":     map[string]any{"enum": opNames},
			"api_version":   map[string]any{"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "description": "the api-version of the request (already checked against the service's list)"},
			"caller": map[string]any{
				"type":                 "object",
				"required":             []any{"uid", "gid"},
				"additionalProperties": false,
				"properties": map[string]any{
					"uid":       withDesc(uint32s, "from SO_PEERCRED of the connection; never from the request"),
					"gid":       withDesc(uint32s, "from SO_PEERCRED of the connection"),
					"groups":    map[string]any{"type": "array", "items": uint32s, "description": "supplementary groups from /proc/<pid>/status, read under a pidfd of the peer; absent when unknown"},
					"pid":       map[string]any{"type": "integer", "minimum": 1, "description": "from SO_PEERCRED: the process that connected; absent when in another pid namespace"},
					"exe":       map[string]any{"type": "string", "description": "/proc/<pid>/exe at accept time, read under a pidfd of the peer; absent when unknown. Defence in depth only: see docs/policy.md"},
					"principal": map[string]any{"$ref": "#/$defs/principal"},
				},
			},
			"resource": map[string]any{"type": "object"},
			"request":  map[string]any{"type": "object"},
		},
		"allOf": perOp,
		"$defs": map[string]any{
			"principal": map[string]any{
				"description": "the caller's principal as resolved from the service's config; absent when the uid has none (keyd, certd)",
				"oneOf": []any{
					map[string]any{"title": "keyd", "type": "object", "required": []any{"keys"}, "additionalProperties": false,
						"properties": map[string]any{"keys": map[string]any{"type": "array", "items": map[string]any{"type": "string"}}}},
					map[string]any{"title": "certd", "type": "object", "required": []any{"certs"}, "additionalProperties": false,
						"properties": map[string]any{"certs": map[string]any{"type": "array", "items": map[string]any{"type": "string"}}}},
					map[string]any{"title": "identityd", "type": "object", "required": []any{"kind"}, "additionalProperties": false,
						"properties": map[string]any{
							"kind":    map[string]any{"enum": []any{KindLocalRoot, KindDaemon, KindHostProcess, KindUnknown}},
							"name":    map[string]any{"type": "string"},
							"idtype":  map[string]any{"type": "array", "items": map[string]any{"enum": []any{"device", "module", "local"}}},
							"localid": map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "string"}},
						}},
				},
			},
		},
	}
	b, err := json.MarshalIndent(schema, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func withDesc(m map[string]any, d string) map[string]any {
	out := map[string]any{"description": d}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func fieldsObject(fields []string) map[string]any {
	props := map[string]any{}
	var required []any
	for _, f := range fields {
		name, optional := strings.CutSuffix(f, "?")
		props[name] = fieldSchemas[name]
		if !optional {
			required = append(required, name)
		}
	}
	o := map[string]any{"type": "object", "additionalProperties": false, "properties": props}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}
