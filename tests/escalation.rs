//! Waits that escalate, through real HTTP and websocket clients: required skill levels
//! relaxing, overflow to another queue, priority rising with the wait, and the checks
//! on skill levels at intake.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard::auth::Role;
use tokio::time::Instant;

const QUEUES: &str = r#"
[[queues]]
id = "support"
escalation = { relax_every_secs = 0.3, relax_levels = 3 }

[[queues]]
id = "sales"
escalation = { overflow_after_secs = 0.3, overflow_queue = "backup" }

[[queues]]
id = "backup"

[[queues]]
id = "vip"
escalation = { priority_every_secs = 0.1, priority_step = 5, priority_max = 10 }

[[agents]]
id = "ana"
skill_levels = { en = 4 }
queues = ["support"]

[[agents]]
id = "bo"
queues = ["backup"]

[[agents]]
id = "dj"
queues = ["vip"]
"#;

async fn hub() -> TestHub {
    TestHub::start(QUEUES).await
}

#[tokio::test]
async fn required_levels_relax_with_the_wait_until_an_agent_qualifies() {
    let hub = hub().await;
    let mut ana = hub.ready_agent("ana").await;
    let sent = Instant::now();
    let t = hub
        .create(json!({"channel": "chat", "queue": "support", "skill_levels": {"en": 7}}))
        .await;
    assert_eq!(t["state"], "queued", "ana is at level 4");
    assert_eq!(t["skills"], json!(["en"]));
    assert_eq!(t["skill_levels"], json!({"en": 7}));
    let offer = ana.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], t["task_id"]);
    assert_eq!(offer["offer"]["task"]["skill_levels"], json!({"en": 4}));
    // Not before the first relax step: a bound from the test's own clock.
    assert!(sent.elapsed() >= Duration::from_millis(300));
    hub.shutdown().await;
}

#[tokio::test]
async fn a_task_still_waiting_overflows_to_the_next_queue_with_its_age() {
    let hub = hub().await;
    let mut bo = hub.ready_agent("bo").await;
    let t = hub
        .create(json!({"channel": "chat", "queue": "sales"}))
        .await;
    assert_eq!(t["state"], "queued");
    let offer = bo.expect("offer").await;
    let task = &offer["offer"]["task"];
    assert_eq!(task["task_id"], t["task_id"]);
    assert_eq!(task["queue"], "backup");
    assert_eq!(task["created_at"], t["created_at"]);
    hub.shutdown().await;
}

#[tokio::test]
async fn priority_rises_with_the_wait_and_an_older_task_overtakes() {
    let hub = hub().await;
    let old = hub.create(json!({"channel": "chat", "queue": "vip"})).await;
    let id = old["task_id"].as_str().unwrap_or_default().to_owned();
    // Wait for the escalation to reach its cap (polling the task, not sleeping blind).
    let deadline = Instant::now() + WAIT;
    loop {
        if hub.task(&id).await["priority"] == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "priority never reached 10");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _new = hub
        .create(json!({"channel": "chat", "queue": "vip", "priority": 9}))
        .await;
    let mut dj = hub.ready_agent("dj").await;
    let offer = dj.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], old["task_id"]);
    assert_eq!(offer["offer"]["task"]["priority"], 10);
    hub.shutdown().await;
}

#[tokio::test]
async fn skill_levels_out_of_range_are_refused_with_their_field() {
    let hub = hub().await;
    let tok = hub.token("crm", Role::Integration);
    for (body, code, field) in [
        (
            json!({"channel": "chat", "queue": "support", "skill_levels": {"en": 11}}),
            "invalid_field",
            json!("skill_levels.en"),
        ),
        (
            json!({"channel": "chat", "queue": "support", "skill_levels": {"en": 0}}),
            "invalid_field",
            json!("skill_levels.en"),
        ),
        (
            json!({"channel": "chat", "queue": "support", "skill_levels": {"en": "high"}}),
            "invalid_message",
            Value::Null,
        ),
    ] {
        let (s, v) = hub
            .http("POST", "/v1/tasks", Some(&tok), Some(&body.to_string()))
            .await;
        check_schema("HttpError", &v);
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        if !field.is_null() {
            assert_eq!(v["error"]["field"], field, "{v}");
        }
    }
    hub.shutdown().await;
}
