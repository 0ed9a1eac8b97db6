// Package bench holds the broker's benchmarks, run by `make bench`: HMAC-SHA256 and
// ECDSA P-256 signing through keyd's socket at 1, 8 and 64 concurrent clients, beside the
// same operation in-process and a bare net/http echo server on a Unix socket, so that the
// broker's overhead shows as a ratio. See broker_test.go.
package bench
