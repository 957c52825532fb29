#!/bin/bash
# Issue 13's searchers figure: create -> offer p99 with 20 agents searching a million
# customers at their rate against the same run without searches, within 20%. One hub
# (in memory) is preloaded once (the first run's --customers; ~7 min here, each
# customer's index upkeep is the bound), then the runs alternate against it: odd
# rounds measure without searchers first, even rounds with them first (the hub keeps
# every task of every run, so a fixed order would give one side the bigger hub each
# time). Unpinned, as `route` spawns its hub: the search threads (SCHED_IDLE) take
# whichever core is idle.
#
# Prints each round's p99s and ratio, then the median of the rounds' p99s on each side
# and its ratio: one run's p99 here moves by about 2x between two identical runs.
#
#   cargo build --release -p switchboard -p loadtest
#   loadtest/search-pairs.sh [ROUNDS]   # default 4; results in loadtest/results/search-pairs/
#
# DURATION sets each run's seconds (default 10): a longer run's p99 rests on more tasks.
#
# SEARCHERS_ARGS is added to the runs with searchers (e.g. --searchers-apart: the
# searchers on a thread of their own in SCHED_IDLE, as desktops on other machines;
# "--searcher-queries unmatched": searches that read no posting list).
set -u
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
B=${BIN:-$REPO/target/release}
OUT=${OUT:-$REPO/loadtest/results/search-pairs}
ROUNDS=${1:-4}
CUSTOMERS=${CUSTOMERS:-1000000}
DURATION=${DURATION:-10}
PORT=${PORT:-18433}
S=bench-secret-0123456789abcdef
mkdir -p "$OUT"
ulimit -n 20000
# shellcheck source=loadtest/bench-hub.sh
. "$REPO/loadtest/bench-hub.sh"
bench_hub
trap 'kill -TERM $HUB 2>/dev/null' EXIT
PRELOADED=0
read -ra EXTRA <<<"${SEARCHERS_ARGS:-}"
route() {
    local name=$1
    shift
    if [ "$PRELOADED" -eq 0 ]; then
        set -- "$@" --customers "$CUSTOMERS"
    else
        set -- "$@" --customers-present "$CUSTOMERS"
    fi
    "$B/loadtest" route --hub "127.0.0.1:$PORT" --secret $S --agents 2000 --rate 2000 --duration "$DURATION" \
        --http-conns 64 --no-floor --quiet --json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>&1
    PRELOADED=1
}
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then
        route "none$round"
        route "searchers$round" --searchers 20 "${EXTRA[@]}"
    else
        route "searchers$round" --searchers 20 "${EXTRA[@]}"
        route "none$round"
    fi
done
kill -TERM $HUB
# The hub's exit after a million customers: the drain, then no freeing (tests/exit.rs).
# Bounded like a supervisor's stop: 10 s, then SIGKILL, and said so.
T0=$(date +%s.%N)
for _ in $(seq 100); do kill -0 $HUB 2>/dev/null || break; sleep 0.1; done
if kill -0 $HUB 2>/dev/null; then
    kill -KILL $HUB
    wait $HUB
    echo "hub did not exit within 10 s of SIGTERM: killed" | tee "$OUT/exit.txt"
else
    wait $HUB
    echo "hub exited with status $? $(python3 -c "print(round($(date +%s.%N) - $T0, 2))") s after SIGTERM" | tee "$OUT/exit.txt"
fi
trap - EXIT
PYTHONPATH="$REPO/loadtest" python3 - "$OUT" "$ROUNDS" <<'PY'
import sys
from statistics import median
from rounds import p99
out, rounds = sys.argv[1], int(sys.argv[2])
def c2o(name):
    return p99(f"{out}/{name}.txt", "create -> first offer")
def search_p99(name):
    return p99(f"{out}/{name}.txt", "search request -> reply") / 1000
ns, ss = [], []
for r in range(1, rounds + 1):
    n, s = c2o(f"none{r}"), c2o(f"searchers{r}")
    ns.append(n); ss.append(s)
    print(f"round {r}: c2o p99 {n} -> {s} us ({s / n:.2f}x); search p99 {search_p99(f'searchers{r}')} ms")
mn, ms = median(ns), median(ss)
print(f"median of {rounds} rounds: c2o p99 {mn:.0f} -> {ms:.0f} us ({ms / mn:.2f}x; runs without searchers "
      f"{min(ns)}-{max(ns)} us); target: within 1.20x")
# The verdict is the line above; these say how much one round's pair is to be trusted.
ratios = [s / n for n, s in zip(ns, ss)]
print(f"median of the rounds' ratios {median(ratios):.2f}x; searchers slower in "
      f"{sum(r > 1 for r in ratios)} of {rounds} rounds")
PY
