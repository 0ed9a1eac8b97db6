package hubclient

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// The error classification of cloud-hub.md §8.
func TestHubErrorClassification(t *testing.T) {
	jsonCT := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	for _, tc := range []struct {
		name    string
		method  string
		status  int
		hdr     http.Header
		body    string
		code    string
		msg     string
		network bool
	}{
		{"hub 404", "GET", 404, http.Header{"Content-Type": {"application/json; charset=utf-8"}, "Iothub-Errorcode": {"ModuleNotFound"}},
			`{"Message":"ErrorCode:ModuleNotFound;Module m on device d not found","ExceptionMessage":"Tracking ID:x"}`, "ModuleNotFound", "Module m on device d not found", false},
		{"code from Message only", "PUT", 409, jsonCT, `{"Message":"ErrorCode:ModuleAlreadyExistsOnDevice;exists"}`, "ModuleAlreadyExistsOnDevice", "exists", false},
		{"500 JSON on GET is network", "GET", 500, jsonCT, `{"Message":"upstream lost"}`, "", "upstream lost", true},
		{"500 JSON without Content-Type", "PUT", 500, http.Header{}, `{"errorMessage":"edgeHub offline"}`, "", "edgeHub offline", true},
		{"500 JSON on DELETE is not", "DELETE", 500, jsonCT, `{"Message":"x"}`, "", "x", false},
		{"empty 500 is not", "GET", 500, http.Header{}, ``, "", "", false},
		{"non-JSON 500 is not", "GET", 500, http.Header{"Content-Type": {"text/html"}}, `<html>oops</html>`, "", "<html>oops</html>", false},
		{"500 JSON as text/plain is not", "GET", 500, http.Header{"Content-Type": {"text/plain"}}, `{"Message":"x"}`, "", "x", false},
		{"networkError flag", "GET", 502, jsonCT, `{"Message":"gateway","networkError":true}`, "", "gateway", true},
		{"401", "GET", 401, http.Header{"Iothub-Errorcode": {"IotHubUnauthorizedAccess"}}, `{"Message":"ErrorCode:IotHubUnauthorizedAccess;Unauthorized"}`, "IotHubUnauthorizedAccess", "Unauthorized", false},
	} {
		e := hubError("get module", tc.method, tc.status, tc.hdr, []byte(tc.body))
		if e.Code != tc.code || e.Message != tc.msg || e.Network != tc.network || e.Status != tc.status {
			t.Errorf("%s: %+v", tc.name, e)
		}
	}
	long := hubError("op", "GET", 400, http.Header{}, []byte(strings.Repeat("x", 5000)))
	if len(long.Message) > maxMessage+len("…") {
		t.Errorf("message not bounded: %d bytes", len(long.Message))
	}
}

func TestErrorSentinels(t *testing.T) {
	for status, target := range map[int]error{404: ErrNotFound, 409: ErrAlreadyExists, 412: ErrPreconditionFailed, 401: ErrUnauthorized, 429: ErrThrottled} {
		var err error = &Error{Op: "op", Status: status}
		if !errors.Is(err, target) {
			t.Errorf("%d is not %v", status, target)
		}
		if errors.Is(err, ErrUnexpectedStatus) || (status != 404 && errors.Is(err, ErrNotFound)) {
			t.Errorf("%d matches too much", status)
		}
	}
	e := &Error{Op: `get module "m" of device "d"`, Status: 412, Code: "PreconditionFailed", Message: "etag mismatch", Attempts: 2}
	if got := e.Error(); got != `iot hub: get module "m" of device "d": HTTP 412 PreconditionFailed: etag mismatch (after 2 attempts)` {
		t.Errorf("Error() = %s", got)
	}
}

func TestEscapeSegment(t *testing.T) {
	for in, want := range map[string]string{
		"$edgeAgent":  "$edgeAgent",
		"a b=c":       "a%20b%3Dc",
		"50%/x":       "50%25%2Fx",
		"m:(1)@'!*,;": "m:(1)@'!*,;",
		"é#?{}":       "%C3%A9%23%3F%7B%7D",
	} {
		if got := escapeSegment(in); got != want {
			t.Errorf("escapeSegment(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"": "*", "*": "*", "MQ==": `"MQ=="`, `"MQ=="`: `"MQ=="`, `W/"x"`: `W/"x"`} {
		if got := ifMatch(in); got != want {
			t.Errorf("ifMatch(%q) = %q, want %q", in, got, want)
		}
	}
}
