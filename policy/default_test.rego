# Unit tests of the default policy: every row of upstream's authorization rules for the four
# services (api-keys.md §2, api-certs.md §3, api-identity.md §1.2, api-tpm.md). Run by
# `go test ./policy` and by `aziotctl policy test --builtin`.
package aziot.authz_test

import rego.v1

import data.aziot.authz

principals := {
	"keyd": {
		"1000": ["dev-*", "exact", "extra"],
		"1001": ["?"],
		"1002": ["other-?"],
	},
	"certd": {
		"1000": ["cert-*", "local-ca"],
		"1002": ["exact-cert"],
	},
}

allowed(i) if {
	authz.allow with input as i with data.aziot.principals as principals
	count(authz.deny) == 0 with input as i with data.aziot.principals as principals
}

denied(i) if not allowed(i)

call(svc, op, caller, resource) := {
	"input_version": 1,
	"service": svc,
	"operation": op,
	"api_version": "2020-09-01",
	"caller": caller,
	"resource": resource,
}

uid(u) := {"uid": u, "gid": u}

# ---------------------------------------------------------------------------- keyd

keyd(op, u, id) := call("keyd", op, uid(u), {"key_id": id})

keyd_id_ops := [
	"keyd.key.create", "keyd.key.import", "keyd.key.load",
	"keyd.keypair.create", "keyd.keypair.load", "keyd.keypair.move",
]

keyd_handle_ops := [
	"keyd.key.delete", "keyd.keypair.delete", "keyd.parameters.get",
	"keyd.derivedkey.create", "keyd.derivedkey.export",
	"keyd.sign", "keyd.encrypt", "keyd.decrypt",
]

# Row: UID 0 (root) is always authorized, for every operation and any key ID.
test_keyd_root_always_authorized if {
	every op in array.concat(keyd_id_ops, keyd_handle_ops) {
		allowed(keyd(op, 0, "anything"))
		allowed(keyd(op, 0, "handle-validation-key"))
	}
}

# Row: by-ID operations need a pattern of the caller's principal matching the key ID.
test_keyd_by_id_pattern_matches if {
	every op in keyd_id_ops {
		allowed(keyd(op, 1000, "dev-1"))
		allowed(keyd(op, 1000, "dev-")) # * matches the empty string
		allowed(keyd(op, 1000, "exact"))
		allowed(keyd(op, 1000, "extra")) # entries of one uid are unioned
		allowed(keyd(op, 1001, "é")) # ? is one character, not one byte
		allowed(keyd(op, 1002, "other-1"))
	}
}

test_keyd_by_id_pattern_does_not_match if {
	every op in keyd_id_ops {
		denied(keyd(op, 1000, "prod"))
		denied(keyd(op, 1000, "Exact")) # case-sensitive
		denied(keyd(op, 1000, "exact2")) # whole string
		denied(keyd(op, 1000, "xdev-1"))
		denied(keyd(op, 1001, "ab")) # ? is exactly one
		denied(keyd(op, 1001, ""))
		denied(keyd(op, 1002, "other-12"))
	}
}

test_keyd_by_id_no_principal if {
	every op in keyd_id_ops {
		denied(keyd(op, 1003, "dev-1"))
		denied(keyd(op, 65534, "x"))
	}
}

# Glob metacharacters other than * and ? are literal (unlike glob.match).
test_keyd_patterns_are_upstream_globs if {
	p := {"keyd": {"1000": ["[a]", "{b,c}"]}}
	authz.allow with input as keyd("keyd.key.load", 1000, "[a]") with data.aziot.principals as p
	not authz.allow with input as keyd("keyd.key.load", 1000, "a") with data.aziot.principals as p
	not authz.allow with input as keyd("keyd.key.load", 1000, "b") with data.aziot.principals as p
}

# Row: a move is authorized when both the source and the destination are; keyd asks once
# for each (request.from / request.to name both).
keyd_move(id) := object.union(keyd("keyd.keypair.move", 1000, id), {"request": {"from": "dev-src", "to": "prod-dst"}})

test_keyd_move_both_ends if {
	allowed(keyd_move("dev-src"))
	denied(keyd_move("prod-dst"))
}

# Row: operations that take a handle perform no UID check: any caller, any key.
test_keyd_handle_ops_need_no_principal if {
	every op in keyd_handle_ops {
		allowed(keyd(op, 1003, "dev-1"))
		allowed(keyd(op, 65534, "prod"))
		allowed(keyd(op, 1000, "prod"))
	}
}

# Fail closed: an operation outside the catalogue is denied, even to root.
test_keyd_unknown_operation_denied if {
	denied(keyd("keyd.key.rename", 0, "x"))
	denied(keyd("keyd.key.rename", 1000, "dev-1"))
}

# ---------------------------------------------------------------------------- certd

certd(op, u, id) := call("certd", op, uid(u), {"cert_id": id})

certd_writes := ["certd.cert.create", "certd.cert.import", "certd.cert.delete"]

test_certd_root_always_authorized if {
	every op in array.concat(certd_writes, ["certd.cert.get"]) {
		allowed(certd(op, 0, "anything"))
	}
}

test_certd_reads_by_every_caller if {
	allowed(certd("certd.cert.get", 1000, "cert-1"))
	allowed(certd("certd.cert.get", 1003, "prod"))
	allowed(certd("certd.cert.get", 65534, "x"))
}

test_certd_writes_need_a_matching_pattern if {
	every op in certd_writes {
		allowed(certd(op, 1000, "cert-1"))
		allowed(certd(op, 1002, "exact-cert"))
		denied(certd(op, 1000, "prod"))
		denied(certd(op, 1002, "exact-cert2"))
		denied(certd(op, 1003, "cert-1")) # no principal
		denied(certd(op, 1001, "c")) # keyd patterns do not grant certs
	}
}

# The issuer named in a create request is not checked.
test_certd_issuer_not_checked if {
	i := object.union(certd("certd.cert.create", 1000, "cert-leaf"), {"request": {"issuer_cert_id": "root-ca"}})
	allowed(i)
}

test_certd_unknown_operation_denied if {
	denied(certd("certd.cert.list", 0, "x"))
}

# ---------------------------------------------------------------------------- identityd

ident(op, caller, resource) := call("identityd", op, caller, resource)

local_root := {"uid": 0, "gid": 0}

local_root_explicit := {"uid": 0, "gid": 0, "principal": {"kind": "local_root"}}

daemon := {"uid": 1500, "gid": 1500, "principal": {"kind": "daemon", "name": "aziot-edged"}}

hp(name, idtype) := {"uid": 1600, "gid": 1600, "principal": {"kind": "host_process", "name": name, "idtype": idtype}}

unknown := {"uid": 1700, "gid": 1700}

unknown_explicit := {"uid": 1700, "gid": 1700, "principal": {"kind": "unknown"}}

# A root uid with a host-process principal entry is that principal, not LocalRoot.
root_hp := {"uid": 0, "gid": 0, "principal": {"kind": "host_process", "name": "rootmod", "idtype": ["module"]}}

full_access := [local_root, local_root_explicit, daemon]

no_access := [unknown, unknown_explicit]

all_callers := array.concat(array.concat(full_access, no_access), [
	hp("m1", ["device", "module", "local"]), hp("m1", []), root_hp,
])

# Row GetDevice: LocalRoot/Daemon yes; HostProcess only with idtype device; Unknown no.
test_identityd_get_device if {
	every c in full_access {
		allowed(ident("identityd.device.get", c, {}))
	}
	allowed(ident("identityd.device.get", hp("hp", ["device"]), {}))
	allowed(ident("identityd.device.get", hp("hp", ["module", "device"]), {}))
	denied(ident("identityd.device.get", hp("hp", ["module"]), {}))
	denied(ident("identityd.device.get", hp("hp", ["local"]), {}))
	denied(ident("identityd.device.get", hp("hp", []), {}))
	denied(ident("identityd.device.get", root_hp, {}))
	every c in no_access {
		denied(ident("identityd.device.get", c, {}))
	}
}

# Row GetModule(m): LocalRoot/Daemon yes (any m); HostProcess only m == p.name with idtype
# module or local; Unknown no.
test_identityd_get_module if {
	every c in full_access {
		allowed(ident("identityd.module.get", c, {"module_id": "anything"}))
	}
	allowed(ident("identityd.module.get", hp("m1", ["module"]), {"module_id": "m1"}))
	allowed(ident("identityd.module.get", hp("m1", ["local"]), {"module_id": "m1"}))
	allowed(ident("identityd.module.get", root_hp, {"module_id": "rootmod"}))
	denied(ident("identityd.module.get", hp("m1", ["module"]), {"module_id": "m2"}))
	denied(ident("identityd.module.get", hp("m1", ["device"]), {"module_id": "m1"}))
	denied(ident("identityd.module.get", hp("m1", []), {"module_id": "m1"}))
	denied(ident("identityd.module.get", root_hp, {"module_id": "other"}))
	every c in no_access {
		denied(ident("identityd.module.get", c, {"module_id": "m1"}))
	}
}

# The type query parameter plays no part: authorization comes before its validation.
test_identityd_get_module_any_type if {
	base := ident("identityd.module.get", hp("m1", ["module"]), {"module_id": "m1"})
	allowed(object.union(base, {"request": {"type": "local"}}))
	allowed(object.union(base, {"request": {"type": "bogus"}}))
	allowed(base) # type missing
}

# Rows list, create, update, delete module, and reprovision: LocalRoot/Daemon only.
test_identityd_module_management_and_reprovision if {
	ops := [
		"identityd.module.list", "identityd.module.create", "identityd.module.update",
		"identityd.module.delete", "identityd.device.reprovision",
	]
	every op in ops {
		every c in full_access {
			allowed(ident(op, c, {"module_id": "m1"}))
		}
		denied(ident(op, hp("m1", ["device", "module", "local"]), {"module_id": "m1"}))
		denied(ident(op, root_hp, {"module_id": "rootmod"}))
		every c in no_access {
			denied(ident(op, c, {"module_id": "m1"}))
		}
	}
}

# An unauthorized list with a bad type is denied (401 before the 400 of validation).
test_identityd_authorization_before_validation if {
	denied(object.union(ident("identityd.module.list", unknown, {}), {"request": {"type": "bogus"}}))
	allowed(object.union(ident("identityd.module.list", daemon, {}), {"request": {"type": "bogus"}}))
}

# Row trust bundle: every caller.
test_identityd_trust_bundle if {
	every c in all_callers {
		allowed(ident("identityd.trust_bundle.get", c, {}))
	}
}

# GET /identities/provisioning performs no caller check at all.
test_identityd_provisioning_info if {
	every c in all_callers {
		allowed(ident("identityd.provisioning.get", c, {}))
	}
}

# A kind outside the four is treated as unknown.
test_identityd_bad_kind_is_unknown if {
	c := {"uid": 0, "gid": 0, "principal": {"kind": "superuser"}}
	denied(ident("identityd.device.get", c, {}))
	allowed(ident("identityd.trust_bundle.get", c, {}))
}

test_identityd_unknown_operation_denied if {
	denied(ident("identityd.device.delete", local_root, {}))
}

# ---------------------------------------------------------------------------- tpmd

# tpmd has no caller authorization: every caller that can open the socket.
test_tpmd_socket_only if {
	every op in ["tpmd.tpm_keys.get", "tpmd.auth_key.import", "tpmd.auth_key.sign"] {
		allowed(call("tpmd", op, uid(0), {}))
		allowed(call("tpmd", op, uid(1600), {}))
		allowed(call("tpmd", op, uid(65534), {}))
	}
	denied(call("tpmd", "tpmd.auth_key.evict", uid(0), {}))
}

# ---------------------------------------------------------------------------- other

test_unknown_service_denied if {
	denied(call("moduled", "moduled.install", uid(0), {}))
	denied(call("", "", uid(0), {}))
}

test_default_denies_nothing if {
	count(authz.deny) == 0 with input as keyd("keyd.sign", 0, "x")
}
