package broker

import (
	"strings"
	"unicode/utf8"
)

// Route is one path pattern of a service. Path parameters are written `{name}`; they
// match one non-empty segment of the raw path and are percent-decoded afterwards.
type Route struct {
	Pattern string
	// MinVersion is the oldest api-version the route answers; "" means every version.
	MinVersion string
	Get        *Handler
	Post       *Handler
	Put        *Handler
	Delete     *Handler

	// segs is Pattern split once and minVersion MinVersion's index in the service's
	// versions (Service.init), so a request does not redo either.
	segs       []segment
	minVersion int
}

type segment struct {
	lit   string
	param string // non-empty for `{name}`
}

// Handler serves one method of a route. Authorization is declared, not called: the core
// runs Resolve (the checks upstream makes before its decision, and the reading of what
// the request acts on), asks the policy about every Target, and only then calls Serve. A
// handler without an Operation never reaches Serve.
type Handler struct {
	// NewBody returns a pointer the JSON body is decoded into; nil when the method takes
	// no body (any valid JSON is then accepted and ignored, as upstream's IgnoredAny).
	NewBody func() any
	// Operation is the policy operation (docs/policy.md, operation catalogue); a Target
	// may name another one when the request decides it (keyd.key.create vs .import).
	Operation string
	// Resolve runs upstream's refusals that precede authorization on this route and
	// returns what the request acts on, one Target per decision, in upstream's order
	// (move: source, then destination). nil means one decision on no resource.
	Resolve func(r *Request) ([]Target, error)
	// AnyOf makes the targets alternatives: they are asked in order until one is allowed
	// (Request.Allowed says which), and the request is refused only when every one is
	// denied, with the refusal of the last. Without it every target must be allowed.
	AnyOf bool
	// Denied is the route's upstream refusal for a denied target; nil uses the service's.
	Denied func(r *Request, t Target) *Error
	Serve  func(r *Request) (Reply, error)
}

// Target is one policy decision a request needs: what it acts on (input.resource) and
// the request's other non-secret fields (input.request).
type Target struct {
	// Operation overrides Handler.Operation when not empty.
	Operation string
	Resource  map[string]any
	Request   map[string]any
}

// Reply is a success answer: Body is marshalled as compact JSON, or nothing for 204.
type Reply struct {
	Status int
	Body   any
}

func (rt *Route) handler(method string) *Handler {
	switch method {
	case "GET":
		return rt.Get
	case "POST":
		return rt.Post
	case "PUT":
		return rt.Put
	case "DELETE":
		return rt.Delete
	}
	return nil
}

// Handlers lists the route's methods and handlers, for checks that walk every route.
func (rt *Route) Handlers() map[string]*Handler {
	out := map[string]*Handler{}
	for _, m := range []string{"GET", "POST", "PUT", "DELETE"} {
		if h := rt.handler(m); h != nil {
			out[m] = h
		}
	}
	return out
}

func compilePattern(pattern string) []segment {
	parts := strings.Split(strings.TrimPrefix(pattern, "/"), "/")
	segs := make([]segment, len(parts))
	for i, p := range parts {
		if len(p) > 2 && p[0] == '{' && p[len(p)-1] == '}' {
			segs[i].param = p[1 : len(p)-1]
		} else {
			segs[i].lit = p
		}
	}
	return segs
}

// match returns the decoded path parameters when rawPath fits the pattern. A parameter
// that is not valid UTF-8 once decoded makes the route not match (api-keys.md §1.3).
func (rt *Route) match(rawPath string) (map[string]string, bool) {
	segs := rt.segs
	if segs == nil {
		segs = compilePattern(rt.Pattern)
	}
	if len(rawPath) == 0 || rawPath[0] != '/' {
		return nil, false
	}
	rest := rawPath[1:]
	var params map[string]string
	for i, sg := range segs {
		var got string
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			if i == len(segs)-1 {
				return nil, false
			}
			got, rest = rest[:j], rest[j+1:]
		} else {
			if i != len(segs)-1 {
				return nil, false
			}
			got, rest = rest, ""
		}
		if sg.param == "" {
			if got != sg.lit {
				return nil, false
			}
			continue
		}
		if got == "" {
			return nil, false
		}
		v := percentDecode(got, false)
		if !utf8.ValidString(v) {
			return nil, false
		}
		if params == nil {
			params = make(map[string]string, 1)
		}
		params[sg.param] = v
	}
	return params, true
}

// percentDecode decodes %XX sequences and leaves malformed ones as they are, like Rust's
// percent_encoding; with plus, '+' also becomes a space (form encoding).
func percentDecode(s string, plus bool) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		case c == '+' && plus:
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// parseQuery splits an x-www-form-urlencoded query leniently, keeping every pair in order.
func parseQuery(q string) [][2]string {
	var out [][2]string
	for _, part := range strings.Split(q, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		out = append(out, [2]string{percentDecode(k, true), percentDecode(v, true)})
	}
	return out
}

// rustDebug renders s as Rust's `{:?}` does for a String, so messages quote values as
// upstream's do.
func rustDebug(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case 0:
			b.WriteString(`\0`)
		case utf8.RuneError:
			b.WriteString(`\u{fffd}`)
		default:
			if r < 0x20 || r == 0x7f {
				b.WriteString(`\u{` + strings.TrimLeft(hex32(uint32(r)), "0") + `}`)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

func hex32(v uint32) string {
	const digits = "0123456789abcdef"
	var buf [8]byte
	for i := 7; i >= 0; i-- {
		buf[i] = digits[v&0xf]
		v >>= 4
	}
	return string(buf[:])
}
