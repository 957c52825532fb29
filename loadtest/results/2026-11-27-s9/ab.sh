#!/bin/bash
# The sixteenth pass's A/B runs (BENCHMARKS.md). Variants: off (no consumers), S (stream
# reader alone), S20 (the same, stream_linger_ms 20), on (stream reader and a
# task.offered,task.assigned endpoint); the suffixes T (SB_WEBHOOK_THREAD), P
# (SB_STREAM_POLL) and R (SB_RETAIN_COUNT) switched experiments in a build that was not
# kept: the shipped hub ignores those variables.
# usage: ab.sh NAME ROUNDS ; variants: off, on, onT (SB_WEBHOOK_THREAD=1)
cd "$(dirname "$0")/../../.." || exit 2
OUT=${OUT:-/tmp/ab}; mkdir -p "$OUT"
name=$1; rounds=$2
for r in $(seq 1 $rounds); do
  for v in ${VARIANTS:-off on onT}; do
    extra=""; envs=""
    case $v in off) ;; S) extra="--stream-reader";; S20) extra="--stream-reader --stream-linger-ms 20";; SR) extra="--stream-reader";; S0) extra="--stream-reader --stream-linger-ms 0";; on*) extra="--stream-reader --webhook-receiver --webhook-types task.offered,task.assigned";; esac
    case $v in *R) envs="SB_RETAIN_COUNT=5000";; *T) envs="SB_WEBHOOK_THREAD=1";; *P) envs="SB_STREAM_POLL=1";; esac
    env $envs ./target/release/loadtest route --agents 200 --rate 2000 --duration 10 $extra --quiet --json $OUT/$name-$v-$r.json > $OUT/$name-$v-$r.txt 2>&1
    cpu=$(grep -o "[0-9]* µs per task created" $OUT/$name-$v-$r.txt | head -1)
    echo "round $r $v: $cpu $(grep -E '^RESULT' $OUT/$name-$v-$r.txt)"
    sleep 2
  done
done
