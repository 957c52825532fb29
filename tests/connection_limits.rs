//! Connections before they are authenticated, as an attacker would hold them: silent,
//! half a request, a header byte at a time, a body that never ends. Each is closed
//! within the configured timeouts while the hub keeps serving; past the connection cap
//! a connection gets the documented refusal; and every HTTP error, hyper's own
//! included, is the documented JSON body.

mod common;

use common::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use switchboard::auth::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn hub(limits: &str) -> TestHub {
    TestHub::start(&format!("[limits]\n{limits}\n{QUEUES_AND_AGENTS}")).await
}

/// Everything the server sends until it closes; panics if it has not closed within
/// `WAIT` (the configured timeouts in these tests are a fraction of it).
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return buf,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "still open after {WAIT:?}; received {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
}

/// The status and JSON body of a raw HTTP answer (checked against HttpError when it
/// is an error).
fn parse_answer(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("answer {status} has no JSON body ({e}): {text:?}"));
    if status >= 400 {
        check_schema("HttpError", &v);
    }
    (status, v)
}

/// Sends raw bytes and reads the whole answer.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    parse_answer(&until_closed(&mut s).await)
}

async fn healthz(addr: SocketAddr) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let raw = until_closed(&mut s).await;
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn slow_and_silent_connections_are_closed_while_the_hub_keeps_serving() {
    let hub = hub("request_head_timeout_ms = 300\nrequest_body_timeout_ms = 300\n").await;
    let addr = hub.addr;

    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut half_upgrade = TcpStream::connect(addr).await.expect("connect");
    half_upgrade
        .write_all(b"GET /v1/ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n")
        .await
        .expect("write");
    let mut endless_body = TcpStream::connect(addr).await.expect("connect");
    let tok = hub.token("crm", Role::Integration);
    endless_body
        .write_all(
            format!(
                "POST /v1/tasks HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {tok}\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"channel\""
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    // One header byte every 50 ms, never finishing: it must be cut off by the head
    // timeout as a whole, not per byte.
    let dripper = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut sent = 0;
        let mut probe = [0u8; 64];
        loop {
            tokio::select! {
                // The server closing is the event this waits for.
                r = s.read(&mut probe) => {
                    assert!(matches!(r, Ok(0) | Err(_)), "the hub answered a request it never finished reading");
                    return sent;
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if sent == request.len() {
                        panic!("the whole slow head was sent and the connection is still open");
                    }
                    if s.write_all(&request[sent..=sent]).await.is_err() {
                        return sent;
                    }
                    sent += 1;
                }
            }
        }
    });
    // A connection kept alive after its answer, then idle.
    let mut kept_alive = TcpStream::connect(addr).await.expect("connect");
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");

    // Meanwhile the hub serves: health, and a create that reaches an agent.
    assert_eq!(healthz(addr).await, 200);
    let mut agent = hub.ready_agent("ana").await;
    let task = hub.create(chat()).await;
    let offer = agent.expect("offer").await;
    assert_eq!(offer["offer"]["task"]["task_id"], task["task_id"]);

    assert!(until_closed(&mut silent).await.is_empty());
    assert!(until_closed(&mut half_upgrade).await.is_empty());
    let (status, v) = parse_answer(&until_closed(&mut endless_body).await);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (408, Some("request_timeout"))
    );
    let answered = String::from_utf8_lossy(&until_closed(&mut kept_alive).await).into_owned();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let sent = dripper.await.expect("dripper");
    assert!(sent < 140, "closed only after {sent} bytes");

    // Nothing of it stuck: the hub still serves, and counted what it closed.
    assert_eq!(healthz(addr).await, 200);
    assert!(metric(&hub, "switchboard_request_timeouts_total{phase=\"head\"}").await >= 4);
    assert_eq!(
        metric(&hub, "switchboard_request_timeouts_total{phase=\"body\"}").await,
        1
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_flood_opened_together_is_closed_over_the_last_quarter_of_the_head_timeout() {
    // Opened in the same moment, they must not all be closed in the same moment: their
    // closes would come as one burst of work in front of the decisions.
    let limit = Duration::from_millis(1_000);
    let hub = hub("request_head_timeout_ms = 1000\n").await;
    let mut flood = Vec::new();
    for _ in 0..40 {
        let s = TcpStream::connect(hub.addr).await.expect("connect");
        flood.push((s, std::time::Instant::now()));
    }
    // Each from its own connect: the hub's clock starts at its accept, after that.
    let closes = futures_util::future::join_all(flood.iter_mut().map(|(s, opened)| async {
        assert!(until_closed(s).await.is_empty(), "closed without an answer");
        opened.elapsed()
    }))
    .await;
    let (first, last) = (closes.iter().min(), closes.iter().max());
    let (Some(&first), Some(&last)) = (first, last) else {
        panic!("no closes")
    };
    // Never before three quarters of the limit: what a client can count on.
    assert!(
        first >= limit * 3 / 4,
        "a connection closed after {first:?}"
    );
    // Spread: 40 draws over 250 ms; all within 100 ms of each other happens with a
    // chance of about 40 * 0.4^39.
    assert!(
        last - first >= Duration::from_millis(100),
        "all 40 closed between {first:?} and {last:?}"
    );
    hub.shutdown().await;
}

/// Holds `n` connections open, all accepted (each answered once, kept alive).
async fn hold(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "held connection answered"
        );
        held.push(s);
    }
    held
}

async fn refused_then_served_again(hub: &TestHub, mut held: Vec<TcpStream>) {
    let addr = hub.addr;
    let (status, v) = raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("too_many_connections"))
    );
    // A place freed is a place taken again: wait for the hub to see the close.
    held.pop();
    let deadline = tokio::time::Instant::now() + WAIT;
    while healthz(addr).await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a freed place was never given again"
        );
        tokio::task::yield_now().await;
    }
    assert!(metric(hub, "switchboard_connections_refused_total").await >= 1);
    assert!(metric(hub, "switchboard_tcp_connections").await > held.len() as u64);
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_gets_the_documented_refusal() {
    let hub = hub("max_connections = 3\n").await;
    let held = hold(hub.addr, 3).await;
    refused_then_served_again(&hub, held).await;
    hub.shutdown().await;
}

#[tokio::test]
async fn past_the_per_address_cap_a_connection_gets_the_documented_refusal() {
    let hub = hub("max_connections_per_ip = 2\n").await;
    let held = hold(hub.addr, 2).await;
    refused_then_served_again(&hub, held).await;
    hub.shutdown().await;
}

#[tokio::test]
async fn every_http_error_is_the_documented_json() {
    let hub = hub("max_uri_bytes = 1024\nmax_body_bytes = 1000\n").await;
    let tok = hub.token("crm", Role::Integration);
    let auth = format!("authorization: Bearer {tok}\r\n");

    // axum's own rejection: a path that is not UTF-8.
    let (status, v) = hub.http("GET", "/v1/tasks/%ff%fe", Some(&tok), None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );

    // An over-long target.
    let long = format!("/v1/tasks/{}", "a".repeat(2000));
    let (status, v) = hub.http("GET", &long, Some(&tok), None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (414, Some("uri_too_long")),
        "{v}"
    );

    // hyper's own answers: a head over the limit, a request line it cannot read.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(40_000)
    );
    let (status, v) = raw(hub.addr, huge.as_bytes()).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (431, Some("headers_too_large")),
        "{v}"
    );
    let (status, v) = raw(hub.addr, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );

    // Bodies: the wrong type, too large, not JSON.
    let (status, v) = raw(
        hub.addr,
        format!("POST /v1/tasks HTTP/1.1\r\nhost: x\r\n{auth}content-type: text/plain\r\ncontent-length: 2\r\n\r\nhi").as_bytes(),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{v}"
    );
    let big = json!({"channel": "chat", "queue": "support", "attributes": {"x": "y".repeat(2000)}});
    let (status, v) = hub
        .http("POST", "/v1/tasks", Some(&tok), Some(&big.to_string()))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{v}"
    );
    let (status, v) = raw(
        hub.addr,
        format!("POST /v1/tasks HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n7d0\r\n{}\r\n0\r\n\r\n", "z".repeat(2000)).as_bytes(),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "chunked: {v}"
    );
    let (status, v) = hub
        .http("POST", "/v1/tasks", Some(&tok), Some("{not json"))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_json")),
        "{v}"
    );

    // Routes and methods.
    let (status, v) = hub.http("DELETE", "/v1/tasks", Some(&tok), None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{v}"
    );
    let (status, v) = hub.http("GET", "/nowhere", Some(&tok), None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );

    // And a good request still works after all of it.
    hub.create(chat()).await;
    hub.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_dropped() {
    // The write stall limit is the sessions' write timeout, `limits.ping_timeout_ms`.
    let hub = hub("ping_timeout_ms = 300\n").await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    // A small window, so that the hub's writes back up soon.
    socket.set_recv_buffer_size(4096).expect("buffer size");
    let mut s = socket.connect(hub.addr).await.expect("connect");
    let requests = b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n".repeat(64);
    // Pipelined requests, never reading an answer: the hub stops reading when its writes
    // wait, so these writes wait too, until the hub gives up on the connection.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            s.write_all(&requests).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    })
    .await;
    assert!(
        matches!(ended, Ok(Err(_))),
        "the connection was still open after {WAIT:?}"
    );
    assert_eq!(healthz(hub.addr).await, 200);
    hub.shutdown().await;
}
