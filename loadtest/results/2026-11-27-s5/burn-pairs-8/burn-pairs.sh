#!/bin/bash
# Issue 13, twelfth pass: the searchers' figure with the searches replaced by a
# stand-in thread in SCHED_IDLE (burn.c: 200 wake-ups a second, 200 µs of CPU each),
# arithmetic only ("cpu") or random reads over 512 MB ("mem"), against runs with
# nothing beside the load. One preloaded hub, as search-pairs.sh; the side order
# rotates each round.
set -u
cd /work/main || exit 2
REPO=$PWD
B=$REPO/target/release
OUT=${OUT:?}
ROUNDS=${1:-8}
CUSTOMERS=1000000
PORT=18433
S=bench-secret-0123456789abcdef
mkdir -p "$OUT"
ulimit -n 20000
. "$REPO/loadtest/bench-hub.sh"
bench_hub
trap 'kill -TERM $HUB 2>/dev/null' EXIT
PRELOADED=0
route() {
    local name=$1
    shift
    if [ "$PRELOADED" -eq 0 ]; then
        set -- "$@" --customers "$CUSTOMERS"
    else
        set -- "$@" --customers-present "$CUSTOMERS"
    fi
    "$B/loadtest" route --hub "127.0.0.1:$PORT" --secret $S --agents 2000 --rate 2000 --duration 10 \
        --http-conns 64 --no-floor --quiet --json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>&1
    PRELOADED=1
}
side() {
    case $1 in
    none) route "none$2" ;;
    cpu|mem)
        local m=0; [ "$1" = mem ] && m=1
        chrt --idle 0 /tmp/burn/burn 200 200 $m 512 40 2>"$OUT/burn-$1$2.txt" &
        local bp=$!
        sleep 2
        route "$1$2"
        kill $bp 2>/dev/null; wait $bp 2>/dev/null ;;
    esac
}
# The preload first, in a run of its own.
route preload
for round in $(seq "$ROUNDS"); do
    case $((round % 3)) in
    1) side none $round; side cpu $round; side mem $round ;;
    2) side cpu $round; side mem $round; side none $round ;;
    0) side mem $round; side none $round; side cpu $round ;;
    esac
done
kill -TERM $HUB; wait $HUB; echo "hub exit $?"
trap - EXIT
PYTHONPATH="$REPO/loadtest" python3 - "$OUT" "$ROUNDS" <<'PY'
import sys
from statistics import median
from rounds import p99
out, rounds = sys.argv[1], int(sys.argv[2])
c = lambda n: p99(f"{out}/{n}.txt", "create -> first offer")
ns = [c(f"none{r}") for r in range(1, rounds + 1)]
for side in ("cpu", "mem"):
    ss = [c(f"{side}{r}") for r in range(1, rounds + 1)]
    print(side, "rounds:", ", ".join(f"{n}->{s}" for n, s in zip(ns, ss)))
    print(f"{side}: median {median(ns):.0f} -> {median(ss):.0f} us ({median(ss)/median(ns):.2f}x); "
          f"ratios' median {median([s/n for n, s in zip(ns, ss)]):.2f}x; slower in {sum(s > n for n, s in zip(ns, ss))} of {rounds}")
PY
