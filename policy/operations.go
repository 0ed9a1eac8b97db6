package policy

import (
	"fmt"
	"strings"
)

// Operation describes one `operation` name of the input document: the stable list a
// policy can rely on. docs/policy.md carries the same table and input.schema.json is
// generated from it (TestSchemaIsGenerated).
type Operation struct {
	Name    string
	Service string
	// Route is the upstream route(s) that ask for this decision.
	Route string
	// Resource and Request list the fields the service puts in input.resource and
	// input.request (required fields first; optional ones end in "?").
	Resource []string
	Request  []string
	// Upstream is upstream's rule for this operation (the default policy's rule).
	Upstream string
}

// Operations is the catalogue, in service order.
var Operations = []Operation{
	// keyd (api-keys.md §2, §5)
	{"keyd.key.create", "keyd", "POST /key (no keyBytes)", []string{"key_id"}, nil, "root, or a principal pattern matching key_id"},
	{"keyd.key.import", "keyd", "POST /key (with keyBytes)", []string{"key_id"}, nil, "root, or a principal pattern matching key_id"},
	{"keyd.key.load", "keyd", "GET /key/{keyId}", []string{"key_id"}, nil, "root, or a principal pattern matching key_id"},
	{"keyd.key.delete", "keyd", "DELETE /key", []string{"key_id", "key_kind"}, nil, "anyone holding the handle"},
	{"keyd.keypair.create", "keyd", "POST /keypair", []string{"key_id"}, []string{"preferred_algorithms"}, "root, or a principal pattern matching key_id"},
	{"keyd.keypair.load", "keyd", "GET /keypair/{keyId}", []string{"key_id"}, nil, "root, or a principal pattern matching key_id"},
	{"keyd.keypair.delete", "keyd", "DELETE /keypair", []string{"key_id", "key_kind"}, nil, "anyone holding the handle"},
	{"keyd.keypair.move", "keyd", "POST /keypair/{keyId} (asked for the source, then the destination)", []string{"key_id"}, []string{"from", "to"}, "root, or a principal pattern matching key_id (both ends)"},
	{"keyd.parameters.get", "keyd", "POST /parameters/{parameterName}", []string{"key_id", "key_kind"}, []string{"parameter"}, "anyone holding the handle"},
	{"keyd.derivedkey.create", "keyd", "POST /derivedkey", []string{"key_id", "key_kind"}, nil, "anyone holding the base handle"},
	{"keyd.derivedkey.export", "keyd", "POST /derivedkey/export", []string{"key_id", "key_kind"}, nil, "anyone holding the handle"},
	{"keyd.sign", "keyd", "POST /sign", []string{"key_id", "key_kind"}, []string{"algorithm"}, "anyone holding the handle"},
	{"keyd.encrypt", "keyd", "POST /encrypt", []string{"key_id", "key_kind"}, []string{"algorithm"}, "anyone holding the handle"},
	{"keyd.decrypt", "keyd", "POST /decrypt", []string{"key_id", "key_kind"}, []string{"algorithm"}, "anyone holding the handle"},

	// certd (api-certs.md §3, §4)
	{"certd.cert.create", "certd", "POST /certificates", []string{"cert_id"}, []string{"issuer_cert_id?"}, "root, or a principal pattern matching cert_id (the issuer is not checked)"},
	{"certd.cert.get", "certd", "GET /certificates/{certId}", []string{"cert_id"}, nil, "every caller"},
	{"certd.cert.import", "certd", "PUT /certificates/{certId}", []string{"cert_id"}, nil, "root, or a principal pattern matching cert_id"},
	{"certd.cert.delete", "certd", "DELETE /certificates/{certId}", []string{"cert_id"}, nil, "root, or a principal pattern matching cert_id"},

	// identityd (api-identity.md §1.2, §3)
	{"identityd.device.get", "identityd", "POST /identities/device; GET /identities/identity (first question)", nil, []string{"type?", "caller_identity?"}, "LocalRoot, Daemon, HostProcess with idtype device"},
	{"identityd.module.get", "identityd", "GET /identities/modules/{moduleId}; GET /identities/identity (second question, module_id = the principal's name)", []string{"module_id"}, []string{"type?", "caller_identity?"}, "LocalRoot, Daemon, HostProcess whose name is module_id with idtype module or local"},
	{"identityd.module.list", "identityd", "GET /identities/modules", nil, []string{"type?"}, "LocalRoot, Daemon"},
	{"identityd.module.create", "identityd", "POST /identities/modules", []string{"module_id"}, []string{"type?", "local_id_opts?"}, "LocalRoot, Daemon"},
	{"identityd.module.update", "identityd", "PUT /identities/modules/{moduleId}", []string{"module_id"}, []string{"type?"}, "LocalRoot, Daemon"},
	{"identityd.module.delete", "identityd", "DELETE /identities/modules/{moduleId}", []string{"module_id"}, []string{"type?"}, "LocalRoot, Daemon"},
	{"identityd.device.reprovision", "identityd", "POST /identities/device/reprovision", nil, nil, "LocalRoot, Daemon"},
	{"identityd.trust_bundle.get", "identityd", "GET /trust-bundle", nil, nil, "every caller"},
	{"identityd.provisioning.get", "identityd", "GET /identities/provisioning", nil, nil, "every caller (no caller check upstream)"},

	// tpmd (api-tpm.md: socket permissions only)
	{"tpmd.tpm_keys.get", "tpmd", "GET /get_tpm_keys", nil, nil, "every caller that can open the socket"},
	{"tpmd.auth_key.import", "tpmd", "POST /import_auth_key", nil, nil, "every caller that can open the socket"},
	{"tpmd.auth_key.sign", "tpmd", "POST /sign_with_auth_key", nil, nil, "every caller that can open the socket"},
}

// Services are the services of the input document.
var Services = []string{"keyd", "certd", "identityd", "tpmd"}

// OperationByName returns the catalogue entry of an operation.
func OperationByName(name string) (Operation, bool) {
	for _, op := range Operations {
		if op.Name == name {
			return op, true
		}
	}
	return Operation{}, false
}

// OperationsMarkdown renders the catalogue as the table of docs/policy.md §3.
func OperationsMarkdown() string {
	var b strings.Builder
	b.WriteString("| Operation | Route | `resource` | `request` | Upstream rule (default policy) |\n|---|---|---|---|---|\n")
	list := func(fs []string) string {
		if len(fs) == 0 {
			return "—"
		}
		out := make([]string, len(fs))
		for i, f := range fs {
			out[i] = "`" + f + "`"
		}
		return strings.Join(out, ", ")
	}
	for _, op := range Operations {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", op.Name, op.Route, list(op.Resource), list(op.Request), op.Upstream)
	}
	return b.String()
}
