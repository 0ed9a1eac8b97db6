# The default policy: it reproduces upstream 1.6.0's authorization exactly
# (api-keys.md §2, api-certs.md §3). Custom policies in policy.d add `allow` and `deny`
# rules to this same package; a request passes when allow is true and deny is empty.
package aziot.authz

import rego.v1

default allow := false

# Root is always authorized.
allow if input.caller.uid == 0

# keyd checks the caller only on operations that name a key by ID; every operation that
# takes a key handle is authorized by possession of the handle.
keyd_by_id := {
	"keyd.key.create", "keyd.key.import", "keyd.key.load",
	"keyd.keypair.create", "keyd.keypair.load", "keyd.keypair.move",
}

allow if {
	input.service == "keyd"
	not keyd_by_id[input.operation]
}

allow if {
	input.service == "keyd"
	keyd_by_id[input.operation]
	some pattern in data.aziot.principals.keyd[format_int(input.caller.uid, 10)]
	aziot.glob_match(pattern, input.resource.key_id)
}

# certd lets every caller read; writes need a pattern matching the target cert ID.
certd_writes := {"certd.cert.create", "certd.cert.import", "certd.cert.delete"}

allow if {
	input.service == "certd"
	not certd_writes[input.operation]
}

allow if {
	input.service == "certd"
	certd_writes[input.operation]
	some pattern in data.aziot.principals.certd[format_int(input.caller.uid, 10)]
	aziot.glob_match(pattern, input.resource.cert_id)
}

# tpmd has no caller authorization upstream: the socket's permissions are the gate.
allow if input.service == "tpmd"

# deny is a set of reasons; the default policy adds none.
deny contains reason if {
	false
	reason := ""
}
