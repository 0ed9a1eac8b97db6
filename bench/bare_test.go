package bench

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotbroker/aziot/internal/testenv"
)

// bareServer is a running bench/cmd/bare and the keys it printed.
type bareServer struct {
	socket   string
	hmacKey  []byte
	ecdsaPub *ecdsa.PublicKey
}

// startBare builds bench/cmd/bare (go's build cache makes repeats cheap) and runs it in
// its own process, as keyd runs in its own, until the test ends.
func startBare(t testing.TB) *bareServer {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bare")
	build := exec.Command("go", "build", "-o", bin, "./bench/cmd/bare")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build bare: %v\n%s", err, out)
	}
	s := &bareServer{socket: filepath.Join(dir, "bare.sock")}
	cmd := exec.Command(bin, "-socket", s.socket)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := make(chan []byte, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadBytes('\n')
		lines <- line
	}()
	var line []byte
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatalf("bare printed nothing in 30 s: %s", stderr.String())
	}
	var ready struct {
		HMACKey  []byte `json:"hmacKey"`
		ECDSAPub []byte `json:"ecdsaPub"`
	}
	if err := json.Unmarshal(line, &ready); err != nil {
		t.Fatalf("bare's ready line %q: %v (stderr: %s)", line, err, stderr.String())
	}
	pub, err := x509.ParsePKIXPublicKey(ready.ECDSAPub)
	if err != nil {
		t.Fatal(err)
	}
	var ok bool
	if s.ecdsaPub, ok = pub.(*ecdsa.PublicKey); !ok {
		t.Fatalf("bare's public key is a %T", pub)
	}
	s.hmacKey = ready.HMACKey
	return s
}

// Bodies of the benchmark's requests, as sdk/keys encodes them.
func signBody(handle, alg, param string, value []byte) []byte {
	body, _ := json.Marshal(map[string]any{"keyHandle": handle, "algorithm": alg, "parameters": map[string][]byte{param: value}})
	return body
}

func encryptBody(handle string, iv, aad, plaintext []byte) []byte {
	body, _ := json.Marshal(map[string]any{"keyHandle": handle, "algorithm": "AEAD",
		"parameters": map[string][]byte{"iv": iv, "aad": aad}, "plaintext": plaintext})
	return body
}

// The baseline is only a floor if it does the work keyd does: its HMAC is the HMAC of the
// message under its key, its ECDSA signature verifies with its public key, and its AEAD
// ciphertext opens. Then a short run of the benchmark's harness against it, in both
// connection modes, proves the client code before `make bench` spends minutes on it.
func TestBareServer(t *testing.T) {
	s := startBare(t)
	message := []byte("iothub.example.net%2Fdevices%2Fbench-device\n1767225600")
	digest := sha256.Sum256(message)
	iv, aad, plaintext := bytes.Repeat([]byte{1}, 12), []byte("aad"), bytes.Repeat([]byte{2}, 32)
	var got []byte
	capture := func(answer []byte) error { got = answer; return nil }
	client := newSocketClient(s.socket, true)
	defer client.CloseIdleConnections()

	if err := (call{"/sign", signBody("any handle", "HMAC-SHA256", "message", message), capture}).do(client); err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, s.hmacKey)
	mac.Write(message)
	if sig, err := signatureOf(got); err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		t.Errorf("HMAC answer %s (%v) is not HMAC-SHA256 of the message", got, err)
	}

	if err := (call{"/sign", signBody("any handle", "ECDSA", "digest", digest[:]), capture}).do(client); err != nil {
		t.Fatal(err)
	}
	if sig, err := signatureOf(got); err != nil || !ecdsa.VerifyASN1(s.ecdsaPub, digest[:], sig) {
		t.Errorf("ECDSA answer %s (%v) does not verify", got, err)
	}

	if err := (call{"/encrypt", encryptBody("any handle", iv, aad, plaintext), capture}).do(client); err != nil {
		t.Fatal(err)
	}
	var enc struct {
		Ciphertext []byte `json:"ciphertext"`
	}
	json.Unmarshal(got, &enc)
	block, _ := aes.NewCipher(s.hmacKey)
	gcm, _ := cipher.NewGCMWithNonceSize(block, len(iv))
	if len(enc.Ciphertext) < 1 || enc.Ciphertext[0] != 0x02 {
		t.Errorf("AEAD answer %s lacks the version-2 byte", got)
	} else if pt, err := gcm.Open(nil, iv, enc.Ciphertext[1:], aad); err != nil || !bytes.Equal(pt, plaintext) {
		t.Errorf("AEAD answer %s does not open: %v", got, err)
	}

	for _, k := range []call{
		{"/sign", signBody("h", "HMAC-SHA256", "message", message), checkHMAC},
		{"/sign", signBody("h", "ECDSA", "digest", digest[:]), checkECDSA},
		{"/encrypt", encryptBody("h", iv, aad, plaintext), checkCiphertext(1 + len(plaintext) + 16)},
	} {
		for _, keepAlive := range []bool{true, false} {
			// drive fails on a failed check and when no request completed.
			if _, err := drive(s.socket, 2, keepAlive, 50*time.Millisecond, k); err != nil {
				t.Errorf("%s keep-alive=%v: %v", k.path, keepAlive, err)
			}
		}
	}
	if _, err := drive(s.socket, 1, true, 10*time.Millisecond, call{"/sign", signBody("h", "RSA", "message", message), checkHMAC}); err == nil {
		t.Error("an unknown algorithm's error answer passed the harness's check")
	}
}
