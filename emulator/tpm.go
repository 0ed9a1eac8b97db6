package emulator

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
)

// TPM constants used to build the DPS authenticationKey blob (cloud-dps.md §6).
const (
	tpmAlgRSA       = 0x0001
	tpmAlgKeyedHash = 0x0008
	tpmAlgSHA256    = 0x000B
	tpmAlgNull      = 0x0010
	tpmAlgHMAC      = 0x0005
	tpmAlgAES       = 0x0006
	// sign | noDA | userWithAuth, as the real service's blob carries.
	hmacKeyAttributes = 0x00040440
)

// tpmRSAPublic is the part of an RSA TPMT_PUBLIC the wrapping needs.
type tpmRSAPublic struct {
	raw     []byte // marshalled TPMT_PUBLIC (no size prefix)
	nameAlg uint16
	symBits int // bits of the storage key's symmetric algorithm (AES-128 → 128)
	pub     *rsa.PublicKey
}

// name is nameAlg || H(TPMT_PUBLIC).
func (p *tpmRSAPublic) name() []byte {
	h := sha256.Sum256(p.raw)
	return append([]byte{byte(p.nameAlg >> 8), byte(p.nameAlg)}, h[:]...)
}

type tpmReader struct {
	b   []byte
	err error
}

func (r *tpmReader) u16() uint16 {
	if r.err != nil || len(r.b) < 2 {
		r.err = errors.New("truncated TPM structure")
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *tpmReader) u32() uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.err = errors.New("truncated TPM structure")
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *tpmReader) tpm2b() []byte {
	n := int(r.u16())
	if r.err != nil || len(r.b) < n {
		r.err = errors.New("truncated TPM2B")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// parseTPMRSAPublic decodes a TPM2B_PUBLIC (size prefix optional) holding an RSA storage
// key such as an EK or SRK.
func parseTPMRSAPublic(b []byte) (*tpmRSAPublic, error) {
	b = stripTPM2BSize(b)
	r := &tpmReader{b: b}
	typ := r.u16()
	nameAlg := r.u16()
	r.u32() // objectAttributes
	r.tpm2b()
	if r.err != nil {
		return nil, r.err
	}
	if typ != tpmAlgRSA {
		return nil, fmt.Errorf("only RSA storage keys are supported (type 0x%04x)", typ)
	}
	if nameAlg != tpmAlgSHA256 {
		return nil, fmt.Errorf("only SHA-256 name algorithm is supported (0x%04x)", nameAlg)
	}
	p := &tpmRSAPublic{nameAlg: nameAlg}
	if sym := r.u16(); sym != tpmAlgNull {
		p.symBits = int(r.u16())
		if mode := r.u16(); sym != tpmAlgAES || mode != 0x0043 {
			return nil, fmt.Errorf("unsupported storage symmetric algorithm 0x%04x/0x%04x", sym, mode)
		}
	}
	if scheme := r.u16(); scheme != tpmAlgNull {
		r.u16()
	}
	r.u16() // keyBits
	exp := r.u32()
	mod := r.tpm2b()
	if r.err != nil {
		return nil, fmt.Errorf("parse TPMT_PUBLIC: %w", r.err)
	}
	if exp == 0 {
		exp = 65537
	}
	if p.symBits == 0 {
		return nil, errors.New("storage key has no symmetric algorithm")
	}
	p.raw = b[:len(b)-len(r.b)]
	p.pub = &rsa.PublicKey{N: new(big.Int).SetBytes(mod), E: int(exp)}
	return p, nil
}

// kdfa is the TPM's SP800-108 counter-mode KDF with HMAC-SHA256.
func kdfa(key []byte, label string, contextU, contextV []byte, bits int) []byte {
	var out []byte
	for counter := uint32(1); len(out) < (bits+7)/8; counter++ {
		m := hmac.New(sha256.New, key)
		_ = binary.Write(m, binary.BigEndian, counter)
		m.Write([]byte(label))
		m.Write([]byte{0})
		m.Write(contextU)
		m.Write(contextV)
		_ = binary.Write(m, binary.BigEndian, uint32(bits))
		out = m.Sum(out)
	}
	return out[:(bits+7)/8]
}

func aesCFB(key, data []byte) ([]byte, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	out := make([]byte, len(data))
	//lint:ignore SA1019 TPM 2.0 mandates CFB with a zero IV for these wrappers.
	cipher.NewCFBEncrypter(blk, make([]byte, aes.BlockSize)).XORKeyStream(out, data)
	return out, nil
}

func tpm2b(b []byte) []byte {
	return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)
}

// outerWrap encrypts a seed to the storage key and protects data with the derived
// symmetric and integrity keys (TPM 2.0 Part 1 §24 and §23.3.2.3).
func outerWrap(to *tpmRSAPublic, label string, name, data []byte, random func(int) []byte) (wrapped, encSeed []byte, err error) {
	seed := random(32)
	encSeed, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, to.pub, seed, []byte(label+"\x00"))
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt seed (%s): %w", label, err)
	}
	symKey := kdfa(seed, "STORAGE", name, nil, to.symBits)
	enc, err := aesCFB(symKey, data)
	if err != nil {
		return nil, nil, err
	}
	m := hmac.New(sha256.New, kdfa(seed, "INTEGRITY", nil, nil, 256))
	m.Write(enc)
	m.Write(name)
	return append(tpm2b(m.Sum(nil)), enc...), encSeed, nil
}

// hmacKeyObject returns the marshalled TPMT_PUBLIC and TPMT_SENSITIVE of an HMAC-SHA256
// keyed-hash object holding key.
func hmacKeyObject(key []byte, random func(int) []byte) (pub, sens []byte) {
	obfuscation := random(32)
	unique := sha256.Sum256(append(append([]byte{}, obfuscation...), key...))
	pub = binary.BigEndian.AppendUint16(nil, tpmAlgKeyedHash)
	pub = binary.BigEndian.AppendUint16(pub, tpmAlgSHA256)
	pub = binary.BigEndian.AppendUint32(pub, hmacKeyAttributes)
	pub = append(pub, tpm2b(nil)...)                           // authPolicy
	pub = binary.BigEndian.AppendUint16(pub, tpmAlgHMAC)       // scheme
	pub = binary.BigEndian.AppendUint16(pub, tpmAlgSHA256)     // scheme hash
	pub = append(pub, tpm2b(unique[:])...)                     // unique
	sens = binary.BigEndian.AppendUint16(nil, tpmAlgKeyedHash) // sensitiveType
	sens = append(sens, tpm2b(nil)...)                         // authValue
	sens = append(sens, tpm2b(obfuscation)...)                 // seedValue
	sens = append(sens, tpm2b(key)...)                         // sensitive
	return pub, sens
}

// MakeTPMAuthenticationKey builds DPS's authenticationKey blob for a TPM identified by
// its EK and SRK public areas: the HMAC key is duplicated to the SRK with an inner
// AES-128-CFB wrapper whose key is delivered by a MakeCredential bound to the SRK's name
// and encrypted to the EK. Layout: TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET (EK),
// TPM2B_PRIVATE, TPM2B_ENCRYPTED_SECRET (SRK), TPM2B_PUBLIC, UINT16 0 (no extra data).
func MakeTPMAuthenticationKey(ekPub, srkPub, hmacKey []byte, random func(int) []byte) ([]byte, error) {
	ek, err := parseTPMRSAPublic(ekPub)
	if err != nil {
		return nil, fmt.Errorf("endorsement key: %w", err)
	}
	srk, err := parseTPMRSAPublic(srkPub)
	if err != nil {
		return nil, fmt.Errorf("storage root key: %w", err)
	}
	pub, sens := hmacKeyObject(hmacKey, random)
	h := sha256.Sum256(pub)
	objName := append([]byte{0x00, tpmAlgSHA256}, h[:]...)

	// Inner wrapper: integrity over the sensitive area, then AES-128-CFB under innerKey.
	innerKey := random(16)
	encSens := tpm2b(sens)
	ih := sha256.Sum256(append(append([]byte{}, encSens...), objName...))
	inner, err := aesCFB(innerKey, append(tpm2b(ih[:]), encSens...))
	if err != nil {
		return nil, err
	}
	dup, dupSeed, err := outerWrap(srk, "DUPLICATE", objName, inner, random)
	if err != nil {
		return nil, err
	}
	// MakeCredential: the credential (innerKey) is bound to the SRK's name.
	idObject, credSeed, err := outerWrap(ek, "IDENTITY", srk.name(), tpm2b(innerKey), random)
	if err != nil {
		return nil, err
	}
	var blob []byte
	blob = append(blob, tpm2b(idObject)...)
	blob = append(blob, tpm2b(credSeed)...)
	blob = append(blob, tpm2b(dup)...)
	blob = append(blob, tpm2b(dupSeed)...)
	blob = append(blob, tpm2b(pub)...)
	blob = append(blob, 0, 0)
	return blob, nil
}

// SplitTPMAuthenticationKey splits a blob into its six parts (each still TPM2B-prefixed
// except the last length-prefixed extra data), for tests and tools.
func SplitTPMAuthenticationKey(blob []byte) ([][]byte, error) {
	var parts [][]byte
	for i := 0; i < 6; i++ {
		if len(blob) < 2 {
			return nil, fmt.Errorf("blob truncated at part %d", i+1)
		}
		n := int(binary.BigEndian.Uint16(blob)) + 2
		if len(blob) < n {
			return nil, fmt.Errorf("blob truncated in part %d", i+1)
		}
		parts = append(parts, blob[:n])
		blob = blob[n:]
	}
	if len(blob) != 0 {
		return nil, errors.New("trailing bytes after the blob")
	}
	return parts, nil
}
