//! Test helpers: a hub on a free port, websocket clients that check every frame
//! against `protocol/v1/schema.json`, a small HTTP client, and (`redis_server`) a
//! `redis-server` of the test's own; `receiver` (hyper) and `pipelined` (raw, for
//! pipelining) webhook receivers.

#![allow(dead_code)]

pub mod held;
pub mod pipelined;
pub mod race;
pub mod receiver;
pub mod redis_server;
pub mod tls;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use switchboard::auth::{Claims, Keys, Role, unix_now};
use switchboard::config::Config;
use switchboard::server::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789";
/// How long a test waits for a frame it expects.
pub const WAIT: Duration = Duration::from_secs(5);

fn schema_doc() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/protocol/v1/schema.json");
        let text = std::fs::read_to_string(path).expect("protocol/v1/schema.json exists");
        serde_json::from_str(&text).expect("protocol/v1/schema.json is JSON")
    })
}

fn validator(def: &str) -> jsonschema::Validator {
    let mut root = schema_doc().clone();
    root["$ref"] = Value::String(format!("#/$defs/{def}"));
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("schema for {def} compiles: {e}"))
}

type SchemaCache = std::sync::Mutex<std::collections::HashMap<String, jsonschema::Validator>>;

fn schema_cache() -> &'static SchemaCache {
    static CACHE: OnceLock<SchemaCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Compiles the validators the helpers use. The first schema check of a process reads
/// and compiles the 140 KB schema: about 150 ms, 400-700 ms on a loaded 2-core machine,
/// and the cache's lock is held meanwhile. Done as a hub starts, that never lands in a
/// test's timed part (it did: between a hub's write and the test's read of it).
pub fn warm_schemas() {
    let mut cache = schema_cache().lock().unwrap_or_else(|p| p.into_inner());
    for def in ["ServerFrame", "ClientFrame", "Task", "HttpError"] {
        cache
            .entry(def.to_owned())
            .or_insert_with(|| validator(def));
    }
}

/// Panics unless `v` is valid against `$defs/<def>` of the protocol schema.
pub fn check_schema(def: &str, v: &Value) {
    let mut cache = schema_cache().lock().unwrap_or_else(|p| p.into_inner());
    let val = cache
        .entry(def.to_owned())
        .or_insert_with(|| validator(def));
    let errors: Vec<String> = val
        .iter_errors(v)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "frame does not match protocol schema {def}:\n{}\nerrors: {errors:#?}",
        serde_json::to_string_pretty(v).unwrap_or_default()
    );
}

/// A hub running in this process on a free loopback port.
pub struct TestHub {
    pub addr: SocketAddr,
    pub keys: Keys,
    running: Option<Running>,
}

/// A config with quick timers for real-time tests; `extra` is appended TOML.
pub fn config(extra: &str) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
allowed_origins = ["http://desk.example"]
queue_update_ms = 50
drain_secs = 2

[auth]
secret = "{SECRET}"

[routing]
{wrap}{extra}
"#,
        wrap = if extra.contains("wrap_up_secs") {
            ""
        } else {
            "wrap_up_secs = 0\n"
        }
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

pub const QUEUES_AND_AGENTS: &str = r#"
[[queues]]
id = "support"

[[queues]]
id = "vip"

[[agents]]
id = "ana"
name = "Ana Araújo"
skills = ["pt", "en"]
queues = ["support", "vip"]

[[agents]]
id = "bo"
name = "Bo Öberg"
skills = ["sv", "en"]
queues = ["support"]

[[agents]]
id = "dj"
name = "Đorđe Đorđević"
skills = ["sr", "en"]
queues = ["support"]
"#;

impl TestHub {
    /// Starts a hub with `config(extra)`; `extra` should hold `[routing]` keys first
    /// and then queues and agents.
    pub async fn start(extra: &str) -> TestHub {
        Self::start_with(config(extra)).await
    }

    pub async fn start_with(mut cfg: Config) -> TestHub {
        warm_schemas();
        // In memory unless the test chose a store: nothing may write a data directory
        // into the working tree.
        if cfg.store.kind.is_none() && cfg.store.redis.is_none() {
            cfg.store.kind = Some(switchboard::config::StoreKind::Memory);
        }
        let running = switchboard::server::start(cfg, SECRET.as_bytes())
            .await
            .expect("hub starts");
        TestHub {
            addr: running.addr,
            keys: Keys::new(SECRET.as_bytes()),
            running: Some(running),
        }
    }

    pub fn token(&self, sub: &str, role: Role) -> String {
        self.token_for(sub, role, 3600)
    }

    /// A token that ends `secs` seconds from now.
    pub fn token_for(&self, sub: &str, role: Role, secs: u64) -> String {
        self.keys.sign(&Claims {
            sub: sub.into(),
            role,
            exp: unix_now() + secs,
            name: None,
            skills: None,
            queues: None,
        })
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/v1/ws?access_token={token}", self.addr)
    }

    /// An agent desktop, connected and welcomed.
    pub async fn agent(&self, id: &str) -> Client {
        let mut c = Client::connect(&self.ws_url(&self.token(id, Role::Agent)))
            .await
            .unwrap_or_else(|e| panic!("agent {id} connects: {e}"));
        c.welcome = c.expect("welcome").await;
        c
    }

    /// An agent desktop, connected, welcomed and Ready.
    pub async fn ready_agent(&self, id: &str) -> Client {
        let mut c = self.agent(id).await;
        c.set_ready().await;
        c
    }

    /// A supervisor console, connected, with its snapshot read.
    pub async fn supervisor(&self) -> (Client, Value) {
        let mut c = Client::connect(&self.ws_url(&self.token("sup", Role::Supervisor)))
            .await
            .expect("supervisor connects");
        let snap = c.expect("snapshot").await;
        (c, snap)
    }

    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        http(self.addr, method, path, token, body, &[]).await
    }

    /// Creates a task as an integration; returns the task.
    pub async fn create(&self, body: Value) -> Value {
        let tok = self.token("crm", Role::Integration);
        let (status, v) = self
            .http("POST", "/v1/tasks", Some(&tok), Some(&body.to_string()))
            .await;
        assert_eq!(status, 201, "create answered {status}: {v}");
        check_schema("Task", &v);
        v
    }

    /// Creates a customer as an integration; returns the customer.
    pub async fn create_customer(&self, body: Value) -> Value {
        let tok = self.token("crm", Role::Integration);
        let (s, v) = self
            .http("POST", "/v1/customers", Some(&tok), Some(&body.to_string()))
            .await;
        assert_eq!(s, 201, "{v}");
        v["customer"].clone()
    }

    /// Changes a customer as an integration (`PATCH /v1/customers/{id}`); returns the
    /// customer view.
    pub async fn patch_customer(&self, id: &Value, base_version: Value, changes: Value) -> Value {
        let tok = self.token("crm", Role::Integration);
        let (s, v) = self
            .http(
                "PATCH",
                &format!("/v1/customers/{}", id.as_str().unwrap_or_default()),
                Some(&tok),
                Some(&json!({"base_version": base_version, "changes": changes}).to_string()),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    pub async fn task(&self, id: &str) -> Value {
        let tok = self.token("crm", Role::Integration);
        let (status, v) = self
            .http("GET", &format!("/v1/tasks/{id}"), Some(&tok), None)
            .await;
        assert_eq!(status, 200, "{v}");
        check_schema("Task", &v);
        v
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("http answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    let v = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    if status >= 400 && v.get("error").is_some() {
        check_schema("HttpError", &v);
    }
    (status, v)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A websocket client that checks every frame against the protocol schema.
pub struct Client {
    pub ws: Ws,
    pub welcome: Value,
    next_id: u64,
    buffered: VecDeque<Value>,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Client {
            ws,
            welcome: Value::Null,
            next_id: 0,
            buffered: VecDeque::new(),
        })
    }

    /// Connects with extra request headers.
    pub async fn connect_with(
        url: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            req.headers_mut()
                .insert(*k, v.parse().expect("header value"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Client {
            ws,
            welcome: Value::Null,
            next_id: 0,
            buffered: VecDeque::new(),
        })
    }

    /// Sends a request frame (checked against the client schema).
    pub async fn send(&mut self, v: Value) {
        check_schema("ClientFrame", &v);
        self.send_raw(Message::text(v.to_string())).await;
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// The next server frame, or None when the connection closed.
    pub async fn next_frame(&mut self) -> Option<Value> {
        if let Some(v) = self.buffered.pop_front() {
            return Some(v);
        }
        self.read_frame(WAIT).await
    }

    async fn read_frame(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let m = match tokio::time::timeout(wait, self.ws.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(_) => return None,
                Err(_) => panic!("no frame within {wait:?}; buffered: {:?}", self.buffered),
            };
            match m {
                Message::Text(t) => {
                    let v: Value =
                        serde_json::from_str(t.as_str()).expect("server frames are JSON");
                    check_schema("ServerFrame", &v);
                    return Some(v);
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Waits for the first frame of type `ty`; frames of other types are kept for later.
    pub async fn expect(&mut self, ty: &str) -> Value {
        if let Some(i) = self.buffered.iter().position(|v| v["type"] == ty) {
            return self.buffered.remove(i).expect("index");
        }
        loop {
            let v = self.read_frame(WAIT).await.unwrap_or_else(|| {
                panic!(
                    "connection closed while waiting for {ty}; buffered: {:?}",
                    self.buffered
                )
            });
            if v["type"] == ty {
                return v;
            }
            self.buffered.push_back(v);
        }
    }

    /// Waits for a `state` frame matching `pred`.
    pub async fn expect_state(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.expect("state").await;
            if pred(&v["agent"]) {
                return v["agent"].clone();
            }
        }
    }

    /// Asserts that no frame of type `ty` arrives within `d`.
    pub async fn expect_no(&mut self, ty: &str, d: Duration) {
        assert!(
            !self.buffered.iter().any(|v| v["type"] == ty),
            "unexpected {ty} (buffered): {:?}",
            self.buffered
        );
        let end = tokio::time::Instant::now() + d;
        while let Ok(r) = tokio::time::timeout_at(end, self.ws.next()).await {
            match r {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                    check_schema("ServerFrame", &v);
                    assert_ne!(v["type"], ty, "unexpected {ty}: {v}");
                    self.buffered.push_back(v);
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
    }

    /// Sends a request with a fresh id and returns its `reply` or `error` frame.
    pub async fn request(&mut self, v: Value) -> Value {
        self.request_checked(v, true).await
    }

    async fn request_checked(&mut self, mut v: Value, check: bool) -> Value {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        v["id"] = Value::String(id.clone());
        if check {
            self.send(v).await;
        } else {
            self.send_raw(Message::text(v.to_string())).await;
        }
        loop {
            if let Some(i) = self.buffered.iter().position(|f| f["re"] == id.as_str()) {
                return self.buffered.remove(i).expect("index");
            }
            let f = self.read_frame(WAIT).await.unwrap_or_else(|| {
                panic!("connection closed while waiting for the answer to {id}")
            });
            if f["re"] == id.as_str() && (f["type"] == "reply" || f["type"] == "error") {
                return f;
            }
            self.buffered.push_back(f);
        }
    }

    /// A request that must succeed; returns its result.
    pub async fn ok(&mut self, v: Value) -> Value {
        let r = self.request(v.clone()).await;
        assert_eq!(r["type"], "reply", "request {v} failed: {r}");
        r["result"].clone()
    }

    /// A request that must fail with `code`. It is not checked against the client
    /// schema: refusing what the schema forbids is what such tests are about.
    pub async fn err(&mut self, v: Value, code: &str) -> Value {
        let r = self.request_checked(v.clone(), false).await;
        assert_eq!(
            r["type"], "error",
            "request {v} should fail with {code}: {r}"
        );
        assert_eq!(r["code"], code, "{r}");
        r
    }

    pub async fn set_ready(&mut self) -> Value {
        self.ok(json!({"type": "set_state", "state": "ready"}))
            .await
    }

    /// Waits for an offer and accepts it; returns the task.
    pub async fn accept_next(&mut self) -> Value {
        let offer = self.expect("offer").await;
        let id = offer["offer"]["offer_id"].clone();
        let r = self.ok(json!({"type": "accept", "offer_id": id})).await;
        r["task"].clone()
    }

    pub async fn complete(&mut self, task_id: &Value) -> Value {
        self.ok(json!({"type": "complete", "task_id": task_id}))
            .await
    }

    /// Reads until the server closes; returns the goodbye reason and close code seen.
    pub async fn expect_closed(&mut self) -> (Option<String>, Option<u16>) {
        let mut reason = None;
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                    check_schema("ServerFrame", &v);
                    if v["type"] == "goodbye" {
                        reason = v["reason"].as_str().map(str::to_owned);
                    }
                }
                Ok(Some(Ok(Message::Close(f)))) => return (reason, f.map(|f| u16::from(f.code))),
                // A peer that did not read for a long time may find the socket gone
                // when it flushes its pending pongs: closed all the same.
                Ok(Some(Err(_))) => return (reason, None),
                Ok(Some(Ok(_))) => {}
                Ok(_) => return (reason, None),
                Err(_) => panic!("the server did not close within {WAIT:?}"),
            }
        }
    }
}

/// Waits until the supervisor sees `agent`'s desktop gone (`connected` false): the hub
/// has handled the drop, so a new connection is a reconnect in the grace period and not a
/// takeover of a connection it still thinks is open (both answer `resumed: true`).
pub async fn await_dropped(sup: &mut Client, agent: &str) {
    loop {
        let c = sup.expect("agent_changed").await;
        if c["agent"]["agent_id"] == agent && c["agent"]["connected"] == false {
            assert_ne!(c["agent"]["status"], "offline", "still in its grace: {c}");
            return;
        }
    }
}

/// A chat task for the support queue.
pub fn chat() -> Value {
    json!({"channel": "chat", "queue": "support"})
}

/// A counter or gauge from `/metrics` (the line `name value`; `name` may carry labels).
pub async fn metric(hub: &TestHub, name: &str) -> u64 {
    let (status, body) = hub.http("GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "{body}");
    let text = body.as_str().unwrap_or_default().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}
