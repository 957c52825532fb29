//! Several hub processes sharing one `redis-server` that the test starts itself: an
//! agent on one node and the task on another, accepts from agents on different nodes,
//! accept against expiry across nodes, kill -9 of a node mid-offer, Redis restarting
//! under traffic.

mod common;

use common::race::{Race, Timing};
use common::redis_server::RedisServer;
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use switchboard::auth::{Keys, Role};
use tokio::time::Instant;

/// One hub process.
struct Node {
    addr: SocketAddr,
    child: Option<Child>,
    config: std::path::PathBuf,
}

impl Node {
    fn config_file(routing: &str) -> std::path::PathBuf {
        let config = std::env::temp_dir().join(format!("sb-node-{}.toml", uuid::Uuid::new_v4()));
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndrain_secs = 1\n[auth]\nsecret = \"{SECRET}\"\n[routing]\nwrap_up_secs = 0\n{routing}\n{QUEUES_AND_AGENTS}"
        );
        std::fs::write(&config, text).expect("config");
        config
    }

    /// The command that runs node `id` with `config` on `redis`.
    fn command(redis: &RedisServer, id: &str, config: &std::path::Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.arg("--config")
            .arg(config)
            .arg("--redis")
            .arg(redis.url())
            .arg("--node-id")
            .arg(id)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts a node that must refuse to start; returns what it wrote to stderr.
    fn refused(redis: &RedisServer, id: &str, routing: &str) -> String {
        let config = Self::config_file(routing);
        let mut child = Self::command(redis, id, &config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run a node");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {id} started (it did not exit within 15 s)");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = std::fs::remove_file(&config);
        assert!(!status.success(), "node {id} exited with success");
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        err
    }

    fn start(redis: &RedisServer, id: &str, routing: &str) -> Node {
        let config = Self::config_file(routing);
        let mut child = Self::command(redis, id, &config)
            .stdout(Stdio::piped())
            .stderr(match std::env::var_os("SB_TEST_NODE_LOGS") {
                Some(_) => Stdio::inherit(),
                None => Stdio::null(),
            })
            .spawn()
            .expect("spawn a node");
        let stdout = child.stdout.take().expect("stdout");
        let first = BufReader::new(stdout)
            .lines()
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("node {id} printed nothing (did it fail to start?)"));
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("address in {first:?}"));
        Node {
            addr,
            child: Some(child),
            config,
        }
    }

    fn keys() -> Keys {
        Keys::new(SECRET.as_bytes())
    }

    fn token(sub: &str, role: Role) -> String {
        Self::keys().sign(&switchboard::auth::Claims {
            sub: sub.into(),
            role,
            exp: switchboard::auth::unix_now() + 600,
            name: None,
            skills: None,
            queues: None,
        })
    }

    async fn agent(&self, id: &str) -> Client {
        let url = format!(
            "ws://{}/v1/ws?access_token={}",
            self.addr,
            Self::token(id, Role::Agent)
        );
        let mut c = Client::connect(&url).await.expect("agent connects");
        c.welcome = c.expect("welcome").await;
        c
    }

    async fn ready_agent(&self, id: &str) -> Client {
        let mut c = self.agent(id).await;
        c.set_ready().await;
        c
    }

    async fn post_task(&self, body: &Value) -> (u16, Value) {
        let tok = Self::token("crm", Role::Integration);
        http(
            self.addr,
            "POST",
            "/v1/tasks",
            Some(&tok),
            Some(&body.to_string()),
            &[],
        )
        .await
    }

    async fn create(&self, body: Value) -> Value {
        let (s, v) = self.post_task(&body).await;
        assert_eq!(s, 201, "{v}");
        v
    }

    async fn task(&self, id: &Value) -> Value {
        let (s, v) = self.get_task(id).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn get_task(&self, id: &Value) -> (u16, Value) {
        let tok = Self::token("crm", Role::Integration);
        http(
            self.addr,
            "GET",
            &format!("/v1/tasks/{}", id.as_str().unwrap_or_default()),
            Some(&tok),
            None,
            &[],
        )
        .await
    }

    /// Waits until this node shows the task in `state`.
    async fn await_task_state(&self, id: &Value, state: &str) -> Value {
        self.await_task(id, state, |t| t["state"] == state).await
    }

    /// Waits until this node shows the task as `pred` wants it (`what` says how, for the
    /// failure). A task this node's replica has not applied yet (404 `task_not_found`)
    /// is waited for too: a node answers from its own replica, which may lag the node
    /// that created the task.
    async fn await_task(&self, id: &Value, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        // Long enough for a lost node's heartbeat to expire and a grace period to end.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (s, t) = self.get_task(id).await;
            if s == 200 && pred(&t) {
                return t;
            }
            assert!(
                s == 200 || (s == 404 && t["error"]["code"] == "task_not_found"),
                "{s}: {t}"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "task never {what} here: {s} {t}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A clean stop (SIGTERM), waited for: it exits 0 within 30 s.
    async fn term(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(s) = c.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(exit.success(), "{exit}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.config);
    }
}

#[tokio::test]
async fn an_offer_decided_on_one_node_reaches_an_agent_on_another() {
    let redis = RedisServer::start();
    let a = Node::start(&redis, "node-a", "");
    let b = Node::start(&redis, "node-b", "");
    let mut ana = a.ready_agent("ana").await;
    let t = b
        .create(json!({"channel": "chat", "queue": "support", "customer": {"phone": "+351 900"}}))
        .await;
    let offer = ana.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], t["task_id"]);
    let r = ana
        .ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    assert_eq!(r["task"]["state"], "assigned");
    b.await_task_state(&t["task_id"], "assigned").await;
    // A supervisor on node b sees ana busy, live.
    let url = format!(
        "ws://{}/v1/ws?access_token={}",
        b.addr,
        Node::token("sup", Role::Supervisor)
    );
    let mut sup = Client::connect(&url).await.expect("supervisor");
    let snap = sup.expect("snapshot").await;
    let line = snap["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["agent_id"] == "ana").cloned())
        .expect("ana");
    assert_eq!(line["status"], "busy");
    ana.complete(&t["task_id"]).await;
    loop {
        let c = sup.expect("agent_changed").await;
        if c["agent"]["agent_id"] == "ana" && c["agent"]["status"] == "ready" {
            break;
        }
    }
    // A change made through node a reaches a watcher on node b.
    let mut dj = b.agent("dj").await;
    let tok = Node::token("crm", Role::Integration);
    let (_, c) = http(
        a.addr,
        "POST",
        "/v1/customers",
        Some(&tok),
        Some(r#"{"name":"Ana Lima"}"#),
        &[],
    )
    .await;
    let cid = c["customer"]["customer_id"].clone();
    dj.ok(json!({"type": "get_customer", "customer_id": cid}))
        .await;
    let (s, _) = http(
        a.addr,
        "PATCH",
        &format!("/v1/customers/{}", cid.as_str().unwrap_or_default()),
        Some(&tok),
        Some(r#"{"base_version":1,"changes":{"name":"Ana Lima Souza"}}"#),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    let n = dj.expect("record_changed").await;
    assert_eq!(n["change"]["version"], 2);
}

#[tokio::test]
async fn tasks_created_on_both_nodes_are_each_assigned_exactly_once() {
    let redis = RedisServer::start();
    let a = Node::start(&redis, "node-a", "");
    let b = Node::start(&redis, "node-b", "");
    let mut agents = [
        a.ready_agent("ana").await,
        b.ready_agent("bo").await,
        b.ready_agent("dj").await,
    ];
    let n = 40;
    let creates = (0..n).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        let channel = if i % 3 == 0 { "voice" } else { "chat" };
        async move {
            node.create(json!({"channel": channel, "queue": "support"}))
                .await
        }
    });
    let created: Vec<Value> = futures_util::future::join_all(creates).await;
    // Every agent accepts and completes whatever it is offered, until all are done.
    let mut accepted: HashMap<String, Vec<String>> = HashMap::new();
    let mut done = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while done < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of {n} done"
        );
        for (i, ag) in agents.iter_mut().enumerate() {
            let Some(offer) = try_frame(ag, "offer", Duration::from_millis(30)).await else {
                continue;
            };
            let r = ag
                .request(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
                .await;
            assert_eq!(r["type"], "reply", "{r}");
            let tid = r["result"]["task"]["task_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            accepted
                .entry(tid.clone())
                .or_default()
                .push(format!("agent{i}"));
            ag.complete(&r["result"]["task"]["task_id"]).await;
            done += 1;
        }
    }
    assert_eq!(accepted.len(), n);
    for (t, who) in &accepted {
        assert_eq!(who.len(), 1, "task {t} accepted by {who:?}");
    }
    for t in &created {
        a.await_task_state(&t["task_id"], "completed").await;
        b.await_task_state(&t["task_id"], "completed").await;
    }
}

/// The next frame of type `ty` within `d`, if one comes; others are kept.
async fn try_frame(c: &mut Client, ty: &str, d: Duration) -> Option<Value> {
    tokio::time::timeout(d, c.expect(ty)).await.ok()
}

#[tokio::test]
async fn accept_against_expiry_across_nodes_has_one_winner_seen_everywhere() {
    // In ms from the latest the deadline can be. Between the deadline and the next timer
    // tick (nodes poll every 50 ms) only the deadline rule of the accept entry itself
    // makes it lose: the offsets after 0 aim there.
    const OFFSETS_MS: &[i64] = &[-100, -40, -15, -5, 0, 5, 10, 25, 45];
    let timeout = Duration::from_millis(300);
    let redis = RedisServer::start();
    let a = Node::start(&redis, "node-a", "offer_timeout_secs = 0.3");
    let b = Node::start(&redis, "node-b", "offer_timeout_secs = 0.3");
    let mut bo = a.ready_agent("bo").await;
    // Each node anchors its clock to the wall clock when it starts: allow for a few ms of
    // difference between processes.
    let mut race = Race::new(timeout, Duration::from_millis(5), OFFSETS_MS);
    let mut lost = Vec::new();
    while let Some(offset) = race.next_offset() {
        let created = Instant::now();
        let t = b
            .create(json!({"channel": "chat", "queue": "support"}))
            .await;
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
        if won {
            assert_eq!(r["result"]["task"]["task_id"], t["task_id"]);
            // Both nodes agree: assigned to bo.
            for node in [&a, &b] {
                let seen = node.await_task_state(&t["task_id"], "assigned").await;
                assert_eq!(seen["agent_id"], "bo", "{seen}");
            }
            let busy = bo.expect_state(|a| a["status"] == "busy").await;
            assert_eq!(busy["in_progress"][0]["task_id"], t["task_id"]);
            bo.complete(&t["task_id"]).await;
        } else {
            assert_eq!(r["type"], "error", "{r}");
            assert_eq!(r["code"], "offer_expired", "{r}");
            // The first offer_ended since the last round: one for a won offer would
            // come first and fail here.
            let ended = bo.expect("offer_ended").await;
            assert_eq!(ended["offer_id"], offer_id, "{ended}");
            assert_eq!(ended["reason"], "expired");
            let st = bo.expect_state(|a| a["status"] == "not_ready").await;
            assert_eq!(st["reason"], "missed_offer", "{st}");
            // Both nodes agree: back in its queue, offered once, never assigned.
            for node in [&a, &b] {
                let seen = node.await_task_state(&t["task_id"], "queued").await;
                assert_eq!(seen["offers"], 1, "{seen}");
            }
            bo.set_ready().await;
            lost.push(t["task_id"].clone());
        }
    }
    race.assert_both_outcomes();
    // No offer_ended for the last round's offer after all, whichever way it went.
    bo.expect_no("offer_ended", timeout * 2).await;
    // The lost tasks went on: the next agent gets the oldest, in its place.
    let mut dj = b.ready_agent("dj").await;
    let next = dj.expect("offer").await;
    assert_eq!(next["offer"]["task"]["task_id"], lost[0], "{next}");
    assert_eq!(next["offer"]["task"]["offers"], 2, "{next}");
}

#[tokio::test]
async fn a_lost_nodes_offer_reaches_a_live_agent_long_before_its_deadline() {
    let redis = RedisServer::start();
    // A deadline far away, a long grace, a long away time for a dropped socket: only
    // the lost node's rule (its offers go on once it is declared lost) can move it.
    let routing = "offer_timeout_secs = 60\nreconnect_grace_secs = 30\naway_offer_secs = 30";
    let mut a = Node::start(&redis, "node-a", routing);
    let b = Node::start(&redis, "node-b", routing);
    // ana, on node a, has been Ready longest; bo is on node b.
    let ana = a.ready_agent("ana").await;
    let mut bo = b.ready_agent("bo").await;
    a.kill9();
    let killed = std::time::Instant::now();
    // Created just after the kill: node a is not yet declared lost, so ana gets it.
    let t = b
        .create(json!({"channel": "chat", "queue": "support"}))
        .await;
    assert_eq!(t["state"], "offered", "{t}");
    assert_eq!(t["agent_id"], "ana", "{t}");
    // Once node a is declared lost (its heartbeat expires, 3 s), bo gets it: not at the
    // 60 s deadline, nor after the 30 s away time of a dropped socket.
    let mut next = None;
    for _ in 0..10 {
        if let Some(o) = try_frame(&mut bo, "offer", Duration::from_secs(4)).await {
            next = Some(o);
            break;
        }
    }
    let next = next.expect("bo is offered the task within 40 s, well before its 30 s and 60 s");
    let elapsed = killed.elapsed();
    assert_eq!(next["offer"]["task"]["task_id"], t["task_id"]);
    assert_eq!(next["offer"]["task"]["offers"], 2);
    // Not before node a could be declared lost: its key lives 3 s from its last beat,
    // and it beat at most 0.5 s before the kill.
    assert!(
        elapsed >= Duration::from_millis(2_500),
        "not before the detection: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    eprintln!("the lost node's offer reached a live agent {elapsed:?} after the kill");
    let r = bo
        .ok(json!({"type": "accept", "offer_id": next["offer"]["offer_id"]}))
        .await;
    assert_eq!(r["task"]["agent_id"], "bo");
    drop(ana);
}

#[tokio::test]
async fn a_transfer_from_an_agent_on_one_node_to_an_agent_on_another() {
    let redis = RedisServer::start();
    let a = Node::start(&redis, "node-a", "");
    let b = Node::start(&redis, "node-b", "");
    let mut bo = a.ready_agent("bo").await;
    let t = b
        .create(json!({"channel": "voice", "queue": "support"}))
        .await;
    let offer = bo.expect("offer").await;
    bo.ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    let mut dj = b.ready_agent("dj").await;
    let r = bo
        .ok(json!({"type": "transfer", "task_id": t["task_id"], "to_agent": "dj"}))
        .await;
    assert_eq!(r["task"]["agent_id"], "dj");
    let offer = dj.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["transfers"], 1);
    dj.ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    let ended = bo.expect("transfer_ended").await;
    assert_eq!(
        (&ended["agent_id"], &ended["result"]),
        (&json!("dj"), &json!("accepted"))
    );
    // Both replicas agree.
    for n in [&a, &b] {
        let task = n
            .await_task(&t["task_id"], "assigned to dj", |v| v["agent_id"] == "dj")
            .await;
        assert_eq!(task["transfers"], 1);
    }
}

#[tokio::test]
async fn a_task_overflows_on_every_replica_and_reaches_an_agent_on_another_node() {
    let redis = RedisServer::start();
    // An extra queue of our own before the shared ones: nobody serves it, and it
    // overflows to support after half a second of waiting.
    let routing = "[[queues]]\nid = \"intake\"\nescalation = { overflow_after_secs = 0.5, overflow_queue = \"support\", priority_every_secs = 0.2, priority_step = 1, priority_max = 2 }\n";
    let a = Node::start(&redis, "node-a", routing);
    let b = Node::start(&redis, "node-b", routing);
    let t = a
        .create(json!({"channel": "chat", "queue": "intake"}))
        .await;
    assert_eq!(t["state"], "queued");
    let mut bo = b.ready_agent("bo").await;
    let offer = bo.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], t["task_id"]);
    assert_eq!(offer["offer"]["task"]["queue"], "support");
    // Both replicas made the same steps: same queue, same priority.
    let seen_a = a
        .await_task(&t["task_id"], "offered to bo", |v| v["agent_id"] == "bo")
        .await;
    let seen_b = b
        .await_task(&t["task_id"], "offered to bo", |v| v["agent_id"] == "bo")
        .await;
    assert_eq!(seen_a["queue"], "support");
    assert_eq!(seen_a["priority"], seen_b["priority"]);
    assert_eq!(seen_a["priority"], offer["offer"]["task"]["priority"]);
}

#[tokio::test]
async fn kill_9_of_a_node_mid_offer_loses_nothing() {
    let redis = RedisServer::start();
    let routing = "offer_timeout_secs = 60\nreconnect_grace_secs = 1.5";
    let mut a = Node::start(&redis, "node-a", routing);
    let b = Node::start(&redis, "node-b", routing);
    // ana comes back through node b; bo never comes back.
    let mut ana = a.ready_agent("ana").await;
    let t1 = b.create(json!({"channel": "voice", "queue": "vip"})).await;
    let offer = ana.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], t1["task_id"]);
    let mut bo = a.ready_agent("bo").await;
    let t2 = b
        .create(json!({"channel": "chat", "queue": "support", "skills": ["sv"]}))
        .await;
    assert_eq!(
        bo.expect("offer").await["offer"]["task"]["task_id"],
        t2["task_id"]
    );
    a.kill9();
    let killed = std::time::Instant::now();
    drop(ana);
    drop(bo);
    let mut ana = b.agent("ana").await;
    assert_eq!(ana.welcome["resumed"], true);
    assert_eq!(
        ana.welcome["agent"]["offer"]["offer_id"],
        offer["offer"]["offer_id"]
    );
    let r = ana
        .ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
        .await;
    assert_eq!(r["task"]["task_id"], t1["task_id"]);
    // bo's offer goes back to its queue once node a is declared lost (a lost node's
    // offers go on at once; only its tasks in progress keep the grace).
    let mut dj_as_bo_colleague = b.agent("dj").await;
    dj_as_bo_colleague.set_ready().await;
    let t = b.await_task_state(&t2["task_id"], "queued").await;
    assert_eq!(t["offers"], 1);
    // Not before node a could be declared lost: its key lives 3 s from its last beat,
    // and it beat at most 0.5 s before the kill.
    assert!(
        killed.elapsed() >= Duration::from_millis(2500),
        "back after {:?}",
        killed.elapsed()
    );
    eprintln!("bo's offer went back after {:?}", killed.elapsed());
    let mut bo = b.ready_agent("bo").await;
    let again = bo.expect("offer").await;
    assert_eq!(
        again["offer"]["task"]["task_id"], t2["task_id"],
        "offered again, in its place"
    );
    assert_eq!(b.task(&t1["task_id"]).await["state"], "assigned");
}

#[tokio::test]
async fn a_redis_restart_is_survived_and_nothing_acknowledged_is_lost() {
    let mut redis = RedisServer::start();
    let a = Node::start(&redis, "node-a", "");
    let b = Node::start(&redis, "node-b", "");
    let mut before = Vec::new();
    for _ in 0..10 {
        before.push(
            a.create(json!({"channel": "email", "queue": "support"}))
                .await,
        );
    }
    let mut ana = b.ready_agent("ana").await;
    redis.kill();
    // Writes are refused, clearly; the sockets stay. The first may find the node's open
    // connection broken mid-call: then it cannot know whether Redis appended the command
    // before it died (with appendfsync always, a restart would replay it), and says so.
    let (s, v) = a
        .post_task(&json!({"channel": "email", "queue": "support"}))
        .await;
    assert!(
        matches!(
            (s, v["error"]["code"].as_str()),
            (503, Some("store_unavailable")) | (504, Some("outcome_unknown"))
        ),
        "{s} {v}"
    );
    // From then on the node cannot even connect: certainly nothing was appended.
    let (s, v) = a
        .post_task(&json!({"channel": "email", "queue": "support"}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("store_unavailable")),
        "{v}"
    );
    let (s, _) = http(a.addr, "GET", "/readyz", None, None, &[]).await;
    assert_eq!(s, 503);
    redis.restart();
    // The nodes reconnect by themselves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let (s, v) = a
            .post_task(&json!({"channel": "email", "queue": "support"}))
            .await;
        if s == 201 {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never recovered: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // b answers from its replica, which catches up with the log after the restart.
    for t in &before {
        let seen = b.await_task(&t["task_id"], "known", |_| true).await;
        assert_eq!(seen["task_id"], t["task_id"]);
    }
    b.await_task_state(&after["task_id"], "queued").await;
    // ana's socket survived and she still works.
    ana.ok(json!({"type": "get_state"})).await;
}

/// Redis replaced by an empty one under running nodes (a new server, a lost disk, a
/// `FLUSHALL`): the nodes hold the history in their replicas. One stores its replica as
/// the new log's snapshot, and every node, and a node started afterwards, goes on from
/// it: the tasks made before are there, in their places in line. Before, every node
/// dropped each new entry waiting for a snapshot that never came, and no command was
/// applied again.
#[tokio::test]
async fn a_redis_emptied_under_the_nodes_is_seeded_again_from_their_replicas() {
    let mut redis = RedisServer::start();
    let a = Node::start(&redis, "node-a", "");
    let b = Node::start(&redis, "node-b", "");
    let mut before = Vec::new();
    for _ in 0..5 {
        before.push(
            a.create(json!({"channel": "email", "queue": "support"}))
                .await,
        );
    }
    for t in &before {
        b.await_task_state(&t["task_id"], "queued").await;
    }
    redis.restart_empty();
    // A node started now, once the live nodes have beaten into the new Redis (before any
    // command was appended), waits for their history instead of starting one of its own.
    let client = redis::Client::open(redis.url()).expect("client");
    let mut rc = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let beats: Vec<String> = redis::cmd("KEYS")
            .arg("sb:node:*")
            .query_async(&mut rc)
            .await
            .expect("keys");
        if beats.len() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = Node::start(&redis, "node-c", "");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let (s, v) = a
            .post_task(&json!({"channel": "email", "queue": "support"}))
            .await;
        if s == 201 {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never recovered: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    b.await_task_state(&after["task_id"], "queued").await;
    let d = Node::start(&redis, "node-d", "");
    for t in before.iter().chain([&after]) {
        for n in [&a, &b, &c, &d] {
            n.await_task_state(&t["task_id"], "queued").await;
        }
    }
    // The oldest task waiting is still first in line, on the nodes started afterwards.
    let mut ana = c.ready_agent("ana").await;
    assert_eq!(ana.accept_next().await["task_id"], before[0]["task_id"]);
}

/// A node whose rules differ from a live node's is refused at start, saying so: it
/// would apply the same log by other rules and drift apart in silence. The cluster goes
/// on. Once the others are gone, new rules are still refused while the log after the
/// stored snapshot was decided by the old ones (killed nodes store nothing); after the
/// last node stopped cleanly (it stores a snapshot), they start, with what was there.
#[tokio::test]
async fn a_node_with_other_rules_than_the_live_ones_is_refused() {
    let redis = RedisServer::start();
    let mut a = Node::start(&redis, "node-a", "");
    let err = Node::refused(&redis, "node-b", "offer_timeout_secs = 3");
    assert!(
        err.contains("node-a/") && err.contains("other rules"),
        "{err}"
    );
    a.create(json!({"channel": "email", "queue": "support"}))
        .await;
    let b = Node::start(&redis, "node-b", "");
    // node-a restarted at once with new rules, while node-b runs by the old: refused.
    a.kill9();
    let err = Node::refused(&redis, "node-a", "offer_timeout_secs = 3");
    assert!(err.contains("node-b/"), "{err}");
    // With node-b gone too (its key expired with its heartbeat), node-a starts by its
    // new rules: its own earlier run's key, which may still be there, does not count.
    drop(b);
    let client = redis::Client::open(redis.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = redis::cmd("KEYS")
            .arg("sb:rules:node-b/*")
            .query_async(&mut c)
            .await
            .expect("keys");
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "node-b's key never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = Node::refused(&redis, "node-a", "offer_timeout_secs = 3");
    assert!(
        err.contains("the log after the stored snapshot") && err.contains("other rules"),
        "{err}"
    );
    // The old rules again, stopped cleanly: the last node stores a snapshot.
    let mut b = Node::start(&redis, "node-b", "");
    let kept = b
        .create(json!({"channel": "email", "queue": "support"}))
        .await;
    b.term().await;
    let a = Node::start(&redis, "node-a", "offer_timeout_secs = 3");
    a.await_task_state(&kept["task_id"], "queued").await;
    a.create(json!({"channel": "email", "queue": "support"}))
        .await;
}

#[tokio::test]
async fn a_redis_outage_longer_than_the_heartbeat_declares_no_live_node_lost() {
    let mut redis = RedisServer::start();
    let a = Node::start(&redis, "node-a", "");
    let b = Node::start(&redis, "node-b", "");
    let mut ana = a.ready_agent("ana").await;
    let mut bo = b.ready_agent("bo").await;
    redis.kill();
    // Longer than a heartbeat key lives (3 s): every key lapses.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    redis.restart();
    // Long enough for a node to judge the others again after its own beats recovered.
    tokio::time::sleep(Duration::from_millis(5000)).await;
    for (c, who) in [(&mut ana, "ana"), (&mut bo, "bo")] {
        let st = c.ok(json!({"type": "get_state"})).await;
        assert_eq!(
            st["agent"]["connected"], true,
            "{who} was declared gone: {st}"
        );
        assert_eq!(st["agent"]["status"], "ready", "{who}: {st}");
    }
    // And routing goes on across nodes.
    let t = a
        .create(json!({"channel": "chat", "queue": "support", "skills": ["sv"]}))
        .await;
    assert_eq!(
        bo.expect("offer").await["offer"]["task"]["task_id"],
        t["task_id"]
    );
}
