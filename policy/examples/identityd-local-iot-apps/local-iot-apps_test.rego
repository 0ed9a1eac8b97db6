package aziot.authz_test.local_iot_apps

import rego.v1

import data.aziot.authz

local_get(groups) := {
	"service": "identityd", "operation": "identityd.module.get", "api_version": "2022-08-01",
	"caller": {"uid": 1600, "gid": 1600, "groups": groups, "principal": {"kind": "host_process", "name": "m1", "idtype": ["local"]}},
	"resource": {"module_id": "m1"}, "request": {"type": "local"},
}

test_member_gets_local_identity if {
	authz.allow with input as local_get([2001])
	count(authz.deny) == 0 with input as local_get([2001])
}

test_non_member_refused if {
	authz.deny["local identities are issued only to principals in group iot-apps"] with input as local_get([27])
	authz.deny["local identities are issued only to principals in group iot-apps"] with input as local_get([])
}

test_create_local_refused_for_non_member if {
	i := {
		"service": "identityd", "operation": "identityd.module.create",
		"caller": {"uid": 0, "gid": 0, "groups": [0]}, "resource": {"module_id": "m2"},
		"request": {"type": "local", "local_id_opts": {"type": "x509", "attributes": "client"}},
	}
	authz.deny["local identities are issued only to principals in group iot-apps"] with input as i
}

test_aziot_identities_unaffected if {
	i := object.union(local_get([27]), {"request": {"type": "aziot"}})
	count(authz.deny) == 0 with input as i
	authz.allow with input as i
}
