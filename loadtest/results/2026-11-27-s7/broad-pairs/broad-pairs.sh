#!/bin/bash
# Session 7: three sides a round on one preloaded hub (a million customers), in rotating
# order: no searchers, 20 searchers typing the mixed queries, 20 typing only broad ones
# (the first three letters of a first name: a full page for the least reading).
# Run from the repository root: loadtest/results/2026-11-27-s7/broad-pairs/broad-pairs.sh ROUNDS
set -u
REPO=$PWD
B=$REPO/target/release
OUT=$REPO/loadtest/results/2026-11-27-s7/broad-pairs
ROUNDS=${1:-6}
CUSTOMERS=1000000
PORT=18433
S=bench-secret-0123456789abcdef
ulimit -n 20000
. "$REPO/loadtest/bench-hub.sh"
bench_hub
trap 'kill -TERM $HUB 2>/dev/null' EXIT
PRELOADED=0
route() {
    local name=$1
    shift
    if [ "$PRELOADED" -eq 0 ]; then set -- "$@" --customers "$CUSTOMERS"; else set -- "$@" --customers-present "$CUSTOMERS"; fi
    "$B/loadtest" route --hub "127.0.0.1:$PORT" --secret $S --agents 2000 --rate 2000 --duration 10 \
        --http-conns 64 --no-floor --quiet --json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>&1
    PRELOADED=1
}
side() {
    case $1 in
    none) route "none$2" ;;
    mixed) route "mixed$2" --searchers 20 ;;
    broad) route "broad$2" --searchers 20 --searcher-queries broad ;;
    esac
}
SIDES=(none mixed broad)
for round in $(seq "$ROUNDS"); do
    for j in 0 1 2; do side "${SIDES[$(((round + j) % 3))]}" "$round"; done
done
kill -TERM $HUB; wait $HUB; trap - EXIT
PYTHONPATH="$REPO/loadtest" python3 - "$OUT" "$ROUNDS" <<'PY'
import sys
from statistics import median
from rounds import p99
out, rounds = sys.argv[1], int(sys.argv[2])
c = {s: [p99(f"{out}/{s}{r}.txt", "create -> first offer") for r in range(1, rounds + 1)] for s in ("none", "mixed", "broad")}
for r in range(rounds):
    print(f"round {r+1}: c2o p99 none {c['none'][r]} mixed {c['mixed'][r]} broad {c['broad'][r]} us")
n = median(c["none"])
for s in ("mixed", "broad"):
    m = median(c[s])
    print(f"{s}: median c2o p99 {n:.0f} -> {m:.0f} us ({m / n:.2f}x); slower in {sum(x > y for x, y in zip(c[s], c['none']))} of {rounds}")
PY
