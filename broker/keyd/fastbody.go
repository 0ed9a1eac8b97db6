package keyd

import (
	"encoding/base64"

	"github.com/iotbroker/aziot/broker"
	"github.com/iotbroker/aziot/sdk/keys"
)

// signRequest is keys.SignRequest with a decoder for its plain form (broker.FastBody):
// /sign is the hot path of every device.
type signRequest keys.SignRequest

// DecodeFast fills r from the plain form of a sign body, or reports false and leaves r
// alone: encoding/json then decodes it, with serde's messages for whatever is wrong.
func (r *signRequest) DecodeFast(b []byte) bool {
	var handle, alg []byte
	var params *keys.SignParameters
	var paramsRaw []byte
	ok := broker.PlainObject(b, func(key, str, obj []byte) bool {
		switch {
		case string(key) == "keyHandle" && str != nil && handle == nil:
			handle = str
		case string(key) == "algorithm" && str != nil && alg == nil:
			alg = str
		case string(key) == "parameters" && obj != nil && paramsRaw == nil:
			paramsRaw = obj
		default:
			return false
		}
		return true
	})
	if !ok || handle == nil || alg == nil || paramsRaw == nil {
		return false
	}
	params = new(keys.SignParameters)
	ok = broker.PlainObject(paramsRaw, func(key, str, _ []byte) bool {
		var dst *[]byte
		switch {
		case string(key) == "message" && params.Message == nil:
			dst = &params.Message
		case string(key) == "digest" && params.Digest == nil:
			dst = &params.Digest
		default:
			return false
		}
		if str == nil {
			return false
		}
		v := make([]byte, base64.StdEncoding.DecodedLen(len(str)))
		n, err := base64.StdEncoding.Decode(v, str)
		*dst = v[:n]
		return err == nil
	})
	if !ok {
		return false
	}
	h, a := string(handle), string(alg)
	*r = signRequest{KeyHandle: &h, Algorithm: &a, Parameters: params}
	return true
}

// signResponse is keys.SignResponse written without reflection (broker.JSONAppender).
type signResponse keys.SignResponse

func (r signResponse) AppendJSON(b []byte) []byte {
	b = append(b, `{"signature":"`...)
	b = base64.StdEncoding.AppendEncode(b, r.Signature)
	return append(b, `"}`...)
}
