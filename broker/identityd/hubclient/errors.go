package hubclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinels for errors.Is on an *Error.
var (
	ErrNotFound           = errors.New("not found")                  // 404 (DeviceNotFound, ModuleNotFound)
	ErrAlreadyExists      = errors.New("already exists")             // 409 on create
	ErrPreconditionFailed = errors.New("precondition failed")        // 412: the If-Match etag does not match
	ErrUnauthorized       = errors.New("unauthorized")               // 401
	ErrThrottled          = errors.New("throttled")                  // 429 after every back-off
	ErrUnexpectedStatus   = errors.New("unexpected status from hub") // a 2xx the operation does not expect
)

// Error is a failed Hub call. It never holds the Authorization header or key material:
// only the operation, the status and the hub's own error text.
type Error struct {
	Op         string // e.g. `get module "m1" of device "d1"`
	Status     int    // HTTP status; 0 when no response arrived
	Code       string // iothub-errorcode, or the ErrorCode of the Message
	Message    string // the hub's message, without the "ErrorCode:<name>;" prefix
	Network    bool   // a network error in upstream's sense (cloud-hub.md §8): fall back to caches
	Attempts   int    // requests sent
	Err        error  // transport or decoding error, if any
	unexpected bool
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("iot hub: ")
	b.WriteString(e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
		if e.Code != "" {
			b.WriteString(" " + e.Code)
		}
		if e.Message != "" {
			b.WriteString(": " + e.Message)
		}
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Is maps the status to the sentinels above.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrAlreadyExists:
		return e.Status == http.StatusConflict
	case ErrPreconditionFailed:
		return e.Status == http.StatusPreconditionFailed
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrThrottled:
		return e.Status == http.StatusTooManyRequests
	case ErrUnexpectedStatus:
		return e.unexpected
	}
	return false
}

// IsNetwork reports whether err is a network error in upstream's sense: no answer, a
// timeout, a 500 with a JSON message on GET/PUT, or an error body with networkError:true.
// identityd falls back to its caches on these instead of reprovisioning (flows.md §8).
func IsNetwork(err error) bool {
	var he *Error
	return errors.As(err, &he) && he.Network
}

// maxMessage bounds the hub's text carried in an error.
const maxMessage = 512

// hubError builds the error for a non-success answer (cloud-hub.md §8).
func hubError(op, method string, status int, hdr http.Header, body []byte) *Error {
	e := &Error{Op: op, Status: status, Code: hdr.Get("iothub-errorcode")}
	var eb struct {
		Message      *string `json:"Message"`
		ErrorMessage *string `json:"errorMessage"`
		NetworkError bool    `json:"networkError"`
	}
	jsonMsg := false
	ct := strings.ToLower(hdr.Get("Content-Type"))
	if len(body) > 0 && json.Unmarshal(body, &eb) == nil {
		msg := eb.Message
		if msg == nil {
			msg = eb.ErrorMessage
		}
		if msg != nil {
			jsonMsg = ct == "" || strings.Contains(ct, "json")
			e.Message = *msg
		}
		e.Network = eb.NetworkError
	} else if len(body) > 0 {
		e.Message = string(body)
	}
	// "ErrorCode:<Name>;<text>" is the shape the SDKs parse.
	if rest, ok := strings.CutPrefix(e.Message, "ErrorCode:"); ok {
		if name, text, ok := strings.Cut(rest, ";"); ok {
			if e.Code == "" {
				e.Code = name
			}
			e.Message = text
		}
	}
	if len(e.Message) > maxMessage {
		e.Message = e.Message[:maxMessage] + "…"
	}
	// Upstream treats a 500 with a JSON message on GET/PUT as a network error (a parent
	// edgeHub reporting the loss of its upstream); on DELETE it is an unexpected status.
	if status == http.StatusInternalServerError && jsonMsg && method != http.MethodDelete {
		e.Network = true
	}
	return e
}
