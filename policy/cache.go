package policy

import (
	"math"
	"strconv"
	"sync"
)

// DefaultCacheSize bounds the decision cache of one policy snapshot.
const DefaultCacheSize = 4096

// decisionCache maps a canonical encoding of a whole input to its decision. It belongs to
// one policy snapshot: a policy, bundle or principal change builds a new snapshot with an
// empty cache, so a stale decision cannot outlive the change. Policies that read the clock
// (or anything else outside input and data) get no cache at all.
type decisionCache struct {
	mu  sync.RWMutex
	max int
	m   map[string]Decision
}

func newDecisionCache(max int) *decisionCache {
	return &decisionCache{max: max, m: make(map[string]Decision, 64)}
}

func (c *decisionCache) get(key string) (Decision, bool) {
	c.mu.RLock()
	d, ok := c.m[key]
	c.mu.RUnlock()
	return d, ok
}

func (c *decisionCache) put(key string, d Decision) {
	c.mu.Lock()
	if len(c.m) >= c.max {
		// Bounded: start over rather than track recency; a full cache means inputs vary
		// (new pids, many IDs) and the policy is evaluated anyway.
		c.m = make(map[string]Decision, 64)
	}
	c.m[key] = d
	c.mu.Unlock()
}

func (c *decisionCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// cacheKey encodes every field of the input that can reach the policy, unambiguously:
// strings are quoted, maps are written in key order, lists keep their order. Two inputs
// get the same key only if they are the same document (the pid aside when no module can
// read it). An input holding a value the encoder does not know gets no key ("") and is
// not cached.
func cacheKey(in *Input, withPID bool) string {
	b := make([]byte, 0, 256)
	b = strconv.AppendQuote(b, in.Service)
	b = strconv.AppendQuote(b, in.Operation)
	b = strconv.AppendQuote(b, in.APIVersion)
	c := &in.Caller
	b = append(b, 'u')
	b = strconv.AppendUint(b, uint64(c.UID), 10)
	b = append(b, 'g')
	b = strconv.AppendUint(b, uint64(c.GID), 10)
	if c.Groups != nil {
		b = append(b, 'G', '[')
		for _, g := range c.Groups {
			b = strconv.AppendUint(b, uint64(g), 10)
			b = append(b, ',')
		}
		b = append(b, ']')
	}
	if withPID && c.PID != 0 {
		b = append(b, 'p')
		b = strconv.AppendInt(b, int64(c.PID), 10)
	}
	if c.Exe != "" {
		b = append(b, 'e')
		b = strconv.AppendQuote(b, c.Exe)
	}
	var ok bool
	if c.Principal != nil {
		b = append(b, 'P')
		if b, ok = appendValue(b, c.Principal); !ok {
			return ""
		}
	}
	if in.Resource != nil {
		b = append(b, 'R')
		if b, ok = appendValue(b, in.Resource); !ok {
			return ""
		}
	}
	if in.Request != nil {
		b = append(b, 'Q')
		if b, ok = appendValue(b, in.Request); !ok {
			return ""
		}
	}
	return string(b)
}

func appendValue(b []byte, v any) ([]byte, bool) {
	ok := true
	switch x := v.(type) {
	case nil:
		b = append(b, 'n')
	case string:
		b = strconv.AppendQuote(b, x)
	case bool:
		if x {
			b = append(b, 't')
		} else {
			b = append(b, 'f')
		}
	case int:
		b = append(b, '#')
		b = strconv.AppendInt(b, int64(x), 10)
	case int64:
		b = append(b, '#')
		b = strconv.AppendInt(b, x, 10)
	case uint32:
		b = append(b, '#')
		b = strconv.AppendUint(b, uint64(x), 10)
	case uint64:
		b = append(b, '#')
		b = strconv.AppendUint(b, x, 10)
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			b = append(b, '#')
			b = strconv.AppendInt(b, int64(x), 10)
		} else {
			b = append(b, '~')
			b = strconv.AppendFloat(b, x, 'g', -1, 64)
		}
	case []string:
		b = append(b, '[')
		for _, s := range x {
			b = strconv.AppendQuote(b, s)
			b = append(b, ',')
		}
		b = append(b, ']')
	case []any:
		b = append(b, '[')
		for _, e := range x {
			if b, ok = appendValue(b, e); !ok {
				return b, false
			}
			b = append(b, ',')
		}
		b = append(b, ']')
	case map[string]any:
		b = append(b, '{')
		for _, k := range sortedKeys(x) {
			b = strconv.AppendQuote(b, k)
			b = append(b, ':')
			if b, ok = appendValue(b, x[k]); !ok {
				return b, false
			}
			b = append(b, ',')
		}
		b = append(b, '}')
	case map[string]string:
		b = append(b, '{')
		for _, k := range sortedKeys(x) {
			b = strconv.AppendQuote(b, k)
			b = append(b, ':')
			b = strconv.AppendQuote(b, x[k])
			b = append(b, ',')
		}
		b = append(b, '}')
	default:
		// Other types are not cached.
		return b, false
	}
	return b, true
}
