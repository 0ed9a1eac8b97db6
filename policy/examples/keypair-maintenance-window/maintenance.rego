# No key pair is created outside the maintenance window (maintenance.json: "HH:MM" times
# in a time zone; a window may wrap past midnight). The policy reads the clock, so the
# service does not cache its decisions (docs/policy.md, "Decision cache").
package aziot.authz

import rego.v1

minutes(hhmm) := (to_number(parts[0]) * 60) + to_number(parts[1]) if parts := split(hhmm, ":")

now_minutes := (h * 60) + m if [h, m, _] := time.clock([time.now_ns(), data.maintenance.timezone])

window_start := minutes(data.maintenance.start)

window_end := minutes(data.maintenance.end)

in_maintenance_window if {
	window_start <= window_end
	now_minutes >= window_start
	now_minutes < window_end
}

# A window past midnight, e.g. 23:00-01:00.
in_maintenance_window if {
	window_start > window_end
	now_minutes >= window_start
}

in_maintenance_window if {
	window_start > window_end
	now_minutes < window_end
}

deny contains "key pairs are created only in the maintenance window" if {
	input.operation == "keyd.keypair.create"
	not in_maintenance_window
}
