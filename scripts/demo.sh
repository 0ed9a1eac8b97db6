#!/usr/bin/env bash
# make demo: start keyd and certd in user space (aziotd dev), create key pairs, sign,
# issue a local CA and a device certificate through the Go SDK, verify with openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=$(mktemp -d /tmp/aziot-demo.XXXXXX)
mkdir -p "$STATE/etc/certd/config.d"
cat > "$STATE/etc/certd/config.d/50-demo.toml" <<'TOML'
[cert_issuance.demo-ca]
method = "self_signed"
expiry_days = 365

[cert_issuance.demo-device]
method = "local_ca"
common_name = "demo-device"

[cert_issuance.local_ca]
cert = "demo-ca"
pk = "demo-ca"
TOML
echo "state directory: $STATE"
bin/aziotd dev --state-dir "$STATE" > "$STATE/aziotd.out" 2> "$STATE/aziotd.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q '^ready$' "$STATE/aziotd.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready$' "$STATE/aziotd.out" || { cat "$STATE/aziotd.log"; exit 1; }
echo "aziotd dev is ready: $STATE/run/keyd.sock, $STATE/run/certd.sock"

go run ./examples/demo -run "$STATE/run" -out "$STATE"
openssl verify -CAfile "$STATE/ca.pem" "$STATE/device.pem"
openssl x509 -in "$STATE/device.pem" -noout -subject -issuer -enddate
echo "keys stored by keyd:"; ls "$STATE/lib/keyd/keys"
echo "demo done"
