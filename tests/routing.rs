//! Presence and routing through real websocket and HTTP clients against a running hub.

mod common;

use common::race::{Race, Timing};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard::auth::Role;
use tokio::time::Instant;

const QUICK: &str = "offer_timeout_secs = 0.4\nreconnect_grace_secs = 0.5\n";

async fn hub() -> TestHub {
    TestHub::start(&format!("{QUICK}{QUEUES_AND_AGENTS}")).await
}

#[tokio::test]
async fn login_is_not_ready_then_ready_and_supervisors_see_it() {
    let hub = hub().await;
    let (mut sup, snap) = hub.supervisor().await;
    assert_eq!(snap["agents"].as_array().map(Vec::len), Some(3));
    let mut ana = hub.agent("ana").await;
    assert_eq!(ana.welcome["agent"]["status"], "not_ready");
    assert_eq!(ana.welcome["agent"]["reason"], "login");
    assert_eq!(ana.welcome["resumed"], false);
    let r = ana.set_ready().await;
    assert_eq!(r["agent"]["status"], "ready");
    loop {
        let c = sup.expect("agent_changed").await;
        if c["agent"]["agent_id"] == "ana" && c["agent"]["status"] == "ready" {
            break;
        }
    }
    // Not Ready needs a configured reason: not one the hub sets itself, which
    // supervisors and reports read as what happened.
    for reason in ["nap", "login", "missed_offer", "supervisor"] {
        ana.err(
            json!({"type": "set_state", "state": "not_ready", "reason": reason}),
            "unknown_reason",
        )
        .await;
    }
    ana.err(
        json!({"type": "set_state", "state": "not_ready"}),
        "invalid_field",
    )
    .await;
    let r = ana
        .ok(json!({"type": "set_state", "state": "not_ready", "reason": "lunch"}))
        .await;
    assert_eq!(r["agent"]["status"], "not_ready");
    assert_eq!(r["agent"]["reason"], "lunch");
    hub.shutdown().await;
}

#[tokio::test]
async fn full_cycle_offer_accept_complete_wrap_up_ready() {
    let hub = TestHub::start(&format!("wrap_up_secs = 0.3\n{QUEUES_AND_AGENTS}")).await;
    let mut ana = hub.ready_agent("ana").await;
    let created = hub
        .create(json!({
            "channel": "voice", "queue": "support",
            "customer": {"phone": "+351 912 345 678", "name": "João Gonçalves"},
            "attributes": {"survey": {"topic": "fatura"}, "pages_visited": ["/conta", "/pagamentos"]}
        }))
        .await;
    let offer = ana.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], created["task_id"]);
    // What is known of the customer travels with the offer.
    assert_eq!(offer["offer"]["task"]["customer"]["name"], "João Gonçalves");
    assert_eq!(
        offer["offer"]["task"]["attributes"]["pages_visited"][1],
        "/pagamentos"
    );
    assert_eq!(offer["offer"]["timeout_ms"], 15000);
    ana.expect_state(|a| a["status"] == "reserved").await;
    let r = ana
        .ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    assert_eq!(r["task"]["state"], "assigned");
    let busy = ana.expect_state(|a| a["status"] == "busy").await;
    assert_eq!(busy["in_progress"][0]["task_id"], created["task_id"]);
    assert_eq!(
        hub.task(created["task_id"].as_str().unwrap_or_default())
            .await["state"],
        "assigned"
    );
    let r = ana
        .ok(json!({"type": "complete", "task_id": created["task_id"], "wrap_up_code": "resolvido"}))
        .await;
    assert_eq!(r["task"]["state"], "completed");
    assert_eq!(r["task"]["wrap_up_code"], "resolvido");
    ana.expect_state(|a| a["status"] == "wrap_up").await;
    ana.expect_state(|a| a["status"] == "ready").await;
    // Completing twice is refused.
    ana.err(
        json!({"type": "complete", "task_id": created["task_id"]}),
        "task_not_in_progress",
    )
    .await;
    hub.shutdown().await;
}

#[tokio::test]
async fn priority_then_arrival_and_the_longest_idle_agent() {
    let hub = hub().await;
    let low_old = hub
        .create(json!({"channel": "chat", "queue": "support", "priority": 1}))
        .await;
    let high = hub
        .create(json!({"channel": "chat", "queue": "support", "priority": 7}))
        .await;
    let low_new = hub
        .create(json!({"channel": "chat", "queue": "support", "priority": 1}))
        .await;
    let mut bo = hub.ready_agent("bo").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(bo.accept_next().await["task_id"].clone());
    }
    assert_eq!(
        got,
        vec![
            high["task_id"].clone(),
            low_old["task_id"].clone(),
            low_new["task_id"].clone()
        ]
    );
    // Longest idle: dj became ready before ana. bo, with room for an email and idle
    // longer than both, steps out first: else the email is his, and reaches dj only
    // after bo's offer expires.
    bo.ok(json!({"type": "set_state", "state": "not_ready", "reason": "lunch"}))
        .await;
    let mut dj = hub.ready_agent("dj").await;
    let mut ana = hub.ready_agent("ana").await;
    let t = hub
        .create(json!({"channel": "email", "queue": "support"}))
        .await;
    let offer = dj.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], t["task_id"]);
    // At once, not after someone else's offer expired.
    assert_eq!(offer["offer"]["task"]["offers"], 1, "{offer}");
    ana.expect_no("offer", Duration::from_millis(150)).await;
    bo.expect_no("offer", Duration::ZERO).await;
    hub.shutdown().await;
}

#[tokio::test]
async fn skills_route_to_the_agent_who_has_them() {
    let hub = hub().await;
    let mut ana = hub.ready_agent("ana").await;
    let mut bo = hub.ready_agent("bo").await;
    let t = hub
        .create(json!({"channel": "chat", "queue": "support", "skills": ["sv"]}))
        .await;
    assert_eq!(
        bo.expect("offer").await["offer"]["task"]["task_id"],
        t["task_id"]
    );
    ana.expect_no("offer", Duration::from_millis(150)).await;
    // Nobody has Italian: it waits, and the queue shows it.
    let it = hub
        .create(json!({"channel": "chat", "queue": "support", "skills": ["it"]}))
        .await;
    assert_eq!(
        hub.task(it["task_id"].as_str().unwrap_or_default()).await["state"],
        "queued"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn one_call_at_a_time_and_channel_capacity() {
    let hub = TestHub::start(&format!(
        "capacity = {{ voice = 1, chat = 2, email = 1 }}\n{QUEUES_AND_AGENTS}"
    ))
    .await;
    let mut bo = hub.ready_agent("bo").await;
    let call = hub
        .create(json!({"channel": "voice", "queue": "support"}))
        .await;
    assert_eq!(bo.accept_next().await["task_id"], call["task_id"]);
    let call2 = hub
        .create(json!({"channel": "voice", "queue": "support"}))
        .await;
    let chat1 = hub.create(chat()).await;
    bo.expect_no("offer", Duration::from_millis(200)).await;
    bo.complete(&call["task_id"]).await;
    // Off the call: the oldest waiting task first (the second call), then nothing else.
    assert_eq!(bo.accept_next().await["task_id"], call2["task_id"]);
    bo.expect_no("offer", Duration::from_millis(150)).await;
    bo.complete(&call2["task_id"]).await;
    // Chats: two at once, then the third waits.
    assert_eq!(bo.accept_next().await["task_id"], chat1["task_id"]);
    let chat2 = hub.create(chat()).await;
    assert_eq!(bo.accept_next().await["task_id"], chat2["task_id"]);
    let chat3 = hub.create(chat()).await;
    bo.expect_no("offer", Duration::from_millis(200)).await;
    // An email still fits beside the chats.
    let email = hub
        .create(json!({"channel": "email", "queue": "support"}))
        .await;
    assert_eq!(bo.accept_next().await["task_id"], email["task_id"]);
    bo.complete(&chat1["task_id"]).await;
    assert_eq!(bo.accept_next().await["task_id"], chat3["task_id"]);
    hub.shutdown().await;
}

#[tokio::test]
async fn decline_sends_the_task_to_the_next_agent() {
    let hub = hub().await;
    let mut bo = hub.ready_agent("bo").await;
    let mut dj = hub.ready_agent("dj").await;
    let t = hub.create(chat()).await;
    let offer = bo.expect("offer").await;
    bo.ok(json!({"type": "decline", "offer_id": offer["offer"]["offer_id"], "reason": "wrong language"}))
        .await;
    assert_eq!(
        dj.expect("offer").await["offer"]["task"]["task_id"],
        t["task_id"]
    );
    let st = bo.ok(json!({"type": "get_state"})).await;
    assert_eq!(st["agent"]["status"], "ready");
    // The declined offer cannot be accepted any more.
    bo.err(
        json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}),
        "offer_closed",
    )
    .await;
    hub.shutdown().await;
}

/// "The agent is as before the offer": a declined or withdrawn offer keeps the agent's
/// place in the longest-idle line; only an accept sends it to the back.
#[tokio::test]
async fn a_declined_or_withdrawn_offer_keeps_the_agents_place_in_the_idle_line() {
    // The default 15 s offer: no expiry moves anyone while the test runs.
    let hub = TestHub::start(QUEUES_AND_AGENTS).await;
    let tok = hub.token("crm", Role::Integration);
    // Idle longest first: bo, then dj, then ana.
    let mut bo = hub.ready_agent("bo").await;
    let mut dj = hub.ready_agent("dj").await;
    let mut ana = hub.ready_agent("ana").await;
    let first = hub.create(chat()).await;
    let offer = bo.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], first["task_id"]);
    bo.ok(json!({"type": "decline", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    // Not to bo again: dj, next in line, rings.
    assert_eq!(
        dj.expect("offer").await["offer"]["task"]["task_id"],
        first["task_id"]
    );
    // bo is still idle longer than ana: the next task is his.
    let second = hub.create(chat()).await;
    assert_eq!(
        bo.expect("offer").await["offer"]["task"]["task_id"],
        second["task_id"]
    );
    // The caller hangs up while it rings: withdrawn, and bo keeps his place again.
    let (st, v) = hub
        .http(
            "POST",
            &format!(
                "/v1/tasks/{}/cancel",
                second["task_id"].as_str().unwrap_or_default()
            ),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(bo.expect("offer_ended").await["reason"], "withdrawn");
    let third = hub.create(chat()).await;
    let offer = bo.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], third["task_id"]);
    // An accept sends bo to the back: the next chat goes to ana, though bo has room.
    bo.ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    let fourth = hub.create(chat()).await;
    assert_eq!(
        ana.expect("offer").await["offer"]["task"]["task_id"],
        fourth["task_id"]
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_declined_task_returns_to_the_only_agent_after_the_reoffer_time() {
    let reoffer = Duration::from_millis(300);
    let hub = TestHub::start(&format!("reoffer_after_secs = 0.3\n{QUEUES_AND_AGENTS}")).await;
    let mut bo = hub.ready_agent("bo").await;
    let t = hub.create(chat()).await;
    let offer = bo.expect("offer").await;
    let sent = Instant::now();
    bo.ok(json!({"type": "decline", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    // Nobody else serves the queue: after the re-offer time it comes back to bo.
    let again = bo.expect("offer").await;
    let back = Instant::now();
    assert_eq!(again["offer"]["task"]["task_id"], t["task_id"]);
    assert_eq!(again["offer"]["task"]["offers"], 2);
    assert_ne!(again["offer"]["offer_id"], offer["offer"]["offer_id"]);
    // The decline was applied after it was sent, and the re-offer at least the re-offer
    // time after that: a bound this test can prove from its own clock.
    assert!(back - sent >= reoffer, "back after {:?}", back - sent);
    hub.shutdown().await;
}

#[tokio::test]
async fn not_ready_during_an_offer_declines_it_in_one_step() {
    // The default 15 s offer timeout: no expiry can overtake the requests below.
    let hub = TestHub::start(QUEUES_AND_AGENTS).await;
    let mut bo = hub.ready_agent("bo").await;
    let mut dj = hub.ready_agent("dj").await;
    let (mut sup, _) = hub.supervisor().await;
    let t = hub.create(chat()).await;
    let offer = bo.expect("offer").await;
    let r = bo
        .ok(json!({"type": "set_state", "state": "not_ready", "reason": "lunch"}))
        .await;
    assert_eq!(r["agent"]["status"], "not_ready");
    assert_eq!(r["agent"]["reason"], "lunch");
    assert_eq!(r["agent"]["offer"], Value::Null);
    assert!(r["agent"].get("pending_not_ready").is_none());
    let ended = bo.expect("offer_ended").await;
    assert_eq!(ended["reason"], "declined");
    assert_eq!(ended["offer_id"], offer["offer"]["offer_id"]);
    // The task goes on to the next agent at once, and the old offer is closed.
    assert_eq!(
        dj.expect("offer").await["offer"]["task"]["task_id"],
        t["task_id"]
    );
    bo.err(
        json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}),
        "offer_closed",
    )
    .await;
    loop {
        let c = sup.expect("agent_changed").await;
        if c["agent"]["agent_id"] == "bo" && c["agent"]["status"] == "not_ready" {
            assert_eq!(c["agent"]["reason"], "lunch");
            break;
        }
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn not_ready_while_busy_is_pending_until_the_work_ends_and_ready_cancels_it() {
    // The default 15 s offer timeout: no expiry can overtake the requests below.
    let hub = TestHub::start(QUEUES_AND_AGENTS).await;
    let (mut sup, _) = hub.supervisor().await;
    let mut bo = hub.ready_agent("bo").await;
    let first = hub.create(chat()).await;
    assert_eq!(bo.accept_next().await["task_id"], first["task_id"]);
    let r = bo
        .ok(json!({"type": "set_state", "state": "not_ready", "reason": "lunch"}))
        .await;
    assert_eq!(r["agent"]["status"], "busy");
    assert_eq!(r["agent"]["pending_not_ready"], "lunch");
    assert!(
        r["agent"].get("reason").is_none(),
        "Ready underneath until the work ends"
    );
    loop {
        let c = sup.expect("agent_changed").await;
        if c["agent"]["agent_id"] == "bo" && c["agent"]["pending_not_ready"] == "lunch" {
            assert_eq!(c["agent"]["status"], "busy");
            break;
        }
    }
    // bo has room for two more chats, but asked for Not Ready: no new offer.
    let second = hub.create(chat()).await;
    assert_eq!(second["state"], "queued");
    // ready cancels the pending Not Ready: the waiting chat comes at once.
    let r = bo.ok(json!({"type": "set_state", "state": "ready"})).await;
    assert!(r["agent"].get("pending_not_ready").is_none());
    let offer = bo.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], second["task_id"]);
    // not_ready with that offer pending: the offer is declined and the Not Ready waits.
    let r = bo
        .ok(json!({"type": "set_state", "state": "not_ready", "reason": "break"}))
        .await;
    assert_eq!(r["agent"]["status"], "busy");
    assert_eq!(r["agent"]["pending_not_ready"], "break");
    assert_eq!(r["agent"]["offer"], Value::Null);
    assert_eq!(bo.expect("offer_ended").await["reason"], "declined");
    // The work ends: Not Ready with the reason asked for.
    let r = bo.complete(&first["task_id"]).await;
    assert_eq!(r["task"]["state"], "completed");
    let st = bo.expect_state(|a| a["status"] == "not_ready").await;
    assert_eq!(st["reason"], "break");
    assert!(st.get("pending_not_ready").is_none());
    hub.shutdown().await;
}

#[tokio::test]
async fn not_ready_asked_in_wrap_up_applies_when_the_wrap_up_ends() {
    let hub = TestHub::start(&format!("wrap_up_secs = 0.3\n{QUEUES_AND_AGENTS}")).await;
    let mut bo = hub.ready_agent("bo").await;
    let t = hub.create(chat()).await;
    bo.accept_next().await;
    bo.complete(&t["task_id"]).await;
    bo.expect_state(|a| a["status"] == "wrap_up").await;
    let r = bo
        .ok(json!({"type": "set_state", "state": "not_ready", "reason": "meeting"}))
        .await;
    assert_eq!(r["agent"]["status"], "wrap_up");
    assert_eq!(r["agent"]["pending_not_ready"], "meeting");
    let st = bo.expect_state(|a| a["status"] == "not_ready").await;
    assert_eq!(st["reason"], "meeting");
    assert!(st.get("pending_not_ready").is_none());
    hub.shutdown().await;
}

#[tokio::test]
async fn expiry_makes_the_agent_not_ready_and_the_task_goes_on_in_place() {
    let hub = hub().await;
    let mut bo = hub.ready_agent("bo").await;
    let first = hub.create(chat()).await;
    let offer = bo.expect("offer").await;
    let second = hub
        .create(json!({"channel": "voice", "queue": "support"}))
        .await;
    let ended = bo.expect("offer_ended").await;
    assert_eq!(ended["reason"], "expired");
    assert_eq!(ended["offer_id"], offer["offer"]["offer_id"]);
    let st = bo.expect_state(|a| a["status"] == "not_ready").await;
    assert_eq!(st["reason"], "missed_offer");
    bo.err(
        json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}),
        "offer_expired",
    )
    .await;
    // The next agent gets the first task, ahead of the second: it kept its place.
    let mut dj = hub.ready_agent("dj").await;
    assert_eq!(
        dj.expect("offer").await["offer"]["task"]["task_id"],
        first["task_id"]
    );
    // And the task does not go back to the agent who missed it within the re-offer
    // time (30 s here).
    let mut bo2 = bo;
    bo2.set_ready().await;
    assert_eq!(
        bo2.expect("offer").await["offer"]["task"]["task_id"],
        second["task_id"]
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn accept_racing_expiry_has_one_winner_and_both_sides_are_told() {
    // Accepts aimed around the deadline, in ms from the latest it can be: well before
    // (wins), just before and at it (the accept and the timer race), after (losses).
    const OFFSETS_MS: &[i64] = &[-60, -30, -10, -4, -2, -1, 0, 1, 2, 5];
    let timeout = Duration::from_millis(100);
    let hub = TestHub::start(&format!("offer_timeout_secs = 0.1\n{QUEUES_AND_AGENTS}")).await;
    let mut bo = hub.ready_agent("bo").await;
    let mut race = Race::new(timeout, Duration::from_millis(1), OFFSETS_MS);
    let mut lost = Vec::new();
    while let Some(offset) = race.next_offset() {
        let created = Instant::now();
        let t = hub.create(chat()).await;
        let offer = bo.expect("offer").await;
        let offered = Instant::now();
        assert_eq!(offer["offer"]["task"]["task_id"], t["task_id"]);
        let offer_id = offer["offer"]["offer_id"].clone();
        tokio::time::sleep_until(race.aim(offered, offset)).await;
        let sent = Instant::now();
        let r = bo
            .request(json!({"type": "accept", "offer_id": offer_id}))
            .await;
        let answered = Instant::now();
        let won = r["type"] == "reply";
        race.record(
            offset,
            &Timing {
                created,
                offered,
                sent,
                answered,
            },
            won,
        );
        let task = hub.task(t["task_id"].as_str().unwrap_or_default()).await;
        if won {
            // The winner holds the task, everywhere it is shown.
            assert_eq!(r["result"]["task"]["task_id"], t["task_id"]);
            assert_eq!(r["result"]["task"]["state"], "assigned");
            assert_eq!(task["state"], "assigned", "{task}");
            assert_eq!(task["agent_id"], "bo", "{task}");
            let busy = bo.expect_state(|a| a["status"] == "busy").await;
            assert_eq!(busy["in_progress"][0]["task_id"], t["task_id"]);
            bo.complete(&t["task_id"]).await;
        } else {
            // The loser is told twice, goes Not Ready (missed_offer), and the task goes
            // back to its queue, never to come back to this agent.
            assert_eq!(r["type"], "error", "{r}");
            assert_eq!(r["code"], "offer_expired", "{r}");
            // The first offer_ended since the last round: one for a won offer would
            // come first and fail here.
            let ended = bo.expect("offer_ended").await;
            assert_eq!(ended["offer_id"], offer_id, "{ended}");
            assert_eq!(ended["reason"], "expired");
            let st = bo.expect_state(|a| a["status"] == "not_ready").await;
            assert_eq!(st["reason"], "missed_offer", "{st}");
            assert!(st["offer"].is_null(), "{st}");
            assert_eq!(task["state"], "queued", "{task}");
            assert_eq!(task["offers"], 1, "{task}");
            bo.set_ready().await;
            lost.push(t["task_id"].clone());
        }
    }
    race.assert_both_outcomes();
    // No offer_ended for the last round's offer after all, whichever way it went.
    bo.expect_no("offer_ended", timeout * 2).await;
    // The lost tasks went on: the next agent gets the oldest, in its place.
    let mut dj = hub.ready_agent("dj").await;
    let next = dj.expect("offer").await;
    assert_eq!(next["offer"]["task"]["task_id"], lost[0], "{next}");
    assert_eq!(next["offer"]["task"]["offers"], 2, "{next}");
    hub.shutdown().await;
}

#[tokio::test]
async fn cancel_takes_a_task_out_of_the_queue_the_offer_and_progress() {
    let hub = hub().await;
    let tok = hub.token("crm", Role::Integration);
    let cancel = |id: &Value| format!("/v1/tasks/{}/cancel", id.as_str().unwrap_or_default());
    let queued = hub.create(chat()).await;
    let (st, v) = hub
        .http(
            "POST",
            &cancel(&queued["task_id"]),
            Some(&tok),
            Some(r#"{"reason":"caller hung up"}"#),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "cancelled");
    let mut bo = hub.ready_agent("bo").await;
    bo.expect_no("offer", Duration::from_millis(150)).await;
    let offered = hub.create(chat()).await;
    bo.expect("offer").await;
    let (st, _) = hub
        .http("POST", &cancel(&offered["task_id"]), Some(&tok), None)
        .await;
    assert_eq!(st, 200);
    let ended = bo.expect("offer_ended").await;
    assert_eq!(ended["reason"], "withdrawn");
    bo.expect_state(|a| a["status"] == "ready").await;
    let busy = hub
        .create(json!({"channel": "voice", "queue": "support"}))
        .await;
    bo.accept_next().await;
    let (st, _) = hub
        .http("POST", &cancel(&busy["task_id"]), Some(&tok), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        bo.expect("task_cancelled").await["task_id"],
        busy["task_id"]
    );
    bo.expect_state(|a| {
        a["status"] == "ready" && a["in_progress"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    let (st, v) = hub
        .http("POST", &cancel(&busy["task_id"]), Some(&tok), None)
        .await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (409, json!("task_finished"))
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn reconnect_within_grace_resumes_and_after_grace_goes_offline() {
    let hub = hub().await;
    let (mut sup, _) = hub.supervisor().await;
    let mut bo = hub.ready_agent("bo").await;
    let t = hub.create(chat()).await;
    let offer = bo.expect("offer").await;
    drop(bo);
    await_dropped(&mut sup, "bo").await;
    let mut bo = hub.agent("bo").await;
    assert_eq!(bo.welcome["resumed"], true);
    assert_eq!(
        bo.welcome["agent"]["offer"]["offer_id"],
        offer["offer"]["offer_id"]
    );
    bo.ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    drop(bo);
    await_dropped(&mut sup, "bo").await;
    let bo = hub.agent("bo").await;
    assert_eq!(bo.welcome["resumed"], true);
    assert_eq!(bo.welcome["agent"]["status"], "busy");
    assert_eq!(
        bo.welcome["agent"]["in_progress"][0]["task_id"],
        t["task_id"]
    );
    // Gone past the grace period: Offline, and the task goes back to its queue.
    drop(bo);
    loop {
        let c = sup.expect("agent_changed").await;
        if c["agent"]["agent_id"] == "bo" && c["agent"]["status"] == "offline" {
            break;
        }
    }
    let mut dj = hub.ready_agent("dj").await;
    assert_eq!(
        dj.expect("offer").await["offer"]["task"]["task_id"],
        t["task_id"]
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_dropped_desktops_offer_goes_to_the_next_agent_and_its_tasks_wait_for_it() {
    let away = Duration::from_millis(300);
    let hub = TestHub::start(&format!(
        "away_offer_secs = 0.3\nreconnect_grace_secs = 30\n{QUEUES_AND_AGENTS}"
    ))
    .await;
    let (mut sup, _) = hub.supervisor().await;
    let mut bo = hub.ready_agent("bo").await;
    let first = hub.create(chat()).await;
    assert_eq!(bo.accept_next().await["task_id"], first["task_id"]);
    // bo has room for another chat: the second is offered to bo.
    let second = hub.create(chat()).await;
    let offer = bo.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], second["task_id"]);
    let mut dj = hub.ready_agent("dj").await;
    let dropped = Instant::now();
    drop(bo);
    // The offer does not ring on until its 15 s deadline: dj gets it once bo's desktop
    // has been gone for the away time.
    let next = dj.expect("offer").await;
    assert_eq!(next["offer"]["task"]["task_id"], second["task_id"]);
    assert_eq!(next["offer"]["task"]["offers"], 2);
    assert!(
        dropped.elapsed() >= away,
        "withdrawn after {:?}",
        dropped.elapsed()
    );
    // bo comes back within its grace: the chat in progress is there, the offer is not.
    await_dropped(&mut sup, "bo").await;
    let bo = hub.agent("bo").await;
    assert_eq!(bo.welcome["resumed"], true);
    assert_eq!(bo.welcome["agent"]["offer"], Value::Null);
    assert_eq!(bo.welcome["agent"]["status"], "busy");
    assert_eq!(
        bo.welcome["agent"]["in_progress"][0]["task_id"],
        first["task_id"]
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_second_connection_takes_over_and_the_first_is_told_why() {
    let hub = hub().await;
    let mut first = hub.ready_agent("ana").await;
    let second = hub.agent("ana").await;
    assert_eq!(second.welcome["resumed"], true);
    assert_eq!(second.welcome["agent"]["status"], "ready");
    let (reason, code) = first.expect_closed().await;
    assert_eq!(reason.as_deref(), Some("replaced"));
    assert_eq!(code, Some(4001));
    // The close of the first connection does not start a grace period for the second.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut second = second;
    let st = second.ok(json!({"type": "get_state"})).await;
    assert_eq!(st["agent"]["status"], "ready");
    assert_eq!(st["agent"]["connected"], true);
    hub.shutdown().await;
}

#[tokio::test]
async fn supervisors_watch_queues_and_can_move_and_log_out_agents() {
    let hub = hub().await;
    let (mut sup, snap) = hub.supervisor().await;
    let support = snap["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["queue_id"] == "support").cloned())
        .expect("support queue");
    assert_eq!(support["waiting"], 0);
    hub.create(chat()).await;
    loop {
        let q = sup.expect("queue_changed").await;
        if q["queue"]["queue_id"] == "support" && q["queue"]["waiting"] == 1 {
            break;
        }
    }
    let mut bo = hub.ready_agent("bo").await;
    bo.expect("offer").await;
    // A supervisor sets Not Ready: the pending offer goes back.
    sup.ok(json!({"type": "set_agent_state", "agent_id": "bo", "state": "not_ready", "reason": "meeting"})).await;
    assert_eq!(bo.expect("offer_ended").await["reason"], "withdrawn");
    let st = bo.expect_state(|a| a["status"] == "not_ready").await;
    assert_eq!(st["reason"], "meeting");
    sup.err(
        json!({"type": "set_agent_state", "agent_id": "bo", "state": "ready"}),
        "invalid_field",
    )
    .await;
    sup.err(
        json!({"type": "logout_agent", "agent_id": "nobody"}),
        "unknown_agent",
    )
    .await;
    sup.ok(json!({"type": "logout_agent", "agent_id": "bo"}))
        .await;
    let (reason, code) = bo.expect_closed().await;
    assert_eq!(reason.as_deref(), Some("logged_out_by_supervisor"));
    assert_eq!(code, Some(4002));
    let snap = sup.ok(json!({"type": "get_snapshot"})).await;
    let bo_line = snap["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["agent_id"] == "bo").cloned())
        .expect("bo");
    assert_eq!(bo_line["status"], "offline");
    // Agents cannot use supervisor requests and the reverse.
    let mut dj = hub.agent("dj").await;
    dj.err(json!({"type": "get_snapshot"}), "forbidden").await;
    sup.err(json!({"type": "get_state"}), "forbidden").await;
    hub.shutdown().await;
}

#[tokio::test]
async fn agents_may_log_in_with_a_profile_from_their_token_when_allowed() {
    let mut cfg = config(QUEUES_AND_AGENTS);
    cfg.auth.allow_token_profiles = true;
    let hub = TestHub::start_with(cfg).await;
    let token = hub.keys.sign(&switchboard::auth::Claims {
        sub: "temp-1".into(),
        role: Role::Agent,
        exp: switchboard::auth::unix_now() + 60,
        name: Some("Temp Agent".into()),
        skills: Some(vec!["it".into()]),
        // Named twice: it counts once (in the agent's queues and the queue's numbers).
        queues: Some(vec!["vip".into(), "vip".into()]),
    });
    let mut c = Client::connect(&hub.ws_url(&token)).await.expect("connect");
    let w = c.expect("welcome").await;
    assert_eq!(w["agent"]["name"], "Temp Agent");
    let (mut sup, _) = hub.supervisor().await;
    let snap = sup.ok(json!({"type": "get_snapshot"})).await;
    let line = snap["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["agent_id"] == "temp-1"))
        .cloned()
        .unwrap_or_else(|| panic!("no temp-1 in {snap}"));
    assert_eq!(line["queues"], json!(["vip"]), "{line}");
    c.set_ready().await;
    let t = hub
        .create(json!({"channel": "chat", "queue": "vip", "skills": ["it"]}))
        .await;
    assert_eq!(
        c.expect("offer").await["offer"]["task"]["task_id"],
        t["task_id"]
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_task() {
    let hub = hub().await;
    let tok = hub.token("crm", Role::Integration);
    let body = r#"{"channel":"email","queue":"support","customer":{"email":"ines@example.pt"}}"#;
    let (s1, a) = http(
        hub.addr,
        "POST",
        "/v1/tasks",
        Some(&tok),
        Some(body),
        &[("idempotency-key", "mail-42")],
    )
    .await;
    let (s2, b) = http(
        hub.addr,
        "POST",
        "/v1/tasks",
        Some(&tok),
        Some(body),
        &[("idempotency-key", "mail-42")],
    )
    .await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(a["task_id"], b["task_id"]);
    hub.shutdown().await;
}

#[tokio::test]
async fn operators_get_health_readiness_and_metrics() {
    let hub = hub().await;
    let mut bo = hub.ready_agent("bo").await;
    hub.create(chat()).await;
    bo.accept_next().await;
    let (s, body) = hub.http("GET", "/healthz", None, None).await;
    assert_eq!((s, body), (200, Value::String("ok\n".into())));
    let (s, _) = hub.http("GET", "/readyz", None, None).await;
    assert_eq!(s, 200);
    let (s, m) = hub.http("GET", "/metrics", None, None).await;
    assert_eq!(s, 200);
    let m = m.as_str().unwrap_or_default().to_owned();
    for needle in [
        "switchboard_offers_made_total 1",
        "switchboard_offers_accepted_total 1",
        "switchboard_agents{state=\"busy\"} 1",
        "switchboard_queue_waiting{queue=\"support\"} 0",
        "switchboard_create_to_offer_seconds_count 1",
        "switchboard_connections 1",
    ] {
        assert!(m.contains(needle), "metrics lack {needle:?}:\n{m}");
    }
    hub.shutdown().await;
}

/// Two desktops of one agent opening at the same moment (a double click, a desktop
/// restored twice): one is told `replaced`, the other is the agent's desktop and gets
/// its work. The order that once left neither (registered in one order, connected by the
/// store in the other) cannot be forced through sockets; `hub::tests` forces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_desktops_opening_at_once_leave_exactly_one_connected() {
    let hub = hub().await;
    let url = hub.ws_url(&hub.token("ana", Role::Agent));
    for round in 0..10 {
        let (a, b) = tokio::join!(Client::connect(&url), Client::connect(&url));
        let (mut a, mut b) = (a.expect("a connects"), b.expect("b connects"));
        let (mut survivor, reason) = tokio::select! {
            (r, _) = a.expect_closed() => (b, r),
            (r, _) = b.expect_closed() => (a, r),
        };
        assert_eq!(reason.as_deref(), Some("replaced"), "round {round}");
        // The other one is the agent's desktop: connected, and offered the next task.
        let st = survivor.ok(json!({"type": "get_state"})).await;
        assert_eq!(st["agent"]["connected"], true, "round {round}: {st}");
        survivor.set_ready().await;
        let task = hub.create(chat()).await;
        let got = survivor.accept_next().await;
        assert_eq!(got["task_id"], task["task_id"], "round {round}");
        survivor.complete(&task["task_id"]).await;
        survivor
            .expect_no("goodbye", Duration::from_millis(100))
            .await;
    }
    hub.shutdown().await;
}
