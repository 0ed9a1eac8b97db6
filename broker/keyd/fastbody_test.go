package keyd

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/iotbroker/aziot/sdk/keys"
)

var signBodies = []string{
	`{"keyHandle":"sr=a&sig=b","algorithm":"HMAC-SHA256","parameters":{"message":"aGVsbG8="}}`,
	` { "keyHandle" : "h" , "algorithm":"ECDSA", "parameters" : { "digest" : "AAAA" } } `,
	`{"keyHandle":"h","algorithm":"ECDSA","parameters":{}}`,
	`{"keyHandle":"h","algorithm":"ECDSA","parameters":{"digest":""}}`,
	`{"keyHandle":"h","algorithm":"ECDSA","parameters":{"digest":"AAA"}}`,
	`{"keyHandle":"h","algorithm":"ECDSA","parameters":{"digest":"AAAA","digest":"AQID"}}`,
	`{"KEYHANDLE":"h","algorithm":"ECDSA","parameters":{"digest":"AAAA"}}`,
	`{"keyHandle":"h\u0041","algorithm":"ECDSA","parameters":{"digest":"AAAA"}}`,
	`{"keyHandle":null,"algorithm":"ECDSA","parameters":{"digest":"AAAA"}}`,
	`{"keyHandle":"h","algorithm":"ECDSA","parameters":{"digest":"AAAA"},"extra":1}`,
	`{"keyHandle":"h","algorithm":"ECDSA","parameters":{"digest":"AAAA"}} x`,
	`{"keyHandle":"h","algorithm":"ECDSA"}`,
}

// The plain-form decoder reads exactly what encoding/json reads, whenever it accepts a
// body; whatever it refuses goes to encoding/json.
func TestSignFastDecodeAgreesWithJSON(t *testing.T) {
	accepted := 0
	for _, b := range signBodies {
		if checkFastSign(t, []byte(b)) {
			accepted++
		}
	}
	if accepted < 4 {
		t.Fatalf("the fast path accepted only %d of the plain bodies", accepted)
	}
}

func checkFastSign(t *testing.T, b []byte) bool {
	var fast signRequest
	if !fast.DecodeFast(b) {
		if !reflect.DeepEqual(fast, signRequest{}) {
			t.Fatalf("%s: refused, yet wrote %+v", b, fast)
		}
		return false
	}
	var std keys.SignRequest
	if err := json.Unmarshal(b, &std); err != nil {
		t.Fatalf("%s: fast path accepted what encoding/json refuses: %v", b, err)
	}
	if !reflect.DeepEqual(keys.SignRequest(fast), std) {
		t.Fatalf("%s: fast %+v, encoding/json %+v", b, fast, std)
	}
	return true
}

func FuzzSignFastDecode(f *testing.F) {
	for _, b := range signBodies {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkFastSign(t, b) })
}

// The sign answer written without reflection is byte for byte what encoding/json writes.
func TestSignResponseAppendJSON(t *testing.T) {
	sigs := [][]byte{nil, {}, {0}, {0xff, 0xfe, 0xfd, 0x00, 0x3e}, make([]byte, 72)}
	for _, sig := range sigs {
		want, err := json.Marshal(keys.SignResponse{Signature: sig})
		if err != nil {
			t.Fatal(err)
		}
		if sig == nil {
			// encoding/json writes null for a nil slice; keyd never answers one.
			continue
		}
		if got := (signResponse{Signature: sig}).AppendJSON(nil); string(got) != string(want) {
			t.Errorf("%x: %s, want %s", sig, got, want)
		}
	}
}
