package aziot.authz_test.iot_apps_certs

import rego.v1

import data.aziot.authz

issue(caller) := {"service": "certd", "operation": "certd.cert.create", "caller": caller, "resource": {"cert_id": "app-1"}}

test_member_by_supplementary_group if {
	count(authz.deny) == 0 with input as issue({"uid": 1003, "gid": 1003, "groups": [27, 2001]})
}

test_member_by_primary_group if {
	count(authz.deny) == 0 with input as issue({"uid": 1003, "gid": 2001})
}

test_non_member_refused if {
	authz.deny["certificates are issued only to members of iot-apps"] with input as issue({"uid": 1003, "gid": 1003, "groups": [27]})
}

test_unknown_groups_refused if {
	authz.deny["certificates are issued only to members of iot-apps"] with input as issue({"uid": 1003, "gid": 1003})
}

test_reads_unaffected if {
	count(authz.deny) == 0 with input as {"service": "certd", "operation": "certd.cert.get", "caller": {"uid": 1003, "gid": 1003}}
}
