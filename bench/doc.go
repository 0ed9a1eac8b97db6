// Package bench holds the broker's benchmarks, run by `make bench`. BenchmarkBroker
// (broker_test.go) measures keyd's /sign through its socket against a bare server of the
// same API (bench/cmd/bare: net/http, the same JSON and the same crypto, no authorization)
// in interleaved rounds, at 1, 8 and 64 clients, with kept and per-request connections,
// beside the same crypto in-process; it prints README's table and writes results.json.
// The other benchmarks measure key stores (hsm_test.go) and policy decisions
// (policy_test.go).
package bench
