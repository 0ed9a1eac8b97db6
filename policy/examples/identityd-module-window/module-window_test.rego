package aziot.authz_test.module_window

import rego.v1

import data.aziot.authz

window := {"timezone": "Europe/Berlin", "start": "01:00", "end": "05:00"}

create := {
	"service": "identityd", "operation": "identityd.module.create", "api_version": "2022-08-01",
	"caller": {"uid": 1500, "gid": 1500, "principal": {"kind": "daemon", "name": "aziot-edged"}},
	"resource": {"module_id": "m1"}, "request": {"type": "aziot"},
}

# 01:30 UTC is 03:30 in Berlin in May (CEST): inside.
test_daemon_creates_in_window if {
	t := time.parse_rfc3339_ns("2024-05-01T01:30:00Z")
	authz.allow with input as create with time.now_ns as t with data.module_window as window
	count(authz.deny) == 0 with input as create with time.now_ns as t with data.module_window as window
}

# 04:30 UTC is 06:30 in Berlin: outside, even for the daemon and root.
test_outside_window_refused if {
	t := time.parse_rfc3339_ns("2024-05-01T04:30:00Z")
	msg := "module identities are created only in the maintenance window"
	authz.deny[msg] with input as create with time.now_ns as t with data.module_window as window
	root := object.union(create, {"caller": {"uid": 0, "gid": 0}})
	authz.deny[msg] with input as root with time.now_ns as t with data.module_window as window
}

test_reads_unaffected if {
	get := object.union(create, {"operation": "identityd.module.get"})
	t := time.parse_rfc3339_ns("2024-05-01T12:00:00Z")
	count(authz.deny) == 0 with input as get with time.now_ns as t with data.module_window as window
}
