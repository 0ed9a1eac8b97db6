package hsm

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"go/parser"
	"go/token"
	"math/big"
	"strconv"
	"sync"
	"testing"
)

// testKeys generates each size once: a 4096-bit key takes seconds on a small machine.
var testKeys = struct {
	sync.Mutex
	m map[int]*rsa.PrivateKey
}{m: map[int]*rsa.PrivateKey{}}

func testKey(t *testing.T, bits int) *rsa.PrivateKey {
	t.Helper()
	testKeys.Lock()
	defer testKeys.Unlock()
	if k, ok := testKeys.m[bits]; ok {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatalf("generating a %d-bit RSA key: %v", bits, err)
	}
	testKeys.m[bits] = k
	return k
}

// referenceRaw is the textbook in^d mod n with big.Int: the result the old
// implementation gave, kept here only as an oracle.
func referenceRaw(priv *rsa.PrivateKey, in []byte) []byte {
	m := new(big.Int).Exp(new(big.Int).SetBytes(in), priv.D, priv.N)
	return m.FillBytes(make([]byte, priv.Size()))
}

// rawInputs are edge cases and random values below N, each modulus-sized.
func rawInputs(t *testing.T, priv *rsa.PrivateKey) map[string][]byte {
	t.Helper()
	k := priv.Size()
	n := priv.N
	fill := func(x *big.Int) []byte { return x.FillBytes(make([]byte, k)) }
	one := big.NewInt(1)
	in := map[string][]byte{
		"0":   fill(big.NewInt(0)),
		"1":   fill(one),
		"2":   fill(big.NewInt(2)),
		"N-1": fill(new(big.Int).Sub(n, one)),
		"N-2": fill(new(big.Int).Sub(n, big.NewInt(2))),
		// A multiple of a prime: zero modulo p, which the CRT path must handle.
		"p": fill(priv.Primes[0]),
		"q": fill(priv.Primes[1]),
	}
	for i := range 8 {
		r, err := rand.Int(rand.Reader, n)
		if err != nil {
			t.Fatal(err)
		}
		in["random"+strconv.Itoa(i)] = fill(r)
	}
	return in
}

func checkRaw(t *testing.T, priv *rsa.PrivateKey, inputs map[string][]byte) {
	t.Helper()
	e := big.NewInt(int64(priv.E))
	for name, in := range inputs {
		out, err := RSAPrivateOp(priv, RSANoPadding, in)
		if err != nil {
			t.Errorf("input %s: %v", name, err)
			continue
		}
		if len(out) != priv.Size() {
			t.Errorf("input %s: output of %d bytes, modulus is %d", name, len(out), priv.Size())
		}
		back := new(big.Int).Exp(new(big.Int).SetBytes(out), e, priv.N)
		if back.Cmp(new(big.Int).SetBytes(in)) != 0 {
			t.Errorf("input %s: output^e mod N is not the input", name)
		}
		if want := referenceRaw(priv, in); !bytes.Equal(out, want) {
			t.Errorf("input %s: output differs from in^d mod N", name)
		}
	}
}

func TestRSANoPaddingMatchesTextbook(t *testing.T) {
	for _, bits := range []int{2048, 4096} {
		t.Run(strconv.Itoa(bits), func(t *testing.T) {
			priv := testKey(t, bits)
			checkRaw(t, priv, rawInputs(t, priv))
		})
	}
}

// The raw operation on a PKCS#1 v1.5 type-1 block must equal the standard library's
// signature over the same digest: both are the same private-key operation.
func TestRSANoPaddingMatchesStdlibSign(t *testing.T) {
	for _, bits := range []int{2048, 4096} {
		t.Run(strconv.Itoa(bits), func(t *testing.T) {
			priv := testKey(t, bits)
			digest := make([]byte, 51) // a SHA-512 DigestInfo is 83 bytes; any length fits
			rand.Read(digest)
			want, err := rsa.SignPKCS1v15(rand.Reader, priv, 0, digest)
			if err != nil {
				t.Fatal(err)
			}
			k := priv.Size()
			block := make([]byte, k)
			block[1] = 1
			for i := 2; i < k-len(digest)-1; i++ {
				block[i] = 0xff
			}
			copy(block[k-len(digest):], digest)
			got, err := RSAPrivateOp(priv, RSANoPadding, block)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("raw operation on a type-1 block differs from rsa.SignPKCS1v15")
			}
		})
	}
}

func TestRSAPKCS1VerifiesWithStdlib(t *testing.T) {
	for _, bits := range []int{2048, 4096} {
		t.Run(strconv.Itoa(bits), func(t *testing.T) {
			priv := testKey(t, bits)
			for _, n := range []int{0, 1, 32, priv.Size() - 11} {
				in := make([]byte, n)
				rand.Read(in)
				out, err := RSAPrivateOp(priv, RSAPKCS1, in)
				if err != nil {
					t.Fatalf("%d-byte input: %v", n, err)
				}
				if err := rsa.VerifyPKCS1v15(&priv.PublicKey, 0, in, out); err != nil {
					t.Errorf("%d-byte input: output does not verify: %v", n, err)
				}
			}
			// Upstream's OpenSSL refuses an input with no room for the padding.
			if _, err := RSAPrivateOp(priv, RSAPKCS1, make([]byte, priv.Size()-10)); !errors.Is(err, ErrInvalid) {
				t.Errorf("input too long for PKCS#1 padding: got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestRSANoPaddingRefusesBadInput(t *testing.T) {
	priv := testKey(t, 2048)
	k := priv.Size()
	fill := func(x *big.Int) []byte { return x.FillBytes(make([]byte, k)) }
	all := bytes.Repeat([]byte{0xff}, k)
	bad := map[string][]byte{
		"N":         fill(priv.N),
		"N+1":       fill(new(big.Int).Add(priv.N, big.NewInt(1))),
		"2^8k-1":    all,
		"short":     make([]byte, k-1),
		"long":      make([]byte, k+1),
		"empty":     nil,
		"N+leading": append([]byte{0}, fill(priv.N)...),
	}
	for name, in := range bad {
		if _, err := RSAPrivateOp(priv, RSANoPadding, in); !errors.Is(err, ErrInvalid) {
			t.Errorf("input %s: got %v, want ErrInvalid", name, err)
		}
	}
}

// A key built by hand may lack the CRT values, or the primes altogether: it must still
// give the same results, through the full private exponent.
func TestRSANoPaddingWithoutPrecomputedValues(t *testing.T) {
	full := testKey(t, 2048)
	inputs := rawInputs(t, full)
	noCRT := &rsa.PrivateKey{PublicKey: full.PublicKey, D: full.D, Primes: full.Primes}
	checkRaw(t, noCRT, inputs)
	if noCRT.Precomputed.Dp != nil {
		t.Error("the operation filled in the caller's key")
	}
	noPrimes := &rsa.PrivateKey{PublicKey: full.PublicKey, D: full.D}
	delete(inputs, "p")
	delete(inputs, "q")
	checkRaw(t, noPrimes, inputs)
}

// CRT values that do not belong to the key would give an output that reveals a
// factor of N (the Bellcore attack); the public-key check must refuse to answer.
func TestRSANoPaddingRefusesInconsistentCRT(t *testing.T) {
	full := testKey(t, 2048)
	bad := *full
	bad.Precomputed.Dp = new(big.Int).Sub(full.Precomputed.Dp, big.NewInt(2))
	in := make([]byte, full.Size())
	in[len(in)-1] = 7
	if out, err := RSAPrivateOp(&bad, RSANoPadding, in); err == nil {
		t.Fatalf("a wrong dP gave an answer (%x...) instead of an error", out[:8])
	}
}

// big.Int arithmetic is variable-time: the file that holds the private-key operation
// must not use it (the key's big.Int fields are only converted, never computed on).
func TestSoftCryptoDoesNotImportMathBig(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "soft.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range f.Imports {
		if imp.Path.Value == `"math/big"` {
			t.Fatal("soft.go imports math/big; private-key arithmetic must be constant time (filippo.io/bigmod)")
		}
	}
}
