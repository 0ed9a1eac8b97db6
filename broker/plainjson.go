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

// PlainObject calls field for each member of the JSON object b, in order, with the key
// and either a string value without escapes (str) or an object value (obj, its raw
// bytes) whose own values are such strings. It returns false on anything else: another
// value type, deeper nesting, an escape or a control character in a string, malformed
// JSON, trailing bytes, or field returning false. It does not recurse, so the callback
// needs no heap.
func PlainObject(b []byte, field func(key, str, obj []byte) bool) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		key, next, ok := plainString(b, i)
		if !ok {
			return false
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case '"':
			s, next, ok := plainString(b, i)
			if !ok || !field(key, s, nil) {
				return false
			}
			i = next
		case '{':
			next, ok := flatObjectEnd(b, i)
			if !ok || !field(key, nil, b[i:next]) {
				return false
			}
			i = next
		default:
			return false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

// flatObjectEnd returns the end of the object at b[i] when its values are all plain
// strings.
func flatObjectEnd(b []byte, i int) (int, bool) {
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		for k := 0; k < 2; k++ { // the key, then its value
			_, next, ok := plainString(b, i)
			if !ok {
				return 0, false
			}
			i = skipSpace(b, next)
			if k == 0 {
				if i >= len(b) || b[i] != ':' {
					return 0, false
				}
				i = skipSpace(b, i+1)
			}
		}
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
