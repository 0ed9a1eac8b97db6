// Command bare is the floor keyd is measured against in `make bench`: a plain net/http
// server on a Unix socket that decodes the same JSON requests as keyd's /sign and
// /encrypt, does the same crypto with keys held in memory, and encodes the same answers.
// It has no authorization, no handle validation, no policy and no key store: whatever keyd
// costs beyond it is the broker's own overhead.
//
// Usage: bare -socket PATH. Once listening it prints one JSON line on stdout with the
// keys it holds (so that a test can verify its answers) and serves until killed.
package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
)

// Request and answer bodies, as keyd's API has them (sdk/keys/wire.go). The handle is
// decoded, as keyd must, and ignored.
type (
	signRequest struct {
		KeyHandle  string `json:"keyHandle"`
		Algorithm  string `json:"algorithm"`
		Parameters struct {
			Message []byte `json:"message"`
			Digest  []byte `json:"digest"`
		} `json:"parameters"`
	}
	encryptRequest struct {
		KeyHandle  string `json:"keyHandle"`
		Algorithm  string `json:"algorithm"`
		Parameters struct {
			IV  []byte `json:"iv"`
			AAD []byte `json:"aad"`
		} `json:"parameters"`
		Plaintext []byte `json:"plaintext"`
	}
	signResponse struct {
		Signature []byte `json:"signature"`
	}
	encryptResponse struct {
		Ciphertext []byte `json:"ciphertext"`
	}
)

// Ready is the line printed once the socket listens.
type Ready struct {
	HMACKey  []byte `json:"hmacKey"`  // HMAC-SHA256 and AEAD (AES-256-GCM) key
	ECDSAPub []byte `json:"ecdsaPub"` // PKIX DER of the P-256 signing key
}

// aeadV2 is the version byte keyd puts before ciphertext||tag (upstream's layout).
const aeadV2 = 0x02

type server struct {
	key []byte
	ec  *ecdsa.PrivateKey
}

func main() {
	socket := flag.String("socket", "", "Unix socket to listen on")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "bare: -socket is required")
		os.Exit(2)
	}
	s := &server{key: make([]byte, 32)}
	rand.Read(s.key)
	var err error
	if s.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&s.ec.PublicKey)
	if err != nil {
		fatal(err)
	}
	l, err := net.Listen("unix", *socket)
	if err != nil {
		fatal(err)
	}
	line, _ := json.Marshal(Ready{HMACKey: s.key, ECDSAPub: pub})
	fmt.Printf("%s\n", line)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /sign", s.sign)
	mux.HandleFunc("POST /encrypt", s.encrypt)
	fatal((&http.Server{Handler: mux}).Serve(l))
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bare:", err)
	os.Exit(1)
}

func (s *server) sign(w http.ResponseWriter, r *http.Request) {
	var req signRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var sig []byte
	switch req.Algorithm {
	case "HMAC-SHA256":
		mac := hmac.New(sha256.New, s.key)
		mac.Write(req.Parameters.Message)
		sig = mac.Sum(nil)
	case "ECDSA":
		var err error
		if sig, err = ecdsa.SignASN1(rand.Reader, s.ec, req.Parameters.Digest); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	default:
		http.Error(w, "unknown algorithm", http.StatusBadRequest)
		return
	}
	reply(w, signResponse{Signature: sig})
}

func (s *server) encrypt(w http.ResponseWriter, r *http.Request) {
	var req encryptRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if req.Algorithm != "AEAD" || len(req.Parameters.IV) == 0 {
		http.Error(w, "AEAD with an IV only", http.StatusBadRequest)
		return
	}
	// A cipher per request, as keyd builds one per request from the key it loads.
	block, err := aes.NewCipher(s.key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, len(req.Parameters.IV))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out := make([]byte, 1, 1+len(req.Plaintext)+gcm.Overhead())
	out[0] = aeadV2
	reply(w, encryptResponse{Ciphertext: gcm.Seal(out, req.Parameters.IV, req.Plaintext, req.Parameters.AAD)})
}

func reply(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}
