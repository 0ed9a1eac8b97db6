package superconfig

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The generated files must be byte-identical to what upstream's TOML serializer
// (toml crate 1.x) writes, so we keep our own small ordered document model instead of
// going through a general-purpose encoder whose layout we do not control
// (config.md §2.6).

// table is an ordered TOML table. Values are string, int64, bool, float64,
// []string, []any (inline array), *table, []*table (array of tables) or a
// datetime from BurntSushi/toml.
type table struct {
	keys []string
	vals map[string]any
}

func newTable() *table { return &table{vals: map[string]any{}} }

// set appends key (or replaces its value in place, keeping its position).
func (t *table) set(key string, v any) {
	if _, ok := t.vals[key]; !ok {
		t.keys = append(t.keys, key)
	}
	t.vals[key] = v
}

// sub returns the sub-table at key, creating it at the end if absent.
func (t *table) sub(key string) *table {
	if st, ok := t.vals[key].(*table); ok {
		return st
	}
	st := newTable()
	t.set(key, st)
	return st
}

// setSorted fills t from m with keys in bytewise order, as Rust's BTreeMap does.
func setSorted[V any](t *table, m map[string]V, conv func(V) any) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.set(k, conv(m[k]))
	}
}

func isTableLike(v any) bool {
	switch v.(type) {
	case *table, []*table:
		return true
	}
	return false
}

// hasPlain reports whether t holds any key/value that is written under its own header.
func (t *table) hasPlain() bool {
	for _, k := range t.keys {
		if !isTableLike(t.vals[k]) {
			return true
		}
	}
	return false
}

type tomlWriter struct {
	b strings.Builder
}

// marshal writes t as a document: plain values first, then sub-tables, one blank line
// before every header except on the first line; a table with no plain values but with
// sub-tables gets no header of its own, an empty table a bare one.
func marshal(t *table) []byte {
	var w tomlWriter
	w.body(t, nil)
	return []byte(w.b.String())
}

func (w *tomlWriter) header(h string) {
	if w.b.Len() > 0 {
		w.b.WriteByte('\n')
	}
	w.b.WriteString(h)
	w.b.WriteByte('\n')
}

func (w *tomlWriter) body(t *table, path []string) {
	for _, k := range t.keys {
		v := t.vals[k]
		if isTableLike(v) {
			continue
		}
		w.b.WriteString(formatKey(k))
		w.b.WriteString(" = ")
		w.b.WriteString(formatValue(v))
		w.b.WriteByte('\n')
	}
	for _, k := range t.keys {
		p := append(append([]string(nil), path...), k)
		switch v := t.vals[k].(type) {
		case *table:
			if v.hasPlain() || len(v.keys) == 0 {
				w.header("[" + formatPath(p) + "]")
			}
			w.body(v, p)
		case []*table:
			for _, e := range v {
				w.header("[[" + formatPath(p) + "]]")
				w.body(e, p)
			}
		}
	}
}

func formatPath(p []string) string {
	parts := make([]string, len(p))
	for i, k := range p {
		parts[i] = formatKey(k)
	}
	return strings.Join(parts, ".")
}

// formatKey writes a bare key where TOML allows one, else a quoted key.
func formatKey(k string) string {
	if k == "" {
		return `""`
	}
	for _, r := range k {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return quote(k)
		}
	}
	return k
}

func quote(s string) string {
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
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

func formatValue(v any) string {
	switch v := v.(type) {
	case string:
		return quote(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case uint64:
		return strconv.FormatUint(v, 10)
	case int:
		return strconv.Itoa(v)
	case uint32:
		return strconv.FormatUint(uint64(v), 10)
	case bool:
		return strconv.FormatBool(v)
	case float64:
		switch {
		case math.IsNaN(v):
			return "nan"
		case math.IsInf(v, 1):
			return "inf"
		case math.IsInf(v, -1):
			return "-inf"
		}
		s := strconv.FormatFloat(v, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eEn") {
			s += ".0"
		}
		return s
	case time.Time:
		return v.Format(time.RFC3339Nano)
	case []string:
		parts := make([]string, len(v))
		for i, s := range v {
			parts[i] = quote(s)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = formatValue(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case *table:
		// Inline table: only reached for tables nested in inline arrays.
		parts := make([]string, 0, len(v.keys))
		for _, k := range v.keys {
			parts = append(parts, formatKey(k)+" = "+formatValue(v.vals[k]))
		}
		if len(parts) == 0 {
			return "{}"
		}
		return "{ " + strings.Join(parts, ", ") + " }"
	case []*table:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = formatValue(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case fmt.Stringer:
		// BurntSushi's local date/time types print in TOML syntax.
		return v.String()
	}
	return quote(fmt.Sprint(v))
}

// fromGeneric converts a table decoded by BurntSushi/toml into our ordered model with
// keys sorted, so an opaque table (our own [broker] settings) can be copied through.
func fromGeneric(m map[string]any) *table {
	t := newTable()
	setSorted(t, m, genericValue)
	return t
}

func genericValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return fromGeneric(v)
	case []map[string]any:
		out := make([]*table, len(v))
		for i, e := range v {
			out[i] = fromGeneric(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = genericValue(e)
		}
		return out
	}
	return v
}
