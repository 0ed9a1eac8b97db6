# Top-level tasks. `make demo` and `make test` are the two set-up commands in README.md.
GO        ?= go
BIN       := bin
FUZZTIME  ?= 10s
PKGS      := ./...

.PHONY: all build demo test unit fuzz lint bench clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

demo: build
	./scripts/demo.sh

# The whole suite: vet, unit and end-to-end tests, bounded fuzzing.
test: build lint unit fuzz

unit:
	$(GO) test -count=1 -timeout 20m $(PKGS)

# Besides vet, staticcheck and gofmt: scripts/pathcheck fails on code paths outside the repo
# (a plain clone has no ../shared beside it), and go.mod/go.sum must be what `go mod tidy`
# makes of them (-diff prints the difference and fails, changing nothing).
lint:
	$(GO) vet $(PKGS)
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck $(PKGS); \
	 else $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.6.1 $(PKGS); fi
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) run ./scripts/pathcheck
	$(GO) mod tidy -diff

# Each fuzz target runs for FUZZTIME; the list is kept in scripts/fuzz-targets.
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# BENCHTIME is each measurement's window (BenchmarkBroker runs 3 rounds of keyd and of its
# bare baseline per configuration); a CI smoke run can pass BENCHTIME=100ms. The run
# rewrites bench/results.json.
BENCHTIME ?= 2s
bench: build
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -timeout 60m ./bench/...

clean:
	rm -rf $(BIN)
