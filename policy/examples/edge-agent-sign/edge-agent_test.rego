package aziot.authz_test.edge_agent

import rego.v1

import data.aziot.authz

sign(key_id, exe) := {
	"service": "keyd", "operation": "keyd.sign", "api_version": "2021-05-01",
	"caller": object.union({"uid": 1000, "gid": 1000}, exe),
	"resource": {"key_id": key_id, "key_kind": "key"},
	"request": {"algorithm": "HMAC-SHA256"},
}

test_edge_agent_signs_with_device_id if {
	authz.allow with input as sign("device-id", {"exe": "/usr/bin/edge-agent"})
	count(authz.deny) == 0 with input as sign("device-id", {"exe": "/usr/bin/edge-agent"})
}

test_other_binary_cannot if {
	authz.deny["only /usr/bin/edge-agent may sign with device-id"] with input as sign("device-id", {"exe": "/usr/bin/python3"})
}

test_unknown_executable_cannot if {
	authz.deny["only /usr/bin/edge-agent may sign with device-id"] with input as sign("device-id", {})
}

test_other_keys_unaffected if {
	count(authz.deny) == 0 with input as sign("module-key", {"exe": "/usr/bin/python3"})
}
