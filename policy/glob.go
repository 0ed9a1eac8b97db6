package policy

import (
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"
)

// GlobMatch reports whether s matches pattern as upstream's principal patterns do:
// whole string, case-sensitive, `*` any sequence (also empty), `?` exactly one character,
// and no other special characters (unlike OPA's glob.match, which also knows [] and {}).
func GlobMatch(pattern, s string) bool {
	// Iterative matcher with one backtrack point: linear in practice, no recursion.
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		if p < len(pattern) {
			pc, pn := utf8.DecodeRuneInString(pattern[p:])
			_, sn := utf8.DecodeRuneInString(s[i:])
			switch {
			case pc == '*':
				star, mark = p, i
				p += pn
				continue
			case pc == '?':
				p += pn
				i += sn
				continue
			case pattern[p:p+pn] == s[i:i+sn]:
				p += pn
				i += sn
				continue
			}
		}
		if star < 0 {
			return false
		}
		_, sn := utf8.DecodeRuneInString(s[mark:])
		mark += sn
		p, i = star+1, mark
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// GlobBuiltin is the Rego name of GlobMatch, available to the default and custom policies.
const GlobBuiltin = "aziot.glob_match"

func init() {
	rego.RegisterBuiltin2(&rego.Function{
		Name:             GlobBuiltin,
		Decl:             types.NewFunction(types.Args(types.S, types.S), types.B),
		Memoize:          false,
		Nondeterministic: false,
	}, func(_ rego.BuiltinContext, a, b *ast.Term) (*ast.Term, error) {
		pattern, ok1 := a.Value.(ast.String)
		s, ok2 := b.Value.(ast.String)
		if !ok1 || !ok2 {
			return ast.BooleanTerm(false), nil
		}
		return ast.BooleanTerm(GlobMatch(string(pattern), string(s))), nil
	})
}
