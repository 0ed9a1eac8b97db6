package pkcs11

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/iotbroker/aziot/hsm/pkcs11/p11uri"
)

// conn is one session lent to one operation.
type conn struct {
	ctx *pkcs11.Ctx
	s   pkcs11.SessionHandle
	t   *token
}

// errTokenChanged is a slot whose token is not the one the pool was opened on.
var errTokenChanged = errors.New("the token was removed or re-initialised")

// verify checks that the session's slot still holds the pool's token. A session on a
// deleted or re-initialised token can still answer "no such object"; that answer must
// not send a key to the file store.
func (c *conn) verify() error {
	info, err := c.ctx.GetTokenInfo(c.t.slot)
	if err != nil {
		return fmt.Errorf("read token info: %w", err)
	}
	if label(info) != c.t.label || info.SerialNumber != c.t.serial {
		return errTokenChanged
	}
	return nil
}

// find returns the objects of class labelled as u says (every object of the class when
// u has no object attribute, as upstream), at most max of them.
func (c *conn) find(u *p11uri.URI, class uint, max int) ([]pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}
	if u.HasObject {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object))
	}
	if err := c.ctx.FindObjectsInit(c.s, tmpl); err != nil {
		return nil, fmt.Errorf("find objects: %w", err)
	}
	objs, _, err := c.ctx.FindObjects(c.s, max)
	if ferr := c.ctx.FindObjectsFinal(c.s); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return nil, fmt.Errorf("find objects: %w", err)
	}
	if len(objs) == 0 {
		if err := c.verify(); err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// findOne returns the first object of class u names, and whether there was one.
func (c *conn) findOne(u *p11uri.URI, class uint) (pkcs11.ObjectHandle, bool, error) {
	cache := u.HasObject && c.t.cacheable()
	key := objectKey{class, u.Object}
	if cache {
		if h, ok := c.t.handles.Load(key); ok {
			return h.(pkcs11.ObjectHandle), true, nil
		}
	}
	objs, err := c.find(u, class, 1)
	if err != nil || len(objs) == 0 {
		return 0, false, err
	}
	if cache {
		c.t.handles.Store(key, objs[0])
	}
	return objs[0], true, nil
}

// destroyAll removes every object of the given classes labelled as u says.
func (c *conn) destroyAll(u *p11uri.URI, classes ...uint) error {
	for _, class := range classes {
		c.t.forget(class, u.Object)
		// Bounded: a label should name one object per class, a few at most.
		for range 64 {
			objs, err := c.find(u, class, 16)
			if err != nil {
				return err
			}
			if len(objs) == 0 {
				break
			}
			for _, o := range objs {
				if err := c.ctx.DestroyObject(c.s, o); err != nil {
					return fmt.Errorf("destroy object: %w", err)
				}
			}
		}
	}
	return nil
}

// attrs reads the given attributes of o, in order.
func (c *conn) attrs(o pkcs11.ObjectHandle, types ...uint) ([][]byte, error) {
	tmpl := make([]*pkcs11.Attribute, len(types))
	for i, t := range types {
		tmpl[i] = pkcs11.NewAttribute(t, nil)
	}
	got, err := c.ctx.GetAttributeValue(c.s, o, tmpl)
	if err != nil {
		return nil, fmt.Errorf("read object attributes: %w", err)
	}
	out := make([][]byte, len(types))
	for _, a := range got {
		for i, t := range types {
			if a.Type == t {
				out[i] = a.Value
			}
		}
	}
	return out, nil
}

// ulong decodes a CK_ULONG attribute value (native byte order and size).
func ulong(b []byte) uint {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b))
	case 4:
		return uint(binary.NativeEndian.Uint32(b))
	}
	return ^uint(0)
}

func (c *conn) keyType(o pkcs11.ObjectHandle) (uint, error) {
	v, err := c.attrs(o, pkcs11.CKA_KEY_TYPE)
	if err != nil {
		return 0, err
	}
	return ulong(v[0]), nil
}
