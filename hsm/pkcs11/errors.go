package pkcs11

import (
	"errors"

	"github.com/miekg/pkcs11"

	"github.com/iotbroker/aziot/hsm"
)

// failure says what an error from the library means for the state this package keeps.
type failure int

const (
	// failOp: the operation failed; the session and token are still good.
	failOp failure = iota
	// failSession: this session is unusable; close it and retry on another.
	failSession
	// failToken: the token went away, was re-initialised or logged out; drop every
	// session of it, find the slot again and retry.
	failToken
	// failLibrary: the library lost its state (or the token is not in its slot list any
	// more); finalize and initialize it again, then retry.
	failLibrary
)

// errTokenNotFound is a token URI that matches no slot of the library.
var errTokenNotFound = errors.New("no slot holds this token")

func classify(err error) failure {
	if errors.Is(err, errTokenNotFound) {
		return failLibrary
	}
	if errors.Is(err, errTokenChanged) {
		return failToken
	}
	var e pkcs11.Error
	if !errors.As(err, &e) {
		return failOp
	}
	switch uint(e) {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_OPERATION_ACTIVE,
		// Another process deleted the object between our find and our use of it.
		pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID:
		return failSession
	case pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_DEVICE_ERROR,
		pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_SLOT_ID_INVALID,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_GENERAL_ERROR:
		return failToken
	case pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return failLibrary
	}
	return failOp
}

// rv returns the return value inside err, or 0.
func rv(err error) uint {
	var e pkcs11.Error
	if errors.As(err, &e) {
		return uint(e)
	}
	return 0
}

// isPINError is a login refused for the PIN itself; retrying the same PIN could lock
// the token.
func isPINError(err error) bool {
	switch rv(err) {
	case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE,
		pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED:
		return true
	}
	return false
}

// clientError marks return values that mean the caller's input or key choice was wrong,
// so keyd answers 400 rather than 500.
func clientError(err error) error {
	switch rv(err) {
	case pkcs11.CKR_DATA_LEN_RANGE, pkcs11.CKR_DATA_INVALID,
		pkcs11.CKR_KEY_TYPE_INCONSISTENT, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED,
		pkcs11.CKR_MECHANISM_PARAM_INVALID:
		return errors.Join(err, hsm.ErrInvalid)
	case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE:
		return errors.Join(err, hsm.ErrAuthentication)
	}
	return err
}

// unsupported is a return value that means the token cannot hold or do this kind of
// key, so the keystore falls back to the next location (upstream's rule).
func unsupported(err error) bool {
	switch rv(err) {
	case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_FUNCTION_NOT_SUPPORTED:
		return true
	}
	return false
}
