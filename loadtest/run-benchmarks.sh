#!/bin/sh
# Runs every load-test scenario of BENCHMARKS.md once, with the release build, and keeps
# each report (JSON, and the printed table) in loadtest/results/.
#
#   cargo build --release -p switchboard -p loadtest
#   loadtest/run-benchmarks.sh [scenario ...]     # default: all
#   scenarios: route redis compare events fanout expiry reconnect idle conflicts smoke echo
#
# Loopback only; every run is bounded and stops what it started. Before each run it
# waits (at most 10 minutes) until no cargo/rustc/test binary is running, so that
# other work on the machine does not share the 2 cores with the measurement.
set -u
cd "$(dirname "$0")/.." || exit 2
LT=./target/release/loadtest
OUT=loadtest/results
mkdir -p "$OUT"

quiet() {
    n=0
    while pgrep -f 'cargo |rustc |target/debug/|criterion' >/dev/null 2>&1; do
        [ "$n" -ge 120 ] && { echo "note: other work still running" >&2; break; }
        n=$((n + 1))
        sleep 5
    done
}

run() {
    name=$1
    shift
    quiet
    echo "== $name: loadtest $*" >&2
    {
        echo "# $(date -u +%FT%TZ) git $(git rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "# loadtest $*"
    } >"$OUT/$name.txt"
    "$LT" "$@" --json "$OUT/$name.json" >>"$OUT/$name.txt" 2>"$OUT/$name.err"
    echo "   exit $?" >&2
    [ -s "$OUT/$name.err" ] || rm -f "$OUT/$name.err"
    grep -E '^RESULT' "$OUT/$name.txt" >&2
}

want() {
    [ $# -eq 0 ] && return 0
    for w in $ARGS; do [ "$w" = "$1" ] && return 0; done
    return 1
}
ARGS="$*"
all() { [ -z "$ARGS" ] || want "$1"; }

# (2) routing, one node in memory: the ceiling search, then half the target rate.
if all route; then
    for r in 10000 12000 13000 15000; do
        run "route-1node-mem-$r" route --agents 2000 --rate "$r" --duration 10 --http-conns 64 --quiet
    done
    run route-1node-mem-5000 route --agents 2000 --rate 5000 --duration 10 --http-conns 64 --quiet
fi
# (5) two nodes and Redis: the target rate, then half of it.
if all redis; then
    run route-2nodes-redis-5000 route --nodes 2 --redis --agents 2000 --rate 5000 --duration 10 --http-conns 64 --quiet
    run route-2nodes-redis-2500 route --nodes 2 --redis --agents 2000 --rate 2500 --duration 10 --http-conns 64 --quiet
    # Snapshots: none is taken in those runs (158,000 log entries at 5000/s for 10 s,
    # under the default store.snapshot_every of 200,000). Sustained: the same loads for
    # 30 s (two snapshots at 5000/s, one at 2500/s), and 10 s with a snapshot every
    # 20,000 entries.
    run route-2nodes-redis-5000-30s route --nodes 2 --redis --agents 2000 --rate 5000 --duration 30 --http-conns 64 --quiet
    run route-2nodes-redis-2500-30s route --nodes 2 --redis --agents 2000 --rate 2500 --duration 30 --http-conns 64 --quiet
    run route-2nodes-redis-5000-snap20k route --nodes 2 --redis --snapshot-every 20000 --agents 2000 --rate 5000 --duration 10 --http-conns 64 --quiet
fi
# Both in one invocation.
if all compare; then
    run compare-2000 compare --agents 200 --rate 2000 --duration 10 --quiet
fi
# Issue 14: one stream reader and one webhook endpoint at 2,000 tasks/s, against the
# same run without them (hub CPU per task, events-{off,on}.*).
if all events; then
    quiet
    loadtest/events-cpu.sh --agents 200 --rate 2000 --duration 10 >"$OUT/events-compare.txt"
    echo "   exit $?" >&2
    cat "$OUT/events-compare.txt" >&2
fi
# (3) fan-out.
if all fanout; then
    run fanout-1000 fanout --subscribers 1000 --rate 20 --duration 10 --quiet
    run fanout-5000 fanout --subscribers 5000 --rate 20 --duration 10 --quiet
fi
# (4) expiry storm.
if all expiry; then
    run expiry-10000 expiry --agents 10000 --offer-timeout 2 --quiet
fi
# Reconnect -> resumed: 1,000 agents holding offers and tasks dropped at once (TCP
# reset), then in waves of 100; one node, then two nodes + Redis (reconnecting to the
# other node).
if all reconnect; then
    run reconnect-1000 reconnect --agents 1000 --quiet
    run reconnect-1000-waves reconnect --agents 1000 --waves 10 --wave-gap 0.1 --quiet
    run reconnect-1000-2nodes-redis reconnect --agents 1000 --nodes 2 --redis --quiet
fi
# (1) idle density against the echo floor.
if all idle; then
    run idle-10000 idle --conns 10000 --duration 15 --quiet
fi
if all conflicts; then
    run conflicts conflicts --editors 8 --watchers 4 --duration 10 --quiet
fi
if all smoke; then
    run smoke smoke
fi
# The echo floor: an echo server of its own process (so its CPU can be read from
# /proc), 2000 sockets, messages of about a frame's size (600 B). 20000 messages/s is
# 40000 frames/s in and out, about what 5000 tasks/s move (6 frames out, 2 in per task).
if all echo; then
    for r in 10000 20000 40000; do
        quiet
        "$LT" echo-server --listen 127.0.0.1:0 --secs 120 >"$OUT/echo-server.out" 2>&1 &
        EPID=$!
        sleep 1
        addr=$(sed -n 's|^echo server on ws://\([^/]*\)/echo.*|\1|p' "$OUT/echo-server.out")
        t0=$(awk '{print $14 + $15}' "/proc/$EPID/stat")
        run "echo-floor-$r" echo --addr "$addr" --conns 2000 --rate "$r" --duration 10 --size 600
        t1=$(awk '{print $14 + $15}' "/proc/$EPID/stat")
        kill "$EPID"
        wait "$EPID" 2>/dev/null
        echo "echo-server process CPU during the run: $((t1 - t0)) ticks of 1/$(getconf CLK_TCK) s" | tee -a "$OUT/echo-floor-$r.txt" >&2
        rm -f "$OUT/echo-server.out"
    done
fi
