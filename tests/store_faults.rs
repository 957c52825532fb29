//! A Redis that stops answering (`SIGSTOP`), through real sockets: every call is
//! answered within `store.call_timeout_ms` with an honest code, the ambiguous one is
//! resolved by a retry with the same idempotency key, and the hub recovers by itself
//! after `SIGCONT`.

mod common;

use common::redis_server::RedisServer;
use common::{QUEUES_AND_AGENTS, TestHub, check_schema, config};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use switchboard::auth::Role;

/// The call timeout the hub runs with here.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// What "within the timeout" allows on a busy test machine: far below the tens of
/// seconds a stopped Redis held callers before.
const SLACK: Duration = Duration::from_secs(2);

async fn hub_on(redis: &RedisServer) -> TestHub {
    let cfg = config(&format!(
        "{QUEUES_AND_AGENTS}\n[store]\nredis = \"{}\"\ncall_timeout_ms = {}\n",
        redis.url(),
        CALL_TIMEOUT.as_millis()
    ));
    TestHub::start_with(cfg).await
}

async fn create(hub: &TestHub, key: &str) -> (u16, Value, Duration) {
    let tok = hub.token("crm", Role::Integration);
    let body = json!({"channel": "chat", "queue": "support", "idempotency_key": key});
    let t = Instant::now();
    let (status, v) = hub
        .http("POST", "/v1/tasks", Some(&tok), Some(&body.to_string()))
        .await;
    (status, v, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_answers_within_the_timeout_and_a_keyed_retry_resolves_it() {
    let redis = RedisServer::start();
    let hub = hub_on(&redis).await;
    let mut ana = hub.agent("ana").await;
    // A first create over the live connection: the hub holds an open connection to
    // Redis when it stops, the case that used to wait for Redis to continue.
    let (status, first, _) = create(&hub, "before").await;
    assert_eq!(status, 201, "{first}");

    redis.pause();
    // HTTP: the command is sent to the stopped Redis, which will read it when it
    // continues; the hub cannot know, and says so.
    let (status, v, took) = create(&hub, "during").await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "outcome_unknown", "{v}");
    check_schema("HttpError", &v);
    assert!(took < CALL_TIMEOUT + SLACK, "answered after {took:?}");
    // Websocket requests are bounded the same way.
    let t = Instant::now();
    let r = ana
        .request(json!({"type": "set_state", "state": "ready"}))
        .await;
    assert_eq!(r["type"], "error", "{r}");
    assert!(
        r["code"] == "outcome_unknown" || r["code"] == "store_unavailable",
        "{r}"
    );
    assert!(
        t.elapsed() < CALL_TIMEOUT + SLACK,
        "answered after {:?}",
        t.elapsed()
    );
    // Readiness says the store does not answer, within the timeout too.
    let t = Instant::now();
    let (status, _) = hub.http("GET", "/readyz", None, None).await;
    assert_eq!(status, 503);
    assert!(
        t.elapsed() < CALL_TIMEOUT + SLACK,
        "answered after {:?}",
        t.elapsed()
    );

    redis.resume();
    // The hub recovers by itself: wait for readiness (the event), no restart, no call
    // needed from anyone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = hub.http("GET", "/readyz", None, None).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the hub did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The ambiguous create did take effect once Redis read it: the keyed retry finds
    // its task (200) instead of making a second one. That is why 503 "nothing
    // changed" would have been a lie.
    let (status, v, _) = create(&hub, "during").await;
    assert_eq!(
        status, 200,
        "the first attempt was applied after SIGCONT: {v}"
    );
    check_schema("Task", &v);
    let (status, again, _) = create(&hub, "during").await;
    assert_eq!(status, 200);
    assert_eq!(again["task_id"], v["task_id"]);
    // And new work goes through.
    let (status, v, _) = create(&hub, "after").await;
    assert_eq!(status, 201, "{v}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_stopped_redis_is_refused_within_the_timeout() {
    let mut redis = RedisServer::start();
    let hub = hub_on(&redis).await;
    let (status, v, _) = create(&hub, "before").await;
    assert_eq!(status, 201, "{v}");
    // A restart drops the hub's connection; then stopping the new server leaves the
    // hub reconnecting to a server that accepts TCP but answers nothing. Whatever the
    // connection is doing, calls are bounded, and never claim "nothing changed" unless
    // the command was not sent.
    redis.restart();
    redis.pause();
    for key in ["r1", "r2", "r3"] {
        let (status, v, took) = create(&hub, key).await;
        assert!(status == 503 || status == 504, "{status}: {v}");
        let code = if status == 503 {
            "store_unavailable"
        } else {
            "outcome_unknown"
        };
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(took < CALL_TIMEOUT + SLACK, "{key} answered after {took:?}");
    }
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v, _) = create(&hub, "after").await;
        if status == 201 || status == 200 {
            check_schema("Task", &v);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hub did not recover: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_shorter_than_the_timeout_answers_with_the_real_result() {
    let redis = RedisServer::start();
    // A timeout with room for the stop below on a busy machine.
    let cfg = config(&format!(
        "{QUEUES_AND_AGENTS}\n[store]\nredis = \"{}\"\ncall_timeout_ms = 10000\n",
        redis.url()
    ));
    let hub = TestHub::start_with(cfg).await;
    let (status, v, _) = create(&hub, "before").await;
    assert_eq!(status, 201, "{v}");
    redis.pause();
    let pending = {
        let tok = hub.token("crm", Role::Integration);
        let addr = hub.addr;
        tokio::spawn(async move {
            let body = json!({"channel": "chat", "queue": "support", "idempotency_key": "held"});
            common::http(
                addr,
                "POST",
                "/v1/tasks",
                Some(&tok),
                Some(&body.to_string()),
                &[],
            )
            .await
        })
    };
    // The fault: Redis answers nothing for a moment, shorter than the call timeout.
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.resume();
    // The caller was held, not refused, and gets what the command did once this node
    // applied it from the log: the task, created once.
    let (status, v) = pending.await.expect("the request task");
    assert_eq!(status, 201, "{v}");
    check_schema("Task", &v);
    let (status, again, _) = create(&hub, "held").await;
    assert_eq!(status, 200);
    assert_eq!(again["task_id"], v["task_id"]);
    hub.shutdown().await;
}
