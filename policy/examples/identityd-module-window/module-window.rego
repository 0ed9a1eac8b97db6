# identityd: no module identities are created outside the maintenance window.
package aziot.authz

import rego.v1

module_window_minutes(hhmm) := (to_number(parts[0]) * 60) + to_number(parts[1]) if parts := split(hhmm, ":")

module_window_open if {
	[h, m, _] := time.clock([time.now_ns(), data.module_window.timezone])
	now := (h * 60) + m
	now >= module_window_minutes(data.module_window.start)
	now < module_window_minutes(data.module_window.end)
}

deny contains "module identities are created only in the maintenance window" if {
	input.operation == "identityd.module.create"
	not module_window_open
}
