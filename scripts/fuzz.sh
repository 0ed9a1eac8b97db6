#!/usr/bin/env bash
# Runs every fuzz target listed in scripts/fuzz-targets ("<package> <FuzzName>") for a
# bounded time each, so CI stays predictable.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
while read -r pkg name; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  echo "fuzz $pkg $name ($t)"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$pkg"
done < scripts/fuzz-targets
