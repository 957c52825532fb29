#!/bin/bash
# Issue 13's attack figure with the hub on CPU 0 and everything else (harness, attacker) on CPU 1.
set -u
D=/tmp/bench/attack; cd $D
B=${BIN:-/work/main/target/release}
ulimit -n 20000
rm -rf $D/out; mkdir -p $D/out
taskset -c 0 $B/switchboard --config $D/hub.toml --in-memory > $D/out/hub.log 2>&1 &
HUB=$!
for i in $(seq 50); do curl -sf http://127.0.0.1:18431/healthz >/dev/null && break; sleep 0.1; done
S=bench-secret-0123456789abcdef
for round in 1 2; do
  taskset -c 1 python3 /work/main/loadtest/slow_attack.py 127.0.0.1:18431 --healthz-only 13 > $D/out/base${round}_healthz.json &
  P=$!
  taskset -c 1 $B/loadtest route --hub 127.0.0.1:18431 --secret $S --agents 200 --rate 1000 --duration 10 --no-floor --quiet --json $D/out/base${round}_route.json > $D/out/base${round}_route.txt 2>&1
  wait $P
  taskset -c 1 python3 /work/main/loadtest/slow_attack.py 127.0.0.1:18431 --connections 5000 > $D/out/attack${round}.json &
  P=$!
  sleep 1.5
  taskset -c 1 $B/loadtest route --hub 127.0.0.1:18431 --secret $S --agents 200 --rate 1000 --duration 10 --no-floor --quiet --json $D/out/attack${round}_route.json > $D/out/attack${round}_route.txt 2>&1
  wait $P
done
kill -TERM $HUB; wait $HUB
grep -H "create -> first offer " $D/out/*_route.txt
