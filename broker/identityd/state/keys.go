package state

import (
	"context"
	"errors"
	"fmt"
)

// MasterKeyID is the keyd symmetric key every module key is derived from (flows.md §5).
// Modules created by upstream keep working only if we derive from this same key.
const MasterKeyID = "aziot_identityd_master_id"

// MasterKeyUsage is the usage upstream creates the master key with when it is missing.
const MasterKeyUsage = "derive,sign"

// DeriveFunc derives a key from the key behind baseHandle with data and returns the
// derived key's handle (keyd POST /derivedkey; sdk/keys DeriveKey).
type DeriveFunc func(ctx context.Context, baseHandle string, data []byte) (handle string, err error)

// ErrNoGenerationID: a module without a generation ID has no keys; upstream answers
// "module not found" in that case.
var ErrNoGenerationID = errors.New("module has no generation ID")

// PrimaryDerivationData is the derivation data of a module's primary key:
// UTF-8 "<moduleId>:<generationId>:primary" (flows.md §5, api-identity.md §2.1).
func PrimaryDerivationData(moduleID, generationID string) []byte {
	return []byte(moduleID + ":" + generationID + ":primary")
}

// SecondaryDerivationData is the same with ":secondary".
func SecondaryDerivationData(moduleID, generationID string) []byte {
	return []byte(moduleID + ":" + generationID + ":secondary")
}

// ModuleKeyHandles are the keyd handles of a module's derived keys. The primary one is
// the identity's keyHandle; exporting both gives the keys set in the Hub.
type ModuleKeyHandles struct {
	Primary   string
	Secondary string
}

// DeriveModuleKeys derives both key handles of module m from the master key handle.
// generationID is the module's generation ID as the Hub returned it (nil: none).
func DeriveModuleKeys(ctx context.Context, derive DeriveFunc, masterHandle, moduleID string, generationID *string) (ModuleKeyHandles, error) {
	if generationID == nil {
		return ModuleKeyHandles{}, fmt.Errorf("derive keys of module %q: %w", moduleID, ErrNoGenerationID)
	}
	p, err := derive(ctx, masterHandle, PrimaryDerivationData(moduleID, *generationID))
	if err != nil {
		return ModuleKeyHandles{}, fmt.Errorf("derive primary key of module %q: %w", moduleID, err)
	}
	s, err := derive(ctx, masterHandle, SecondaryDerivationData(moduleID, *generationID))
	if err != nil {
		return ModuleKeyHandles{}, fmt.Errorf("derive secondary key of module %q: %w", moduleID, err)
	}
	return ModuleKeyHandles{Primary: p, Secondary: s}, nil
}

// DerivePrimaryKey derives only the primary handle, which is all a get-identity answer
// needs.
func DerivePrimaryKey(ctx context.Context, derive DeriveFunc, masterHandle, moduleID string, generationID *string) (string, error) {
	if generationID == nil {
		return "", fmt.Errorf("derive key of module %q: %w", moduleID, ErrNoGenerationID)
	}
	p, err := derive(ctx, masterHandle, PrimaryDerivationData(moduleID, *generationID))
	if err != nil {
		return "", fmt.Errorf("derive primary key of module %q: %w", moduleID, err)
	}
	return p, nil
}
