# identityd: local identities only for principals in group iot-apps. A local identity is
# requested with type=local (GET /identities/modules/{id}?type=local, or POST
# /identities/modules with "type": "local"); the caller's groups are its process's.
package aziot.authz

import rego.v1

local_ops := {"identityd.module.get", "identityd.module.create"}

caller_in_iot_apps if data.groups["iot-apps"] in input.caller.groups

caller_in_iot_apps if input.caller.gid == data.groups["iot-apps"]

deny contains "local identities are issued only to principals in group iot-apps" if {
	local_ops[input.operation]
	input.request.type == "local"
	not caller_in_iot_apps
}
