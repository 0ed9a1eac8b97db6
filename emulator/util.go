package emulator

import (
	cryptorand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

const jsonContentType = "application/json; charset=utf-8"

func pathUnescape(s string) (string, error) { return url.PathUnescape(s) }

// writeJSON writes v with the JSON content type every JSON answer must carry.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", jsonContentType)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// randomBytes draws from the seeded generator (deterministic mode); keys made here are
// test material, not secrets.
func (e *Emulator) randomBytes(n int) []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.randomBytesLocked(n)
}

func (e *Emulator) randomBytesLocked(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(e.rng.Uint32())
	}
	return b
}

// randomKey returns a base64 32-byte key.
func (e *Emulator) randomKey() string { return base64.StdEncoding.EncodeToString(e.randomBytes(32)) }

func (e *Emulator) randomKeyLocked() string {
	return base64.StdEncoding.EncodeToString(e.randomBytesLocked(32))
}

// uuidLocked returns a random (seeded) version-4 UUID string.
func (e *Emulator) uuidLocked() string {
	b := e.randomBytesLocked(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// dpsTime formats like the real service: RFC 3339 with 7 fractional digits and Z.
func dpsTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.0000000Z") }

// trackingID is a random UUID for error bodies. It uses crypto/rand, not the seeded
// generator, so error paths never need the emulator's lock.
func trackingID() string {
	b := make([]byte, 16)
	_, _ = cryptorand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
