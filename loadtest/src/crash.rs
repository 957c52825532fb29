//! `loadtest crash --rounds N`: kill -9 of a file-store hub under load, many times.
//!
//! The long form of `tests/crash.rs` (5 rounds, kept short for CI), through the same
//! harness as the other scenarios ([`HubProcess`], one data directory for the whole
//! run). Each round starts the hub on the data directory, checks what the rounds before
//! had acknowledged, then loads it (task creates with idempotency keys, customer saves,
//! agent desktops accepting and completing offers) for a while and kills it with
//! SIGKILL at a random moment. After the last round the hub starts once more and every
//! command acknowledged in any round is checked: each created task is there and its
//! idempotency key finds that same task (created once); each accepted task is
//! assigned or completed; each completed task is completed; each customer is at its
//! last acknowledged version or one past it (the save in flight at the kill), with the
//! name that version was saved with (one save per version: none applied twice).

use crate::hubproc::{HubProcess, HubSetup, random_secret, run_dir};
use crate::rng::Rng;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard::auth::{Keys, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const QUEUE: &str = "support";

/// What `crash` does.
pub struct CrashOpts {
    /// The switchboard binary.
    pub bin: PathBuf,
    /// Kill -9 rounds.
    pub rounds: usize,
    /// Agent desktops.
    pub agents: usize,
    /// Concurrent task creators and customer savers (each).
    pub writers: usize,
    /// The longest load before a kill; each round kills at a random moment between a
    /// quarter of it and all of it.
    pub max_load: Duration,
    /// `store.snapshot_every` (small, so that kills land in snapshots too).
    pub snapshot_every: u64,
    /// Keep the run's directory.
    pub keep: bool,
}

/// What it checked.
pub struct CrashReport {
    /// Rounds run (kills).
    pub rounds: usize,
    /// Acknowledged commands checked after the last restart (each once).
    pub checked: usize,
    /// Checks made after every restart, summed.
    pub checked_per_round: usize,
    /// Acknowledged creates, accepts, completes and saves.
    pub acks: (usize, usize, usize, usize),
    /// Desktops that resumed In Progress tasks after a restart.
    pub resumed: usize,
    /// What broke; empty when every check held.
    pub breaches: Vec<String>,
    /// The run's directory.
    pub dir: PathBuf,
}

/// What the hub acknowledged.
#[derive(Default)]
struct Acks {
    created: BTreeMap<String, String>,
    accepted: Vec<String>,
    completed: Vec<String>,
    saved: BTreeMap<String, u64>,
    resumed: usize,
    breaches: Vec<String>,
}

type Shared = Arc<Mutex<Acks>>;

fn acks(a: &Shared) -> std::sync::MutexGuard<'_, Acks> {
    a.lock().unwrap_or_else(|p| p.into_inner())
}

fn breach(a: &Shared, what: String) {
    let mut a = acks(a);
    if a.breaches.len() < 50 {
        a.breaches.push(what);
    }
}

struct Ctx {
    addr: SocketAddr,
    keys: Keys,
}

impl Ctx {
    fn token(&self, sub: &str, role: Role) -> String {
        let queues = (role == Role::Agent).then(|| vec![QUEUE.to_owned()]);
        crate::cluster::sign(&self.keys, sub, role, Duration::from_secs(6 * 3600), queues)
    }

    /// One HTTP request; `None` when the hub is gone.
    async fn http(&self, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.ok()?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-type: application/json\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n\r\n{body}",
            self.addr,
            self.token("lt-crm", Role::Integration),
            body.len()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf);
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        let v = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
        Some((status, v))
    }
}

async fn creator(c: Arc<Ctx>, tag: String, a: Shared) {
    for i in 0.. {
        let key = format!("{tag}-{i}");
        let body = json!({"channel": "chat", "queue": QUEUE, "idempotency_key": key,
            "customer": {"email": format!("c{i}@example.com")}});
        match c.http("POST", "/v1/tasks", Some(&body)).await {
            Some((201, v)) => match v["task_id"].as_str() {
                Some(id) => {
                    acks(&a).created.insert(key, id.to_owned());
                }
                None => return breach(&a, format!("create {key}: no task_id in {v}")),
            },
            Some((s, v)) => return breach(&a, format!("create {key} answered {s}: {v}")),
            None => return,
        }
    }
}

async fn saver(c: Arc<Ctx>, tag: String, a: Shared) {
    let body = json!({"name": format!("{tag} v1")});
    let (id, mut version) = match c.http("POST", "/v1/customers", Some(&body)).await {
        Some((201, v)) => match (
            v["customer"]["customer_id"].as_str(),
            v["customer"]["version"].as_u64(),
        ) {
            (Some(id), Some(ver)) => (id.to_owned(), ver),
            _ => return breach(&a, format!("create customer: {v}")),
        },
        Some((s, v)) => return breach(&a, format!("create customer answered {s}: {v}")),
        None => return,
    };
    acks(&a).saved.insert(id.clone(), version);
    loop {
        let body = json!({"base_version": version,
            "changes": {"name": format!("{tag} v{}", version + 1)}});
        match c
            .http("PATCH", &format!("/v1/customers/{id}"), Some(&body))
            .await
        {
            Some((200, v)) => match v["customer"]["version"].as_u64() {
                Some(ver) => {
                    version = ver;
                    acks(&a).saved.insert(id.clone(), version);
                }
                None => return breach(&a, format!("save {id}: {v}")),
            },
            Some((s, v)) => return breach(&a, format!("save {id} answered {s}: {v}")),
            None => return,
        }
    }
}

/// An agent desktop: completes what it resumed, then accepts and completes offers.
/// Returns when the connection ends (the kill).
async fn agent(c: Arc<Ctx>, id: String, a: Shared) {
    let url = format!(
        "ws://{}/v1/ws?access_token={}",
        c.addr,
        c.token(&id, Role::Agent)
    );
    let Ok((mut ws, _)) =
        tokio_tungstenite::connect_async_with_config(url, Some(crate::client::ws_config()), false)
            .await
    else {
        return;
    };
    let mut n = 0u64;
    let mut pending: Vec<Value> = Vec::new();
    macro_rules! next_json {
        () => {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) => Some(v),
                    Err(e) => return breach(&a, format!("{id}: a frame is not JSON: {e}")),
                },
                Some(Ok(_)) => None,
                _ => return,
            }
        };
    }
    // Sends a request and reads frames until its reply; offers seen meanwhile are kept.
    macro_rules! request {
        ($v:expr) => {{
            n += 1;
            let rid = format!("q{n}");
            let mut v: Value = $v;
            v["id"] = json!(rid);
            if ws.send(Message::text(v.to_string())).await.is_err() {
                return;
            }
            loop {
                if let Some(f) = next_json!() {
                    if f["re"] == rid.as_str() {
                        break f;
                    }
                    pending.push(f);
                }
            }
        }};
    }
    let welcome = loop {
        if let Some(f) = next_json!() {
            break f;
        }
    };
    if welcome["type"] != "welcome" {
        return breach(&a, format!("{id}: first frame {welcome}"));
    }
    let resumed: Vec<Value> = welcome["agent"]["in_progress"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !resumed.is_empty() {
        if welcome["resumed"] != true {
            breach(
                &a,
                format!("{id}: tasks in progress but not resumed: {welcome}"),
            );
        }
        acks(&a).resumed += 1;
    }
    for t in resumed {
        let r = request!(json!({"type": "complete", "task_id": t["task_id"]}));
        if r["type"] != "reply" {
            return breach(&a, format!("{id}: complete of a resumed task: {r}"));
        }
        if let Some(t) = t["task_id"].as_str() {
            acks(&a).completed.push(t.to_owned());
        }
    }
    if let Some(o) = welcome["agent"]["offer"].as_object() {
        pending.push(json!({"type": "offer", "offer": o}));
    }
    let r = request!(json!({"type": "set_state", "state": "ready"}));
    if r["type"] != "reply" {
        return breach(&a, format!("{id}: set_state: {r}"));
    }
    loop {
        let offer = match pending.iter().position(|f| f["type"] == "offer") {
            Some(i) => pending.remove(i),
            None => {
                if let Some(f) = next_json!() {
                    pending.push(f);
                }
                continue;
            }
        };
        let r = request!(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}));
        if r["type"] != "reply" {
            continue; // ended meanwhile (offers last minutes here)
        }
        let Some(task) = r["result"]["task"]["task_id"].as_str().map(str::to_owned) else {
            return breach(&a, format!("{id}: accept reply without a task: {r}"));
        };
        acks(&a).accepted.push(task.clone());
        let r = request!(json!({"type": "complete", "task_id": task}));
        if r["type"] != "reply" {
            return breach(&a, format!("{id}: complete {task}: {r}"));
        }
        acks(&a).completed.push(task);
    }
}

/// What was acknowledged, as a copy to check.
#[derive(Clone, Default)]
struct Seen {
    created: BTreeMap<String, String>,
    accepted: Vec<String>,
    completed: Vec<String>,
    saved: BTreeMap<String, u64>,
}

fn seen(a: &Shared) -> Seen {
    let a = acks(a);
    Seen {
        created: a.created.clone(),
        accepted: a.accepted.clone(),
        completed: a.completed.clone(),
        saved: a.saved.clone(),
    }
}

/// Checks acknowledged commands against the running hub; returns how many were
/// checked. Breaches go to `a`.
async fn check(c: &Ctx, s: &Seen, a: &Shared) -> usize {
    let mut checked = 0;
    for (key, id) in &s.created {
        match c.http("GET", &format!("/v1/tasks/{id}"), None).await {
            Some((200, _)) => {}
            other => breach(a, format!("acknowledged task {id} ({key}): {other:?}")),
        }
        let body = json!({"channel": "chat", "queue": QUEUE, "idempotency_key": key,
            "customer": {"email": "again@example.com"}});
        match c.http("POST", "/v1/tasks", Some(&body)).await {
            Some((200, v)) if v["task_id"].as_str() == Some(id.as_str()) => {}
            other => breach(a, format!("{key} again did not find {id}: {other:?}")),
        }
        checked += 1;
    }
    for id in &s.accepted {
        let state = state_of(c, id).await;
        if state != "assigned" && state != "completed" {
            breach(a, format!("accepted {id} is {state:?}"));
        }
        checked += 1;
    }
    for id in &s.completed {
        let state = state_of(c, id).await;
        if state != "completed" {
            breach(a, format!("completed {id} is {state:?}"));
        }
        checked += 1;
    }
    for (id, version) in &s.saved {
        match c.http("GET", &format!("/v1/customers/{id}"), None).await {
            Some((200, v)) => {
                let got = v["customer"]["version"].as_u64().unwrap_or(0);
                // The save in flight at the kill may have been written without its
                // answer; one save per version, so never more than one past.
                if got != *version && got != version + 1 {
                    breach(
                        a,
                        format!("customer {id}: version {got}, acknowledged {version}"),
                    );
                }
                let name = v["customer"]["name"].as_str().unwrap_or_default();
                if !name.ends_with(&format!(" v{got}")) {
                    breach(a, format!("customer {id}: version {got} named {name:?}"));
                }
            }
            other => breach(a, format!("customer {id}: {other:?}")),
        }
        checked += 1;
    }
    checked
}

async fn state_of(c: &Ctx, id: &str) -> String {
    match c.http("GET", &format!("/v1/tasks/{id}"), None).await {
        Some((_, v)) => v["state"].as_str().unwrap_or_default().to_owned(),
        None => String::new(),
    }
}

fn since(all: &Seen, before: &Seen) -> Seen {
    Seen {
        created: all
            .created
            .iter()
            .filter(|(k, _)| !before.created.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        accepted: all.accepted[before.accepted.len()..].to_vec(),
        completed: all.completed[before.completed.len()..].to_vec(),
        // Versions move: every customer saved this round or before.
        saved: all.saved.clone(),
    }
}

fn setup(snapshot_every: u64) -> HubSetup {
    HubSetup {
        queues: vec![QUEUE.to_owned()],
        // Offers outlive a round: an offer pending at the kill is there after it.
        offer_timeout: Duration::from_secs(600),
        capacity: crate::hubproc::Capacity::default(),
        retention: 10_000_000,
        send_queue: 4096,
        reconnect_grace: Duration::from_secs(600),
        rust_log: Some("warn".into()),
        redis: None,
        snapshot_every: Some(snapshot_every),
        durable: true,
        webhook: None,
        stream_linger_ms: None,
    }
}

/// Runs it.
pub async fn run_crash(o: CrashOpts) -> Result<CrashReport, String> {
    let secret = random_secret();
    let dir = run_dir(&secret);
    let setup = setup(o.snapshot_every);
    let keys = Keys::new(secret.as_bytes());
    let a: Shared = Arc::default();
    let mut rng = Rng::new(u64::from(std::process::id()) ^ 0x5eed_c4a5);
    let mut checked_per_round = 0;
    let mut last = Seen::default();
    let t0 = Instant::now();
    for round in 0..o.rounds {
        let mut hub = HubProcess::spawn_node(&o.bin, &setup, &secret, &dir, None).await?;
        let c = Arc::new(Ctx {
            addr: hub.addr,
            keys: keys.clone(),
        });
        // What the previous round acknowledged (and every customer's version).
        let all = seen(&a);
        checked_per_round += check(&c, &since(&all, &last), &a).await;
        last = all;
        let mut load = Vec::new();
        for w in 0..o.writers.max(1) {
            load.push(tokio::spawn(creator(
                c.clone(),
                format!("r{round}w{w}"),
                a.clone(),
            )));
            load.push(tokio::spawn(saver(
                c.clone(),
                format!("r{round}w{w}"),
                a.clone(),
            )));
        }
        for k in 0..o.agents.max(1) {
            load.push(tokio::spawn(agent(
                c.clone(),
                format!("lt-a{k}"),
                a.clone(),
            )));
        }
        let max = o.max_load.as_millis().max(4) as u64;
        let load_ms = max / 4 + rng.next_u64() % (max - max / 4);
        tokio::time::sleep(Duration::from_millis(load_ms)).await;
        if let Some(s) = hub.exited() {
            return Err(format!(
                "round {round}: the hub exited by itself ({s}); see {}",
                hub.log_path.display()
            ));
        }
        let Some(pid) = hub.pid() else {
            return Err(format!("round {round}: the hub is gone"));
        };
        // SAFETY: kill(2) with a pid this process started and has not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
        let _ = hub.wait_exit(Duration::from_secs(10)).await;
        for l in load {
            let _ = l.await;
        }
        let (cr, ac, co) = {
            let a = acks(&a);
            (a.created.len(), a.accepted.len(), a.completed.len())
        };
        eprintln!(
            "crash: round {}/{} killed after {load_ms} ms; acknowledged so far: {cr} creates, {ac} accepts, {co} completes ({:.0} s)",
            round + 1,
            o.rounds,
            t0.elapsed().as_secs_f64()
        );
    }
    let mut hub = HubProcess::spawn_node(&o.bin, &setup, &secret, &dir, None).await?;
    let c = Ctx {
        addr: hub.addr,
        keys,
    };
    let all = seen(&a);
    let checked = check(&c, &all, &a).await;
    hub.terminate();
    let _ = hub.wait_exit(Duration::from_secs(10)).await;
    let a = acks(&a);
    let report = CrashReport {
        rounds: o.rounds,
        checked,
        checked_per_round,
        acks: (
            a.created.len(),
            a.accepted.len(),
            a.completed.len(),
            a.saved.values().sum::<u64>() as usize,
        ),
        resumed: a.resumed,
        breaches: a.breaches.clone(),
        dir: dir.clone(),
    };
    if !o.keep && report.breaches.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}
