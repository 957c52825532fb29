#!/usr/bin/env bash
# Three switchboard nodes and one Redis on this machine, behind HAProxy on :8080.
# Needs: redis-server and haproxy (apt-get install redis-server haproxy).
# Stop with Ctrl-C: everything started here is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# Redis with every write on disk before it is acknowledged: what "nothing acknowledged
# is lost" needs (see ARCHITECTURE.md, "Redis").
redis-server --port 6390 --bind 127.0.0.1 --dir "$work" \
  --appendonly yes --appendfsync always --save "" >"$work/redis.log" 2>&1 &
pids+=($!)
sleep 0.5

for i in 1 2 3; do
  ./target/release/switchboard --config deploy/node.toml \
    --listen "127.0.0.1:808$i" --node-id "node-$i" >"$work/node-$i.out" 2>"$work/node-$i.log" &
  pids+=($!)
done
sleep 1
haproxy -f deploy/haproxy.cfg -db >"$work/haproxy.log" 2>&1 &
pids+=($!)

secret=$(sed -n 's/^secret = "\(.*\)"/\1/p' deploy/node.toml)
echo "3 nodes behind http://127.0.0.1:8080 (logs in $work)"
echo "agent token:       $(SWITCHBOARD_SECRET=$secret ./target/release/switchboard token --sub alice --role agent)"
echo "integration token: $(SWITCHBOARD_SECRET=$secret ./target/release/switchboard token --sub crm --role integration)"
echo "drain a node:      kill -TERM <pid of node-N>  (its desktops reconnect through :8080 and resume)"
wait
