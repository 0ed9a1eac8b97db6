package broker

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestRouteMatch(t *testing.T) {
	rt := Route{Pattern: "/key/{keyId}"}
	cases := []struct {
		path string
		ok   bool
		id   string
	}{
		{"/key/abc", true, "abc"},
		{"/key/a%2Fb", true, "a/b"},
		{"/key/%E2%82%AC", true, "€"},
		{"/key/%FF", false, ""},
		{"/key/", false, ""},
		{"/key", false, ""},
		{"/key/a/b", false, ""},
		{"/key/100%", true, "100%"},
		{"/key/a+b", true, "a+b"},
		{"key/abc", false, ""},
	}
	for _, c := range cases {
		params, ok := rt.match(c.path)
		if ok != c.ok || (ok && params["keyId"] != c.id) {
			t.Errorf("%q: got %v %q, want %v %q", c.path, ok, params["keyId"], c.ok, c.id)
		}
	}
}

func TestParseQueryLastWins(t *testing.T) {
	q := parseQuery("api-version=a&x=1&api-version=b+c%21")
	r := &Request{Query: q}
	if v, _ := r.QueryValue("api-version"); v != "b c!" {
		t.Fatalf("got %q", v)
	}
}

func TestRustDebug(t *testing.T) {
	cases := map[string]string{
		`plain`:     `"plain"`,
		"q\"b\\":    `"q\"b\\"`,
		"nl\n\t\r":  `"nl\n\t\r"`,
		"nul\x00":   `"nul\0"`,
		"esc\x1b":   `"esc\u{1b}"`,
		"del\x7f":   `"del\u{7f}"`,
		"unicodeé€": `"unicodeé€"`,
	}
	for in, want := range cases {
		if got := rustDebug(in); got != want {
			t.Errorf("rustDebug(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestContentType(t *testing.T) {
	cases := []struct {
		values          []string
		isJSON, present bool
	}{
		{nil, false, false},
		{[]string{"application/json"}, true, true},
		{[]string{"application/json; charset=utf-8"}, true, true},
		{[]string{" application/json ;x"}, true, true},
		{[]string{"Application/JSON"}, false, true},
		{[]string{"text/plain"}, false, true},
		{[]string{"application/json\x01"}, false, false},
	}
	for _, c := range cases {
		j, p := contentTypeIsJSON(c.values)
		if j != c.isJSON || p != c.present {
			t.Errorf("%q: got %v %v", c.values, j, p)
		}
	}
}

type sampleBody struct {
	KeyID *string `json:"keyId" required:"true"`
	Usage *string `json:"usage" required:"true"`
	Bytes []byte  `json:"keyBytes"`
}

func TestDecodeBodyMessages(t *testing.T) {
	cases := []struct {
		body, want string
	}{
		{``, "EOF while parsing a value at line 1 column 0"},
		{`{"keyId":"a"`, "EOF while parsing a value at line 1 column 12"},
		{`{"keyId":5,"usage":"x"}`, "invalid type: number, expected a string at line 1 column 10"},
		{`{"keyId":"a"}`, "missing field `usage` at line 1 column 13"},
		{`{"keyId":"a","usage":"s"} x`, "trailing characters at line 1 column 27"},
		{`{"keyId":"a","usage":"s","keyBytes":"!!"}`, "illegal base64 data at input byte 0 at line 1 column 41"},
		{`nope`, "expected value at line 1 column 2"},
	}
	for _, c := range cases {
		err := decodeBody([]byte(c.body), new(sampleBody))
		if err == nil || err.Status != 422 || err.Message != c.want {
			t.Errorf("%q: got %v, want 422 %q", c.body, err, c.want)
		}
	}
	var ok sampleBody
	if err := decodeBody([]byte(`{"keyId":"a","usage":"sign","unknown":1,"keyBytes":null}`), &ok); err != nil {
		t.Fatalf("valid body refused: %v", err)
	}
}

// FuzzDecodeBody: request decoding never panics and either succeeds or answers 422.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"keyId":"a","usage":"sign"}`, `[`, `{"keyBytes":"AAAA"}`, "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if err := decodeBody(body, new(sampleBody)); err != nil && err.Status != 422 {
			t.Fatalf("status %d", err.Status)
		}
	})
}

// FuzzRoute: a path matches a one-parameter pattern exactly when it is the literal
// prefix plus one non-empty segment whose decoding is UTF-8, and the parameter is that
// decoding; percent-decoding inverts escaping; query parsing keeps every pair in order.
func FuzzRoute(f *testing.F) {
	f.Add("/parameters/a%2Fb", "api-version=2020-09-01", "a/b")
	f.Add("/parameters/", "a=1&&b", "")
	f.Add("/parameters/x/y", "%zz=%ff", "\xff")
	rt := Route{Pattern: "/parameters/{parameterName}"}
	rt.segs = compilePattern(rt.Pattern)
	f.Fuzz(func(t *testing.T, path, query, id string) {
		params, ok := rt.match(path)
		seg, prefixed := strings.CutPrefix(path, "/parameters/")
		decoded := percentDecode(seg, false)
		want := prefixed && seg != "" && !strings.Contains(seg, "/") && utf8.ValidString(decoded)
		if ok != want {
			t.Fatalf("match(%q) = %v, want %v", path, ok, want)
		}
		if ok && params["parameterName"] != decoded {
			t.Fatalf("match(%q) param %q, want %q", path, params["parameterName"], decoded)
		}
		if got := percentDecode(url.PathEscape(id), false); got != id {
			t.Fatalf("percentDecode(PathEscape(%q)) = %q", id, got)
		}
		if utf8.ValidString(id) && id != "" {
			p, ok := rt.match("/parameters/" + url.PathEscape(id))
			if !ok || p["parameterName"] != id {
				t.Fatalf("escaped ID %q does not round-trip: %v %q", id, ok, p["parameterName"])
			}
		}
		pairs := parseQuery(query)
		if n := len(strings.FieldsFunc(query, func(r rune) bool { return r == '&' })); len(pairs) != n {
			t.Fatalf("parseQuery(%q): %d pairs, want %d", query, len(pairs), n)
		}
		var enc []string
		for _, kv := range pairs {
			enc = append(enc, url.QueryEscape(kv[0])+"="+url.QueryEscape(kv[1]))
		}
		if again := parseQuery(strings.Join(enc, "&")); !slices.Equal(again, pairs) {
			t.Fatalf("parseQuery does not round-trip: %q -> %q", pairs, again)
		}
		if r := rustDebug(query); !strings.HasPrefix(r, `"`) || !strings.HasSuffix(r, `"`) {
			t.Fatalf("rustDebug(%q) = %s", query, r)
		}
	})
}
