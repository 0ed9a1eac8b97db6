package policy

import (
	"sort"
	"strconv"
)

// PrincipalData builds the `data` document the default policy reads for a service:
// data.aziot.principals.<service>["<uid>"] = [patterns...], entries for a UID unioned.
func PrincipalData(service string, patterns map[uint32][]string) map[string]any {
	uids := make([]uint32, 0, len(patterns))
	for uid := range patterns {
		uids = append(uids, uid)
	}
	sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
	byUID := make(map[string]any, len(uids))
	for _, uid := range uids {
		list := make([]any, len(patterns[uid]))
		for i, p := range patterns[uid] {
			list[i] = p
		}
		byUID[strconv.FormatUint(uint64(uid), 10)] = list
	}
	return map[string]any{"aziot": map[string]any{"principals": map[string]any{service: byUID}}}
}
