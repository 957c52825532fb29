#!/bin/sh
# Issue 14's figure: the same `route` run without events consumers, then with one
# `GET /v1/events` reader and one webhook endpoint (`--stream-reader
# --webhook-receiver`), and the hub CPU per task of both with their ratio (target: at
# most 1.15x), beside create -> task.offered at the reader and at the receiver.
#
#   cargo build --release -p switchboard -p loadtest
#   loadtest/events-cpu.sh [--name NAME] [--webhook-types PATTERNS] [route options]
#       # default route options: --agents 200 --rate 2000 --duration 10
#
#   loadtest/events-cpu.sh --name events-task --webhook-types 'task.*' --agents 200 --rate 2000 --duration 10
#       # the endpoint as a telephony platform configures it: its tasks' events only
#
# --webhook-types goes to the second run only (the receiver's types; default every
# type); every other option goes to both. Keeps both reports (JSON and the printed
# table) in loadtest/results/NAME-{off,on}.* (NAME: `events` unless given); exits 0
# when both runs held every check, 1 otherwise.
set -u
# Patterns such as task.* are passed on, never expanded as file names.
set -f
cd "$(dirname "$0")/.." || exit 2
LT=./target/release/loadtest
OUT=loadtest/results
mkdir -p "$OUT"
name=events
types=""
# The options of both runs, rebuilt without the two of this script.
n=$#
i=0
while [ "$i" -lt "$n" ]; do
    a=$1
    shift
    i=$((i + 1))
    case "$a" in
    --name)
        name=${1:?--name needs a value}
        shift
        i=$((i + 1))
        ;;
    --name=*) name=${a#--name=} ;;
    --webhook-types)
        types=${1:?--webhook-types needs a value}
        shift
        i=$((i + 1))
        ;;
    --webhook-types=*) types=${a#--webhook-types=} ;;
    *) set -- "$@" "$a" ;;
    esac
done
[ $# -eq 0 ] && set -- --agents 200 --rate 2000 --duration 10
status=0
for side in off on; do
    extra=""
    [ "$side" = on ] && extra="--stream-reader --webhook-receiver"
    [ "$side" = on ] && [ -n "$types" ] && extra="$extra --webhook-types $types"
    echo "== events $side: loadtest route $* $extra" >&2
    # shellcheck disable=SC2086
    "$LT" route "$@" $extra --quiet --json "$OUT/$name-$side.json" >"$OUT/$name-$side.txt" 2>&1 || status=1
    grep -E '^RESULT' "$OUT/$name-$side.txt" >&2
    [ "$side" = off ] && sleep 2
done
python3 - "$OUT/$name-off.json" "$OUT/$name-on.json" <<'PY' || status=1
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
print(f"webhook types: {','.join(on.get('params', {}).get('webhook_types', ['*']))}")
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
