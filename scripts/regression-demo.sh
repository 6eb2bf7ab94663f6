#!/usr/bin/env bash
# The regression demo: N full `kernel-matrix bench` runs of a matrix (default: kernels.yaml,
# all kernels), then per run
#   - the slow variant against the fixed classifier (`compare --map`): every
#     test_run/fdinfo cell of every kernel must be flagged SLOWER;
#   - the run against the runs before it (same programs; several earlier runs are
#     pooled into one baseline, see `compare`): nothing may be flagged.
# Prints one line per comparison and a tally; exits 1 if either expectation failed.
#
#   scripts/regression-demo.sh [N=5] [OUT=target/bench/demo] [extra `bench` args, e.g. -k 6.1 -k host]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-5}"; out="${2:-target/bench/demo}"; shift 2 || shift $# || true
km=target/debug/kernel-matrix
cargo build --quiet
mkdir -p "$out"
caught=0; quiet=0; bad=0
for i in $(seq 1 "$n"); do
  start=$(date +%s)
  "$km" bench -o "$out/run$i.json" "$@" >"$out/run$i.log" 2>&1 || echo "run $i: bench reported failures (see $out/run$i.log)"
  echo "run $i: $(( $(date +%s) - start )) s"
  # Slow vs fixed inside run i: every latency cell must be SLOWER.
  set +e
  "$km" compare "$out/run$i.json" "$out/run$i.json" --map xdp_classifier_slow=xdp_classifier --all >"$out/slow$i.md" 2>&1
  set -e
  cells=$(grep -c '| latency |' "$out/slow$i.md" || true)
  slower=$(grep -c 'SLOWER' "$out/slow$i.md" || true)
  echo "run $i: slow variant vs fixed: $slower of $cells latency cells flagged slower"
  if [ "$cells" -gt 0 ] && [ "$slower" = "$cells" ]; then caught=$((caught + 1)); else bad=1; fi
  if [ "$i" -gt 1 ]; then
    set +e
    base=(); for j in $(seq 1 $((i - 1))); do base+=("$out/run$j.json"); done
    "$km" compare "${base[@]}" "$out/run$i.json" --all >"$out/rerun$i.md" 2>&1
    set -e
    cells=$(grep -c '| latency |' "$out/rerun$i.md" || true)
    flagged=$(grep -ciE '\*\*SLOWER\*\*|\| faster \|' "$out/rerun$i.md" || true)
    echo "run $i vs runs 1-$((i - 1)): $flagged of $cells latency cells flagged"
    grep -iE '\*\*SLOWER\*\*|\| faster \|' "$out/rerun$i.md" || true
    if [ "$flagged" = 0 ]; then quiet=$((quiet + 1)); else bad=1; fi
  fi
done
echo "slow variant caught in $caught/$n runs; reruns unflagged in $quiet/$((n - 1)) comparisons"
exit "$bad"
