#!/bin/bash
# Issue 14's figure: the same `route` run without events consumers, then with one
# `GET /v1/events` reader and one webhook endpoint (`--stream-reader
# --webhook-receiver`), and the hub CPU per task of both with their ratio (target: at
# most 1.15x), beside create -> task.offered at the reader and at the receiver.
#
#   cargo build --release -p switchboard -p loadtest
#   loadtest/events-cpu.sh [--name NAME] [--webhook-types PATTERNS] [--rounds N] [route options]
#       # default route options: --agents 200 --rate 2000 --duration 10
#
#   loadtest/events-cpu.sh --name events-task --webhook-types 'task.*' --agents 200 --rate 2000 --duration 10
#       # the endpoint as a telephony platform configures it: its tasks' events only
#
# --webhook-types goes to the second run only (the receiver's types; default every
# type); every other option goes to both. Keeps both reports (JSON and the printed
# table) in loadtest/results/NAME-{off,on}.* (NAME: `events` unless given); exits 0
# when every run held every check, 1 otherwise.
#
# --rounds N (default 1): N pairs, alternated (odd rounds without consumers first, even
# rounds with them first), reports in NAME-{off,on}-ROUND.*; prints each round's ratio,
# then the median CPU per task of each side and their ratio. One pair's ratio moves by
# a third between two identical runs on this machine (1.16x to 1.54x): the median of
# several is the figure.
#
# --stream-only: the second side has the stream reader alone (no webhook endpoint), to
# tell the two consumers' costs apart.
set -u
# Patterns such as task.* are passed on, never expanded as file names.
set -f
cd "$(dirname "$0")/.." || exit 2
LT=./target/release/loadtest
OUT=loadtest/results
mkdir -p "$OUT"
name=events
types=""
rounds=1
stream_only=0
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
    --rounds)
        rounds=${1:?--rounds needs a value}
        shift
        i=$((i + 1))
        ;;
    --rounds=*) rounds=${a#--rounds=} ;;
    --stream-only) stream_only=1 ;;
    *) set -- "$@" "$a" ;;
    esac
done
[ $# -eq 0 ] && set -- --agents 200 --rate 2000 --duration 10
# One run of one side, its report under NAME-SIDE (NAME-SIDE-ROUND with --rounds).
run() {
    local side=$1 file=$2 extra=""
    [ "$side" = on ] && extra="--stream-reader --webhook-receiver"
    [ "$side" = on ] && [ "$stream_only" = 1 ] && extra="--stream-reader"
    [ "$side" = on ] && [ -n "$types" ] && [ "$stream_only" = 0 ] && extra="$extra --webhook-types $types"
    echo "== events $side: loadtest route ${args[*]} $extra" >&2
    # shellcheck disable=SC2086
    "$LT" route "${args[@]}" $extra --quiet --json "$OUT/$file.json" >"$OUT/$file.txt" 2>&1 || status=1
    grep -E '^RESULT' "$OUT/$file.txt" >&2
    sleep 2
}
args=("$@")
status=0
pairs=()
for round in $(seq "$rounds"); do
    suffix=""
    [ "$rounds" -gt 1 ] && suffix="-$round"
    # Odd rounds measure without consumers first, even rounds with them first: the
    # machine's drift over the minutes falls on both sides alike.
    if [ $((round % 2)) -eq 1 ]; then
        run off "$name-off$suffix"
        run on "$name-on$suffix"
    else
        run on "$name-on$suffix"
        run off "$name-off$suffix"
    fi
    pairs+=("$OUT/$name-off$suffix.json" "$OUT/$name-on$suffix.json")
done
python3 - "${pairs[@]}" <<'PY' || status=1
import json, statistics, sys
def load(p):
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"cannot read {p}: {e}")
runs = [(load(a), load(b)) for a, b in zip(sys.argv[1::2], sys.argv[2::2])]
def per_task(r):
    cpu, n = r.get("hub_cpu_load_secs"), r.get("counts", {}).get("created", 0)
    return 1e6 * cpu / n if cpu is not None and n else None
def p99(r, name):
    for l in r.get("latencies", []):
        if l.get("name") == name and l.get("count", 0) > 0:
            return l.get("p99_us")
    return None
print(f"webhook types: {','.join(runs[0][1].get('params', {}).get('webhook_types', ['*']))}")
offs, ons = [], []
for i, (off, on) in enumerate(runs, 1):
    a, b = per_task(off), per_task(on)
    if a and b:
        offs.append(a)
        ons.append(b)
    if len(runs) > 1:
        print(f"round {i}: without {a or 0:.0f} µs, with {b or 0:.0f} µs, ratio {b / a if a and b else 0:.3f}")
if len(offs) < len(runs):
    print("hub CPU per task: not measured in every run")
    sys.exit(1)
a, b = statistics.median(offs), statistics.median(ons)
what = "hub CPU per task" if len(runs) == 1 else f"hub CPU per task, median of {len(runs)} rounds"
print(f"{what}: without events consumers {a:.0f} µs, with {b:.0f} µs")
print(f"ratio with/without: {b / a:.3f} (target <= 1.15): {'held' if b / a <= 1.15 else 'MISSED'}")
if len(runs) > 1:
    held = sum(1 for x, y in zip(offs, ons) if y / x <= 1.15)
    print(f"rounds within 1.15x: {held} of {len(runs)}")
for name in ("create -> first offer", "create -> task.offered (stream)", "create -> task.offered (webhook)"):
    xs = [p99(off, name) for off, _ in runs]
    ys = [p99(on, name) for _, on in runs]
    x = statistics.median([v for v in xs if v is not None]) if any(v is not None for v in xs) else "-"
    y = statistics.median([v for v in ys if v is not None]) if any(v is not None for v in ys) else "-"
    print(f"{name} p99{' (median)' if len(runs) > 1 else ''}: without {x} µs, with {y} µs")
for off, on in runs[-1:]:
    for f in on.get("figures", []):
        if f["name"].startswith("webhook"):
            print(f"{f['name']}: {f['value']:g} {f['unit']}".rstrip())
PY
exit $status
