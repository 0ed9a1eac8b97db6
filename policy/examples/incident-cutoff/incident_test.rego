package aziot.authz_test.incident

import rego.v1

import data.aziot.authz

test_uid_1001_cut_off_everywhere if {
	every i in [
		{"service": "keyd", "operation": "keyd.sign", "caller": {"uid": 1001, "gid": 1001}, "resource": {"key_id": "k", "key_kind": "key"}},
		{"service": "certd", "operation": "certd.cert.get", "caller": {"uid": 1001, "gid": 1001}, "resource": {"cert_id": "c"}},
		{"service": "identityd", "operation": "identityd.trust_bundle.get", "caller": {"uid": 1001, "gid": 1001}},
	] {
		authz.deny["incident 2024-117: uid 1001 is cut off"] with input as i
	}
}

test_other_uids_unaffected if {
	count(authz.deny) == 0 with input as {"service": "keyd", "operation": "keyd.sign", "caller": {"uid": 1002, "gid": 1001}}
}
