#!/bin/bash
# Issue 13's attack figure: one hub (in memory) on CPU 0, the measuring harness on CPU
# 1; per round a baseline `route` run with /healthz sampled, and the same run while
# 5,000 slow unauthenticated connections are held (loadtest/slow_attack.py; odd rounds
# run the base first, even rounds the attack first), /healthz sampled by a process of
# its own in both (the attacker's event loop, busy with 5,000 connections, would
# otherwise time itself).
#
# The attacker runs on the hub's CPU, in SCHED_IDLE. A real attacker is on another
# machine: its own work costs the hub's machine nothing, and the packets it sends are
# received by the hub's machine's kernel. Here its user-space work runs only when the
# hub leaves CPU 0 idle, and its packets (sent over loopback, so received in the
# sender's context) are received on the hub's CPU, as they would be. On CPU 1 instead,
# as until 27 Nov, the receiving of its packets and its sockets' kernel work ran at
# full priority on the harness's CPU whatever the attacker's own priority: it delayed
# the measuring clients (accept -> reply rose with create -> offer) and spared the hub.
#
# Prints c2o and /healthz p99 per run and their ratios, then the median of the rounds'
# p99s on each side and its ratio, the verdict (target: within 20%, 1.20): one run's
# p99 here moves by about 2x between two runs without any attack.
#
#   cargo build --release -p switchboard -p loadtest
#   loadtest/attack.sh [ROUNDS]        # default 6; results in loadtest/results/attack/
#   ROUTE_ARGS="--http-conns 64" loadtest/attack.sh   # more `route` options
set -u
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
B=${BIN:-$REPO/target/release}
OUT=${OUT:-$REPO/loadtest/results/attack}
ROUNDS=${1:-6}
PORT=${PORT:-18431}
S=bench-secret-0123456789abcdef
mkdir -p "$OUT"
ulimit -n 20000
# shellcheck source=loadtest/bench-hub.sh
. "$REPO/loadtest/bench-hub.sh"
bench_hub taskset -c 0
trap 'kill -TERM $HUB 2>/dev/null' EXIT
route() {
    # shellcheck disable=SC2086 # ROUTE_ARGS: more `route` options, split on spaces
    taskset -c 1 "$B/loadtest" route --hub "127.0.0.1:$PORT" --secret $S --agents 200 --rate 1000 ${ROUTE_ARGS:-} \
        --duration 10 --no-floor --quiet --json "$OUT/$1_route.json" >"$OUT/$1_route.txt" 2>&1
}
healthz() { taskset -c 1 python3 "$REPO/loadtest/slow_attack.py" "127.0.0.1:$PORT" --healthz-only 13 >"$OUT/$1_healthz.json"; }
base() {
    healthz base$1 &
    H=$!
    route base$1
    wait $H
}
attack() {
    taskset -c 0 chrt --idle 0 python3 "$REPO/loadtest/slow_attack.py" "127.0.0.1:$PORT" --connections 5000 --no-healthz >"$OUT/attack$1.json" &
    A=$!
    sleep 1.5 # the attack is under way when the measured run starts
    healthz attack$1 &
    H=$!
    route attack$1
    wait $H $A
}
# Odd rounds measure the base first, even rounds the attack first: the hub keeps every
# task of every run, so a fixed order would give one side the bigger hub each time.
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then
        base "$round"
        attack "$round"
    else
        attack "$round"
        base "$round"
    fi
done
kill -TERM $HUB
wait $HUB
trap - EXIT
PYTHONPATH="$REPO/loadtest" python3 - "$OUT" "$ROUNDS" <<'PY'
import json, sys
from statistics import median
from rounds import p99
out, rounds = sys.argv[1], int(sys.argv[2])
def c2o(name):
    return p99(f"{out}/{name}_route.txt", "create -> first offer")
def hz(name):
    return json.load(open(f"{out}/{name}_healthz.json"))["healthz_ms"]["p99"]
bs, as_, hbs, has = [], [], [], []
for r in range(1, rounds + 1):
    b, a = c2o(f"base{r}"), c2o(f"attack{r}")
    hb, ha = hz(f"base{r}"), hz(f"attack{r}")
    bs.append(b); as_.append(a); hbs.append(hb); has.append(ha)
    att = json.load(open(f"{out}/attack{r}.json"))
    print(f"round {r}: c2o p99 {b} -> {a} us ({a / b:.2f}x); /healthz p99 {hb} -> {ha} ms ({ha / hb:.2f}x); "
          f"attack: {att['opened']} opened, {att['closed']} closed, {att['still_open']} still open, "
          f"close max {max(v['max'] or 0 for v in att['close_secs'].values())} s")
# One round's p99 moves by up to 2x between two runs with no attack at all on this
# machine (the base runs' own spread is printed beside it): the verdict is the median.
mb, ma, mhb, mha = median(bs), median(as_), median(hbs), median(has)
print(f"median of {rounds} rounds: c2o p99 {mb:.0f} -> {ma:.0f} us ({ma / mb:.2f}x; base runs "
      f"{min(bs)}-{max(bs)} us); /healthz p99 {mhb:.3f} -> {mha:.3f} ms ({mha / mhb:.2f}x; base runs "
      f"{min(hbs)}-{max(hbs)} ms); target: both within 1.20x")
PY
