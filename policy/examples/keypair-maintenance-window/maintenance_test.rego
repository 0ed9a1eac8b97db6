package aziot.authz_test.keypair_window

import rego.v1

import data.aziot.authz

# The tests give their own window, so that changing maintenance.json does not break them.
window := {"timezone": "UTC", "start": "02:00", "end": "04:00"}

create := {"service": "keyd", "operation": "keyd.keypair.create", "caller": {"uid": 0, "gid": 0}, "resource": {"key_id": "device-id"}}

at(hhmm) := time.parse_rfc3339_ns(sprintf("2024-05-01T%s:00Z", [hhmm]))

denied_at(i, hhmm, w) if {
	authz.deny["key pairs are created only in the maintenance window"] with input as i with time.now_ns as at(hhmm) with data.maintenance as w
}

allowed_at(i, hhmm, w) if {
	count(authz.deny) == 0 with input as i with time.now_ns as at(hhmm) with data.maintenance as w
}

test_inside_window if {
	allowed_at(create, "02:30", window)
	allowed_at(create, "02:00", window)
}

test_outside_window if {
	denied_at(create, "04:00", window)
	denied_at(create, "13:15", window)
}

test_window_past_midnight if {
	w := {"timezone": "UTC", "start": "23:00", "end": "01:00"}
	allowed_at(create, "23:30", w)
	allowed_at(create, "00:30", w)
	denied_at(create, "01:30", w)
}

test_other_operations_unaffected if {
	allowed_at(object.union(create, {"operation": "keyd.keypair.load"}), "13:15", window)
}
