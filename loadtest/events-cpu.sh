#!/bin/sh
# Issue 14's figure: the same `route` run without events consumers, then with one
# `GET /v1/events` reader and one webhook endpoint (`--stream-reader
# --webhook-receiver`), and the hub CPU per task of both with their ratio (target: at
# most 1.15x), beside create -> task.offered at the reader and at the receiver.
#
#   cargo build --release -p switchboard -p loadtest
#   loadtest/events-cpu.sh [route options]   # default: --agents 200 --rate 2000 --duration 10
#
# Keeps both reports (JSON and the printed table) in loadtest/results/events-{off,on}.*;
# exits 0 when both runs held every check, 1 otherwise.
set -u
cd "$(dirname "$0")/.." || exit 2
LT=./target/release/loadtest
OUT=loadtest/results
mkdir -p "$OUT"
[ $# -eq 0 ] && set -- --agents 200 --rate 2000 --duration 10
status=0
for side in off on; do
    extra=""
    [ "$side" = on ] && extra="--stream-reader --webhook-receiver"
    echo "== events $side: loadtest route $* $extra" >&2
    # shellcheck disable=SC2086
    "$LT" route "$@" $extra --quiet --json "$OUT/events-$side.json" >"$OUT/events-$side.txt" 2>&1 || status=1
    grep -E '^RESULT' "$OUT/events-$side.txt" >&2
    [ "$side" = off ] && sleep 2
done
python3 - "$OUT/events-off.json" "$OUT/events-on.json" <<'PY' || status=1
import json, sys
def load(p):
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"cannot read {p}: {e}")
off, on = load(sys.argv[1]), load(sys.argv[2])
def per_task(r):
    cpu, n = r.get("hub_cpu_load_secs"), r.get("counts", {}).get("created", 0)
    return 1e6 * cpu / n if cpu is not None and n else None
def p99(r, name):
    for l in r.get("latencies", []):
        if l.get("name") == name and l.get("count", 0) > 0:
            return l.get("p99_us")
    return None
a, b = per_task(off), per_task(on)
print(f"hub CPU per task: without events consumers {a:.0f} µs, with {b:.0f} µs" if a and b else "hub CPU per task: not measured")
if a and b:
    print(f"ratio with/without: {b / a:.3f} (target <= 1.15): {'held' if b / a <= 1.15 else 'MISSED'}")
for name in ("create -> first offer", "create -> task.offered (stream)", "create -> task.offered (webhook)"):
    x, y = p99(off, name), p99(on, name)
    print(f"{name} p99: without {x if x is not None else '-'} µs, with {y if y is not None else '-'} µs")
for f in on.get("figures", []):
    if f["name"].startswith("webhook"):
        print(f"{f['name']}: {f['value']:g} {f['unit']}".rstrip())
PY
exit $status
