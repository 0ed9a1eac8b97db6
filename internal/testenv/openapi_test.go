package testenv

import "testing"

// The OpenAPI files the suites validate against load from SpecDir, so a clone that lacks
// them (or a reference LoadSpec no longer mends) fails here rather than deep in an e2e
// test. identityd's files are left out: upstream's examples there do not fit their own
// enum, which kin-openapi's validation rejects, and no test loads them yet.
func TestSpecsLoad(t *testing.T) {
	for _, rel := range []string{"certd/2020-09-01.yaml", "keyd/2020-09-01.yaml", "keyd/2021-05-01.yaml"} {
		t.Run(rel, func(t *testing.T) { LoadSpec(t, rel) })
	}
}
