# uid 1001 is cut off during an incident: every request of every service, whatever the
# principals of the configs grant. Delete the file to end the incident.
package aziot.authz

import rego.v1

deny contains "incident 2024-117: uid 1001 is cut off" if input.caller.uid == 1001
