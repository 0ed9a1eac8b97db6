package broker

import (
	"testing"
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

// FuzzRoute: path matching and query parsing never panic, and decoded IDs are UTF-8.
func FuzzRoute(f *testing.F) {
	f.Add("/key/a%2Fb", "api-version=2020-09-01")
	f.Fuzz(func(t *testing.T, path, query string) {
		rt := Route{Pattern: "/parameters/{parameterName}"}
		rt.match(path)
		parseQuery(query)
		rustDebug(query)
	})
}
