# Sourced by the round scripts (attack.sh, search-pairs.sh): the hub they measure, in
# memory, on 127.0.0.1:$PORT, with token profiles (the harness's agents) and no rate
# limit (the harness sends at its own rate), its config and log in $OUT.
#
#   bench_hub [PREFIX...]   # starts it (PREFIX: e.g. `taskset -c 0`), sets HUB, waits for /healthz
bench_hub() {
    cat >"$OUT/hub.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
drain_secs = 2.0
node_id = "bench"
[auth]
allow_token_profiles = true
secret = "$S"
[limits]
rate_per_sec = 1000000.0
rate_burst = 1000000.0
[routing]
offer_timeout_secs = 15
wrap_up_secs = 0.0
[[queues]]
id = "lt-q0"
[[queues]]
id = "lt-q1"
[[queues]]
id = "lt-q2"
[[queues]]
id = "lt-q3"
TOML
    "$@" "$B/switchboard" --config "$OUT/hub.toml" --in-memory >"$OUT/hub.log" 2>&1 &
    HUB=$!
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
}
