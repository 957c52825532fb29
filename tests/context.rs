//! The customer context through real websocket clients: attach on accept, unknown
//! callers, lists, reopen, search, limits, tags, and the caution prompt.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard::auth::Role;

async fn hub() -> TestHub {
    TestHub::start(QUEUES_AND_AGENTS).await
}

/// A voice task from `phone`, accepted by `agent`; returns (task, activity).
async fn call_from(hub: &TestHub, agent: &mut Client, phone: &str) -> (Value, Value) {
    hub.create(
        json!({"channel": "voice", "queue": "support", "customer": {"phone": phone},
        "attributes": {"ivr": {"menu": "2"}, "pages_visited": ["/faq/refunds"]}}),
    )
    .await;
    let offer = agent.expect("offer").await;
    let r = agent
        .ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    (r["task"].clone(), r["activity"].clone())
}

#[tokio::test]
async fn accept_attaches_to_the_most_recent_open_request_or_opens_one() {
    let hub = hub().await;
    let c = hub
        .create_customer(json!({"name": "João Gonçalves", "phones": ["+351 912 345 678"]}))
        .await;
    let mut ana = hub.ready_agent("ana").await;
    let (task, a1) = call_from(&hub, &mut ana, "+351912345678").await;
    assert_eq!(a1["customer_id"], c["customer_id"]);
    assert_eq!(a1["task_id"], task["task_id"]);
    assert_eq!(a1["summary"]["queue"], "support");
    assert_eq!(
        a1["summary"]["attributes"]["pages_visited"][0],
        "/faq/refunds"
    );
    // The customer moved to the Open list.
    let lists = ana.ok(json!({"type": "get_lists"})).await;
    assert_eq!(
        lists["lists"]["open"][0]["customer"]["customer_id"],
        c["customer_id"]
    );
    ana.complete(&task["task_id"]).await;
    // A second call while the request is open lands on the same request.
    let (task2, a2) = call_from(&hub, &mut ana, "+351 912 345 678").await;
    assert_eq!(a2["request_id"], a1["request_id"]);
    ana.complete(&task2["task_id"]).await;
    // Close the request; the next call opens a new one.
    let req = ana
        .ok(json!({"type": "get_request", "request_id": a1["request_id"]}))
        .await["request"]
        .clone();
    let closed = ana
        .ok(json!({"type": "update_request", "request_id": a1["request_id"], "base_version": req["version"], "state": "closed"}))
        .await;
    assert_eq!(closed["request"]["state"], "closed");
    assert!(closed["request"]["closed_at"].is_string());
    let (_, a3) = call_from(&hub, &mut ana, "+351912345678").await;
    assert_ne!(a3["request_id"], a1["request_id"]);
    // Reopen the old request: created, closed and state are one call away.
    let r = ana
        .ok(json!({"type": "update_request", "request_id": a1["request_id"], "base_version": closed["request"]["version"], "state": "open"}))
        .await;
    assert_eq!(r["request"]["state"], "open");
    assert!(r["request"]["closed_at"].is_null());
    let view = ana
        .ok(json!({"type": "get_customer", "customer_id": c["customer_id"]}))
        .await;
    assert_eq!(view["requests"].as_array().map(Vec::len), Some(2));
    let j = ana.ok(json!({"type": "get_journey", "customer_id": c["customer_id"], "request_id": a1["request_id"]})).await;
    let kinds: Vec<&str> = j["journey"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.starts_with(&["request_opened", "activity_started"]),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"task_completed")
            && kinds.contains(&"request_closed")
            && kinds.contains(&"request_reopened"),
        "{kinds:?}"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn an_unknown_caller_is_linked_or_created_and_a_bare_close_is_refused() {
    let hub = hub().await;
    let known = hub
        .create_customer(json!({"name": "Đorđe Đorđević", "emails": ["dj@example.rs"]}))
        .await;
    let mut bo = hub.ready_agent("bo").await;
    // Unknown number: an interaction without a customer.
    let (task, a) = call_from(&hub, &mut bo, "+46 70 000 00 01").await;
    assert!(a["customer_id"].is_null());
    let lists = bo.ok(json!({"type": "get_lists"})).await;
    assert!(lists["lists"]["open"][0]["customer"].is_null());
    bo.err(
        json!({"type": "close_interaction", "activity_id": a["activity_id"]}),
        "customer_choice_required",
    )
    .await;
    // Search (no accents typed) and link.
    let found = bo
        .ok(json!({"type": "search_customers", "query": "dordevic"}))
        .await;
    assert_eq!(found["customers"][0]["customer_id"], known["customer_id"]);
    let linked = bo
        .ok(json!({"type": "link_activity", "activity_id": a["activity_id"], "customer_id": known["customer_id"]}))
        .await;
    assert_eq!(linked["activity"]["customer_id"], known["customer_id"]);
    assert!(linked["activity"]["request_id"].is_string());
    bo.ok(json!({"type": "close_interaction", "activity_id": a["activity_id"]}))
        .await;
    bo.complete(&task["task_id"]).await;
    // Another unknown caller: create the customer while closing.
    let (task, a) = call_from(&hub, &mut bo, "+46 70 000 00 02").await;
    let closed = bo
        .ok(
            json!({"type": "close_interaction", "activity_id": a["activity_id"], "choice": "create",
            "customer": {"name": "Åsa Öberg", "emails": ["asa@example.se"]}}),
        )
        .await;
    let new_id = closed["activity"]["customer_id"].clone();
    assert!(new_id.is_string());
    let found = bo
        .ok(json!({"type": "search_customers", "query": "asa oberg"}))
        .await;
    assert_eq!(found["customers"][0]["customer_id"], new_id);
    assert_eq!(
        found["customers"][0]["phones"][0], "+46 70 000 00 02",
        "the caller id is kept"
    );
    bo.complete(&task["task_id"]).await;
    // A third: discard.
    let (_, a) = call_from(&hub, &mut bo, "+46 70 000 00 03").await;
    bo.ok(
        json!({"type": "close_interaction", "activity_id": a["activity_id"], "choice": "discard"}),
    )
    .await;
    let lists = bo.ok(json!({"type": "get_lists"})).await;
    assert!(lists["lists"]["open"].as_array().is_some_and(Vec::is_empty));
    let recent: Vec<Value> = lists["lists"]["recent"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        recent.len(),
        2,
        "two customers closed, one discarded: {recent:?}"
    );
    assert_eq!(recent[0]["customer_id"], new_id, "newest first");
    hub.shutdown().await;
}

#[tokio::test]
async fn lists_survive_a_reconnect_and_a_closed_customer_can_be_reopened() {
    let hub = hub().await;
    let c = hub
        .create_customer(json!({"name": "Giulia Ricci", "phones": ["+39 333 1234567"]}))
        .await;
    let (mut sup, _) = hub.supervisor().await;
    let mut ana = hub.ready_agent("ana").await;
    let (task, a) = call_from(&hub, &mut ana, "+39 333 1234567").await;
    drop(ana);
    await_dropped(&mut sup, "ana").await;
    let mut ana = hub.agent("ana").await;
    assert_eq!(ana.welcome["resumed"], true);
    // Open (the customer) and In Progress (the task) come back in the welcome.
    assert_eq!(
        ana.welcome["lists"]["open"][0]["activity_id"],
        a["activity_id"]
    );
    assert_eq!(
        ana.welcome["agent"]["in_progress"][0]["task_id"],
        task["task_id"]
    );
    ana.ok(json!({"type": "close_interaction", "activity_id": a["activity_id"]}))
        .await;
    ana.complete(&task["task_id"]).await;
    // Closed: editing is refused until reopened from Recent.
    let v = ana
        .ok(json!({"type": "get_customer", "customer_id": c["customer_id"]}))
        .await;
    let ver = v["customer"]["version"].clone();
    ana.err(json!({"type": "update_customer", "customer_id": c["customer_id"], "base_version": ver, "changes": {"name": "Giulia R."}}), "record_not_open").await;
    // A customer that does not exist is that, as for every other edit.
    ana.err(json!({"type": "update_customer", "customer_id": uuid::Uuid::new_v4(), "base_version": 1, "changes": {}}), "customer_not_found").await;
    let r = ana
        .ok(json!({"type": "reopen_customer", "customer_id": c["customer_id"]}))
        .await;
    assert_eq!(r["customer"]["customer_id"], c["customer_id"]);
    let u = ana.ok(json!({"type": "update_customer", "customer_id": c["customer_id"], "base_version": ver, "changes": {"name": "Giulia R."}})).await;
    assert_eq!(u["customer"]["name"], "Giulia R.");
    // Its most recent activity can be updated too.
    let act = ana
        .ok(json!({"type": "get_activity", "activity_id": a["activity_id"]}))
        .await["activity"]
        .clone();
    let act = ana
        .ok(json!({"type": "update_activity", "activity_id": a["activity_id"], "base_version": act["version"], "notes": "Ligou de volta; resolvido."}))
        .await;
    assert_eq!(act["activity"]["notes"], "Ligou de volta; resolvido.");
    ana.ok(json!({"type": "close_customer", "customer_id": c["customer_id"]}))
        .await;
    hub.shutdown().await;
}

#[tokio::test]
async fn search_ignores_case_and_accents() {
    let hub = hub().await;
    for (name, email) in [
        ("João Araújo", "joao@example.pt"),
        ("Đorđe Đorđević", "djordje@example.rs"),
        ("Ђорђе Ђорђевић", "cyr@example.rs"),
        ("Åsa Öberg", "asa@example.se"),
        ("Niccolò Ricci", "niccolo@example.it"),
    ] {
        hub.create_customer(json!({"name": name, "emails": [email]}))
            .await;
    }
    let mut bo = hub.agent("bo").await;
    let names = |v: &Value| -> Vec<String> {
        v["customers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    let r = bo
        .ok(json!({"type": "search_customers", "query": "joao"}))
        .await;
    assert_eq!(names(&r), vec!["João Araújo"]);
    let r = bo
        .ok(json!({"type": "search_customers", "query": "DORDEVIC"}))
        .await;
    assert_eq!(names(&r).len(), 2, "Latin and Cyrillic spellings: {r}");
    let r = bo
        .ok(json!({"type": "search_customers", "query": "öberg"}))
        .await;
    assert_eq!(names(&r), vec!["Åsa Öberg"]);
    let r = bo
        .ok(json!({"type": "search_customers", "query": "niccolo@"}))
        .await;
    assert_eq!(names(&r), vec!["Niccolò Ricci"]);
    let r = bo
        .ok(json!({"type": "search_customers", "query": "nobody"}))
        .await;
    assert!(names(&r).is_empty());
    hub.shutdown().await;
}

#[tokio::test]
async fn limits_count_characters_and_tags_are_unique() {
    let hub = hub().await;
    let mut bo = hub.ready_agent("bo").await;
    let (_, a) = call_from(&hub, &mut bo, "+46 8 123 456").await;
    let id = a["activity_id"].clone();
    // 2,000 Serbian Cyrillic characters (4,000 bytes) fit; 2,001 do not.
    let r = bo.ok(json!({"type": "update_activity", "activity_id": id, "base_version": 1, "notes": "Ж".repeat(2000)})).await;
    assert_eq!(r["activity"]["version"], 2);
    let e = bo.err(json!({"type": "update_activity", "activity_id": id, "base_version": 2, "notes": "😀".repeat(2001)}), "field_too_long").await;
    assert_eq!(
        (e["field"].as_str(), e["limit"].as_u64()),
        (Some("notes"), Some(2000))
    );
    // Tags: 50 characters, unique regardless of case and surrounding spaces, never empty.
    let e = bo.err(json!({"type": "update_activity", "activity_id": id, "base_version": 2, "tags": ["Reklamation", " reklamation "]}), "duplicate_tag").await;
    assert_eq!(e["field"], "tags[1]");
    bo.err(
        json!({"type": "update_activity", "activity_id": id, "base_version": 2, "tags": ["  "]}),
        "invalid_field",
    )
    .await;
    let e = bo.err(json!({"type": "update_activity", "activity_id": id, "base_version": 2, "tags": ["å".repeat(51)]}), "field_too_long").await;
    assert_eq!(e["limit"], 50);
    let r = bo.ok(json!({"type": "update_activity", "activity_id": id, "base_version": 2, "tags": [" Återbetalning ", "ß".repeat(50), "fattura"]})).await;
    assert_eq!(r["activity"]["tags"][0], "Återbetalning");
    // Names over the limit are refused whole, never cut.
    bo.err(json!({"type": "close_interaction", "activity_id": id, "choice": "create", "customer": {"name": "ć".repeat(2001)}}), "field_too_long").await;
    let act = bo
        .ok(json!({"type": "get_activity", "activity_id": id}))
        .await;
    assert!(
        act["activity"]["customer_id"].is_null(),
        "nothing was created"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn two_agents_editing_one_customer_get_the_notification_and_the_conflict() {
    let hub = hub().await;
    let c = hub
        .create_customer(json!({"name": "Ana Lima", "phones": ["+55 11 5555 0000"]}))
        .await;
    let cid = c["customer_id"].clone();
    let mut ana = hub.ready_agent("ana").await;
    let mut bo = hub.ready_agent("bo").await;
    // Both have the customer open: ana on a call with it, bo reopened it from Search;
    // dj only loaded it (watching without editing).
    call_from(&hub, &mut ana, "+55 11 5555 0000").await;
    let loaded = bo
        .ok(json!({"type": "reopen_customer", "customer_id": cid}))
        .await;
    let v = loaded["customer"]["version"].as_u64().unwrap_or(0);
    let mut dj = hub.agent("dj").await;
    dj.ok(json!({"type": "get_customer", "customer_id": cid}))
        .await;
    // ana saves first.
    let saved = ana.ok(json!({"type": "update_customer", "customer_id": cid, "base_version": v, "changes": {"name": "Ana Lima Souza"}})).await;
    assert_eq!(saved["customer"]["version"], v + 1);
    // bo is told at once, with the new version and who made it; ana is not.
    let n = bo.expect("record_changed").await;
    assert_eq!(n["change"]["kind"], "customer");
    assert_eq!(n["change"]["version"], v + 1);
    assert_eq!(n["change"]["changed_by"]["id"], "ana");
    assert_eq!(n["change"]["record"]["name"], "Ana Lima Souza");
    assert_eq!(
        dj.expect("record_changed").await["change"]["version"],
        v + 1
    );
    ana.expect_no("record_changed", Duration::from_millis(100))
        .await;
    // bo saves on the old version: the caution prompt, with what to load.
    let e = bo.err(json!({"type": "update_customer", "customer_id": cid, "base_version": v, "changes": {"fields": {"segment": "gold"}}}), "version_conflict").await;
    assert_eq!(e["version"], v + 1);
    assert_eq!(e["current"]["name"], "Ana Lima Souza");
    assert_eq!(e["changed_by"]["id"], "ana");
    // Load and re-apply.
    let r = bo.ok(json!({"type": "update_customer", "customer_id": cid, "base_version": v + 1, "changes": {"fields": {"segment": "gold"}}})).await;
    assert_eq!(r["customer"]["name"], "Ana Lima Souza");
    assert_eq!(r["customer"]["fields"]["segment"], "gold");
    assert_eq!(
        ana.expect("record_changed").await["change"]["changed_by"]["id"],
        "bo"
    );
    // An integration's change reaches both.
    hub.patch_customer(&cid, json!(v + 2), json!({"emails": ["ana@example.br"]}))
        .await;
    assert_eq!(
        ana.expect("record_changed").await["change"]["changed_by"]["role"],
        "integration"
    );
    assert_eq!(
        bo.expect("record_changed").await["change"]["version"],
        v + 3
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_storm_of_concurrent_saves_has_exactly_one_winner_per_version() {
    let hub = hub().await;
    let c = hub.create_customer(json!({"name": "Storm"})).await;
    let cid = c["customer_id"].clone();
    let mut clients = Vec::new();
    for who in ["ana", "bo", "dj"] {
        let mut cl = hub.agent(who).await;
        cl.ok(json!({"type": "reopen_customer", "customer_id": cid}))
            .await;
        clients.push((who, cl));
    }
    // Each round: every agent saves on the same base version at once.
    let mut version = 1u64;
    let mut winners = Vec::new();
    for round in 0..15 {
        let mut joins = Vec::new();
        for (who, mut cl) in clients.drain(..) {
            let cid = cid.clone();
            joins.push(tokio::spawn(async move {
                let r = cl
                    .request(json!({"type": "update_customer", "customer_id": cid, "base_version": version,
                        "changes": {"fields": {"last_writer": who, "round": round.to_string()}}}))
                    .await;
                (who, cl, r)
            }));
        }
        let mut won = Vec::new();
        for j in joins {
            let (who, cl, r) = j.await.expect("join");
            if r["type"] == "reply" {
                assert_eq!(r["result"]["customer"]["version"], version + 1);
                won.push(who);
            } else {
                assert_eq!(r["code"], "version_conflict", "{r}");
                assert_eq!(r["version"], version + 1);
            }
            clients.push((who, cl));
        }
        assert_eq!(won.len(), 1, "round {round}: winners {won:?}");
        winners.push(won[0]);
        version += 1;
    }
    // The record shows the last winner's write and exactly one version per win.
    let tok = hub.token("crm", Role::Integration);
    let (_, v) = hub
        .http(
            "GET",
            &format!("/v1/customers/{}", cid.as_str().unwrap_or_default()),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(v["customer"]["version"], version);
    assert_eq!(
        v["customer"]["fields"]["last_writer"],
        *winners.last().unwrap_or(&"")
    );
    hub.shutdown().await;
}

/// The next `record_changed` for a record of `kind`, skipping others.
async fn changed(agent: &mut Client, kind: &str) -> Value {
    loop {
        let n = agent.expect("record_changed").await;
        if n["change"]["kind"] == kind {
            return n["change"].clone();
        }
    }
}

#[tokio::test]
async fn the_interaction_moves_to_another_request_or_a_new_one() {
    let hub = hub().await;
    let c = hub
        .create_customer(json!({"name": "Giulia Bianchi", "phones": ["+39 06 1234 5678"]}))
        .await;
    let cid = c["customer_id"].clone();
    let mut ana = hub.ready_agent("ana").await;
    let mut bo = hub.agent("bo").await;
    let (task, a) = call_from(&hub, &mut ana, "+39 06 1234 5678").await;
    let aid = a["activity_id"].clone();
    let first = a["request_id"].clone();
    let v = a["version"].as_u64().unwrap_or(0);
    bo.ok(json!({"type": "get_customer", "customer_id": cid}))
        .await;
    // An existing request of the same customer.
    let refund = ana
        .ok(json!({"type": "create_request", "customer_id": cid, "title": "Rimborso"}))
        .await["request"]
        .clone();
    changed(&mut bo, "request").await;
    let moved = ana
        .ok(json!({"type": "move_activity", "activity_id": aid, "request_id": refund["request_id"]}))
        .await;
    assert_eq!(moved["activity"]["request_id"], refund["request_id"]);
    assert_eq!(moved["activity"]["version"], v + 1);
    let n = changed(&mut bo, "activity").await;
    assert_eq!(n["record"]["request_id"], refund["request_id"]);
    assert_eq!(n["version"], v + 1);
    // Moving where it already is changes nothing.
    let same = ana
        .ok(json!({"type": "move_activity", "activity_id": aid, "request_id": refund["request_id"]}))
        .await;
    assert_eq!(same["activity"]["version"], v + 1);
    // A new request.
    let fresh = ana
        .ok(json!({"type": "move_activity", "activity_id": aid}))
        .await;
    let new_id = fresh["activity"]["request_id"].clone();
    assert!(new_id.is_string());
    assert_ne!(new_id, refund["request_id"]);
    assert_ne!(new_id, first);
    assert_eq!(changed(&mut bo, "request").await["id"], new_id);
    assert_eq!(
        changed(&mut bo, "activity").await["record"]["request_id"],
        new_id
    );
    // Back to the first request after it was closed: it is reopened.
    let r = ana
        .ok(json!({"type": "get_request", "request_id": first}))
        .await["request"]
        .clone();
    ana.ok(json!({"type": "update_request", "request_id": first, "base_version": r["version"], "state": "closed"}))
        .await;
    let back = ana
        .ok(json!({"type": "move_activity", "activity_id": aid, "request_id": first}))
        .await;
    assert_eq!(back["activity"]["request_id"], first);
    let r = ana
        .ok(json!({"type": "get_request", "request_id": first}))
        .await["request"]
        .clone();
    assert_eq!(r["state"], "open");
    assert!(r["closed_at"].is_null());
    let j = ana
        .ok(json!({"type": "get_journey", "customer_id": cid, "request_id": first}))
        .await;
    let kinds: Vec<&str> = j["journey"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.ends_with(&["request_closed", "request_reopened", "activity_updated"]),
        "{kinds:?}"
    );
    ana.complete(&task["task_id"]).await;
    hub.shutdown().await;
}

#[tokio::test]
async fn moving_the_interaction_is_refused_with_a_typed_error() {
    let hub = hub().await;
    let c = hub
        .create_customer(json!({"name": "Milica Petrović", "phones": ["+381 11 123 4567"]}))
        .await;
    let other = hub
        .create_customer(json!({"name": "Jovan Jovanović"}))
        .await;
    let mut ana = hub.ready_agent("ana").await;
    let mut bo = hub.ready_agent("bo").await;
    let (task, a) = call_from(&hub, &mut ana, "+381 11 123 4567").await;
    let aid = a["activity_id"].clone();
    // A request of another customer, opened by bo who reopened that customer.
    bo.ok(json!({"type": "reopen_customer", "customer_id": other["customer_id"]}))
        .await;
    let elsewhere = bo
        .ok(json!({"type": "create_request", "customer_id": other["customer_id"], "title": "Druga"}))
        .await["request"]["request_id"]
        .clone();
    let e = ana
        .err(
            json!({"type": "move_activity", "activity_id": aid, "request_id": elsewhere}),
            "invalid_field",
        )
        .await;
    assert_eq!(e["field"], "request_id");
    ana.err(
        json!({"type": "move_activity", "activity_id": aid, "request_id": "00000000-0000-4000-8000-000000000000"}),
        "request_not_found",
    )
    .await;
    ana.err(
        json!({"type": "move_activity", "activity_id": "00000000-0000-4000-8000-000000000000"}),
        "activity_not_found",
    )
    .await;
    ana.err(
        json!({"type": "move_activity", "activity_id": aid, "request_id": 7}),
        "invalid_message",
    )
    .await;
    // Not bo's interaction.
    bo.err(
        json!({"type": "move_activity", "activity_id": aid}),
        "record_not_open",
    )
    .await;
    // An unknown caller's interaction has no customer to choose requests from.
    let (_, unknown) = call_from(&hub, &mut bo, "+381 60 000 0000").await;
    bo.err(
        json!({"type": "move_activity", "activity_id": unknown["activity_id"]}),
        "customer_choice_required",
    )
    .await;
    // Once closed, it stays where it is.
    ana.ok(json!({"type": "close_interaction", "activity_id": aid}))
        .await;
    ana.err(
        json!({"type": "move_activity", "activity_id": aid}),
        "interaction_closed",
    )
    .await;
    let after = ana
        .ok(json!({"type": "get_activity", "activity_id": aid}))
        .await;
    assert_eq!(after["activity"]["request_id"], a["request_id"]);
    let _ = (task, c);
    hub.shutdown().await;
}

/// What an agent loaded stays watched until it lets it go (`unwatch_customer`) or goes
/// offline: closing a reopened record or an interaction with the customer meanwhile is
/// not letting go of what it loaded. (Watching had no reasons: the close dropped both.)
#[tokio::test]
async fn a_loaded_customer_stays_watched_when_the_agent_closes_it_again() {
    let hub = hub().await;
    let c = hub
        .create_customer(json!({"name": "Lena Berg", "emails": ["lena@example.se"]}))
        .await;
    let cid = c["customer_id"].clone();
    let mut bo = hub.agent("bo").await;
    bo.ok(json!({"type": "get_customer", "customer_id": cid}))
        .await;
    bo.ok(json!({"type": "reopen_customer", "customer_id": cid}))
        .await;
    bo.ok(json!({"type": "close_customer", "customer_id": cid}))
        .await;
    hub.patch_customer(&cid, c["version"].clone(), json!({"name": "Lena Berg-Ek"}))
        .await;
    let ch = bo.expect("record_changed").await;
    assert_eq!(ch["change"]["customer_id"], cid);
    assert_eq!(ch["change"]["record"]["name"], "Lena Berg-Ek");
    hub.shutdown().await;
}

/// A customer's most recent activity is the one that started last, not the one linked
/// last: an older interaction linked to the customer late does not take the place of
/// the last call (which an agent with the customer open may still edit).
#[tokio::test]
async fn an_older_interaction_linked_late_is_not_the_customers_most_recent_activity() {
    let hub = hub().await;
    // dj takes a call from an unknown number first.
    let mut dj = hub.ready_agent("dj").await;
    let (_, x) = call_from(&hub, &mut dj, "+46 70 000 0001").await;
    assert!(x["customer_id"].is_null());
    // Then bo takes Lena's call, and closes it.
    let c = hub
        .create_customer(json!({"name": "Lena Berg", "phones": ["+46 70 123 4567"]}))
        .await;
    let mut bo = hub.ready_agent("bo").await;
    let (task, y) = call_from(&hub, &mut bo, "+46 70 123 4567").await;
    assert_eq!(y["customer_id"], c["customer_id"]);
    bo.complete(&task["task_id"]).await;
    bo.ok(json!({"type": "close_interaction", "activity_id": y["activity_id"]}))
        .await;
    // dj's earlier call turns out to have been Lena too.
    dj.ok(json!({"type": "link_activity", "activity_id": x["activity_id"], "customer_id": c["customer_id"]}))
        .await;
    // bo, with Lena reopened, may still edit the last call: it is her most recent.
    bo.ok(json!({"type": "reopen_customer", "customer_id": c["customer_id"]}))
        .await;
    let view = bo
        .ok(json!({"type": "get_customer", "customer_id": c["customer_id"]}))
        .await;
    assert_eq!(
        view["activities"][0]["activity_id"], y["activity_id"],
        "newest first: {view}"
    );
    let ver = view["activities"][0]["version"].clone();
    let u = bo
        .ok(json!({"type": "update_activity", "activity_id": y["activity_id"], "base_version": ver, "notes": "Called back"}))
        .await;
    assert_eq!(u["activity"]["notes"], "Called back");
    hub.shutdown().await;
}
