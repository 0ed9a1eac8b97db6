# Only /usr/bin/edge-agent may sign with device-id.
#
# keyd.sign carries the key ID taken from the validated handle (for a derived handle,
# its base key's ID), so this also covers keys derived from device-id.
# Write the test positively ("signed by the agent"): when the executable cannot be
# known (input.caller.exe absent), `input.caller.exe != "..."` would be undefined and
# the deny would not fire. `not signed_by_edge_agent` fails closed.
# The executable is defence in depth, not a boundary: docs/policy.md, "Caller facts".
package aziot.authz

import rego.v1

edge_agent := "/usr/bin/edge-agent"

signed_by_edge_agent if input.caller.exe == edge_agent

deny contains "only /usr/bin/edge-agent may sign with device-id" if {
	input.operation == "keyd.sign"
	input.resource.key_id == "device-id"
	not signed_by_edge_agent
}
