#!/usr/bin/env bash
# Runs every fuzz target listed in scripts/fuzz-targets ("<package> <FuzzName>") for a
# bounded time each, so CI stays predictable.
#
# Go's fuzzing engine can end a run at -fuzztime with "context deadline exceeded" on a
# busy machine while no input failed (golang/go#56238): a real failure always writes its
# input under testdata/fuzz ("Failing input written to ..."). Such a run is tried once
# more; a failure with an input written is always a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
while read -r pkg name; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  for attempt in 1 2; do
    echo "fuzz $pkg $name ($t)"
    if out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$pkg" 2>&1); then
      echo "$out" | tail -n 2
      break
    fi
    echo "$out"
    if grep -q "Failing input written" <<<"$out" || ! grep -q "context deadline exceeded" <<<"$out" || (( attempt == 2 )); then
      exit 1
    fi
    echo "fuzz $pkg $name: the engine timed out without a failing input; once more"
  done
done < scripts/fuzz-targets
