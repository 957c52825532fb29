//! Transfers through real websocket and HTTP clients: blind to a queue, to one agent
//! (accepted, declined, unavailable), by a supervisor and by an integration, the cap,
//! and the customer context following the task.

mod common;

use common::*;
use serde_json::{Value, json};
use switchboard::auth::Role;

async fn hub(extra: &str) -> TestHub {
    TestHub::start(&format!("{extra}\n{QUEUES_AND_AGENTS}")).await
}

/// `POST /v1/tasks/{id}/transfer` as `role`; the status and the body.
async fn http_transfer(hub: &TestHub, role: Role, task_id: &Value, body: Value) -> (u16, Value) {
    let tok = hub.token("crm", role);
    let id = task_id.as_str().unwrap_or_default();
    let (s, v) = hub
        .http(
            "POST",
            &format!("/v1/tasks/{id}/transfer"),
            Some(&tok),
            Some(&body.to_string()),
        )
        .await;
    if s == 200 {
        check_schema("Task", &v);
    } else {
        check_schema("HttpError", &v);
    }
    (s, v)
}

#[tokio::test]
async fn an_agent_transfers_a_chat_to_another_queue_and_it_keeps_its_id_and_age() {
    let hub = hub("").await;
    let mut bo = hub.ready_agent("bo").await;
    let t = hub.create(chat()).await;
    assert_eq!(bo.accept_next().await["task_id"], t["task_id"]);
    // Only ana serves vip.
    let mut ana = hub.ready_agent("ana").await;
    let r = bo
        .ok(json!({"type": "transfer", "task_id": t["task_id"], "to_queue": "vip", "priority": 50}))
        .await;
    assert_eq!(r["task"]["queue"], "vip");
    assert_eq!(r["task"]["transfers"], 1);
    let st = bo.expect_state(|a| a["in_progress"] == json!([])).await;
    assert_eq!(st["status"], "ready");
    let offer = ana.expect("offer").await;
    let task = &offer["offer"]["task"];
    assert_eq!(task["task_id"], t["task_id"]);
    assert_eq!(task["created_at"], t["created_at"], "its age came along");
    assert_eq!(task["priority"], 50);
    // Nothing of it is bo's any more.
    bo.err(
        json!({"type": "transfer", "task_id": t["task_id"], "to_queue": "support"}),
        "task_not_in_progress",
    )
    .await;
    // Bad requests are typed errors, and the connection stays.
    ana.ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    for (body, code) in [
        (
            json!({"type": "transfer", "task_id": t["task_id"]}),
            "invalid_field",
        ),
        (
            json!({"type": "transfer", "task_id": t["task_id"], "to_queue": "vip", "to_agent": "bo"}),
            "invalid_field",
        ),
        (
            json!({"type": "transfer", "task_id": t["task_id"], "to_agent": "bo", "head": true}),
            "invalid_field",
        ),
        (
            json!({"type": "transfer", "task_id": t["task_id"], "to_queue": "nope"}),
            "unknown_queue",
        ),
        (
            json!({"type": "transfer", "task_id": t["task_id"], "to_agent": "nobody"}),
            "unknown_agent",
        ),
        (
            json!({"type": "transfer", "task_id": t["task_id"], "to_queue": "vip", "priority": 5000}),
            "invalid_field",
        ),
        (
            json!({"type": "transfer", "task_id": t["task_id"], "to_queue": "vip", "surprise": 1}),
            "invalid_message",
        ),
    ] {
        ana.err(body, code).await;
    }
    let st = ana.ok(json!({"type": "get_state"})).await;
    assert_eq!(st["agent"]["in_progress"][0]["task_id"], t["task_id"]);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_transfer_to_an_agent_is_an_offer_and_the_transferring_agent_hears_how_it_ended() {
    let hub = hub("").await;
    let mut bo = hub.ready_agent("bo").await;
    let t = hub
        .create(json!({"channel": "voice", "queue": "support"}))
        .await;
    bo.accept_next().await;
    let mut dj = hub.ready_agent("dj").await;
    let r = bo
        .ok(json!({"type": "transfer", "task_id": t["task_id"], "to_agent": "dj"}))
        .await;
    assert_eq!(r["task"]["state"], "offered");
    assert_eq!(r["task"]["agent_id"], "dj");
    let offer = dj.expect("offer").await;
    assert_eq!(offer["offer"]["timeout_ms"], 15000, "an ordinary offer");
    dj.ok(json!({"type": "decline", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    let ended = bo.expect("transfer_ended").await;
    assert_eq!(
        (&ended["task_id"], &ended["agent_id"], &ended["result"]),
        (&t["task_id"], &json!("dj"), &json!("declined"))
    );
    // Back in its queue: bo let it go and dj declined it; nobody else is there.
    assert_eq!(
        hub.task(t["task_id"].as_str().unwrap_or_default()).await["state"],
        "queued"
    );
    // An agent who cannot take an offer now: unavailable at once, the task stays
    // queued. A supervisor asks it over HTTP; ana is not even connected.
    let (s, v) = http_transfer(
        &hub,
        Role::Supervisor,
        &t["task_id"],
        json!({"to_agent": "ana"}),
    )
    .await;
    assert_eq!((s, &v["state"]), (200, &json!("queued")), "{v}");
    // ana comes: the task is offered to her as usual, and a transfer to bo, by an
    // integration, withdraws that offer and goes to bo, who accepts; bo hears nothing
    // of it (bo did not make this transfer).
    let mut ana = hub.ready_agent("ana").await;
    let first = ana.expect("offer").await;
    assert_eq!(first["offer"]["task"]["task_id"], t["task_id"]);
    let (s, v) = http_transfer(
        &hub,
        Role::Integration,
        &t["task_id"],
        json!({"to_agent": "bo"}),
    )
    .await;
    assert_eq!((s, &v["agent_id"]), (200, &json!("bo")), "{v}");
    assert_eq!(ana.expect("offer_ended").await["reason"], "withdrawn");
    let again = bo.expect("offer").await;
    let r = bo
        .ok(json!({"type": "accept", "offer_id": again["offer"]["offer_id"]}))
        .await;
    assert_eq!(r["task"]["transfers"], 3);
    // An agent token may not use the HTTP route.
    let (s, v) = http_transfer(&hub, Role::Agent, &t["task_id"], json!({"to_queue": "vip"})).await;
    assert_eq!((s, &v["error"]["code"]), (403, &json!("forbidden")));
    hub.shutdown().await;
}

#[tokio::test]
async fn a_supervisor_transfers_a_task_in_progress_and_the_agent_is_told() {
    let hub = hub("max_transfers = 2").await;
    let (mut sup, _) = hub.supervisor().await;
    let mut bo = hub.ready_agent("bo").await;
    let t = hub.create(chat()).await;
    bo.accept_next().await;
    let mut ana = hub.ready_agent("ana").await;
    let r = sup
        .ok(json!({"type": "transfer", "task_id": t["task_id"], "to_queue": "vip", "head": true}))
        .await;
    assert_eq!(r["task"]["queue"], "vip");
    assert_eq!(bo.expect("task_transferred").await["task_id"], t["task_id"]);
    bo.expect_state(|a| a["in_progress"] == json!([])).await;
    ana.accept_next().await;
    // The cap (2 here): one more, then transfer_limit.
    sup.ok(json!({"type": "transfer", "task_id": t["task_id"], "to_queue": "support"}))
        .await;
    assert_eq!(
        ana.expect("task_transferred").await["task_id"],
        t["task_id"]
    );
    sup.err(
        json!({"type": "transfer", "task_id": t["task_id"], "to_queue": "vip"}),
        "transfer_limit",
    )
    .await;
    let (s, v) = http_transfer(
        &hub,
        Role::Integration,
        &t["task_id"],
        json!({"to_queue": "vip"}),
    )
    .await;
    assert_eq!((s, &v["error"]["code"]), (409, &json!("transfer_limit")));
    hub.shutdown().await;
}

/// An email from a customer the hub knows (`name`, `email`), accepted by bo and
/// transferred by him to ana, whose offer rings.
struct HandedOver {
    customer: Value,
    /// bo's activity.
    first: Value,
    bo: Client,
    ana: Client,
    offer: Value,
}

async fn email_handed_from_bo_to_ana(hub: &TestHub, name: &str, email: &str) -> HandedOver {
    let customer = hub
        .create_customer(json!({"name": name, "emails": [email]}))
        .await;
    let mut bo = hub.ready_agent("bo").await;
    let t = hub
        .create(json!({"channel": "email", "queue": "support", "customer": {"email": email}}))
        .await;
    let offer = bo.expect("offer").await;
    let first = bo
        .ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await["activity"]
        .clone();
    assert_eq!(first["customer_id"], customer["customer_id"]);
    let mut ana = hub.ready_agent("ana").await;
    bo.ok(json!({"type": "transfer", "task_id": t["task_id"], "to_agent": "ana"}))
        .await;
    let offer = ana.expect("offer").await;
    HandedOver {
        customer,
        first,
        bo,
        ana,
        offer,
    }
}

#[tokio::test]
async fn the_customer_context_follows_a_transfer() {
    let hub = hub("").await;
    let HandedOver {
        customer: c,
        first,
        mut bo,
        mut ana,
        offer,
    } = email_handed_from_bo_to_ana(&hub, "Åsa Öberg", "asa@example.se").await;
    let customer_id = c["customer_id"].clone();
    let second = ana
        .ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await["activity"]
        .clone();
    // A new activity for ana, on the same customer and request.
    assert_ne!(second["activity_id"], first["activity_id"]);
    assert_eq!(second["agent_id"], "ana");
    assert_eq!(second["customer_id"], customer_id);
    assert_eq!(second["request_id"], first["request_id"]);
    assert_eq!(bo.expect("transfer_ended").await["result"], "accepted");
    // The journey shows the transfer, by bo, to ana.
    let j = ana
        .ok(json!({"type": "get_journey", "customer_id": customer_id}))
        .await;
    let ev = j["journey"]
        .as_array()
        .and_then(|evs| evs.iter().find(|e| e["kind"] == "task_transferred"))
        .cloned()
        .unwrap_or_else(|| panic!("no task_transferred in {j}"));
    assert_eq!(ev["by"]["id"], "bo");
    assert_eq!(ev["text"], "agent:ana");
    // ana watches the customer: a change by the CRM reaches her.
    hub.patch_customer(
        &customer_id,
        c["version"].clone(),
        json!({"name": "Åsa Öberg-Lind"}),
    )
    .await;
    let ch = ana.expect("record_changed").await;
    assert_eq!(ch["change"]["customer_id"], customer_id);
    hub.shutdown().await;
}

/// The request the earlier agent closed after the transfer was closed on purpose: the
/// next agent's activity is filed as any accept's is (the customer's most recent open
/// request, or a new one), not on a closed request nobody is told was worked again.
#[tokio::test]
async fn a_request_closed_after_the_transfer_does_not_get_the_next_agents_activity() {
    let hub = hub("").await;
    let HandedOver {
        customer: c,
        first,
        mut bo,
        mut ana,
        offer,
    } = email_handed_from_bo_to_ana(&hub, "Ana Sousa", "ana@example.pt").await;
    let r1 = first["request_id"].clone();
    // bo closes the request while the offer rings (his interaction is still open).
    let req = bo
        .ok(json!({"type": "get_request", "request_id": r1}))
        .await["request"]
        .clone();
    bo.ok(json!({"type": "update_request", "request_id": r1, "base_version": req["version"], "state": "closed"}))
        .await;
    let second = ana
        .ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await["activity"]
        .clone();
    assert_eq!(second["customer_id"], c["customer_id"]);
    assert!(second["request_id"].is_string());
    assert_ne!(second["request_id"], r1, "filed on the closed request");
    let after = ana
        .ok(json!({"type": "get_request", "request_id": r1}))
        .await["request"]
        .clone();
    assert_eq!(after["state"], "closed");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_consult_keeps_the_task_until_the_other_agent_accepts() {
    let hub = hub("").await;
    let mut bo = hub.ready_agent("bo").await;
    let t = hub
        .create(json!({"channel": "voice", "queue": "support"}))
        .await;
    bo.accept_next().await;
    let mut dj = hub.ready_agent("dj").await;
    // Asked, then taken back.
    let r = bo
        .ok(json!({"type": "consult", "task_id": t["task_id"], "to_agent": "dj"}))
        .await;
    assert_eq!(r["task"]["state"], "assigned");
    assert_eq!(r["task"]["agent_id"], "bo");
    let offer = dj.expect("offer").await;
    assert_eq!(offer["offer"]["consult_from"], "bo");
    bo.err(
        json!({"type": "consult", "task_id": t["task_id"], "to_agent": "dj"}),
        "offer_pending",
    )
    .await;
    bo.ok(json!({"type": "cancel_consult", "task_id": t["task_id"]}))
        .await;
    let ended = dj.expect("offer_ended").await;
    assert_eq!(ended["reason"], "withdrawn");
    dj.err(
        json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}),
        "offer_withdrawn",
    )
    .await;
    // Asked again and accepted: the task moves in one step.
    bo.ok(json!({"type": "consult", "task_id": t["task_id"], "to_agent": "dj"}))
        .await;
    let offer = dj.expect("offer").await;
    let st = bo.ok(json!({"type": "get_state"})).await;
    assert_eq!(
        st["agent"]["in_progress"][0]["task_id"], t["task_id"],
        "still bo's"
    );
    let r = dj
        .ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    assert_eq!(r["task"]["agent_id"], "dj");
    assert_eq!(r["task"]["transfers"], 2);
    let ended = bo.expect("transfer_ended").await;
    assert_eq!(
        (&ended["agent_id"], &ended["result"]),
        (&json!("dj"), &json!("accepted"))
    );
    bo.expect_state(|a| a["in_progress"] == json!([])).await;
    // Nobody else to consult: a supervisor may not, and an agent who cannot take an
    // offer now is refused.
    let (mut sup, _) = hub.supervisor().await;
    sup.err(
        json!({"type": "consult", "task_id": t["task_id"], "to_agent": "bo"}),
        "forbidden",
    )
    .await;
    dj.err(
        json!({"type": "consult", "task_id": t["task_id"], "to_agent": "ana"}),
        "not_available",
    )
    .await;
    hub.shutdown().await;
}

#[tokio::test]
async fn a_transfer_that_replaces_the_skills_drops_the_levels_of_those_it_removes() {
    let hub = hub("").await;
    let mut bo = hub.ready_agent("bo").await;
    // Nobody speaks German: the chat waits.
    let t = hub
        .create(json!({"channel": "chat", "queue": "support", "skill_levels": {"de": 8}}))
        .await;
    let (s, v) = http_transfer(
        &hub,
        Role::Integration,
        &t["task_id"],
        json!({"to_queue": "support", "skills": []}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["skills"], json!([]), "{v}");
    assert!(
        v.get("skill_levels").is_none_or(|l| l == &json!({})),
        "the level of a skill no longer required: {v}"
    );
    // Now bo may take it.
    let offer = bo.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], t["task_id"]);
}

#[tokio::test]
async fn a_task_is_not_transferred_to_the_agent_who_has_it() {
    let hub = hub("").await;
    let mut bo = hub.ready_agent("bo").await;
    let t = hub.create(chat()).await;
    bo.accept_next().await;
    bo.err(
        json!({"type": "transfer", "task_id": t["task_id"], "to_agent": "bo"}),
        "invalid_field",
    )
    .await;
    let (s, v) = http_transfer(
        &hub,
        Role::Supervisor,
        &t["task_id"],
        json!({"to_agent": "bo"}),
    )
    .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (400, &json!("invalid_field")),
        "{v}"
    );
    // Still bo's, untouched.
    let task = hub.task(t["task_id"].as_str().unwrap()).await;
    assert!(task.get("transfers").is_none(), "{task}");
    assert_eq!(task["state"], "assigned", "{task}");
}
