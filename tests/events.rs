//! `GET /v1/events` through the real interface: a plain-TCP Server-Sent Events client
//! against a running hub (in process, the real binary on the file store, two nodes on
//! one real `redis-server`), websocket agents doing the work.

mod common;

use common::redis_server::RedisServer;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use switchboard::auth::{Claims, Keys, Role, unix_now};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::TcpStream;

fn events_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let read = |name: &str| -> Value {
            let p = format!("{}/protocol/v1/{name}", env!("CARGO_MANIFEST_DIR"));
            serde_json::from_str(&std::fs::read_to_string(&p).expect("schema file"))
                .expect("schema JSON")
        };
        let events = read("events.schema.json");
        let shared = events["$id"]
            .as_str()
            .expect("$id")
            .replace("events.schema.json", "schema.json");
        jsonschema::options()
            .with_resource(
                shared,
                jsonschema::Resource::from_contents(read("schema.json")).expect("resource"),
            )
            .build(&events)
            .expect("events schema compiles")
    })
}

/// One block of the stream.
#[derive(Debug, Default)]
struct Block {
    id: Option<u64>,
    event: Option<String>,
    data: Option<String>,
}

/// A Server-Sent Events client on a plain TCP connection (HTTP/1.1, chunked body).
struct Sse {
    r: TokioBufReader<TcpStream>,
    text: String,
}

/// What opening a stream gave: the stream, or the status and JSON body of a refusal.
enum Opened {
    Stream(Sse),
    Refused(u16, Value),
}

impl Opened {
    fn stream(self) -> Sse {
        match self {
            Opened::Stream(s) => s,
            Opened::Refused(status, v) => panic!("stream refused: {status} {v}"),
        }
    }
    fn refused(self) -> (u16, Value) {
        match self {
            Opened::Stream(_) => panic!("a stream where a refusal was expected"),
            Opened::Refused(status, v) => {
                check_schema("HttpError", &v);
                (status, v)
            }
        }
    }
}

impl Sse {
    async fn open(
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Opened {
        let s = TcpStream::connect(addr).await.expect("connect");
        Sse::open_on(s, addr, path, token, headers).await
    }

    async fn open_on(
        mut s: TcpStream,
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Opened {
        let mut req =
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n");
        if let Some(t) = token {
            req.push_str(&format!("authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut r = TokioBufReader::new(s);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, r.read_line(&mut line))
                .await
                .expect("head in time")
                .expect("read");
            assert!(n > 0, "closed before the head ended");
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let status: u16 = head[0]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let header = |name: &str| {
            head.iter()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
                .unwrap_or_default()
        };
        if status != 200 {
            let len: usize = header("content-length").parse().expect("a length");
            let mut body = vec![0; len];
            r.read_exact(&mut body).await.expect("body");
            return Opened::Refused(status, serde_json::from_slice(&body).expect("JSON"));
        }
        assert_eq!(header("content-type"), "text/event-stream");
        assert_eq!(header("transfer-encoding"), "chunked");
        Opened::Stream(Sse {
            r,
            text: String::new(),
        })
    }

    /// Reads one more chunk of the body; false at its end.
    async fn fill(&mut self, wait: Duration) -> bool {
        let mut size = String::new();
        let n = tokio::time::timeout(wait, self.r.read_line(&mut size))
            .await
            .expect("the stream went quiet")
            .expect("read");
        if n == 0 {
            return false;
        }
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        let mut chunk = vec![0; size + 2];
        self.r.read_exact(&mut chunk).await.expect("chunk");
        if size == 0 {
            return false;
        }
        chunk.truncate(size);
        self.text
            .push_str(&String::from_utf8(chunk).expect("UTF-8"));
        true
    }

    /// The next block (events, comments, id-only), or `None` at the end of the stream.
    async fn block(&mut self, wait: Duration) -> Option<(Block, Vec<String>)> {
        loop {
            if let Some(i) = self.text.find("\n\n") {
                let raw: String = self.text.drain(..i + 2).collect();
                let mut b = Block::default();
                let mut comments = Vec::new();
                for line in raw.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        comments.push(c.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        b.id = Some(v.parse().expect("a numeric id"));
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        b.event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        b.data = Some(v.to_owned());
                    }
                }
                return Some((b, comments));
            }
            if !self.fill(wait).await {
                return None;
            }
        }
    }

    /// The next event envelope, checked against the schema and its SSE fields.
    async fn event(&mut self) -> Value {
        loop {
            let (b, _) = self.block(WAIT).await.expect("the stream ended");
            let Some(data) = b.data else { continue };
            let v: Value = serde_json::from_str(&data).expect("data is JSON");
            if b.event.as_deref() == Some("cutoff") {
                panic!("cut off: {v}");
            }
            let errors: Vec<String> = events_validator()
                .iter_errors(&v)
                .map(|e| format!("{e} at {}", e.instance_path))
                .collect();
            assert!(errors.is_empty(), "{v}\n{errors:#?}");
            assert_eq!(b.id, v["seq"].as_u64(), "id: is the seq");
            assert_eq!(b.event.as_deref(), v["type"].as_str(), "event: is the type");
            return v;
        }
    }

    /// The events of the next chunk of the body (one write of the hub's), with when it
    /// came.
    async fn chunk(&mut self) -> (std::time::Instant, Vec<Value>) {
        assert!(self.fill(WAIT).await, "the stream ended");
        let at = std::time::Instant::now();
        let mut got = Vec::new();
        while self.text.contains("\n\n") {
            let (b, _) = self.block(WAIT).await.expect("a block");
            if let Some(data) = b.data {
                got.push(serde_json::from_str(&data).expect("data is JSON"));
            }
        }
        (at, got)
    }

    /// Events until one satisfies `until` (included).
    async fn events_until(&mut self, until: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.event().await;
            let done = until(&v);
            out.push(v);
            if done {
                return out;
            }
        }
    }
}

fn seqs(v: &[Value]) -> Vec<u64> {
    v.iter().filter_map(|e| e["seq"].as_u64()).collect()
}

fn of_task<'a>(v: &'a [Value], task_id: &Value) -> Vec<&'a str> {
    v.iter()
        .filter(|e| e["data"]["task_id"] == *task_id || e["data"]["task"]["task_id"] == *task_id)
        .filter_map(|e| e["type"].as_str())
        .collect()
}

fn is<'a>(ty: &'static str, task_id: &'a Value) -> impl Fn(&Value) -> bool + 'a {
    move |e: &Value| {
        e["type"] == ty
            && (e["data"]["task_id"] == *task_id || e["data"]["task"]["task_id"] == *task_id)
    }
}

#[tokio::test]
async fn a_task_worked_by_a_websocket_agent_is_told_in_order() {
    let hub = TestHub::start(QUEUES_AND_AGENTS).await;
    let tok = hub.token("crm", Role::Integration);
    let mut sse = Sse::open(hub.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .stream();
    let mut ana = hub.ready_agent("ana").await;
    let task = hub.create(chat()).await;
    let id = task["task_id"].clone();
    ana.accept_next().await;
    ana.complete(&id).await;
    let seen = sse.events_until(is("task.completed", &id)).await;
    assert_eq!(seqs(&seen), (1..=seen.len() as u64).collect::<Vec<_>>());
    let types: Vec<&str> = seen.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        &types[..3],
        [
            "agent.logged_in",
            "agent.state_changed",
            "agent.state_changed"
        ]
    );
    assert_eq!(
        of_task(&seen, &id),
        [
            "task.created",
            "task.queued",
            "task.offered",
            "offer.accepted",
            "task.assigned",
            "activity.created",
            "task.completed"
        ]
    );
    let offered = seen
        .iter()
        .find(|e| e["type"] == "task.offered")
        .expect("offered");
    assert_eq!(offered["data"]["agent_id"], "ana");
    // Every event of one decision has that decision's time; ids carry the epoch.
    let epoch = seen[0]["epoch"].as_str().expect("epoch").to_owned();
    assert!(
        seen.iter()
            .all(|e| e["id"] == format!("{epoch}-{}", e["seq"]))
    );
    // The agent's status changes come with their previous status.
    let busy = seen
        .iter()
        .find(|e| e["type"] == "agent.state_changed" && e["data"]["status"] == "busy")
        .expect("busy");
    assert_eq!(busy["data"]["previous"], "reserved");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_dropped_reader_resumes_with_last_event_id_without_gap_or_repeat() {
    let hub = TestHub::start(QUEUES_AND_AGENTS).await;
    let tok = hub.token("crm", Role::Integration);
    let mut sse = Sse::open(hub.addr, "/v1/events", Some(&tok), &[])
        .await
        .stream();
    // Without a position the stream starts with what happens next.
    let first = hub.create(chat()).await;
    let got = sse
        .events_until(|e| e["type"] == "task.queued" && e["data"]["task_id"] == first["task_id"])
        .await;
    assert_eq!(got[0]["type"], "task.created");
    let last = got.last().and_then(|e| e["seq"].as_u64()).expect("seq");
    drop(sse);
    // Meanwhile: more tasks, an agent working one of them.
    let mut bo = hub.ready_agent("bo").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(hub.create(chat()).await["task_id"].clone());
    }
    bo.accept_next().await;
    let last_id = ids.last().cloned().expect("ids");
    let mut sse = Sse::open(
        hub.addr,
        "/v1/events?since=1",
        Some(&tok),
        &[("last-event-id", &last.to_string())],
    )
    .await
    .stream();
    let got = sse
        .events_until(|e| e["type"] == "task.queued" && e["data"]["task_id"] == last_id)
        .await;
    assert_eq!(
        seqs(&got),
        (last + 1..=last + got.len() as u64).collect::<Vec<_>>(),
        "Last-Event-ID wins over since; every event after it, once"
    );
    // And then live ones, still without a gap.
    let more = hub.create(chat()).await;
    let live = sse.events_until(is("task.queued", &more["task_id"])).await;
    let end = got.last().and_then(|e| e["seq"].as_u64()).expect("seq");
    assert_eq!(seqs(&live)[0], end + 1);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_position_older_than_the_window_or_another_epoch_answers_410() {
    let hub = TestHub::start(&format!("[events]\nretain_count = 5\n{QUEUES_AND_AGENTS}")).await;
    let tok = hub.token("crm", Role::Integration);
    for _ in 0..3 {
        hub.create(chat()).await; // two events each
    }
    let (status, v) = Sse::open(hub.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .refused();
    assert_eq!(status, 410);
    assert_eq!(v["error"]["code"], "events_gone");
    assert_eq!(v["error"]["oldest_seq"], 2);
    let epoch = v["error"]["epoch"].as_str().expect("epoch").to_owned();
    // From the oldest held on, it is served.
    let mut sse = Sse::open(hub.addr, "/v1/events?since=1", Some(&tok), &[])
        .await
        .stream();
    assert_eq!(sse.event().await["seq"], 2);
    let ok = format!("/v1/events?since=1&epoch={epoch}");
    let mut sse = Sse::open(hub.addr, &ok, Some(&tok), &[]).await.stream();
    assert_eq!(sse.event().await["epoch"], epoch.as_str());
    let (status, v) = Sse::open(
        hub.addr,
        "/v1/events?since=3&epoch=0badc0ffee00",
        Some(&tok),
        &[],
    )
    .await
    .refused();
    assert_eq!(status, 410);
    assert_eq!(v["error"]["epoch"], epoch.as_str());
    let (status, v) = Sse::open(hub.addr, "/v1/events?since=x", Some(&tok), &[])
        .await
        .refused();
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("since")));
    hub.shutdown().await;
}

#[tokio::test]
async fn a_type_filter_gives_only_those_types_and_unknown_types_are_refused() {
    let hub = TestHub::start(QUEUES_AND_AGENTS).await;
    let tok = hub.token("sup", Role::Supervisor);
    let mut sse = Sse::open(
        hub.addr,
        "/v1/events?since=0&types=task.offered,agent.*",
        Some(&tok),
        &[],
    )
    .await
    .stream();
    let mut ana = hub.ready_agent("ana").await;
    let task = hub.create(chat()).await;
    ana.accept_next().await;
    let got = sse
        .events_until(|e| e["type"] == "agent.state_changed" && e["data"]["status"] == "busy")
        .await;
    let types: Vec<&str> = got.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "agent.logged_in",
            "agent.state_changed",
            "agent.state_changed",
            "task.offered",
            "agent.state_changed",
            "agent.state_changed"
        ]
    );
    assert_eq!(got[3]["data"]["task_id"], task["task_id"]);
    for bad in ["task.offerd", "tasks.*"] {
        let (status, v) = Sse::open(
            hub.addr,
            &format!("/v1/events?types={bad}"),
            Some(&tok),
            &[],
        )
        .await
        .refused();
        assert_eq!(status, 400, "{bad}");
        assert_eq!(v["error"]["code"], "invalid_field");
        assert_eq!(v["error"]["field"], "types");
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn a_filtered_reader_resuming_gets_the_held_events_of_its_types_past_the_others_at_once() {
    // Held events of other types, several in a row, before the one asked for, and no
    // new ones while the reader catches up (no agent: the tasks only wait).
    let hub = TestHub::start(QUEUES_AND_AGENTS).await;
    let tok = hub.token("sup", Role::Supervisor);
    let crm = hub.token("crm", Role::Integration);
    let a = hub.create(chat()).await;
    let b = hub.create(chat()).await;
    let path = format!(
        "/v1/tasks/{}/cancel",
        a["task_id"].as_str().unwrap_or_default()
    );
    let (st, v) = hub
        .http(
            "POST",
            &path,
            Some(&crm),
            Some(r#"{"reason":"caller hung up"}"#),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let mut sse = Sse::open(
        hub.addr,
        "/v1/events?since=0&types=task.cancelled",
        Some(&tok),
        &[],
    )
    .await
    .stream();
    // Within the wait, not a keep-alive (15 s) for each event passed over.
    let got = sse.event().await;
    assert_eq!(
        (got["type"].as_str(), &got["data"]["task_id"]),
        (Some("task.cancelled"), &a["task_id"])
    );
    assert_eq!(
        got["seq"], 5,
        "after task.created and task.queued of both tasks"
    );
    let _ = b;
    hub.shutdown().await;
}

#[tokio::test]
async fn an_agent_token_is_refused_and_no_token_is_unauthorized() {
    let hub = TestHub::start(QUEUES_AND_AGENTS).await;
    let tok = hub.token("ana", Role::Agent);
    let (status, v) = Sse::open(hub.addr, "/v1/events", Some(&tok), &[])
        .await
        .refused();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, v) = Sse::open(hub.addr, "/v1/events", None, &[]).await.refused();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    hub.shutdown().await;
}

/// A hub with this `[events]` setting, and a stream opened on it past its hello.
async fn hub_and_stream(setting: &str) -> (TestHub, Sse) {
    let hub = TestHub::start(&format!("[events]\n{setting}\n{QUEUES_AND_AGENTS}")).await;
    let tok = hub.token("crm", Role::Integration);
    let mut sse = Sse::open(hub.addr, "/v1/events", Some(&tok), &[])
        .await
        .stream();
    let (_, hello) = sse.block(WAIT).await.expect("hello");
    assert!(hello.iter().any(|c| c.starts_with("epoch")), "{hello:?}");
    (hub, sse)
}

#[tokio::test]
async fn a_lone_event_goes_at_once_and_those_within_the_linger_in_one_write() {
    let (hub, mut sse) = hub_and_stream("stream_linger_ms = 1000").await;
    // The stream was quiet: the first task's events are written without waiting.
    let asked = std::time::Instant::now();
    let first = hub.create(chat()).await;
    let (at, got) = sse.chunk().await;
    assert!(
        at - asked < Duration::from_millis(500),
        "a lone event waited {:?} (the linger is 1 s)",
        at - asked
    );
    assert_eq!(got[0]["type"], "task.created");
    assert_eq!(got[0]["data"]["task"]["task_id"], first["task_id"]);
    // Within the linger: four more tasks, whose events wait for its end and go in one
    // write with whatever of the first task's was not in the first.
    let mut last = Value::Null;
    for _ in 0..4 {
        last = hub.create(chat()).await["task_id"].clone();
    }
    let (then, rest) = sse.chunk().await;
    assert!(
        then - at >= Duration::from_millis(700),
        "the next write came {:?} after the first (the linger is 1 s)",
        then - at
    );
    let created = rest.iter().filter(|e| e["type"] == "task.created").count();
    assert_eq!(
        created, 4,
        "every task made within the linger, in one write: {rest:?}"
    );
    assert!(rest.iter().any(is("task.queued", &last)), "{rest:?}");
    let all: Vec<Value> = got.into_iter().chain(rest).collect();
    let s = seqs(&all);
    assert_eq!(
        s,
        (s[0]..s[0] + s.len() as u64).collect::<Vec<_>>(),
        "no gap"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alives_and_a_drain_ends_it_with_a_reason() {
    let (hub, mut sse) = hub_and_stream("keepalive_secs = 1").await;
    let (b, comments) = sse.block(WAIT).await.expect("a keep-alive");
    assert!(b.data.is_none());
    assert_eq!(comments, ["keep-alive"]);
    hub.shutdown().await;
    let (b, _) = sse.block(WAIT).await.expect("the last block");
    assert_eq!(b.event.as_deref(), Some("cutoff"));
    let v: Value = serde_json::from_str(&b.data.expect("data")).expect("JSON");
    assert_eq!(v["reason"], "shutting_down");
    assert!(sse.block(WAIT).await.is_none(), "then the stream ends");
}

/// A drain ends a reader still catching up at its next write, with the reason, rather
/// than once it has read the whole window: such a reader always has events ready, so
/// the wait that notices the drain for a reader at the head is never reached.
#[tokio::test]
async fn a_drain_ends_a_reader_catching_up_at_its_next_write() {
    let hub = TestHub::start(QUEUES_AND_AGENTS).await;
    // A window far larger than what the sockets between hub and reader hold: 400
    // tasks of 12 KB of attributes each.
    let big = json!("x".repeat(1_500));
    let attributes: serde_json::Map<String, Value> =
        (0..8).map(|i| (format!("a{i}"), big.clone())).collect();
    for _ in 0..400 {
        hub.create(json!({"channel": "chat", "queue": "support", "attributes": attributes}))
            .await;
    }
    let tok = hub.token("crm", Role::Integration);
    // Where the window ends: a stream opened with no position starts there.
    let mut tail = Sse::open(hub.addr, "/v1/events", Some(&tok), &[])
        .await
        .stream();
    let (_, hello) = tail.block(WAIT).await.expect("hello");
    let head: u64 = hello
        .iter()
        .find_map(|c| c.strip_prefix("epoch ")?.rsplit(' ').next()?.parse().ok())
        .expect("the hello names the head");
    drop(tail);
    // A reader from the start, reading nothing yet.
    let mut sse = Sse::open(hub.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .stream();
    let addr = hub.addr;
    let stop = tokio::spawn(hub.shutdown());
    // The drain began: `/readyz` answers 503, or the listener is closed.
    let ready = || async {
        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
            return false;
        };
        let ask = b"GET /readyz HTTP/1.1\r\nhost: hub\r\nconnection: close\r\n\r\n";
        let mut answer = Vec::new();
        s.write_all(ask).await.is_ok()
            && s.read_to_end(&mut answer).await.is_ok()
            && answer.starts_with(b"HTTP/1.1 200")
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while ready().await {
        assert!(tokio::time::Instant::now() < deadline, "no drain began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Now it reads: the end, with its reason, well before the window's end.
    let mut last = 0;
    let cutoff = loop {
        let (b, _) = sse
            .block(WAIT)
            .await
            .expect("cut off before the stream ended");
        if b.event.as_deref() == Some("cutoff") {
            break b;
        }
        last = b.id.unwrap_or(last);
    };
    let v: Value = serde_json::from_str(&cutoff.data.expect("data")).expect("JSON");
    assert_eq!(v["reason"], "shutting_down");
    assert!(
        last < head,
        "the reader got the whole window ({last} of {head}) before the drain ended it"
    );
    stop.await.expect("the hub stopped");
}

/// A stream ends when its token expires, as a desktop's session does: the events carry
/// customers' names and contacts. Before, a stream opened once went on for ever.
#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let hub = TestHub::start(&format!(
        "[events]\nkeepalive_secs = 1\n{QUEUES_AND_AGENTS}"
    ))
    .await;
    let tok = hub.token_for("crm", Role::Integration, 2);
    let mut sse = Sse::open(hub.addr, "/v1/events", Some(&tok), &[])
        .await
        .stream();
    let task = hub.create(chat()).await;
    let v = sse.event().await;
    assert_eq!(v["data"]["task"]["task_id"], task["task_id"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let cutoff = loop {
        let (b, _) = sse.block(WAIT).await.expect("cut off before the end");
        if b.event.as_deref() == Some("cutoff") {
            break b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still streaming 6 s after the token expired"
        );
    };
    let v: Value = serde_json::from_str(&cutoff.data.expect("data")).expect("JSON");
    assert_eq!(v["reason"], "token_expired");
    assert!(sse.block(WAIT).await.is_none(), "then the stream ends");
    hub.shutdown().await;
}

/// A filtered reader cut off names, as its last position, the last event it passed
/// over, not the last it was sent: it resumes past the events it did not want, which
/// the window may no longer hold.
#[tokio::test]
async fn a_filtered_reader_cut_off_resumes_past_what_it_passed_over() {
    // No keep-alive before the token's end (a keep-alive also carries the position).
    let hub = TestHub::start(&format!(
        "[events]\nkeepalive_secs = 60\n{QUEUES_AND_AGENTS}"
    ))
    .await;
    let tok = hub.token_for("crm", Role::Integration, 2);
    let mut sse = Sse::open(
        hub.addr,
        "/v1/events?types=agent.logged_out",
        Some(&tok),
        &[],
    )
    .await
    .stream();
    // Events the reader does not want: a task created and queued.
    let task = hub.create(chat()).await;
    let mut all = Sse::open(
        hub.addr,
        "/v1/events?since=0",
        Some(&hub.token("crm", Role::Integration)),
        &[],
    )
    .await
    .stream();
    let last = all.events_until(is("task.queued", &task["task_id"])).await;
    let last = last.last().and_then(|e| e["seq"].as_u64()).expect("seq");
    let mut position = None;
    let cutoff = loop {
        let (b, _) = sse.block(WAIT).await.expect("cut off before the end");
        if b.event.as_deref() == Some("cutoff") {
            break b;
        }
        position = b.id.or(position);
    };
    let v: Value = serde_json::from_str(&cutoff.data.expect("data")).expect("JSON");
    assert_eq!(v["reason"], "token_expired");
    assert_eq!(v["last_seq"], last, "{v}");
    assert_eq!(position, Some(last), "the position the reader holds");
    hub.shutdown().await;
}

/// A reader on a socket that takes almost nothing (`rcvbuf` 1 KiB), from the first
/// event; then enough tasks (about 50 KB of attributes each) to fill the socket
/// buffers (the hub's send buffer grows up to the kernel's tcp_wmem maximum) and more:
/// the hub's reader stops at its write, far behind the live events. Returns the stream
/// and the last task.
async fn a_stuck_reader_and_many_big_tasks(hub: &TestHub, tok: &str) -> (Sse, Value) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(1024).expect("rcvbuf");
    let s = socket.connect(hub.addr).await.expect("connect");
    let slow = Sse::open_on(s, hub.addr, "/v1/events?since=0", Some(tok), &[])
        .await
        .stream();
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .unwrap_or(4 << 20);
    let tasks = (wmem_max + (4 << 20)) / 50_000 + 40;
    let attrs: serde_json::Map<String, Value> = (0..25)
        .map(|i| (format!("k{i}"), Value::String("x".repeat(2000))))
        .collect();
    let attrs = Value::Object(attrs);
    let mut last_task = Value::Null;
    for _ in 0..tasks {
        let mut body = chat();
        body["attributes"] = attrs.clone();
        last_task = hub.create(body).await["task_id"].clone();
    }
    (slow, last_task)
}

/// Reads blocks until the stream's `cutoff` (returned) or the `task.queued` of
/// `last_task` (then `None`), checking that the ids have no gap.
async fn read_dense(sse: &mut Sse, last_task: &Value, last_seq: &mut u64) -> Option<Value> {
    loop {
        let (b, _) = sse.block(WAIT).await.expect("the stream ended");
        let Some(data) = b.data else { continue };
        let v: Value = serde_json::from_str(&data).expect("JSON");
        if b.event.as_deref() == Some("cutoff") {
            return Some(v);
        }
        if let Some(id) = b.id {
            assert_eq!(id, *last_seq + 1, "no gap");
            *last_seq = id;
        }
        if is("task.queued", last_task)(&v) {
            return None;
        }
    }
}

/// A reader far behind the live events (more than `stream_buffer` of them) reads on
/// from the window, every event in order, and is not cut off: the window holds its
/// position, and it holds no queue of its own to bound.
#[tokio::test]
async fn a_reader_behind_the_live_events_reads_on_from_the_window_without_a_cut() {
    let hub = TestHub::start(&format!(
        "[events]\nstream_buffer = 16\n{QUEUES_AND_AGENTS}"
    ))
    .await;
    let tok = hub.token("crm", Role::Integration);
    let (mut slow, last_task) = a_stuck_reader_and_many_big_tasks(&hub, &tok).await;
    let mut last_seq = 0;
    let cut = read_dense(&mut slow, &last_task, &mut last_seq).await;
    assert_eq!(cut, None, "read to the last task's events without a cutoff");
    // And on, live.
    let next = hub.create(chat()).await;
    let got = slow.events_until(is("task.queued", &next["task_id"])).await;
    assert_eq!(seqs(&got)[0], last_seq + 1);
    hub.shutdown().await;
}

/// A reader whose position the window no longer holds (it was stuck while more events
/// came than the window keeps) is cut off with `slow_reader` and the last id it got,
/// without a gap before; resuming from it answers 410 with the oldest event held.
#[tokio::test]
async fn a_reader_whose_position_left_the_window_is_cut_off_and_resumes_with_a_410() {
    let hub = TestHub::start(&format!(
        "[events]\nstream_buffer = 16\nretain_count = 40\n{QUEUES_AND_AGENTS}"
    ))
    .await;
    let tok = hub.token("crm", Role::Integration);
    let (mut slow, last_task) = a_stuck_reader_and_many_big_tasks(&hub, &tok).await;
    let mut last_seq = 0;
    let cut = read_dense(&mut slow, &last_task, &mut last_seq)
        .await
        .expect("a cutoff before the last task's events");
    assert_eq!(cut["reason"], "slow_reader");
    assert_eq!(cut["last_seq"], last_seq);
    assert!(slow.block(WAIT).await.is_none(), "then the stream ends");
    let (status, v) = Sse::open(
        hub.addr,
        "/v1/events",
        Some(&tok),
        &[("last-event-id", &last_seq.to_string())],
    )
    .await
    .refused();
    assert_eq!(
        (status, &v["error"]["code"]),
        (410, &json!("events_gone")),
        "{v}"
    );
    assert!(
        v["error"]["oldest_seq"].as_u64() > Some(last_seq + 1),
        "{v}"
    );
    hub.shutdown().await;
}

// ---- The file store, through the real binary ----

const SECRET_BIN: &str = SECRET;

struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&std::ffi::OsStr]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
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
    std::thread::spawn(move || for _ in lines {});
    Proc { child, addr }
}

fn write_config(dir: &Path) -> PathBuf {
    let p = dir.join("hub.toml");
    std::fs::write(
        &p,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndrain_secs = 1\n[auth]\nsecret = \"{SECRET_BIN}\"\n[routing]\nwrap_up_secs = 0\n[store]\nsnapshot_every = 7\n{QUEUES_AND_AGENTS}"
        ),
    )
    .expect("config");
    p
}

fn token(sub: &str, role: Role) -> String {
    Keys::new(SECRET_BIN.as_bytes()).sign(&Claims {
        sub: sub.into(),
        role,
        exp: unix_now() + 600,
        name: None,
        skills: None,
        queues: None,
    })
}

async fn post_task(addr: SocketAddr) -> Value {
    let (status, v) = http(
        addr,
        "POST",
        "/v1/tasks",
        Some(&token("crm", Role::Integration)),
        Some(&chat().to_string()),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{v}");
    v
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn after_a_restart_of_the_file_store_the_numbering_goes_on_and_the_window_is_kept() {
    let dir = TempDir(std::env::temp_dir().join(format!("sb-events-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let cfg = write_config(&dir.0);
    let data = dir.0.join("data");
    let args = [
        std::ffi::OsStr::new("--config"),
        cfg.as_os_str(),
        std::ffi::OsStr::new("--data-dir"),
        data.as_os_str(),
    ];
    let tok = token("crm", Role::Integration);
    let hub = spawn(&args);
    let mut sse = Sse::open(hub.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .stream();
    // Enough decisions for a snapshot (every 7 entries) and a log after it.
    let mut last_task = Value::Null;
    for _ in 0..10 {
        last_task = post_task(hub.addr).await["task_id"].clone();
    }
    let before = sse.events_until(is("task.queued", &last_task)).await;
    let last = before.last().and_then(|e| e["seq"].as_u64()).expect("seq");
    drop(sse);
    drop(hub); // kill -9
    let hub = spawn(&args);
    // Every event before the restart is still served, the same.
    let mut sse = Sse::open(hub.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .stream();
    let again = sse.events_until(|e| e["seq"].as_u64() == Some(last)).await;
    assert_eq!(again, before);
    // A reader resuming from its last event gets what came after, numbered on.
    let mut sse = Sse::open(
        hub.addr,
        "/v1/events",
        Some(&tok),
        &[("last-event-id", &last.to_string())],
    )
    .await
    .stream();
    let next = post_task(hub.addr).await;
    let after = sse.events_until(is("task.queued", &next["task_id"])).await;
    assert_eq!(after[0]["seq"], last + 1);
    assert_eq!(after[0]["epoch"], before[0]["epoch"]);
    // A new data directory is a new history: another epoch.
    let other = dir.0.join("other");
    let args2 = [
        std::ffi::OsStr::new("--config"),
        cfg.as_os_str(),
        std::ffi::OsStr::new("--data-dir"),
        other.as_os_str(),
    ];
    let hub2 = spawn(&args2);
    let mut sse = Sse::open(hub2.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .stream();
    post_task(hub2.addr).await;
    let e = sse.event().await;
    assert_eq!(e["seq"], 1);
    assert_ne!(e["epoch"], before[0]["epoch"]);
}

/// A backup copy started on its own forks the history: the original went on writing
/// events the copy's new ones would number alike. The copy's events get a new epoch,
/// so a reader of the original is told to resynchronize (410) instead of being served
/// new events under ids it already holds, and skipping those it has not.
#[tokio::test]
async fn a_hub_started_from_a_backup_copy_numbers_its_events_in_a_new_epoch() {
    let dir = TempDir(std::env::temp_dir().join(format!("sb-events-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let cfg = write_config(&dir.0);
    let data = dir.0.join("data");
    let copy = dir.0.join("copy");
    let args = |d: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "--config".into(),
            cfg.clone().into_os_string(),
            "--data-dir".into(),
            d.to_path_buf().into_os_string(),
        ]
    };
    let (a_data, a_copy) = (args(&data), args(&copy));
    let start =
        |a: &[std::ffi::OsString]| spawn(&a.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    let tok = token("crm", Role::Integration);
    let hub = start(&a_data);
    let mut sse = Sse::open(hub.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .stream();
    let mut t = post_task(hub.addr).await["task_id"].clone();
    let at_copy = sse.events_until(is("task.queued", &t)).await;
    let (epoch, copied) = (
        at_copy[0]["epoch"].clone(),
        at_copy.last().and_then(|e| e["seq"].as_u64()).expect("seq"),
    );
    // The copy, taken while the hub runs.
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("backup")
        .arg(&copy)
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
    // The original goes on: a reader holds events past the copy.
    for _ in 0..2 {
        t = post_task(hub.addr).await["task_id"].clone();
    }
    let held = sse
        .events_until(is("task.queued", &t))
        .await
        .last()
        .and_then(|e| e["seq"].as_u64())
        .expect("seq");
    assert!(held > copied);
    drop(sse);
    drop(hub);
    // The copy started on its own, and taken further than the reader's position.
    let hub = start(&a_copy);
    let mut sse = Sse::open(hub.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .stream();
    for _ in 0..3 {
        t = post_task(hub.addr).await["task_id"].clone();
    }
    let now = sse.events_until(is("task.queued", &t)).await;
    assert!(now.last().and_then(|e| e["seq"].as_u64()) > Some(held));
    // What the copy holds is what the original had at the copy, under a new epoch;
    // the numbering goes on from there.
    let new_epoch = now[0]["epoch"].clone();
    assert_ne!(new_epoch, epoch, "the copy kept the original's epoch");
    assert!(now.iter().all(|e| e["epoch"] == new_epoch));
    for (a, b) in at_copy.iter().zip(&now) {
        assert_eq!(
            (&a["seq"], &a["type"], &a["data"]),
            (&b["seq"], &b["type"], &b["data"])
        );
    }
    assert_eq!(now[at_copy.len()]["seq"], copied + 1);
    // The original's reader, resuming: its history is gone.
    let (status, v) = Sse::open(
        hub.addr,
        &format!("/v1/events?epoch={}", epoch.as_str().unwrap_or_default()),
        Some(&tok),
        &[("last-event-id", &held.to_string())],
    )
    .await
    .refused();
    assert_eq!(
        (status, &v["error"]["code"], &v["error"]["epoch"]),
        (410, &json!("events_gone"), &new_epoch),
        "{v}"
    );
    // The marker is gone, and the epoch stays across a restart of the copy.
    assert!(!copy.join("new-history").exists());
    drop(sse);
    drop(hub);
    let hub = start(&a_copy);
    let mut sse = Sse::open(hub.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .stream();
    assert_eq!(sse.event().await["epoch"], new_epoch);
}

// ---- Two nodes on one redis-server ----

fn node(redis: &RedisServer, id: &str, dir: &Path) -> Proc {
    let cfg = dir.join(format!("{id}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndrain_secs = 1\n[auth]\nsecret = \"{SECRET_BIN}\"\n[routing]\nwrap_up_secs = 0\n[store]\nsnapshot_every = 10\n{QUEUES_AND_AGENTS}"
        ),
    )
    .expect("config");
    let url = redis.url();
    spawn(&[
        std::ffi::OsStr::new("--config"),
        cfg.as_os_str(),
        std::ffi::OsStr::new("--redis"),
        std::ffi::OsStr::new(&url),
        std::ffi::OsStr::new("--node-id"),
        std::ffi::OsStr::new(id),
    ])
}

async fn agent_on(addr: SocketAddr, id: &str) -> Client {
    let url = format!("ws://{addr}/v1/ws?access_token={}", token(id, Role::Agent));
    let mut c = Client::connect(&url).await.expect("agent connects");
    c.welcome = c.expect("welcome").await;
    c.set_ready().await;
    c
}

#[tokio::test]
async fn two_nodes_on_one_redis_serve_the_same_stream() {
    let redis = RedisServer::start();
    let dir = TempDir(std::env::temp_dir().join(format!("sb-events-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let a = node(&redis, "node-a", &dir.0);
    let b = node(&redis, "node-b", &dir.0);
    let tok = token("crm", Role::Integration);
    let mut from_a = Sse::open(a.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .stream();
    let mut from_b = Sse::open(b.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .stream();
    // A mixed run: agents on both nodes, tasks created on both, accepted, completed,
    // one declined.
    let mut ana = agent_on(a.addr, "ana").await;
    let mut bo = agent_on(b.addr, "bo").await;
    for i in 0..6 {
        let on = if i % 2 == 0 { a.addr } else { b.addr };
        let t = post_task(on).await;
        // The reply already shows whom it is offered to.
        let (first, second) = match t["agent_id"].as_str() {
            Some("ana") => (&mut ana, &mut bo),
            Some("bo") => (&mut bo, &mut ana),
            other => panic!("offered to {other:?}: {t}"),
        };
        let offer = first.expect("offer").await;
        let who = if i == 3 {
            // Declined: it goes to the other agent.
            first
                .ok(json!({"type": "decline", "offer_id": offer["offer"]["offer_id"]}))
                .await;
            second.accept_next().await;
            second
        } else {
            first
                .ok(json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}))
                .await;
            first
        };
        who.complete(&t["task_id"]).await;
    }
    // A last task marks the end of the run on both streams.
    let end = post_task(a.addr).await;
    let on_a = from_a
        .events_until(is("task.created", &end["task_id"]))
        .await;
    let on_b = from_b
        .events_until(is("task.created", &end["task_id"]))
        .await;
    assert!(on_a.len() > 40, "a real run: {} events", on_a.len());
    assert_eq!(on_a, on_b, "the same ids, types and data from both nodes");
    assert_eq!(seqs(&on_a), (1..=on_a.len() as u64).collect::<Vec<_>>());
    // A node that joins now starts from the snapshot (one every 10 entries) and the
    // log after it: it holds the same window.
    let c = node(&redis, "node-c", &dir.0);
    let mut from_c = Sse::open(c.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .stream();
    let on_c = from_c
        .events_until(is("task.created", &end["task_id"]))
        .await;
    assert_eq!(on_c, on_a, "a joining node serves the same events");
    // And the numbering goes on alike everywhere.
    let next = post_task(c.addr).await;
    let a_next = from_a
        .events_until(is("task.created", &next["task_id"]))
        .await;
    let c_next = from_c
        .events_until(is("task.created", &next["task_id"]))
        .await;
    assert_eq!(a_next, c_next);
}

#[tokio::test]
async fn a_position_past_the_newest_event_is_from_another_history_and_answers_410() {
    // A reader that read up to 40 in a history this hub does not have (it started
    // again, in memory): waiting for this one to pass 40 would skip its first 40.
    let hub = TestHub::start(QUEUES_AND_AGENTS).await;
    let tok = hub.token("crm", Role::Integration);
    hub.create(chat()).await;
    let (status, v) = Sse::open(hub.addr, "/v1/events?since=40", Some(&tok), &[])
        .await
        .refused();
    assert_eq!(
        (status, &v["error"]["code"]),
        (410, &json!("events_gone")),
        "{v}"
    );
    assert_eq!(v["error"]["oldest_seq"], 1, "{v}");
    let (status, _) = Sse::open(
        hub.addr,
        "/v1/events",
        Some(&tok),
        &[("last-event-id", "40")],
    )
    .await
    .refused();
    assert_eq!(status, 410);
    // Its own positions are served (the task made events 1 and 2).
    let mut sse = Sse::open(hub.addr, "/v1/events?since=1", Some(&tok), &[])
        .await
        .stream();
    assert_eq!(sse.event().await["seq"], 2);
    hub.shutdown().await;
}

#[tokio::test]
async fn events_past_the_age_limit_are_not_served_by_a_quiet_hub() {
    let hub = TestHub::start(&format!("[events]\nretain_secs = 1\n{QUEUES_AND_AGENTS}")).await;
    let tok = hub.token("crm", Role::Integration);
    hub.create(chat()).await; // events 1 and 2
    let mut sse = Sse::open(hub.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .stream();
    assert_eq!(sse.event().await["seq"], 1);
    // The age limit passes with nothing new recorded (what used to drop them).
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let (status, v) = Sse::open(hub.addr, "/v1/events?since=0", Some(&tok), &[])
        .await
        .refused();
    assert_eq!(
        (status, &v["error"]["code"]),
        (410, &json!("events_gone")),
        "{v}"
    );
    assert_eq!(v["error"]["oldest_seq"], 3, "{v}");
    hub.shutdown().await;
}
