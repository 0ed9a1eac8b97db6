package keys

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
)

// DigestInfo prefixes of RFC 8017 §9.2, note 1.
var digestInfoPrefix = map[crypto.Hash][]byte{
	crypto.SHA1:   {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// emsaPKCS1v15 builds the modulus-sized EMSA-PKCS1-v1_5 block (RFC 8017 §9.2).
func emsaPKCS1v15(pub *rsa.PublicKey, digest []byte, hash crypto.Hash) ([]byte, error) {
	var t []byte
	if hash == 0 {
		t = digest
	} else {
		prefix, ok := digestInfoPrefix[hash]
		if !ok {
			return nil, fmt.Errorf("unsupported hash %v", hash)
		}
		if len(digest) != hash.Size() {
			return nil, errors.New("digest length does not match the hash")
		}
		t = append(append([]byte{}, prefix...), digest...)
	}
	k := pub.Size()
	if len(t)+11 > k {
		return nil, errors.New("key too small for this digest")
	}
	em := make([]byte, k)
	em[1] = 1
	for i := 2; i < k-len(t)-1; i++ {
		em[i] = 0xff
	}
	copy(em[k-len(t):], t)
	return em, nil
}

// emsaPSS builds the EMSA-PSS encoding (RFC 8017 §9.1.1), left-padded to the modulus size.
func emsaPSS(rand io.Reader, pub *rsa.PublicKey, digest []byte, opts *rsa.PSSOptions) ([]byte, error) {
	hash := opts.Hash
	if hash == 0 || !hash.Available() {
		return nil, errors.New("PSS needs an available hash")
	}
	hLen := hash.Size()
	if len(digest) != hLen {
		return nil, errors.New("digest length does not match the hash")
	}
	emBits := pub.N.BitLen() - 1
	emLen := (emBits + 7) / 8
	sLen := opts.SaltLength
	switch sLen {
	case rsa.PSSSaltLengthAuto:
		sLen = emLen - hLen - 2
	case rsa.PSSSaltLengthEqualsHash:
		sLen = hLen
	}
	if sLen < 0 || emLen < hLen+sLen+2 {
		return nil, errors.New("key too small for PSS with this hash and salt")
	}
	salt := make([]byte, sLen)
	if _, err := io.ReadFull(rand, salt); err != nil {
		return nil, err
	}
	h := hash.New()
	h.Write(make([]byte, 8))
	h.Write(digest)
	h.Write(salt)
	mHash := h.Sum(nil)

	db := make([]byte, emLen-hLen-1)
	db[len(db)-sLen-1] = 1
	copy(db[len(db)-sLen:], salt)
	mask := mgf1(hash, mHash, len(db))
	for i := range db {
		db[i] ^= mask[i]
	}
	db[0] &= 0xff >> (8*emLen - emBits)
	em := append(append(db, mHash...), 0xbc)
	if k := pub.Size(); len(em) < k {
		em = append(bytes.Repeat([]byte{0}, k-len(em)), em...)
	}
	return em, nil
}

func mgf1(hash crypto.Hash, seed []byte, n int) []byte {
	var out []byte
	var counter [4]byte
	for len(out) < n {
		h := hash.New()
		h.Write(seed)
		h.Write(counter[:])
		out = h.Sum(out)
		for i := 3; i >= 0; i-- {
			counter[i]++
			if counter[i] != 0 {
				break
			}
		}
	}
	return out[:n]
}
