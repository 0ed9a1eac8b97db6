package policy

// IdentitydPrincipal is one [[principal]] entry of identityd's config, as the caller
// resolution needs it (api-identity.md §1.1).
type IdentitydPrincipal struct {
	UID  uint32
	Name string
	// IDType is nil for a "daemon" entry (no idtype key); non-nil (possibly empty) for a
	// host process.
	IDType []string
	// LocalID are the entry's localid options (type, attributes), or nil.
	LocalID map[string]string
}

// Caller kinds of identityd (api-identity.md §1.1), as input.caller.principal.kind.
const (
	KindLocalRoot   = "local_root"
	KindDaemon      = "daemon"
	KindHostProcess = "host_process"
	KindUnknown     = "unknown"
)

// IdentitydPrincipals is identityd's lookup map built as upstream builds it: entries are
// taken in order; of the entries without idtype only the first is kept; a later entry
// with the same uid replaces an earlier one.
type IdentitydPrincipals struct {
	byUID map[uint32]IdentitydPrincipal
	// Ignored are the names of daemon entries dropped (upstream warns about them).
	Ignored []string
}

// NewIdentitydPrincipals builds the lookup map from the config's entries.
func NewIdentitydPrincipals(entries []IdentitydPrincipal) *IdentitydPrincipals {
	p := &IdentitydPrincipals{byUID: map[uint32]IdentitydPrincipal{}}
	daemonSeen := false
	for _, e := range entries {
		if e.IDType == nil {
			if daemonSeen {
				p.Ignored = append(p.Ignored, e.Name)
				continue
			}
			daemonSeen = true
		}
		p.byUID[e.UID] = e
	}
	return p
}

// Principal returns input.caller.principal for a peer uid — the value identityd must put
// in the input of every decision (it is what broker.Service.Principal returns):
//
//	{"kind": "host_process", "name": "<name>", "idtype": ["device", "module", "local"], "localid": {...}?}
//	{"kind": "daemon", "name": "<name>"}
//	{"kind": "local_root"}
//	{"kind": "unknown"}
//
// A uid in the map wins over uid 0 (a root principal entry takes precedence).
func (p *IdentitydPrincipals) Principal(uid uint32) map[string]any {
	e, ok := p.byUID[uid]
	switch {
	case ok && e.IDType != nil:
		idtype := make([]any, len(e.IDType))
		for i, t := range e.IDType {
			idtype[i] = t
		}
		m := map[string]any{"kind": KindHostProcess, "name": e.Name, "idtype": idtype}
		if e.LocalID != nil {
			lid := map[string]any{}
			for k, v := range e.LocalID {
				lid[k] = v
			}
			m["localid"] = lid
		}
		return m
	case ok:
		return map[string]any{"kind": KindDaemon, "name": e.Name}
	case uid == 0:
		return map[string]any{"kind": KindLocalRoot}
	}
	return map[string]any{"kind": KindUnknown}
}
