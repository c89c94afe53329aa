#!/usr/bin/env bash
# Prints one closing line for all test projects: "Tests: N passed, N failed, N skipped",
# summed from the TRX files `dotnet test --logger trx` wrote into the given directory.
# Failed tests are named again right above it, with the first lines of their messages, so the
# tail of a long CI log says what failed without scrolling back through every project's output.
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
if ((failed > 0)); then
    # The TRX is XML with one <UnitTestResult ... outcome="..."> per test and its <Message> inside.
    awk '
        /<UnitTestResult / { failed = /outcome="Failed"/; inmsg = 0
            if (failed) { match($0, /testName="[^"]*"/); print "FAILED " substr($0, RSTART + 10, RLENGTH - 11) } }
        failed && /<Message>/ { inmsg = 1; lines = 0; sub(/.*<Message>/, "") }
        failed && inmsg { done = sub(/<\/Message>.*/, ""); gsub(/&lt;/, "<"); gsub(/&gt;/, ">"); gsub(/&quot;/, "\""); gsub(/&amp;/, "\\&"); if (lines++ < 6) print "    " substr($0, 1, 300); if (done) inmsg = 0 }
    ' "${files[@]}"
fi
skipped=$((total - passed - failed))
echo "Tests: $passed passed, $failed failed, $skipped skipped"
