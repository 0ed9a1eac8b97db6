package emulator

import (
	"encoding/json"
	"testing"
)

// FuzzDPSBody feeds arbitrary register bodies through the decoders the DPS handler uses:
// JSON, the base64 CSR, and the TPM public areas and blob splitting.
func FuzzDPSBody(f *testing.F) {
	f.Add([]byte(`{"registrationId":"device-01"}`))
	f.Add([]byte(`{"registrationId":"d","tpm":{"endorsementKey":"AToAAQALAAMAsgAg","storageRootKey":"ARoAAQALAAMEcgAA"},"csr":"MIIB"}`))
	f.Add([]byte(`{"registrationId":"d","payload":{"a":[1,2,{"b":null}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var body registerBody
		if json.Unmarshal(b, &body) != nil {
			return
		}
		if body.CSR != "" {
			_, _ = parseCSRBase64(body.CSR)
		}
		if body.TPM != nil {
			_, _ = parseTPMRSAPublic([]byte(body.TPM.EndorsementKey))
			_, _ = SplitTPMAuthenticationKey([]byte(body.TPM.StorageRootKey))
		}
	})
}
