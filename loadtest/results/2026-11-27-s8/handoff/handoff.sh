#!/bin/bash
# Archived experiment (fifteenth pass): where do 20 searchers' costs come from, when
# their searches read nothing? One hub (a build with an experiment-only switch: the
# query "zzmode<name>" picks where searches run: "idle" the SCHED_IDLE pool as shipped,
# "inline" on the tokio worker, "normal" a pool at normal priority), a million customers
# preloaded, rounds of four 20 s runs in rotated order: none, idle, inline, normal.
set -u
cd "$(dirname "$0")/../../../.." || exit 2
REPO=$PWD
B=${BIN:-/tmp/exp}
OUT=${OUT:-$REPO/loadtest/results/2026-11-27-s8/handoff}
ROUNDS=${1:-6}
PORT=18433
S=bench-secret-0123456789abcdef
ulimit -n 20000
. "$REPO/loadtest/bench-hub.sh"
bench_hub
trap 'kill -TERM $HUB 2>/dev/null' EXIT
TOK=$("$B/switchboard" token --config "$OUT/hub.toml" --sub exp --role integration)
PRELOADED=0
run() {
    local name=$1 mode=$2
    shift 2
    curl -sf -H "authorization: Bearer $TOK" "http://127.0.0.1:$PORT/v1/customers?q=zzmode$mode" >/dev/null
    if [ "$PRELOADED" -eq 0 ]; then set -- "$@" --customers 1000000; else set -- "$@" --customers-present 1000000; fi
    "$B/loadtest" route --hub "127.0.0.1:$PORT" --secret $S --agents 2000 --rate 2000 --duration 20 \
        --http-conns 64 --no-floor --quiet --json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>&1
    PRELOADED=1
}
SIDES=(none idle inline normal)
for round in $(seq "$ROUNDS"); do
    for k in 0 1 2 3; do
        side=${SIDES[$(((k + round - 1) % 4))]}
        if [ "$side" = none ]; then run "none$round" idle; else run "$side$round" "$side" --searchers 20 --searcher-queries unmatched; fi
    done
done
kill -TERM $HUB; wait $HUB; trap - EXIT
PYTHONPATH="$REPO/loadtest" python3 - "$OUT" "$ROUNDS" <<'PY'
import sys
from statistics import median
from rounds import p99
out, rounds = sys.argv[1], int(sys.argv[2])
sides = ["none", "idle", "inline", "normal"]
v = {s: [p99(f"{out}/{s}{r}.txt", "create -> first offer") for r in range(1, rounds + 1)] for s in sides}
for r in range(rounds):
    print(f"round {r+1}: " + ", ".join(f"{s} {v[s][r]}" for s in sides))
base = median(v["none"])
for s in sides:
    print(f"{s}: median c2o p99 {median(v[s]):.0f} us ({median(v[s]) / base:.2f}x); rounds slower than none: {sum(a > b for a, b in zip(v[s], v['none']))} of {rounds}")
PY
