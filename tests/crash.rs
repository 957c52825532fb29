//! Crash tests through the real binary on the file store: kill -9 under load (task
//! creates, customer saves, agents accepting and completing), restart on the same data
//! directory, and check that every acknowledged command is there with its version and
//! state, and that nothing was applied twice. A few rounds, kept short for CI. Also
//! `switchboard backup` taken under that load, started on its own.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard::auth::{Claims, Keys, Role, unix_now};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "crash-test-secret-0123456789";
const ROUNDS: usize = 5;
const AGENTS: [&str; 3] = ["a1", "a2", "a3"];

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    let p = std::env::temp_dir().join(format!(
        "sb-crash-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&p).expect("temp dir");
    TempDir(p)
}

fn config(dir: &Path) -> PathBuf {
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\nsecret = \"{SECRET}\"\n[limits]\nfinished_task_retention = 100000\n[routing]\noffer_timeout_secs = 60\nwrap_up_secs = 0\nreconnect_grace_secs = 600\n[store]\nsnapshot_every = 150\n[[queues]]\nid = \"support\"\n"
    );
    for a in AGENTS {
        t.push_str(&format!(
            "[[agents]]\nid = \"{a}\"\nqueues = [\"support\"]\n"
        ));
    }
    let p = dir.join("hub.toml");
    std::fs::write(&p, t).expect("config");
    p
}

fn token(sub: &str, role: Role) -> String {
    Keys::new(SECRET.as_bytes()).sign(&Claims {
        sub: sub.into(),
        role,
        exp: unix_now() + 3600,
        name: None,
        skills: None,
        queues: None,
    })
}

struct Hub {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(cfg: &Path, data: &Path) -> Hub {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(cfg)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .env_remove("SWITCHBOARD_REDIS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).expect("a first line");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("address in {first:?}"));
    let store = lines.next().and_then(Result::ok).expect("a second line");
    assert!(store.starts_with("store: file ("), "{store}");
    // Keep reading so the hub never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Hub { child, addr }
}

/// One HTTP request; `None` when the hub is gone.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n\r\n{body}",
        token("crm", Role::Integration),
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

/// What the hub acknowledged, across rounds.
#[derive(Default)]
struct Acks {
    /// Idempotency key -> task id.
    created: BTreeMap<String, String>,
    /// Task ids whose accept was answered.
    accepted: Vec<String>,
    /// Task ids whose complete was answered.
    completed: Vec<String>,
    /// Customer id -> last acknowledged version.
    saved: BTreeMap<String, u64>,
    /// Desktops that resumed In Progress tasks after a restart.
    resumed: usize,
}

type Shared = Arc<Mutex<Acks>>;

fn acks(a: &Shared) -> std::sync::MutexGuard<'_, Acks> {
    a.lock().unwrap_or_else(|p| p.into_inner())
}

/// Creates, completes and customer saves acknowledged so far: each one a record.
fn commands(a: &Shared) -> f64 {
    let a = acks(a);
    (a.created.len() + a.completed.len()) as f64 + a.saved.values().sum::<u64>() as f64
}

async fn creator(addr: SocketAddr, round: usize, a: Shared) {
    for i in 0.. {
        let key = format!("r{round}-{i}");
        let body = json!({"channel": "chat", "queue": "support", "idempotency_key": key,
            "customer": {"email": format!("c{i}@example.com")}});
        match http(addr, "POST", "/v1/tasks", Some(&body)).await {
            Some((201, v)) => {
                let id = v["task_id"].as_str().expect("task_id").to_owned();
                acks(&a).created.insert(key, id);
            }
            Some((s, v)) => panic!("create answered {s}: {v}"),
            None => return,
        }
    }
}

async fn saver(addr: SocketAddr, round: usize, a: Shared) {
    let body = json!({"name": format!("round {round} v1")});
    let (id, mut version) = match http(addr, "POST", "/v1/customers", Some(&body)).await {
        Some((201, v)) => (
            v["customer"]["customer_id"]
                .as_str()
                .expect("id")
                .to_owned(),
            v["customer"]["version"].as_u64().expect("version"),
        ),
        Some((s, v)) => panic!("create customer answered {s}: {v}"),
        None => return,
    };
    acks(&a).saved.insert(id.clone(), version);
    loop {
        let body = json!({"base_version": version,
            "changes": {"name": format!("round {round} v{}", version + 1)}});
        match http(addr, "PATCH", &format!("/v1/customers/{id}"), Some(&body)).await {
            Some((200, v)) => {
                version = v["customer"]["version"].as_u64().expect("version");
                acks(&a).saved.insert(id.clone(), version);
            }
            Some((s, v)) => panic!("save answered {s}: {v}"),
            None => return,
        }
    }
}

/// An agent desktop: completes what it resumed, then accepts and completes offers,
/// recording what the hub answered. Returns when the connection ends.
async fn agent(addr: SocketAddr, id: &str, a: Shared) {
    let url = format!("ws://{addr}/v1/ws?access_token={}", token(id, Role::Agent));
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return;
    };
    let mut n = 0u64;
    let mut pending: Vec<Value> = Vec::new();
    // Reads frames until the reply to `re`; offers seen meanwhile are kept.
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
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let f: Value = serde_json::from_str(t.as_str()).expect("JSON");
                        if f["re"] == rid.as_str() {
                            break f;
                        }
                        pending.push(f);
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        }};
    }
    let welcome = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                break serde_json::from_str::<Value>(t.as_str()).expect("JSON");
            }
            Some(Ok(_)) => {}
            _ => return,
        }
    };
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let resumed: Vec<Value> = welcome["agent"]["in_progress"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !resumed.is_empty() {
        // A desktop connected when the hub was killed, back within its grace period.
        assert_eq!(welcome["resumed"], true, "{welcome}");
        acks(&a).resumed += 1;
    }
    for t in resumed {
        let r = request!(json!({"type": "complete", "task_id": t["task_id"]}));
        assert_eq!(r["type"], "reply", "{r}");
        acks(&a)
            .completed
            .push(t["task_id"].as_str().expect("id").to_owned());
    }
    if let Some(o) = welcome["agent"]["offer"].as_object() {
        pending.push(json!({"type": "offer", "offer": o}));
    }
    let r = request!(json!({"type": "set_state", "state": "ready"}));
    assert_eq!(r["type"], "reply", "{r}");
    loop {
        let offer = match pending.iter().position(|f| f["type"] == "offer") {
            Some(i) => pending.remove(i),
            None => match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    pending.push(serde_json::from_str(t.as_str()).expect("JSON"));
                    continue;
                }
                Some(Ok(_)) => continue,
                _ => return,
            },
        };
        let r = request!(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}));
        if r["type"] != "reply" {
            continue; // ended meanwhile (cannot here: offers last a minute)
        }
        let task = r["result"]["task"]["task_id"]
            .as_str()
            .expect("id")
            .to_owned();
        acks(&a).accepted.push(task.clone());
        let r = request!(json!({"type": "complete", "task_id": task}));
        assert_eq!(r["type"], "reply", "{r}");
        acks(&a).completed.push(task);
    }
}

/// Checks every acknowledged command against the restarted hub.
async fn check(addr: SocketAddr, a: &Shared) -> usize {
    check_seen(addr, &seen(a), false).await
}

/// What was acknowledged up to one moment.
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

/// Checks that every command in `seen` is in the hub at `addr`, applied once. With
/// `saves_went_on` (a copy taken while the load went on), a customer may be at any
/// later version, not only the acknowledged one or the one in flight.
async fn check_seen(addr: SocketAddr, seen: &Seen, saves_went_on: bool) -> usize {
    let Seen {
        created,
        accepted,
        completed,
        saved,
    } = seen;
    let mut checked = 0;
    for (key, id) in created {
        let (s, v) = http(addr, "GET", &format!("/v1/tasks/{id}"), None)
            .await
            .expect("hub up");
        assert_eq!(s, 200, "acknowledged task {id} ({key}) is gone: {v}");
        // The same key again finds the same task: it was created once.
        let body = json!({"channel": "chat", "queue": "support", "idempotency_key": key,
            "customer": {"email": "again@example.com"}});
        let (s, v) = http(addr, "POST", "/v1/tasks", Some(&body))
            .await
            .expect("hub up");
        assert_eq!(
            (s, v["task_id"].as_str()),
            (200, Some(id.as_str())),
            "{key}: {v}"
        );
        checked += 1;
    }
    for id in accepted {
        let (_, v) = http(addr, "GET", &format!("/v1/tasks/{id}"), None)
            .await
            .expect("hub up");
        let state = v["state"].as_str().unwrap_or_default();
        assert!(
            state == "assigned" || state == "completed",
            "accepted {id} is {state}"
        );
        checked += 1;
    }
    for id in completed {
        let (_, v) = http(addr, "GET", &format!("/v1/tasks/{id}"), None)
            .await
            .expect("hub up");
        assert_eq!(v["state"], "completed", "completed {id}: {v}");
        checked += 1;
    }
    for (id, version) in saved {
        let (s, v) = http(addr, "GET", &format!("/v1/customers/{id}"), None)
            .await
            .expect("hub up");
        assert_eq!(s, 200, "customer {id}: {v}");
        let got = v["customer"]["version"].as_u64().expect("version");
        // The save in flight at the kill may have been written without its answer;
        // one save per version, so never more than one past the last acknowledged.
        assert!(
            got == *version || got == version + 1 || (saves_went_on && got > *version),
            "customer {id}: version {got}, acknowledged {version}"
        );
        let name = v["customer"]["name"].as_str().unwrap_or_default();
        assert!(
            name.ends_with(&format!(" v{got}")),
            "customer {id}: version {got} named {name:?}"
        );
        checked += 1;
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_command_and_applies_none_twice() {
    let dir = temp_dir();
    let cfg = config(&dir.0);
    let data = dir.0.join("data");
    let backup = dir.0.join("backup");
    let a: Shared = Arc::default();
    let mut before_backup = None;
    for round in 0..ROUNDS {
        let mut hub = start(&cfg, &data);
        let addr = hub.addr;
        let checked = check(addr, &a).await;
        eprintln!("round {round}: {checked} acknowledged commands checked after the restart");
        let at_start = commands(&a);
        let load = vec![
            tokio::spawn(creator(addr, round, a.clone())),
            tokio::spawn(saver(addr, round, a.clone())),
        ]
        .into_iter()
        .chain(
            AGENTS
                .iter()
                .map(|id| tokio::spawn(agent(addr, id, a.clone()))),
        )
        .collect::<Vec<_>>();
        // Until enough of each kind was acknowledged this round.
        let target = {
            let a = acks(&a);
            (
                a.created.len() + 60,
                a.completed.len() + 10,
                a.saved.values().sum::<u64>() + 10,
            )
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut backed_up = false;
        loop {
            let reached = {
                let a = acks(&a);
                (
                    a.created.len(),
                    a.completed.len(),
                    a.saved.values().sum::<u64>(),
                )
            };
            if round == 0 && !backed_up && reached.0 >= target.0 / 2 {
                // A backup taken while the hub runs under load: it must hold everything
                // acknowledged before it began.
                before_backup = Some(seen(&a));
                let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
                    .arg("backup")
                    .arg(&backup)
                    .arg("--config")
                    .arg(&cfg)
                    .arg("--data-dir")
                    .arg(&data)
                    .env("RUST_LOG", "warn")
                    .output()
                    .expect("run backup");
                assert!(
                    out.status.success(),
                    "backup: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                backed_up = true;
            }
            if reached.0 >= target.0 && reached.1 >= target.1 && reached.2 >= target.2 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "load too slow: {reached:?} of {target:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (s, metrics) = http(addr, "GET", "/metrics", None).await.expect("metrics");
        assert_eq!(s, 200);
        let text = metrics.as_str().map(str::to_owned).unwrap_or_default();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /metrics"))
        };
        // Every command acknowledged this round is a record appended by this process
        // (each round is a new one), and records share fsyncs, each one timed.
        let acked = commands(&a) - at_start;
        let (appends, fsyncs) = (
            value("switchboard_store_appends_total"),
            value("switchboard_store_fsyncs_total"),
        );
        assert!(
            appends >= acked,
            "{appends} appends for {acked} acknowledged commands"
        );
        assert!(
            fsyncs >= 1.0 && fsyncs <= appends,
            "{fsyncs} fsyncs for {appends} appends"
        );
        assert_eq!(value("switchboard_store_fsync_seconds_count"), fsyncs);
        assert!(value("switchboard_store_disk_bytes") > 0.0);
        // kill -9 mid-load.
        hub.child.kill().expect("kill -9");
        let _ = hub.child.wait();
        for l in load {
            l.await.expect("load task");
        }
    }
    let hub = start(&cfg, &data);
    let checked = check(hub.addr, &a).await;
    let resumed = acks(&a).resumed;
    eprintln!(
        "final: {checked} acknowledged commands checked; {resumed} desktops resumed after a restart"
    );
    drop(hub);
    // The backup starts on its own and holds what was acknowledged before it began.
    let hub = start(&cfg, &backup);
    let (s, _) = http(hub.addr, "GET", "/v1/tasks/does-not-exist", None)
        .await
        .expect("backup hub up");
    assert!(s == 404 || s == 400);
    let before = before_backup.expect("a backup was taken");
    assert!(
        !before.created.is_empty(),
        "nothing was acknowledged before the backup"
    );
    let checked = check_seen(hub.addr, &before, true).await;
    eprintln!("backup: {checked} commands acknowledged before it began checked in it");
}
