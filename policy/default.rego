# The default policy: it reproduces upstream 1.6.0's authorization exactly for the four
# services (api-keys.md §2, api-certs.md §3, api-identity.md §1, api-tpm.md). Custom
# policies in policy.d and in bundles add `allow` and `deny` rules to this same package;
# a request passes when allow is true and deny is empty.
#
# Operation names and the shape of input.resource / input.request are listed in
# docs/policy.md ("Operation catalogue"); policy/operations.go is the same list in Go.
package aziot.authz

import rego.v1

default allow := false

# deny is a set of reasons (strings); the default policy adds none. The reasons go to the
# log and the decision log, never to the caller, who gets the service's upstream 401.
deny contains reason if {
	false
	reason := ""
}

# ---------------------------------------------------------------------------------------
# keyd (api-keys.md §2): root is always authorized; operations that name a key by ID need a
# principal pattern matching the ID; operations that take a handle are authorized by the
# possession of the handle (their resource carries the key ID and kind taken from the
# validated handle, so a custom policy can restrict them; upstream cannot).

keyd_by_id := {
	"keyd.key.create", "keyd.key.import", "keyd.key.load",
	"keyd.keypair.create", "keyd.keypair.load", "keyd.keypair.move",
}

keyd_by_handle := {
	"keyd.key.delete", "keyd.keypair.delete",
	"keyd.parameters.get",
	"keyd.derivedkey.create", "keyd.derivedkey.export",
	"keyd.sign", "keyd.encrypt", "keyd.decrypt",
}

keyd_ops := keyd_by_id | keyd_by_handle

allow if {
	input.service == "keyd"
	input.caller.uid == 0
	keyd_ops[input.operation]
}

allow if {
	input.service == "keyd"
	keyd_by_handle[input.operation]
}

allow if {
	input.service == "keyd"
	keyd_by_id[input.operation]
	some pattern in data.aziot.principals.keyd[format_int(input.caller.uid, 10)]
	aziot.glob_match(pattern, input.resource.key_id)
}

# ---------------------------------------------------------------------------------------
# certd (api-certs.md §3): root is always authorized; every caller may read; writes need a
# principal pattern matching the target cert ID (the issuer named in a create request is
# not checked).

certd_reads := {"certd.cert.get"}

certd_writes := {"certd.cert.create", "certd.cert.import", "certd.cert.delete"}

certd_ops := certd_reads | certd_writes

allow if {
	input.service == "certd"
	input.caller.uid == 0
	certd_ops[input.operation]
}

allow if {
	input.service == "certd"
	certd_reads[input.operation]
}

allow if {
	input.service == "certd"
	certd_writes[input.operation]
	some pattern in data.aziot.principals.certd[format_int(input.caller.uid, 10)]
	aziot.glob_match(pattern, input.resource.cert_id)
}

# ---------------------------------------------------------------------------------------
# identityd (api-identity.md §1). identityd resolves the caller from its [[principal]]
# entries (§1.1) and passes the result as input.caller.principal:
#   {"kind": "host_process", "name": "<name>", "idtype": ["device"|"module"|"local", ...]}
#   {"kind": "daemon", "name": "<name>"}
#   {"kind": "local_root"} or {"kind": "unknown"}
# Without a principal the kind follows from the uid: 0 is local_root, else unknown. A root
# uid with a principal entry is that principal (upstream: the entry takes precedence).

identityd_kind := kind if {
	kind := input.caller.principal.kind
	identityd_kinds[kind]
} else := "local_root" if {
	not input.caller.principal.kind
	input.caller.uid == 0
} else := "unknown"

identityd_kinds := {"local_root", "daemon", "host_process", "unknown"}

# Every operation of the matrix; provisioning.get has no caller check at all upstream.
identityd_ops := {
	"identityd.device.get",
	"identityd.module.get", "identityd.module.list",
	"identityd.module.create", "identityd.module.update", "identityd.module.delete",
	"identityd.device.reprovision",
	"identityd.trust_bundle.get",
	"identityd.provisioning.get",
}

identityd_open := {"identityd.trust_bundle.get", "identityd.provisioning.get"}

identityd_idtypes contains t if {
	identityd_kind == "host_process"
	some t in input.caller.principal.idtype
}

# LocalRoot and Daemon: full access.
allow if {
	input.service == "identityd"
	identityd_kind in {"local_root", "daemon"}
	identityd_ops[input.operation]
}

# Trust bundle and provisioning info: every caller.
allow if {
	input.service == "identityd"
	identityd_open[input.operation]
}

# HostProcess: the device identity only with idtype device.
allow if {
	input.service == "identityd"
	input.operation == "identityd.device.get"
	identityd_idtypes.device
}

# HostProcess: its own module (m == p.name) with idtype module or local.
allow if {
	input.service == "identityd"
	input.operation == "identityd.module.get"
	identityd_kind == "host_process"
	input.resource.module_id == input.caller.principal.name
	some t in {"module", "local"}
	identityd_idtypes[t]
}

# ---------------------------------------------------------------------------------------
# tpmd (api-tpm.md): no caller authorization upstream; the socket's permissions are the
# gate. Every tpmd operation is allowed to every caller that could open the socket.

tpmd_ops := {"tpmd.tpm_keys.get", "tpmd.auth_key.import", "tpmd.auth_key.sign"}

allow if {
	input.service == "tpmd"
	tpmd_ops[input.operation]
}
