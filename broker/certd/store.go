package certd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/internal/atomicfile"
)

// errNotFound is a cert ID with nothing stored.
var errNotFound = errors.New("not found")

// store reads and writes certificates where upstream keeps them (api-certs.md §2).
type store struct {
	homedir   string
	preloaded map[string]PreloadedCert
}

func (s *store) path(id string) (string, error) {
	if p, ok := s.preloaded[id]; ok {
		if p.Path == "" {
			return "", fmt.Errorf("cert %q is a preloaded list of IDs and cannot be written", id)
		}
		return p.Path, nil
	}
	return filepath.Join(s.homedir, "certs", hsm.FileName(id, ".cer")), nil
}

// get returns the PEM text of id; a list ID concatenates the members that exist.
func (s *store) get(id string) ([]byte, error) {
	if p, ok := s.preloaded[id]; ok && p.Path == "" {
		var out []byte
		for _, member := range p.IDs {
			if member == id {
				continue
			}
			b, err := s.readOne(member)
			if errors.Is(err, errNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			out = append(out, b...)
		}
		if out == nil {
			return nil, errNotFound
		}
		return out, nil
	}
	return s.readOne(id)
}

func (s *store) readOne(id string) ([]byte, error) {
	if p, ok := s.preloaded[id]; ok && p.Path == "" {
		// A list inside a list: upstream reads members as plain certs only.
		return nil, errNotFound
	}
	path, err := s.path(id)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read cert %q: %w", id, err)
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("cert %q at %s is not PEM text", id, path)
	}
	return b, nil
}

func (s *store) put(id string, pem []byte) error {
	path, err := s.path(id)
	if err != nil {
		return err
	}
	if err := atomicfile.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create cert directory: %w", err)
	}
	return atomicfile.Write(path, pem, 0o644)
}

func (s *store) delete(id string) error {
	path, err := s.path(id)
	if err != nil {
		return err
	}
	return atomicfile.Remove(path)
}
