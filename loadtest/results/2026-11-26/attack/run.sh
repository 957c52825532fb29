#!/bin/bash
# Issue 13's attack figure with the hub on CPU 0 and everything else (harness, attacker)
# on CPU 1: two rounds of a baseline route run then the same run under 5,000 slow
# connections, against one hub. Rounds 1-2 were run as `run.sh 1 2`, rounds 3-4 (the
# attacker at nice 19) as `ATTACKER_NICE=19 run.sh 3 4`; the files beside
# this script are what those runs wrote to out/ (D needs hub.toml, also beside it).
set -u
D=${D:-/tmp/bench/attack}; mkdir -p $D/out; cd $D
B=${BIN:-/work/main/target/release}
REPO=${REPO:-/work/main}
NICE=${ATTACKER_NICE:-0}
ROUNDS=${*:-1 2}
ulimit -n 20000
taskset -c 0 $B/switchboard --config $D/hub.toml --in-memory > $D/out/hub.log 2>&1 &
HUB=$!
for i in $(seq 50); do curl -sf http://127.0.0.1:18431/healthz >/dev/null && break; sleep 0.1; done
S=bench-secret-0123456789abcdef
for round in $ROUNDS; do
  taskset -c 1 python3 $REPO/loadtest/slow_attack.py 127.0.0.1:18431 --healthz-only 13 > $D/out/base${round}_healthz.json &
  P=$!
  taskset -c 1 $B/loadtest route --hub 127.0.0.1:18431 --secret $S --agents 200 --rate 1000 --duration 10 --no-floor --quiet --json $D/out/base${round}_route.json > $D/out/base${round}_route.txt 2>&1
  wait $P
  taskset -c 1 nice -n $NICE python3 $REPO/loadtest/slow_attack.py 127.0.0.1:18431 --connections 5000 > $D/out/attack${round}.json &
  P=$!
  sleep 1.5  # the attack is under way when the measured run starts (as in the first runs)
  taskset -c 1 $B/loadtest route --hub 127.0.0.1:18431 --secret $S --agents 200 --rate 1000 --duration 10 --no-floor --quiet --json $D/out/attack${round}_route.json > $D/out/attack${round}_route.txt 2>&1
  wait $P
done
kill -TERM $HUB; wait $HUB
grep -H "create -> first offer " $D/out/*_route.txt
