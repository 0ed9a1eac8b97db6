# Only members of group iot-apps may have certificates issued (POST /certificates).
# A policy sees numeric gids (input.caller.gid and the supplementary input.caller.groups);
# the gid of iot-apps comes from iot-apps.json beside this file, so the rule reads as the
# group's name and the number lives in one place.
package aziot.authz

import rego.v1

in_iot_apps if data.groups["iot-apps"] in input.caller.groups

in_iot_apps if input.caller.gid == data.groups["iot-apps"]

deny contains "certificates are issued only to members of iot-apps" if {
	input.operation == "certd.cert.create"
	not in_iot_apps
}
