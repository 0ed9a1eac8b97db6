package policy

import (
	"crypto/sha256"
	"math"
	"slices"
	"strconv"
	"sync"
)

// Decision cache bounds of one policy snapshot.
const (
	// DefaultCacheSize bounds the number of cached decisions.
	DefaultCacheSize = 4096
	// DefaultCacheBytes bounds the memory the cached decisions hold (keys, deny messages
	// and map overhead, estimated).
	DefaultCacheBytes = 4 << 20
	// MaxCachedInputBytes is the largest canonical input encoding that is cached: a
	// bigger input (a caller sending huge IDs) is evaluated every time, which costs it
	// and nobody else, instead of letting one uid fill the cache with big entries.
	MaxCachedInputBytes = 4 << 10
)

// entryOverhead estimates what one entry costs beside its deny messages: the 32-byte
// key, the Decision struct and the map's bucket share.
const entryOverhead = 160

// cacheKey is the SHA-256 of an input's canonical encoding. A fixed-size key keeps an
// entry small however big the input; SHA-256 makes a collision (which would hand one
// input another's decision) impossible in practice, where a shorter or non-cryptographic
// hash could be forced by a caller choosing IDs.
type cacheKey [sha256.Size]byte

// decisionCache maps the hash of a canonical encoding of a whole input to its decision.
// It belongs to one policy snapshot: a policy, bundle or principal change builds a new
// snapshot with an empty cache, so a stale decision cannot outlive the change. Policies
// that read the clock (or anything else outside input and data) get no cache at all.
type decisionCache struct {
	mu       sync.RWMutex
	max      int
	maxBytes int
	bytes    int
	m        map[cacheKey]Decision
}

func newDecisionCache(max, maxBytes int) *decisionCache {
	return &decisionCache{max: max, maxBytes: maxBytes, m: make(map[cacheKey]Decision, 64)}
}

func (c *decisionCache) get(key *cacheKey) (Decision, bool) {
	c.mu.RLock()
	d, ok := c.m[*key]
	c.mu.RUnlock()
	return d, ok
}

func entryCost(d Decision) int {
	n := entryOverhead
	for _, s := range d.Deny {
		n += len(s) + 16
	}
	return n
}

func (c *decisionCache) put(key *cacheKey, d Decision) {
	cost := entryCost(d)
	if cost > c.maxBytes/16 {
		// One decision with huge deny messages would crowd out the rest.
		return
	}
	c.mu.Lock()
	if _, ok := c.m[*key]; !ok {
		if len(c.m) >= c.max || c.bytes+cost > c.maxBytes {
			// Bounded: start over rather than track recency; a full cache means inputs
			// vary (new pids, many IDs) and the policy is evaluated anyway.
			c.m = make(map[cacheKey]Decision, 64)
			c.bytes = 0
		}
		c.m[*key] = d
		c.bytes += cost
	}
	c.mu.Unlock()
}

func (c *decisionCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

func (c *decisionCache) size() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes
}

// keyBufs recycles the encoding buffers so that a cache hit allocates nothing.
var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// inputKey hashes the canonical encoding of in (see encodeInput). ok is false when the
// input is not cached: too large, or holding a value the encoder does not know.
func inputKey(in *Input, withPID bool) (key cacheKey, ok bool) {
	bp := keyBufs.Get().(*[]byte)
	b, ok := encodeInput((*bp)[:0], in, withPID, MaxCachedInputBytes)
	if ok {
		key = sha256.Sum256(b)
	}
	if cap(b) <= 2*MaxCachedInputBytes {
		*bp = b[:0]
		keyBufs.Put(bp)
	}
	return key, ok
}

// encodeInput appends an encoding of every field of the input that can reach the
// policy, unambiguously: strings are quoted, maps are written in key order, lists keep
// their order. Two inputs get the same encoding only if they are the same document (the
// pid aside when no module can read it). It gives up (ok false) as soon as the encoding
// passes limit bytes (limit <= 0: no limit), or on a value it does not know.
func encodeInput(b []byte, in *Input, withPID bool, limit int) ([]byte, bool) {
	e := encoder{b: b, limit: limit}
	e.quote(in.Service)
	e.quote(in.Operation)
	e.quote(in.APIVersion)
	c := &in.Caller
	e.b = append(e.b, 'u')
	e.b = strconv.AppendUint(e.b, uint64(c.UID), 10)
	e.b = append(e.b, 'g')
	e.b = strconv.AppendUint(e.b, uint64(c.GID), 10)
	if c.Groups != nil {
		e.b = append(e.b, 'G', '[')
		for _, g := range c.Groups {
			e.b = strconv.AppendUint(e.b, uint64(g), 10)
			e.b = append(e.b, ',')
		}
		e.b = append(e.b, ']')
	}
	if withPID && c.PID != 0 {
		e.b = append(e.b, 'p')
		e.b = strconv.AppendInt(e.b, int64(c.PID), 10)
	}
	if c.Exe != "" {
		e.b = append(e.b, 'e')
		e.quote(c.Exe)
	}
	if c.Principal != nil {
		e.b = append(e.b, 'P')
		e.value(c.Principal)
	}
	if in.Resource != nil {
		e.b = append(e.b, 'R')
		e.value(in.Resource)
	}
	if in.Request != nil {
		e.b = append(e.b, 'Q')
		e.value(in.Request)
	}
	return e.b, e.ok()
}

type encoder struct {
	b     []byte
	limit int
	bad   bool
}

func (e *encoder) ok() bool { return !e.bad && !e.over() }

func (e *encoder) over() bool { return e.limit > 0 && len(e.b) > e.limit }

// quote appends s prefixed with its length, which is as unambiguous as quoting and needs
// no escaping; a string that alone passes the limit is not copied at all.
func (e *encoder) quote(s string) {
	if e.limit > 0 && len(e.b)+len(s) > e.limit {
		e.bad = true
		return
	}
	e.b = strconv.AppendInt(e.b, int64(len(s)), 10)
	e.b = append(e.b, '"')
	e.b = append(e.b, s...)
}

func (e *encoder) value(v any) {
	if e.bad || e.over() {
		e.bad = true
		return
	}
	switch x := v.(type) {
	case nil:
		e.b = append(e.b, 'n')
	case string:
		e.quote(x)
	case bool:
		if x {
			e.b = append(e.b, 't')
		} else {
			e.b = append(e.b, 'f')
		}
	case int:
		e.b = append(e.b, '#')
		e.b = strconv.AppendInt(e.b, int64(x), 10)
	case int64:
		e.b = append(e.b, '#')
		e.b = strconv.AppendInt(e.b, x, 10)
	case uint32:
		e.b = append(e.b, '#')
		e.b = strconv.AppendUint(e.b, uint64(x), 10)
	case uint64:
		e.b = append(e.b, '#')
		e.b = strconv.AppendUint(e.b, x, 10)
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			e.b = append(e.b, '#')
			e.b = strconv.AppendInt(e.b, int64(x), 10)
		} else {
			e.b = append(e.b, '~')
			e.b = strconv.AppendFloat(e.b, x, 'g', -1, 64)
		}
	case []string:
		e.b = append(e.b, '[')
		for _, s := range x {
			if e.bad {
				return
			}
			e.quote(s)
			e.b = append(e.b, ',')
		}
		e.b = append(e.b, ']')
	case []any:
		e.b = append(e.b, '[')
		for _, el := range x {
			if e.bad {
				return
			}
			e.value(el)
			e.b = append(e.b, ',')
		}
		e.b = append(e.b, ']')
	case map[string]any:
		e.b = append(e.b, '{')
		var small [8]string
		for _, k := range keysInOrder(x, small[:0]) {
			if e.bad {
				return
			}
			e.quote(k)
			e.b = append(e.b, ':')
			e.value(x[k])
			e.b = append(e.b, ',')
		}
		e.b = append(e.b, '}')
	case map[string]string:
		e.b = append(e.b, '{')
		var small [8]string
		for _, k := range keysInOrder(x, small[:0]) {
			e.quote(k)
			e.b = append(e.b, ':')
			e.quote(x[k])
			e.b = append(e.b, ',')
		}
		e.b = append(e.b, '}')
	default:
		// Other types are not cached.
		e.bad = true
	}
}

// keysInOrder appends m's keys to buf in order; the maps of an input are small, and a
// buffer on the caller's stack spares the allocation sortedKeys makes.
func keysInOrder[V any](m map[string]V, buf []string) []string {
	for k := range m {
		buf = append(buf, k)
	}
	slices.Sort(buf)
	return buf
}
