package broker

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is an answer in upstream's shape: a status and `{"message": ...}`. Cause is for
// the log only; for 500s the caller sees `internal error` and nothing else.
type Error struct {
	Status  int
	Message string
	Cause   error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Message, e.Cause)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Message)
}

func (e *Error) Unwrap() error { return e.Cause }

// causedBy joins messages as upstream's error chain does.
const causedBy = "\ncaused by: "

// BadRequest is a 400 with message msg.
func BadRequest(msg string) *Error { return &Error{Status: http.StatusBadRequest, Message: msg} }

// InvalidParameter is upstream's `parameter "<name>" has an invalid value` with a cause.
func InvalidParameter(name, detail string) *Error {
	msg := fmt.Sprintf("parameter %q has an invalid value", name)
	if detail != "" {
		msg += causedBy + detail
	}
	return BadRequest(msg)
}

// InvalidValue is upstream's storage-level `a parameter has an invalid value`.
func InvalidValue(cause error) *Error {
	return &Error{Status: http.StatusBadRequest, Message: "a parameter has an invalid value", Cause: cause}
}

// Unauthorized is a 401 with the service's own upstream message.
func Unauthorized(msg string) *Error { return &Error{Status: http.StatusUnauthorized, Message: msg} }

// Unprocessable is a 422 for a body that does not fit the route's JSON shape.
func Unprocessable(msg string) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Message: msg}
}

// Internal is a 500 `internal error`; the cause is logged, never sent.
func Internal(cause error) *Error {
	return &Error{Status: http.StatusInternalServerError, Message: "internal error", Cause: cause}
}

// AsError turns any error into an *Error, treating unknown errors as internal.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Internal(err)
}
