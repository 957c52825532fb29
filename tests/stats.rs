//! Statistics through the real interfaces: agents on websockets, tasks through HTTP,
//! `GET /v1/stats`, the supervisor feed's `stats` messages, `/metrics`, and two nodes
//! on one real `redis-server` reporting the same figures.

mod common;

use common::redis_server::RedisServer;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard::auth::Role;
use tokio::time::Instant;

const STATS: &str = r#"
[stats]
timezone = "Europe/Rome"
short_abandon_secs = 5
"#;

fn stats_config(extra: &str) -> switchboard::config::Config {
    let mut cfg = config(&format!("{extra}\n{QUEUES_AND_AGENTS}\n{STATS}"));
    cfg.server.stats_update_ms = 50;
    cfg
}

async fn get_stats(hub: &TestHub, query: &str) -> Value {
    let tok = hub.token("crm", Role::Integration);
    let (st, v) = hub
        .http("GET", &format!("/v1/stats{query}"), Some(&tok), None)
        .await;
    assert_eq!(st, 200, "{v}");
    check_schema("StatsReport", &v);
    v
}

fn queue<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["queue_id"] == id))
        .unwrap_or_else(|| panic!("queue {id} in {report}"))
}

fn agent<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["agent_id"] == id))
        .unwrap_or_else(|| panic!("agent {id} in {report}"))
}

async fn cancel(hub: &TestHub, task: &Value) {
    let tok = hub.token("crm", Role::Integration);
    let path = format!(
        "/v1/tasks/{}/cancel",
        task["task_id"].as_str().unwrap_or_default()
    );
    let (st, v) = hub
        .http("POST", &path, Some(&tok), Some(r#"{"reason":"hung up"}"#))
        .await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test]
async fn get_stats_counts_answers_declines_and_short_abandons_exactly() {
    let hub = TestHub::start_with(stats_config("")).await;
    // Ana answers one chat after declining it once (Bo takes nothing: Not Ready).
    let mut ana = hub.ready_agent("ana").await;
    let t1 = hub.create(chat()).await;
    let offer = ana.expect("offer").await;
    ana.ok(json!({"type": "decline", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    // The task waits out Ana's re-offer time; she takes a break and Bo takes it.
    ana.ok(json!({"type": "set_state", "state": "not_ready", "reason": "break"}))
        .await;
    let mut bo = hub.ready_agent("bo").await;
    let task = bo.accept_next().await;
    assert_eq!(task["task_id"], t1["task_id"]);
    bo.complete(&task["task_id"]).await;
    bo.ok(json!({"type": "set_state", "state": "not_ready", "reason": "lunch"}))
        .await;
    // A second task nobody takes, cancelled at once: a short abandon.
    let t2 = hub.create(chat()).await;
    cancel(&hub, &t2).await;

    let r = get_stats(&hub, "").await;
    assert_eq!(r["timezone"], "Europe/Rome");
    let today = &queue(&r, "support")["today"];
    assert_eq!(today["offered"], 2, "{today}");
    assert_eq!(today["answered"], 1);
    assert_eq!(today["abandoned"], 1);
    assert_eq!(today["abandoned_short"], 1);
    assert_eq!(today["answered_within_threshold"], 1);
    // 1 within / (1 answered + 1 abandoned - 1 short).
    assert_eq!(today["service_level"], 1.0);
    assert_eq!(today["service_level_threshold_ms"], 20_000);
    assert_eq!(today["offers_accepted"], 1);
    assert_eq!(today["offers_declined"], 1);
    assert_eq!(today["requeued"], 1);
    assert!(today["avg_handle_ms"].is_u64(), "{today}");
    assert_eq!(queue(&r, "support")["last_15m"]["offered"], 2);
    assert_eq!(queue(&r, "vip")["today"]["offered"], 0);
    let now = &queue(&r, "support")["now"];
    assert_eq!(now["waiting"], 0);
    assert_eq!(now["agents"]["not_ready"], 2, "{now}");
    assert_eq!(now["agents"]["offline"], 1);
    assert_eq!(now["not_ready_reasons"], json!({"break": 1, "lunch": 1}));
    let a = &agent(&r, "ana")["today"];
    assert_eq!(a["offers_declined"], 1);
    assert_eq!(a["handled"]["chat"], 0);
    let b = &agent(&r, "bo")["today"];
    assert_eq!(b["handled"], json!({"voice": 0, "chat": 1, "email": 0}));
    assert!(b["status_ms"]["busy"].as_u64().is_some());

    // Filters.
    let only = get_stats(&hub, "?queue=vip&agent=bo,ana").await;
    assert_eq!(only["queues"].as_array().map(Vec::len), Some(1));
    assert_eq!(only["agents"].as_array().map(Vec::len), Some(2));
    let tok = hub.token("crm", Role::Integration);
    let (st, v) = hub
        .http("GET", "/v1/stats?queue=nope", Some(&tok), None)
        .await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (404, &json!("unknown_queue")),
        "{v}"
    );
    let (st, v) = hub
        .http("GET", "/v1/stats?agent=zed", Some(&tok), None)
        .await;
    assert_eq!(v["error"]["code"], "unknown_agent", "{st} {v}");
    let (st, v) = hub
        .http("GET", "/v1/stats?queue=support,,vip", Some(&tok), None)
        .await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (400, &json!("invalid_field")),
        "{v}"
    );
    // Agents may not read the statistics; supervisors may.
    let (st, v) = hub
        .http(
            "GET",
            "/v1/stats",
            Some(&hub.token("ana", Role::Agent)),
            None,
        )
        .await;
    assert_eq!((st, &v["error"]["code"]), (403, &json!("forbidden")), "{v}");
    let (st, _) = hub
        .http(
            "GET",
            "/v1/stats",
            Some(&hub.token("sup", Role::Supervisor)),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let (st, v) = hub.http("GET", "/v1/stats", None, None).await;
    assert_eq!(st, 401, "{v}");

    // Prometheus: the same counts.
    assert_eq!(
        metric(
            &hub,
            "switchboard_queue_tasks_offered_total{queue=\"support\"}"
        )
        .await,
        2
    );
    assert_eq!(
        metric(
            &hub,
            "switchboard_queue_tasks_abandoned_short_total{queue=\"support\"}"
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            &hub,
            "switchboard_queue_speed_of_answer_seconds_count{queue=\"support\"}"
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            &hub,
            "switchboard_queue_agents{queue=\"support\",status=\"not_ready\"}"
        )
        .await,
        2
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_supervisor_gets_stats_in_its_snapshot_and_a_stats_message_after_a_change() {
    let hub = TestHub::start_with(stats_config("")).await;
    let (mut sup, snap) = hub.supervisor().await;
    assert_eq!(queue(&snap["stats"], "support")["today"]["offered"], 0);
    let mut ana = hub.ready_agent("ana").await;
    hub.create(chat()).await;
    let task = ana.accept_next().await;
    // Stats messages come when something changed; wait for the one showing the answer.
    let deadline = Instant::now() + WAIT;
    loop {
        let m = sup.expect("stats").await;
        let today = &queue(&m["stats"], "support")["today"];
        if today["answered"] == 1 {
            assert_eq!(today["offered"], 1);
            assert_eq!(agent(&m["stats"], "ana")["today"]["handled"]["chat"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "no stats with the answer: {m}");
    }
    ana.complete(&task["task_id"]).await;
    loop {
        let m = sup.expect("stats").await;
        if agent(&m["stats"], "ana")["today"]["handled"]["chat"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stats with the completion: {m}"
        );
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn each_queue_carries_its_configured_service_level_target() {
    // Support aims at 90/15; vip has neither key: 80/20.
    let queues = QUEUES_AND_AGENTS.replacen(
        "id = \"support\"\n",
        "id = \"support\"\nservice_level_target = 90\nservice_level_secs = 15\n",
        1,
    );
    let hub = TestHub::start_with(config(&format!("{queues}\n{STATS}"))).await;
    let r = get_stats(&hub, "").await;
    let support = queue(&r, "support");
    assert_eq!(support["service_level_target"], 0.9, "{support}");
    assert_eq!(support["today"]["service_level_threshold_ms"], 15_000);
    assert_eq!(queue(&r, "vip")["service_level_target"], 0.8);
    // The supervisor feed carries the same report.
    let (_sup, snap) = hub.supervisor().await;
    assert_eq!(
        queue(&snap["stats"], "support")["service_level_target"],
        0.9
    );
    hub.shutdown().await;

    // Out of range, the hub does not start: a clear error names the key.
    let bad = QUEUES_AND_AGENTS.replacen(
        "id = \"vip\"\n",
        "id = \"vip\"\nservice_level_target = 0.8\n",
        1,
    );
    let e = switchboard::config::Config::parse(&bad)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        e,
        "queues[1].service_level_target: must be a percentage from 1 to 100"
    );
}

/// The parts of a report every node must agree on: everything but the instant it was
/// built at and what depends on that instant (open status intervals).
fn comparable(r: &Value) -> Value {
    let mut r = r.clone();
    r["generated_at"] = Value::Null;
    if let Some(agents) = r["agents"].as_array_mut() {
        for a in agents {
            a["today"]["status_ms"] = Value::Null;
            a["today"]["not_ready_ms"] = Value::Null;
        }
    }
    if let Some(queues) = r["queues"].as_array_mut() {
        for q in queues {
            // The rolling windows' edges move with the minute of `generated_at`.
            q["last_15m"]["window_start"] = Value::Null;
            q["last_30m"]["window_start"] = Value::Null;
        }
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_redis_report_identical_statistics_after_a_mixed_run() {
    let redis = RedisServer::start();
    let node = |id: &str| {
        let mut cfg = stats_config("");
        cfg.store.redis = Some(redis.url());
        cfg.store.kind = Some(switchboard::config::StoreKind::Redis);
        cfg.server.node_id = id.into();
        cfg
    };
    let n1 = TestHub::start_with(node("n1")).await;
    let n2 = TestHub::start_with(node("n2")).await;
    // Ana on n1, Bo on n2; tasks created through both nodes.
    let mut ana = n1.ready_agent("ana").await;
    let mut bo = n2.ready_agent("bo").await;
    let a1 = n1.create(chat()).await;
    let b1 = n2.create(chat()).await;
    let mut taken = Vec::new();
    for c in [&mut ana, &mut bo] {
        let offer = c.expect("offer").await;
        let id = offer["offer"]["offer_id"].clone();
        taken.push(c.ok(json!({"type": "accept", "offer_id": id})).await["task"].clone());
    }
    let ids: Vec<&Value> = taken.iter().map(|t| &t["task_id"]).collect();
    assert!(ids.contains(&&a1["task_id"]) && ids.contains(&&b1["task_id"]));
    ana.complete(&taken[0]["task_id"]).await;
    // A vip task Bo cannot take (he does not serve vip) and Ana declines, then cancelled.
    let v = n2.create(json!({"channel": "chat", "queue": "vip"})).await;
    let offer = ana.expect("offer").await;
    ana.ok(json!({"type": "decline", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    cancel(&n1, &v).await;
    bo.complete(&taken[1]["task_id"]).await;
    // One more waiting in support while both are Not Ready.
    ana.ok(json!({"type": "set_state", "state": "not_ready", "reason": "break"}))
        .await;
    bo.ok(json!({"type": "set_state", "state": "not_ready", "reason": "lunch"}))
        .await;
    n1.create(chat()).await;

    // Both nodes follow the log; wait until each has seen the last decision.
    let deadline = Instant::now() + WAIT;
    let (r1, r2) = loop {
        let r1 = get_stats(&n1, "").await;
        let r2 = get_stats(&n2, "").await;
        let done = |r: &Value| queue(r, "support")["now"]["waiting"] == 1;
        if done(&r1) && done(&r2) && comparable(&r1) == comparable(&r2) {
            break (r1, r2);
        }
        assert!(Instant::now() < deadline, "the nodes disagree:\n{r1}\n{r2}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let support = &queue(&r1, "support")["today"];
    assert_eq!(support["offered"], 3, "{support}");
    assert_eq!(support["answered"], 2);
    assert_eq!(support["offers_accepted"], 2);
    assert!(support["avg_handle_ms"].is_u64());
    let vip = &queue(&r2, "vip")["today"];
    assert_eq!(vip["offered"], 1, "{vip}");
    assert_eq!(
        (vip["abandoned"].clone(), vip["abandoned_short"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(vip["offers_declined"], 1);
    assert_eq!(agent(&r1, "ana")["today"]["offers_declined"], 1);
    assert_eq!(agent(&r2, "bo")["today"]["handled"]["chat"], 1);
    assert_eq!(
        queue(&r2, "support")["now"]["not_ready_reasons"],
        json!({"break": 1, "lunch": 1})
    );
    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test]
async fn the_file_store_keeps_the_statistics_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("sb-stats-{}", uuid::Uuid::new_v4()));
    let file_config = || {
        let mut cfg = stats_config("");
        cfg.store.kind = Some(switchboard::config::StoreKind::File);
        cfg.store.data_dir = dir.clone();
        cfg
    };
    let hub = TestHub::start_with(file_config()).await;
    let mut ana = hub.ready_agent("ana").await;
    hub.create(chat()).await;
    let task = ana.accept_next().await;
    ana.complete(&task["task_id"]).await;
    ana.ok(json!({"type": "set_state", "state": "not_ready", "reason": "break"}))
        .await;
    let waiting = hub.create(chat()).await;
    cancel(&hub, &waiting).await;
    let before = get_stats(&hub, "").await;
    drop(ana);
    hub.shutdown().await;

    // The stopped hub's last tasks let go of the data directory's lock as they end; a
    // start refuses a directory in use: start again once they have.
    let deadline = Instant::now() + WAIT;
    let running = loop {
        let mut cfg = file_config();
        cfg.store.kind = Some(switchboard::config::StoreKind::File);
        match switchboard::server::start(cfg, SECRET.as_bytes()).await {
            Ok(r) => break r,
            Err(e) if e.to_string().contains("in use") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the hub starts again: {e}"),
        }
    };
    let tok = switchboard::auth::Keys::new(SECRET.as_bytes()).sign(&switchboard::auth::Claims {
        sub: "crm".into(),
        role: Role::Integration,
        exp: switchboard::auth::unix_now() + 600,
        name: None,
        skills: None,
        queues: None,
    });
    let (st, after) = http(running.addr, "GET", "/v1/stats", Some(&tok), None, &[]).await;
    assert_eq!(st, 200, "{after}");
    check_schema("StatsReport", &after);
    for q in ["support", "vip"] {
        assert_eq!(
            queue(&before, q)["today"],
            queue(&after, q)["today"],
            "queue {q} after the restart"
        );
    }
    let today = &queue(&after, "support")["today"];
    assert_eq!(
        (today["offered"].clone(), today["answered"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(today["abandoned_short"], 1);
    let a = &agent(&after, "ana")["today"];
    assert_eq!(a["handled"]["chat"], 1);
    let b = &agent(&before, "ana")["today"];
    for k in [
        "handled",
        "avg_handle_ms",
        "offers_missed",
        "offers_declined",
    ] {
        assert_eq!(a[k], b[k], "ana's {k} after the restart");
    }
    // Time in status goes on from where it was: at least what it was before.
    assert!(a["status_ms"]["busy"].as_u64() >= b["status_ms"]["busy"].as_u64());
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
