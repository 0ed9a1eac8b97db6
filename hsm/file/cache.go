package file

import (
	"container/list"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/iotbroker/aziot/hsm"
)

// DefaultCacheEntries bounds the process-wide cache of the zero Store. Key IDs come from
// callers, so the number of files keyd may be asked to read is not ours to choose; a
// device holds tens of keys, and 4096 entries of the largest key (RSA-4096: its PEM and
// the parsed key, about 8 KiB) stay under 40 MiB.
const DefaultCacheEntries = 4096

// defaultCache serves every Store built as Store{} (keyd's): what a path holds is
// process-wide state, and entries are checked against the file on every use.
var defaultCache = newCache(DefaultCacheEntries)

// fingerprint identifies what a path names: a new inode (atomic rename, delete and
// create), a write in place (mtime, ctime, size) or a chmod or link (ctime) changes it.
type fingerprint struct {
	dev, ino     uint64
	mtime, ctime int64 // nanoseconds since the epoch
	size         int64
}

// entry is one key file as read, with the key pair parsed from it on first use (a P-256
// parse is a scalar multiplication, an RSA one validates and precomputes the key).
type entry struct {
	path string
	fp   fingerprint
	raw  []byte // the symmetric key, or a key pair's PEM (read-only once cached)

	parse  sync.Once
	signer crypto.Signer
	perr   error

	// macs holds HMAC-SHA256 states keyed with raw: keyd MACs every handle with the
	// validation key, and a new state costs two block compressions and four allocations.
	macs sync.Pool
}

// hmac is HMAC-SHA256 of msg keyed with the entry's raw bytes.
func (e *entry) hmac(msg []byte) []byte {
	m, _ := e.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, e.raw)
	}
	m.Write(msg)
	out := m.Sum(make([]byte, 0, sha256.Size))
	m.Reset()
	e.macs.Put(m)
	return out
}

// keyPair returns the parsed private key, parsing it once per entry.
func (e *entry) keyPair() (crypto.Signer, error) {
	e.parse.Do(func() { e.signer, e.perr = parsePrivateKey(e.raw) })
	return e.signer, e.perr
}

// cache holds key files keyd has read, least recently used first out. An entry is
// trusted only while one stat of its path gives the same fingerprint; keyd's own writes
// drop it as well.
type cache struct {
	mu      sync.Mutex
	max     int
	entries map[string]*list.Element // of *entry
	lru     list.List                // front: most recently used

	// open and stat are the file system calls, replaced by tests that count them.
	open func(string) (*os.File, error)
	stat func(string) (fingerprint, bool, error)
}

func newCache(max int) *cache {
	return &cache{max: max, entries: map[string]*list.Element{}, open: os.Open, stat: statPath}
}

// load returns what path holds: the cached entry if the file is unchanged, else the file
// read once (and cached). A missing file is (nil, nil).
func (c *cache) load(loc hsm.Location) (*entry, error) {
	if e := c.get(loc.Path); e != nil {
		fp, ok, err := c.stat(loc.Path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			c.remove(loc.Path, e)
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("stat %s: %w", loc, err)
		case ok && fp == e.fp:
			return e, nil
		}
		c.remove(loc.Path, e)
	}
	return c.read(loc)
}

// read reads the file and caches it with the fingerprint of the open file, so that the
// entry never pairs one file's content with another's identity.
func (c *cache) read(loc hsm.Location) (*entry, error) {
	f, err := c.open(loc.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", loc, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", loc, err)
	}
	// One read for the whole file, as os.ReadFile sizes its buffer.
	b := make([]byte, 0, fi.Size()+1)
	for {
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", loc, err)
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
	e := &entry{path: loc.Path, raw: b}
	fp, ok := fingerprintOf(fi)
	if ok {
		e.fp = fp
		c.put(e)
	}
	return e, nil
}

func (c *cache) get(path string) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[path]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(el)
	return el.Value.(*entry)
}

func (c *cache) put(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[e.path]; ok {
		c.lru.Remove(el)
	}
	c.entries[e.path] = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		old := c.lru.Remove(c.lru.Back()).(*entry)
		delete(c.entries, old.path)
	}
}

// remove drops path's entry if it is still e (another request may have cached a newer
// read meanwhile).
func (c *cache) remove(path string, e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[path]; ok && el.Value.(*entry) == e {
		c.lru.Remove(el)
		delete(c.entries, path)
	}
}

// invalidate drops path's entry after keyd wrote, removed or renamed the file. The stat
// check would notice (each of these makes a new inode or none), but a write must not
// depend on it, and the old key should not outlive its file in memory.
func (c *cache) invalidate(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[path]; ok {
		c.lru.Remove(el)
		delete(c.entries, path)
	}
}

// len is the number of entries (tests).
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
