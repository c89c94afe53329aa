#!/usr/bin/env bash
# Prints one closing line for all test projects: "Tests: N passed, N failed, N skipped",
# summed from the TRX files `dotnet test --logger trx` wrote into the given directory.
set -euo pipefail
dir=${1:?usage: summarize-trx.sh RESULTS_DIR}
passed=0 failed=0 total=0
shopt -s nullglob
files=("$dir"/*.trx)
if ((${#files[@]} == 0)); then echo "Tests: no test results found in $dir" >&2; exit 1; fi
for f in "${files[@]}"; do
    counters=$(grep -o '<Counters [^>]*>' "$f")
    get() { sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$counters"; }
    total=$((total + $(get total)))
    passed=$((passed + $(get passed)))
    failed=$((failed + $(get failed)))
done
skipped=$((total - passed - failed))
echo "Tests: $passed passed, $failed failed, $skipped skipped"
