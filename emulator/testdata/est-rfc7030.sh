#!/usr/bin/env bash
# RFC 7030 client written with curl + openssl only, run against the emulator's EST
# listener by TestESTWithCurlAndOpenSSL. Inputs (environment): EST_BASE (https://host:port/.well-known/est),
# ROOT_CA, BOOT_CERT, BOOT_KEY, WORK. Every step exits non-zero on a mismatch.
set -euo pipefail
cd "$WORK"
c() { curl -sS --max-time 20 --cacert "$ROOT_CA" "$@"; }
b64dec() { tr -d '\r\n' | base64 -d; }

# cacerts: 200, certs-only content type, base64 DER PKCS#7 with the CA chain.
c -D cacerts.h -o cacerts.b64 "$EST_BASE/cacerts"
grep -qi '^content-type: application/pkcs7-mime; smime-type=certs-only' cacerts.h
b64dec < cacerts.b64 > cacerts.der
openssl pkcs7 -inform DER -in cacerts.der -print_certs -out chain.pem
[ "$(grep -c 'BEGIN CERTIFICATE' chain.pem)" -ge 2 ]

enroll() { # op csr-file out-file curl-auth-args...
  local op=$1 csr=$2 out=$3; shift 3
  base64 -w 64 "$csr" > "$csr.b64"
  local code
  code=$(c -o "$out.b64" -w '%{http_code}' -H 'Content-Type: application/pkcs10' \
    -H 'Content-Transfer-Encoding: base64' --data-binary @"$csr.b64" "$@" "$EST_BASE/$op")
  echo "$code"
  if [ "$code" = 200 ]; then
    b64dec < "$out.b64" > "$out.der"
    openssl pkcs7 -inform DER -in "$out.der" -print_certs -out "$out"
  fi
}
newcsr() { # name cn [extra openssl req args]
  local name=$1 cn=$2; shift 2
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name.key" \
    -subj "/CN=$cn" -outform DER -out "$name.csr" "$@" 2>/dev/null
}

# simpleenroll with HTTP Basic.
newcsr dev curl-device
[ "$(enroll simpleenroll dev.csr dev.pem -u estuser:estpass)" = 200 ]
openssl verify -CAfile "$ROOT_CA" -untrusted chain.pem dev.pem >/dev/null
openssl x509 -in dev.pem -noout -subject | grep -q 'CN *= *curl-device'
# ... and without credentials or with a wrong password: 401.
[ "$(enroll simpleenroll dev.csr nope.pem)" = 401 ]
[ "$(enroll simpleenroll dev.csr nope.pem -u estuser:wrong)" = 401 ]

# simpleenroll with client-certificate auth: the bootstrap certificate enrolls an EST
# identity (CSR asking for clientAuth).
newcsr id curl-identity -addext extendedKeyUsage=clientAuth
[ "$(enroll simpleenroll id.csr id.pem --cert "$BOOT_CERT" --key "$BOOT_KEY")" = 200 ]
openssl verify -CAfile "$ROOT_CA" -untrusted chain.pem id.pem >/dev/null

# simplereenroll with the EST identity as client certificate and the same subject.
newcsr id2 curl-identity -addext extendedKeyUsage=clientAuth
[ "$(enroll simplereenroll id2.csr id2.pem --cert id.pem --key id.key)" = 200 ]
[ "$(openssl x509 -in id2.pem -noout -subject)" = "$(openssl x509 -in id.pem -noout -subject)" ]
# ... with another subject: 400.
newcsr other curl-other -addext extendedKeyUsage=clientAuth
[ "$(enroll simplereenroll other.csr nope.pem --cert id.pem --key id.key)" = 400 ]
echo "est-rfc7030: all steps passed"
