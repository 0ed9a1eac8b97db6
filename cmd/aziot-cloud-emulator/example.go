package main

// exampleConfig is printed by -example and documented in docs/emulator.md.
const exampleConfig = `# aziot-cloud-emulator configuration
pki_dir = "/tmp/aziot-emulator/pki"      # root CA and CAs are generated here once and reused
state_dir = "/tmp/aziot-emulator/state"  # optional: cloud state survives restarts
id_scopes = ["0ne00000A0A"]
retry_after = 3                          # seconds in DPS Retry-After
operation_ttl = "1h"

[listeners]
dps = "127.0.0.1:8443"
est = "127.0.0.1:9443"
admin = "127.0.0.1:9444"                 # optional HTTPS control API
admin_token = "change-me"

[[hubs]]
name = "localhost:18443"                 # what DPS returns as assignedHub
addr = "127.0.0.1:18443"
aliases = ["127.0.0.1:18443"]
[hubs.policies]
iothubowner = "aW90aHVib3duZXIta2V5LWZvci10aGUtZW11bGF0b3IhIQ=="

[[enrollments]]
attestation = "symmetricKey"             # symmetricKey | x509 | tpm
id = "device-01"
primary_key = "dGhpcy1pcy1hLXRlc3Qta2V5LWZvci1kcHMtc2FzLXRva2Vucw=="

[[enrollments]]
attestation = "symmetricKey"
group = true
id = "group-a"
primary_key = "dGhpcy1pcy1hLXRlc3QtZ3JvdXAtZW5yb2xsbWVudC1rZXktZm9yLWRwcy14eXo="
iot_edge = true
reprovision = "migrate"                  # migrate | reset | never

# [[enrollments]]
# attestation = "x509"
# group = true
# id = "x509-group"
# signing_cert = "/path/to/group-ca.pem"  # PEM text or a file path

[[est_labels]]
label = ""                               # /.well-known/est/...
policy = "basic_or_cert"                 # basic | cert | basic_or_cert | basic_and_cert | none
validity = "720h"
[est_labels.users]
estuser = "estpass"

[switches]
disabled_enrollment_401 = false
hub_disabled_device_404 = false
module_create_existing_ok = false
module_update_absent_404 = false
allow_csr_any_api_version = false
hub_missing_api_version_ok = false

# [[faults]]
# kind = "throttle"
# endpoint = "dps"
# next = 1
# retry_after = 5
`
