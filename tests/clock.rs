//! The hub's clock on the wire: `welcome` and the `ping` reply carry `server_time`, so
//! that a desktop whose clock is off can count an offer down from the hub's deadline.

mod common;

use common::*;
use serde_json::json;

fn parse(v: &serde_json::Value) -> chrono::DateTime<chrono::FixedOffset> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("server_time is text: {v}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[tokio::test]
async fn welcome_and_ping_reply_carry_the_hubs_clock_the_deadline_is_written_in() {
    let hub = TestHub::start(QUEUES_AND_AGENTS).await;
    let before = chrono::Utc::now();
    let mut ana = hub.ready_agent("ana").await;
    let welcomed = parse(&ana.welcome["server_time"]);
    let pong = parse(&ana.ok(json!({"type": "ping"})).await["server_time"]);
    let after = chrono::Utc::now();
    // The hub and the test share a machine: its clock lies within the round trips
    // (to the millisecond the timestamps carry).
    let slack = chrono::Duration::milliseconds(1);
    assert!(before - slack <= welcomed && welcomed <= pong && pong <= after + slack);

    // An offer's deadline is in the same clock: server_time + timeout.
    hub.create(chat()).await;
    let offer = ana.expect("offer").await;
    let deadline = parse(&offer["offer"]["deadline"]);
    let timeout =
        chrono::Duration::milliseconds(offer["offer"]["timeout_ms"].as_i64().unwrap_or(0));
    let now = parse(&ana.ok(json!({"type": "ping"})).await["server_time"]);
    assert!(deadline - timeout <= now && now < deadline, "{offer}");
}
