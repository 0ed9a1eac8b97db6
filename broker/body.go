package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
)

// decodeBody parses a JSON body into v and reports errors the way serde_json words them,
// since upstream sends that text as the 422 message.
func decodeBody(body []byte, v any) *Error {
	// The plain form of a FastBody, then valid bodies through json.Unmarshal (a third
	// cheaper than a Decoder); a body both refuse is decoded again for serde's wording.
	if fb, ok := v.(FastBody); (ok && fb.DecodeFast(body)) || json.Unmarshal(body, v) == nil {
		return requireFields(body, v)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return Unprocessable(serdeMessage(body, err))
	}
	// serde rejects anything but whitespace after the value.
	if off := dec.InputOffset(); len(bytes.TrimSpace(body[off:])) != 0 {
		line, col := position(body, int(off)+len(body[off:])-len(bytes.TrimLeft(body[off:], " \t\r\n"))+1)
		return Unprocessable(fmt.Sprintf("trailing characters at line %d column %d", line, col))
	}
	return requireFields(body, v)
}

// requireFields is serde's answer to a decoded body that lacks a required field.
func requireFields(body []byte, v any) *Error {
	if field := missingField(v); field != "" {
		line, col := position(body, len(body))
		return Unprocessable(fmt.Sprintf("missing field `%s` at line %d column %d", field, line, col))
	}
	return nil
}

func serdeMessage(body []byte, err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case len(bytes.TrimSpace(body)) == 0:
		line, col := position(body, len(body))
		return fmt.Sprintf("EOF while parsing a value at line %d column %d", line, col)
	case errors.Is(err, io.ErrUnexpectedEOF):
		line, col := position(body, len(body))
		return fmt.Sprintf("EOF while parsing a value at line %d column %d", line, col)
	case errors.As(err, &syn):
		line, col := position(body, int(syn.Offset))
		return fmt.Sprintf("expected value at line %d column %d", line, col)
	case errors.As(err, &typ):
		line, col := position(body, int(typ.Offset))
		return fmt.Sprintf("invalid type: %s, expected %s at line %d column %d", typ.Value, expected(typ.Type), line, col)
	default:
		line, col := position(body, len(body))
		return fmt.Sprintf("%s at line %d column %d", strings.TrimPrefix(err.Error(), "json: "), line, col)
	}
}

func expected(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "base64 encoded bytes"
		}
		return "a sequence"
	case reflect.Struct, reflect.Map:
		return "a map"
	case reflect.Bool:
		return "a boolean"
	default:
		return t.Kind().String()
	}
}

// position turns a byte offset into serde's 1-based line and column.
func position(body []byte, off int) (int, int) {
	if off > len(body) {
		off = len(body)
	}
	line, col := 1, 0
	for _, c := range body[:off] {
		if c == '\n' {
			line++
			col = 0
		} else {
			col++
		}
	}
	return line, col
}

// requiredFields lists, per struct type, the fields tagged `required:"true"` (found once
// per type: reflection over the tags on every request was a visible cost).
var requiredFields sync.Map // reflect.Type → []requiredField

type requiredField struct {
	index  int
	name   string
	nested bool // a pointer to a struct whose own required fields are checked
}

func requiredOf(rt reflect.Type) []requiredField {
	if v, ok := requiredFields.Load(rt); ok {
		return v.([]requiredField)
	}
	var out []requiredField
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		if f.Tag.Get("required") != "true" {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		out = append(out, requiredField{index: i, name: name,
			nested: f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct})
	}
	requiredFields.Store(rt, out)
	return out
}

// missingField returns the JSON name of the first field tagged `required:"true"` that is
// still nil after decoding (required fields are pointers, slices or maps).
func missingField(v any) string {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return ""
		}
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return ""
	}
	for _, f := range requiredOf(rv.Type()) {
		fv := rv.Field(f.index)
		switch fv.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface:
			if fv.IsNil() {
				return f.name
			}
		}
		if f.nested {
			if m := missingField(fv.Interface()); m != "" {
				return m
			}
		}
	}
	return ""
}
