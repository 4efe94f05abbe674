#!/usr/bin/env bash
# Runs every Go fuzz target of the module, one after another, each for the
# same time, and prints a summary table.
#
#   bash integration/fuzz.sh [FUZZTIME] [PATTERN]
#
# FUZZTIME is what `go test -fuzztime` takes (default 60s; CI may use 3s).
# PATTERN, if given, keeps only the targets whose "package name" matches it
# (an extended regexp, e.g. 'swarm/' or 'FuzzReadFrame').
# FUZZ_PARALLEL sets the fuzzing workers per target (default 1: the machine
# is shared). FUZZ_MINIMIZE bounds the minimization of each new input
# (default 10s; go's own default of 60s lets a slow target spend all of a
# short run minimizing instead of fuzzing). Targets are found by grepping the *_test.go files for
# `func FuzzXxx(`, so new ones are picked up without editing this script.
# A crash leaves its input under the package's testdata/fuzz/FuzzXxx/, where
# it stays as a regression seed. Exits non-zero if any target fails.
# RESULT is ok, CRASH (an input failed; it is saved), FAIL (build or seed
# failure: see the log) or ok-deadline (go1.26's coordinator tripped over
# its own -fuzztime deadline, go.dev/issue/75804; nothing failed).
set -uo pipefail
cd "$(dirname "$0")/.."

T="${1:-60s}"
PATTERN="${2:-}"
PAR="${FUZZ_PARALLEL:-1}"
MIN="${FUZZ_MINIMIZE:-10s}"
LOGDIR="${FUZZ_LOGDIR:-$(mktemp -d "${TMPDIR:-/tmp}/fuzz.XXXXXX")}"
mkdir -p "$LOGDIR"

# "pkgdir name" per target, sorted; skips vendored and hidden directories.
targets=$(grep -rE --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]*\(' . \
  | grep -v -e '/vendor/' -e '/\.' -e '/testdata/' \
  | sed -E 's#^\./(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]*)\($#\1 \2#; s#^\./[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]*)\($#. \1#' \
  | sort -u)
if [ -n "$PATTERN" ]; then
  targets=$(echo "$targets" | grep -E -- "$PATTERN" || true)
fi
if [ -z "$targets" ]; then
  echo "fuzz.sh: no fuzz targets found" >&2
  exit 1
fi
n=$(echo "$targets" | wc -l)
echo "fuzz.sh: $n targets, $T each, $PAR worker(s); logs in $LOGDIR"

rows=()
failed=0
start_all=$(date +%s)
while read -r dir name; do
  pkg="./$dir"
  [ "$dir" = . ] && pkg=.
  log="$LOGDIR/$(echo "$dir" | tr / _)-$name.log"
  t0=$(date +%s)
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$T" -fuzzminimizetime "$MIN" -parallel "$PAR" "$pkg" >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  # The last progress line says how many inputs were run.
  execs=$(grep -oE 'execs: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  execs="${execs:--}"
  if [ $rc -eq 0 ]; then
    result=ok
  elif grep -q 'Failing input written to' "$log"; then
    result=CRASH
    failed=1
  elif grep -q '^    context deadline exceeded$' "$log" && ! grep -qE '\.go:[0-9]+:|panic:' "$log"; then
    # go1.26's fuzz coordinator can report its own -fuzztime deadline as a
    # failure (go.dev/issue/75804, fixed in go1.27): no input failed.
    result=ok-deadline
  else
    result=FAIL
    failed=1
  fi
  printf '%-28s %-22s %5ss %10s  %s\n' "$name" "$pkg" "$secs" "$execs" "$result"
  rows+=("$(printf '%-28s %-22s %7s %12s  %s' "$name" "$pkg" "$secs" "$execs" "$result")")
  if [ "$result" = CRASH ] || [ "$result" = FAIL ]; then
    # Show why, and where the failing input went.
    grep -E -e '--- FAIL' -e 'Failing input written to' -e 'panic:' -e '\.go:[0-9]+:' "$log" | head -20 | sed 's/^/    /'
  fi
done <<<"$targets"

echo
printf '%-28s %-22s %7s %12s  %s\n' TARGET PACKAGE SECONDS EXECS RESULT
printf '%s\n' "${rows[@]}"
echo "total: $(( $(date +%s) - start_all ))s for $n targets"
if [ $failed -ne 0 ]; then
  echo "fuzz.sh: some targets failed; see the logs in $LOGDIR"
  exit 1
fi
