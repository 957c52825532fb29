//! Webhooks from a running hub to a real HTTP receiver: the events of real decisions,
//! signed (checked with the `standardwebhooks` crate), in order per task; kill -9 of
//! the hub (file store) during delivery and a restart: nothing lost, only what was in
//! flight repeated, with the same `webhook-id`; two nodes on a real `redis-server`:
//! each event delivered once, and the other node takes over when the delivering one
//! is killed.

mod common;

use common::receiver::{Received, Receiver};
use common::redis_server::RedisServer;
use common::{QUEUES_AND_AGENTS, SECRET, TestHub, config};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use switchboard::auth::{Claims, Keys, Role, unix_now};
use switchboard::webhooks::signing::Secret;

fn verify(secret: &str, r: &Received) {
    let wh = standardwebhooks::Webhook::new(secret).expect("secret");
    wh.verify(&r.body, &r.headers)
        .unwrap_or_else(|e| panic!("signature of {} does not verify: {e:?}", r.id()));
}

/// The events received, by sequence number (the first delivery of each), and the
/// number of deliveries of each.
fn by_seq(got: &[Received]) -> (BTreeMap<u64, Received>, HashMap<u64, usize>) {
    let mut first = BTreeMap::new();
    let mut count = HashMap::new();
    for r in got.iter().filter(|r| r.status / 100 == 2) {
        let seq = r.json()["seq"].as_u64().expect("seq");
        *count.entry(seq).or_insert(0) += 1;
        first.entry(seq).or_insert_with(|| r.clone());
    }
    (first, count)
}

/// Checks that the first deliveries of each task's events came in sequence order.
fn assert_in_order_per_task(got: &[Received]) {
    let mut seen = std::collections::HashSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    for r in got.iter().filter(|r| r.status / 100 == 2) {
        if !seen.insert(r.id()) {
            continue;
        }
        let b = r.json();
        let seq = b["seq"].as_u64().expect("seq");
        let task = b["data"]["task_id"]
            .as_str()
            .or_else(|| b["data"]["task"]["task_id"].as_str());
        if let Some(t) = task {
            let prev = last.insert(t.to_owned(), seq).unwrap_or(0);
            assert!(seq > prev, "task {t}: event {seq} arrived after {prev}");
        }
    }
}

fn endpoint_toml(url: &str, secret: &str, extra: &str) -> String {
    format!(
        "[webhooks]\nallow_private = true\nretry_schedule_ms = [0, 100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000]\nretry_jitter = 0.0\n{extra}\n[[webhooks.endpoints]]\nid = \"crm\"\nurl = \"{url}\"\nsecret = \"{secret}\"\ntypes = [\"task.*\", \"offer.*\"]\n"
    )
}

#[tokio::test]
async fn a_hubs_events_reach_the_receiver_signed_and_in_order_per_task() {
    let rx = Receiver::start().await;
    let secret = Secret::generate().text();
    let mut c = config(QUEUES_AND_AGENTS);
    c.webhooks.allow_private = true;
    c.webhooks.position_every_ms = 50;
    c.webhooks
        .endpoints
        .push(switchboard::webhooks::config::EndpointConfig {
            id: "crm".into(),
            url: rx.url(),
            secret: secret.clone(),
            types: vec!["task.*".into(), "offer.*".into()],
        });
    let hub = TestHub::start_with(c).await;
    let mut ana = hub.ready_agent("ana").await;
    let t1 = hub.create(common::chat()).await;
    ana.accept_next().await;
    let t2 = hub.create(common::chat()).await;
    let got = rx
        .wait_for(Duration::from_secs(10), "the events of two tasks", |g| {
            let (first, _) = by_seq(g);
            let types: Vec<String> = first
                .values()
                .map(|r| r.json()["type"].as_str().unwrap_or("").to_owned())
                .collect();
            types.iter().filter(|t| *t == "task.created").count() == 2
                && types.iter().any(|t| t == "task.assigned")
        })
        .await;
    for r in &got {
        verify(&secret, r);
        let b = r.json();
        assert_eq!(r.id(), b["id"].as_str().unwrap());
        assert!(
            b["type"].as_str().unwrap().starts_with("task.")
                || b["type"].as_str().unwrap().starts_with("offer."),
            "{b}"
        );
    }
    assert_in_order_per_task(&got);
    let (first, _) = by_seq(&got);
    let of = |t: &Value| -> Vec<String> {
        first
            .values()
            .map(|r| r.json())
            .filter(|b| {
                b["data"]["task_id"] == t["task_id"] || b["data"]["task"]["task_id"] == t["task_id"]
            })
            .map(|b| b["type"].as_str().unwrap().to_owned())
            .collect()
    };
    let t1_types = of(&t1);
    assert_eq!(
        &t1_types[..2],
        ["task.created", "task.queued"],
        "{t1_types:?}"
    );
    assert!(t1_types.contains(&"task.offered".to_owned()));
    assert_eq!(of(&t2)[0], "task.created");
    // An offered event carries its deadline.
    let offered = first
        .values()
        .map(|r| r.json())
        .find(|b| b["type"] == "task.offered")
        .expect("offered");
    assert!(offered["data"]["deadline"].is_string(), "{offered}");
    // The attempts and the metrics say so.
    let tok = hub.token("crm", Role::Integration);
    let (s, v) = hub
        .http("GET", "/v1/webhooks/crm/attempts", Some(&tok), None)
        .await;
    assert_eq!(s, 200);
    let delivered = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"] == "delivered")
        .count() as u64;
    assert!(delivered > 0, "{v}");
    // The counter counts what the receiver answered 2xx, as the hub saw it: at least
    // the deliveries listed before it was read, at most what the receiver has answered
    // after.
    let counted = common::metric(
        &hub,
        "switchboard_webhook_deliveries_total{endpoint=\"crm\"}",
    )
    .await;
    let answered = rx.received().iter().filter(|r| r.status / 100 == 2).count() as u64;
    assert!(
        delivered <= counted && counted <= answered,
        "deliveries_total {counted}: {delivered} listed delivered, {answered} answered 2xx"
    );
    hub.shutdown().await;
}

// ---- Processes: kill -9 and restart (file store), two nodes (Redis) ----

struct Proc {
    child: Option<Child>,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Proc {
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("SWITCHBOARD_REDIS")
        .stdout(Stdio::piped())
        .stderr(match std::env::var_os("SB_TEST_NODE_LOGS") {
            Some(_) => Stdio::inherit(),
            None => Stdio::null(),
        })
        .spawn()
        .expect("spawn the hub");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).expect("a first line");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("address in {first:?}"));
    std::thread::spawn(move || for _ in lines {});
    Proc {
        child: Some(child),
        addr,
    }
}

fn token() -> String {
    Keys::new(SECRET.as_bytes()).sign(&Claims {
        sub: "crm".into(),
        role: Role::Integration,
        exp: unix_now() + 3600,
        name: None,
        skills: None,
        queues: None,
    })
}

async fn create(addr: SocketAddr) -> Value {
    let (s, v) = common::http(
        addr,
        "POST",
        "/v1/tasks",
        Some(&token()),
        Some(&json!({"channel": "chat", "queue": "support"}).to_string()),
        &[],
    )
    .await;
    assert_eq!(s, 201, "{v}");
    v
}

struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp() -> Temp {
    let p = std::env::temp_dir().join(format!("sb-webhooks-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&p).expect("temp dir");
    Temp(p)
}

fn write_config(dir: &Path, webhooks: &str) -> PathBuf {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_secs = 1\n[auth]\nsecret = \"{SECRET}\"\n[routing]\nwrap_up_secs = 0\n{QUEUES_AND_AGENTS}\n{webhooks}"
    );
    let p = dir.join("hub.toml");
    std::fs::write(&p, text).expect("config");
    p
}

#[tokio::test]
async fn kill_9_during_delivery_then_restart_resumes_and_repeats_only_what_was_in_flight() {
    let rx = Receiver::start().await;
    // Slow answers, so that events are in flight when the hub dies.
    rx.delay(Duration::from_millis(30));
    let secret = Secret::generate().text();
    let dir = temp();
    let data = dir.0.join("data");
    let every_events = 5;
    let in_flight = 4;
    let cfg = write_config(
        &dir.0,
        &endpoint_toml(
            &rx.url(),
            &secret,
            &format!(
                "position_every_ms = 100\nposition_every_events = {every_events}\nmax_in_flight = {in_flight}"
            ),
        ),
    );
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut hub = spawn(&args);
    // 40 tasks: task.created and task.queued each, 80 events.
    for _ in 0..40 {
        create(hub.addr).await;
    }
    rx.wait_for(Duration::from_secs(20), "a third of the events", |g| {
        by_seq(g).0.len() >= 25
    })
    .await;
    hub.kill9();
    let before = rx.received().len();
    let mut hub = spawn(&args);
    for _ in 0..5 {
        create(hub.addr).await;
    }
    let got = rx
        .wait_for(Duration::from_secs(30), "all 90 events", |g| {
            by_seq(g).0.len() >= 90
        })
        .await;
    let (first, count) = by_seq(&got);
    assert_eq!(
        first.keys().copied().collect::<Vec<_>>(),
        (1..=90).collect::<Vec<u64>>(),
        "nothing skipped"
    );
    let repeats: Vec<u64> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    // What may repeat: the events delivered after the last position written (at most
    // `position_every_events` of them, plus those in flight).
    assert!(
        repeats.len() <= every_events as usize + in_flight,
        "{} events repeated: {repeats:?}",
        repeats.len()
    );
    for r in &got {
        verify(&secret, r);
    }
    // A repeat is the same event: the same webhook-id and body.
    for r in got.iter().filter(|r| r.status / 100 == 2) {
        let seq = r.json()["seq"].as_u64().unwrap();
        assert_eq!(r.id(), first[&seq].id());
        assert_eq!(r.body, first[&seq].body);
    }
    eprintln!(
        "{before} requests before the kill, {} after; {} events repeated",
        got.len() - before,
        repeats.len()
    );
    assert_in_order_per_task(&got);
    hub.kill9();
}

#[tokio::test]
async fn two_nodes_deliver_each_event_once_and_the_other_takes_over_a_killed_one() {
    let redis = RedisServer::start();
    let rx = Receiver::start().await;
    let secret = Secret::generate().text();
    let dir = temp();
    let cfg = write_config(
        &dir.0,
        &endpoint_toml(
            &rx.url(),
            &secret,
            "lease_ms = 1500\nposition_every_ms = 100",
        ),
    );
    let url = redis.url();
    let node = |id: &str| {
        spawn(&[
            "--config",
            cfg.to_str().unwrap(),
            "--redis",
            &url,
            "--node-id",
            id,
        ])
    };
    let mut a = node("a");
    let mut b = node("b");
    for i in 0..20 {
        create(if i % 2 == 0 { a.addr } else { b.addr }).await;
    }
    let got = rx
        .wait_for(Duration::from_secs(20), "40 events", |g| {
            by_seq(g).0.len() >= 40
        })
        .await;
    let (first, count) = by_seq(&got);
    assert_eq!(
        first.keys().copied().collect::<Vec<_>>(),
        (1..=40).collect::<Vec<u64>>()
    );
    assert!(
        count.values().all(|n| *n == 1),
        "each event once while both nodes live: {count:?}"
    );
    for r in &got {
        verify(&secret, r);
    }
    // Which node delivers?
    let (s, v) = common::http(a.addr, "GET", "/v1/webhooks/crm", Some(&token()), None, &[]).await;
    assert_eq!(s, 200, "{v}");
    let holder = v["delivering_node"].as_str().expect("a holder").to_owned();
    let (victim, survivor) = if holder.starts_with("a/") {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    victim.kill9();
    let killed = std::time::Instant::now();
    for _ in 0..10 {
        create(survivor.addr).await;
    }
    let got = rx
        .wait_for(Duration::from_secs(20), "60 events", |g| {
            by_seq(g).0.len() >= 60
        })
        .await;
    let took = killed.elapsed();
    let (first, count) = by_seq(&got);
    assert_eq!(
        first.keys().copied().collect::<Vec<_>>(),
        (1..=60).collect::<Vec<u64>>(),
        "nothing skipped"
    );
    // Only what the dead node may have delivered after its last position write can
    // come again; what happened after the kill comes once.
    let repeats: Vec<u64> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(
        repeats.iter().all(|s| *s <= 40),
        "repeated after the takeover: {repeats:?}"
    );
    for r in got.iter().filter(|r| r.status / 100 == 2) {
        let seq = r.json()["seq"].as_u64().unwrap();
        assert_eq!(r.id(), first[&seq].id(), "a repeat keeps its id");
    }
    // The lease (1.5 s) runs out at most 1.5 s after the dead node's last renewal,
    // and the survivor looks every third of it: taken over within about 2 s; 4.5 s
    // leaves room for a busy machine, not for a lease held a few times too long.
    assert!(
        took < Duration::from_millis(4_500),
        "the other node took over after {took:?}"
    );
    eprintln!("the survivor delivered the events after the kill {took:?} after it (lease 1.5 s)");
    assert_in_order_per_task(&got);
}

async fn hub_with_endpoint(rx: &Receiver, secret: &str) -> TestHub {
    let mut c = config(QUEUES_AND_AGENTS);
    c.webhooks.allow_private = true;
    c.webhooks.position_every_ms = 50;
    c.webhooks.retry_jitter = 0.0;
    c.webhooks.retry_schedule_ms = vec![0, 100, 200, 400, 800, 800, 800, 800, 800, 800];
    c.webhooks
        .endpoints
        .push(switchboard::webhooks::config::EndpointConfig {
            id: "crm".into(),
            url: rx.url(),
            secret: secret.to_owned(),
            types: vec!["task.*".into()],
        });
    TestHub::start_with(c).await
}

/// Waits until the endpoint's view satisfies `pred`.
async fn await_endpoint(hub: &TestHub, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let tok = hub.token("crm", Role::Integration);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = hub.http("GET", "/v1/webhooks/crm", Some(&tok), None).await;
        assert_eq!(s, 200, "{v}");
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the endpoint never {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_receiver_down_then_up_gets_every_event_of_a_hub_in_order() {
    let mut rx = Receiver::start().await;
    let secret = Secret::generate().text();
    let hub = hub_with_endpoint(&rx, &secret).await;
    let tok = hub.token("crm", Role::Integration);
    // Delivery is under way before the receiver goes down.
    hub.create(common::chat()).await;
    rx.wait_for(Duration::from_secs(5), "the first task's events", |g| {
        by_seq(g).0.len() >= 2
    })
    .await;
    rx.down();
    for _ in 0..10 {
        hub.create(common::chat()).await;
    }
    // Wait until attempts have failed against the closed port.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = hub
            .http("GET", "/v1/webhooks/crm/attempts", Some(&tok), None)
            .await;
        let failed = v["attempts"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|a| a["outcome"] == "failed").count());
        if failed >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed attempts: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lagging = await_endpoint(&hub, "lags", |v| v["lag"].as_u64().unwrap_or(0) > 0).await;
    assert_eq!(lagging["enabled"], true);
    rx.up().await;
    let got = rx
        .wait_for(Duration::from_secs(15), "all 22 events", |g| {
            by_seq(g).0.len() >= 22
        })
        .await;
    let (first, _) = by_seq(&got);
    assert_eq!(
        first.keys().copied().collect::<Vec<_>>(),
        (1..=22).collect::<Vec<u64>>(),
        "none lost"
    );
    assert_in_order_per_task(&got);
    for r in &got {
        verify(&secret, r);
    }
    await_endpoint(&hub, "catches up", |v| v["lag"] == 0 && v["position"] == 22).await;
    let (_, m) = hub.http("GET", "/metrics", None, None).await;
    let m = m.as_str().unwrap_or("").to_owned();
    let retries = m
        .lines()
        .find(|l| l.starts_with("switchboard_webhook_retries_total{endpoint=\"crm\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("the retries counter");
    assert!(retries > 0, "{m}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_enable_resumes_at_that_event_replay_repeats_with_the_same_ids()
 {
    let rx = Receiver::start().await;
    let secret = Secret::generate().text();
    let hub = hub_with_endpoint(&rx, &secret).await;
    let tok = hub.token("crm", Role::Integration);
    rx.answer(common::receiver::Answer::Status(410, None));
    hub.create(common::chat()).await;
    let v = await_endpoint(&hub, "is disabled", |v| v["enabled"] == false).await;
    assert!(
        v["disabled_reason"].as_str().unwrap_or("").contains("410"),
        "{v}"
    );
    assert_eq!(v["position"], 0, "the refused event is not skipped: {v}");
    let refused = rx.received();
    assert_eq!(refused.len(), 1, "nothing after the 410");
    // The receiver is back: enable resumes with the same event.
    rx.answer(common::receiver::Answer::Status(200, None));
    let (s, v) = hub
        .http("POST", "/v1/webhooks/crm/enable", Some(&tok), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let got = rx
        .wait_for(Duration::from_secs(10), "both events", |g| {
            by_seq(g).0.len() >= 2
        })
        .await;
    let (first, _) = by_seq(&got);
    assert_eq!(
        first[&1].id(),
        refused[0].id(),
        "the same event, the same webhook-id"
    );
    await_endpoint(&hub, "catches up", |v| v["position"] == 2).await;
    // Replay from 0: both again, with their ids.
    let (s, v) = hub
        .http(
            "POST",
            "/v1/webhooks/crm/replay",
            Some(&tok),
            Some(r#"{"since": 0}"#),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let got = rx
        .wait_for(Duration::from_secs(10), "the replay", |g| {
            by_seq(g).1.values().all(|n| *n >= 2) && by_seq(g).1.len() == 2
        })
        .await;
    let (first2, count) = by_seq(&got);
    assert_eq!(count.len(), 2);
    for (seq, r) in &first2 {
        assert!(
            got.iter()
                .filter(|x| x.status == 200 && x.json()["seq"] == *seq)
                .all(|x| x.id() == r.id())
        );
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn an_api_endpoint_is_signed_with_both_secrets_during_a_rotation() {
    let rx = Receiver::start().await;
    let mut c = config(QUEUES_AND_AGENTS);
    c.webhooks.allow_private = true;
    let hub = TestHub::start_with(c).await;
    let tok = hub.token("crm", Role::Integration);
    let body = json!({"id": "crm", "url": rx.url(), "types": ["task.created"]}).to_string();
    let (s, v) = hub
        .http("POST", "/v1/webhooks", Some(&tok), Some(&body))
        .await;
    assert_eq!(s, 201, "{v}");
    let old = v["secret"].as_str().expect("secret").to_owned();
    hub.create(common::chat()).await;
    let got = rx
        .wait_for(Duration::from_secs(10), "the first event", |g| {
            !g.is_empty()
        })
        .await;
    verify(&old, &got[0]);
    let (s, v) = hub
        .http("POST", "/v1/webhooks/crm/rotate", Some(&tok), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let new = v["secret"].as_str().expect("secret").to_owned();
    // The runner picks the new secret up at its next lease renewal.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = rx.received().len();
        hub.create(common::chat()).await;
        let got = rx
            .wait_for(Duration::from_secs(10), "another event", |g| g.len() > n)
            .await;
        let last = got.last().expect("one");
        if last.header("webhook-signature").split(' ').count() == 2 {
            verify(&old, last);
            verify(&new, last);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never signed with both secrets"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Rotated again within the overlap (say its answer was lost and the call retried):
    // the secret receivers may still hold keeps signing too.
    let (s, v) = hub
        .http("POST", "/v1/webhooks/crm/rotate", Some(&tok), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let newer = v["secret"].as_str().expect("secret").to_owned();
    let n = rx.received().len();
    hub.create(common::chat()).await;
    let got = rx
        .wait_for(
            Duration::from_secs(10),
            "an event after the second rotation",
            |g| g.len() > n,
        )
        .await;
    let last = got.last().expect("one");
    assert_eq!(last.header("webhook-signature").split(' ').count(), 3);
    for secret in [&old, &new, &newer] {
        verify(secret, last);
    }
    hub.shutdown().await;
}

/// A smoke figure, not a benchmark (run with `--ignored --nocapture`): create ->
/// `task.created` at the receiver, over 300 creates at about 100 a second, one node in
/// memory. The load test owns the real figure.
#[tokio::test]
#[ignore]
async fn smoke_create_to_receiver_latency() {
    let rx = Receiver::start().await;
    let mut c = config(QUEUES_AND_AGENTS);
    c.webhooks.allow_private = true;
    c.webhooks
        .endpoints
        .push(switchboard::webhooks::config::EndpointConfig {
            id: "crm".into(),
            url: rx.url(),
            secret: Secret::generate().text(),
            types: vec!["task.created".into()],
        });
    let hub = TestHub::start_with(c).await;
    let mut sent = HashMap::new();
    for i in 0..300 {
        let t0 = std::time::Instant::now();
        let t = hub.create(common::chat()).await;
        sent.insert(t["task_id"].as_str().unwrap().to_owned(), t0);
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let got = rx
        .wait_for(Duration::from_secs(20), "300 events", |g| g.len() >= 300)
        .await;
    let mut lat: Vec<Duration> = got
        .iter()
        .filter_map(|r| {
            let b = r.json();
            let id = b["data"]["task"]["task_id"].as_str()?.to_owned();
            Some(r.at - *sent.get(&id)?)
        })
        .collect();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    eprintln!(
        "create -> task.created at the receiver: n={} p50={:?} p99={:?} max={:?}",
        lat.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    hub.shutdown().await;
}

/// The status `GET /v1/events?since=N` answers (a 200 is a stream: only its head is
/// read).
async fn events_status(addr: SocketAddr, since: u64) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET /v1/events?since={since} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\r\n",
        token()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .expect("a status line")
}

#[tokio::test]
async fn a_config_endpoint_removed_from_the_file_no_longer_holds_the_event_window() {
    let dir = temp();
    let data = dir.0.join("data");
    let events = "[events]\nretain_count = 5\n";
    // An endpoint that never gets anything (nothing listens on port 9): its position
    // stays at 0 and holds every event past the count.
    let with = format!(
        "{events}[webhooks]\nallow_private = true\n[[webhooks.endpoints]]\nid = \"old\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"{}\"\n",
        Secret::generate().text()
    );
    let cfg = write_config(&dir.0, &with);
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut hub = spawn(&args);
    for _ in 0..4 {
        create(hub.addr).await;
    }
    assert_eq!(events_status(hub.addr, 0).await, 200, "held for `old`");
    hub.kill9();
    // Started again without it: its position goes, and the window keeps 5 events.
    write_config(&dir.0, events);
    let hub = spawn(&args);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        create(hub.addr).await;
        if events_status(hub.addr, 0).await == 410 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the removed endpoint's position still holds the window"
        );
    }
}

/// An endpoint made through the API, then declared in the config under the same id:
/// the config one would take over its position and state and make it undeletable
/// (and it would come back if the config one were removed). The start is refused,
/// saying what to do; without the config one, the hub starts and the API endpoint is
/// there.
#[tokio::test]
async fn a_config_endpoint_with_an_api_endpoints_id_is_refused_at_start() {
    let rx = Receiver::start().await;
    let dir = temp();
    let data = dir.0.join("data");
    let data = data.to_str().expect("utf-8 path");
    let plain = write_config(&dir.0, "[webhooks]\nallow_private = true\n");
    let plain = plain.to_str().expect("utf-8 path").to_owned();
    let mut hub = spawn(&["--config", &plain, "--data-dir", data]);
    let (s, v) = common::http(
        hub.addr,
        "POST",
        "/v1/webhooks",
        Some(&token()),
        Some(&json!({"id": "crm", "url": rx.url()}).to_string()),
        &[],
    )
    .await;
    assert_eq!(s, 201, "{v}");
    hub.kill9();
    let secret = Secret::generate().text();
    let both = dir.0.join("both.toml");
    std::fs::write(
        &both,
        std::fs::read_to_string(&plain)
            .expect("config")
            .replace("[webhooks]\nallow_private = true\n", "")
            + &endpoint_toml(&rx.url(), &secret, ""),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "--config",
            both.to_str().expect("utf-8"),
            "--data-dir",
            data,
        ])
        .env("RUST_LOG", "warn")
        .env_remove("SWITCHBOARD_REDIS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the hub");
    // Its exit, within a bound: a hub that starts never exits on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the hub started with a config endpoint hiding an API endpoint");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(!status.success(), "exited with success: {err}");
    assert!(
        err.contains("\"crm\" is also an endpoint made through the API"),
        "{err}"
    );
    let hub = spawn(&["--config", &plain, "--data-dir", data]);
    let (s, v) = common::http(
        hub.addr,
        "GET",
        "/v1/webhooks/crm",
        Some(&token()),
        None,
        &[],
    )
    .await;
    assert_eq!((s, &v["source"]), (200, &json!("api")), "{v}");
}
