package broker

// FastBody is a request body that can read the plain form of itself without reflection:
// keyd's /sign runs for every SAS token and TLS handshake a device makes, and
// encoding/json was its largest single cost. DecodeFast reports false for anything but
// the plain form (escapes, unknown or differently cased keys, null, duplicates), and the
// body is then decoded by encoding/json as every other body is, so answers and error
// messages never depend on which path ran.
type FastBody interface {
	DecodeFast(b []byte) bool
}

// PlainObject calls field for each member of the JSON object b whose values are strings
// without escapes or objects (passed as their raw bytes), in order. It returns false on
// anything else: another value type, an escape or a control character in a string,
// malformed JSON, trailing bytes, or field returning false.
func PlainObject(b []byte, field func(key string, str []byte, obj []byte) bool) bool {
	i := skipSpace(b, 0)
	end, ok := plainObject(b, i, field)
	return ok && skipSpace(b, end) == len(b)
}

func plainObject(b []byte, i int, field func(key string, str []byte, obj []byte) bool) (int, bool) {
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		key, next, ok := plainString(b, i)
		if !ok {
			return 0, false
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return 0, false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return 0, false
		}
		switch b[i] {
		case '"':
			s, next, ok := plainString(b, i)
			if !ok || !field(string(key), s, nil) {
				return 0, false
			}
			i = next
		case '{':
			next, ok := plainObject(b, i, func(string, []byte, []byte) bool { return true })
			if !ok || !field(string(key), nil, b[i:next]) {
				return 0, false
			}
			i = next
		default:
			return 0, false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return 0, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// plainString returns the contents of the string at b[i] when it has no escape, no
// control character and only ASCII (so that no UTF-8 repair can apply).
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
