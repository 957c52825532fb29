//! Websocket clients for the scenarios that open thousands of sockets (`fanout`,
//! `conflicts`, `expiry`, `idle`): each socket bound to one of several loopback source
//! addresses, so that the ephemeral ports of a single address never run out; small
//! client buffers; and cheap reading of the few fields those scenarios look at.

use serde::Deserialize;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// One client websocket.
pub type Ws = WebSocketStream<TcpStream>;

/// How long connecting (TCP, upgrade) and the first frame may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The source address of client `i` when sockets are spread over `spread` addresses:
/// 127.0.0.2, 127.0.0.3, ... (`None`: let the kernel choose, 127.0.0.1).
pub fn source_addr(i: usize, spread: usize) -> Option<Ipv4Addr> {
    if spread == 0 {
        None
    } else {
        Some(Ipv4Addr::new(127, 0, 0, 2 + (i % spread.min(250)) as u8))
    }
}

/// A TCP connection to `addr` from `src` (port chosen at connect time, so that the
/// same source port serves several destinations), without Nagle.
pub async fn tcp_connect(addr: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket this function owns, with a valid pointer to an
        // int and its size. IP_BIND_ADDRESS_NO_PORT only defers the port choice; if the
        // kernel does not know it, bind picks a port as usual.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(SocketAddr::from((ip, 0)))?;
    }
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The client side's buffers: a 4 KiB read buffer and no write buffer (each frame is
/// written at once), like the hub's side.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Opens a websocket to `ws://{addr}{path}` from `src`, offering the hub's
/// subprotocol when `subprotocol` is set.
pub async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    src: Option<Ipv4Addr>,
    subprotocol: bool,
) -> Result<Ws, String> {
    let url = format!("ws://{addr}{path}");
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad url: {e}"))?;
    if subprotocol {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(switchboard::protocol::SUBPROTOCOL),
        );
    }
    let fut = async {
        let tcp = tcp_connect(addr, src)
            .await
            .map_err(|e| format!("connect from {src:?}: {e}"))?;
        tokio_tungstenite::client_async_with_config(req, tcp, Some(ws_config()))
            .await
            .map(|(ws, _)| ws)
            .map_err(|e| format!("websocket upgrade: {e}"))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| "connect timed out".to_owned())?
}

/// Reads the next text frame, answering nothing itself (tungstenite answers pings
/// while reading). `Err` when the socket closed or failed, or nothing came in `limit`.
pub async fn next_text(ws: &mut Ws, limit: Duration) -> Result<String, String> {
    use futures_util::StreamExt;
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, ws.next()).await {
            Err(_) => return Err(format!("nothing within {} s", limit.as_secs_f64())),
            Ok(None) => return Err("the hub closed the connection".into()),
            Ok(Some(Err(e))) => return Err(format!("websocket error: {e}")),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
            Ok(Some(Ok(Message::Close(c)))) => {
                return Err(format!("the hub closed the socket: {c:?}"));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Connects an agent (its token in the query), and reads its `welcome`.
pub async fn agent_connect(
    addr: SocketAddr,
    token: &str,
    src: Option<Ipv4Addr>,
) -> Result<Ws, String> {
    let mut ws = ws_connect(addr, &format!("/v1/ws?access_token={token}"), src, true).await?;
    let first = next_text(&mut ws, CONNECT_TIMEOUT).await?;
    let f: Lite =
        serde_json::from_str(&first).map_err(|e| format!("unreadable first frame: {e}"))?;
    if f.ty != "welcome" {
        let head: String = first.chars().take(200).collect();
        return Err(format!("first frame is not welcome: {head}"));
    }
    Ok(ws)
}

/// Connects an agent ([`agent_connect`]) and sets it Ready; `Err` when the hub refuses.
pub async fn agent_ready(
    addr: SocketAddr,
    token: &str,
    src: Option<Ipv4Addr>,
) -> Result<Ws, String> {
    let mut ws = agent_connect(addr, token, src).await?;
    let (f, text) = request(
        &mut ws,
        "ready",
        r#""type":"set_state","state":"ready""#,
        |_| {},
    )
    .await?;
    if f.ty != "reply" {
        return Err(format!("set_state ready refused: {text}"));
    }
    Ok(ws)
}

/// Sends one request (`body` is the JSON object's fields after `"id"`) and waits for
/// its answer, which it returns; frames in between are handed to `other`.
pub async fn request(
    ws: &mut Ws,
    id: &str,
    body: &str,
    mut other: impl FnMut(&str),
) -> Result<(Lite, String), String> {
    use futures_util::SinkExt;
    ws.send(Message::text(format!(r#"{{"id":"{id}",{body}}}"#)))
        .await
        .map_err(|e| format!("send failed: {e}"))?;
    loop {
        let text = next_text(ws, CONNECT_TIMEOUT).await?;
        let f: Lite =
            serde_json::from_str(&text).map_err(|e| format!("unreadable frame ({e}): {text}"))?;
        if f.re.as_deref() == Some(id) {
            return Ok((f, text));
        }
        other(&text);
    }
}

/// Closes a socket: sends a close frame and reads until the hub closes too (at most
/// two seconds).
pub async fn close(ws: &mut Ws) {
    use futures_util::StreamExt;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// The wall clock, in microseconds since the epoch.
pub fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The fields of the hub's frames these scenarios read; the rest is skipped.
#[derive(Debug, Deserialize)]
pub struct Lite {
    /// Its type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The request a reply or error answers.
    #[serde(default)]
    pub re: Option<String>,
    /// `error`: the code.
    #[serde(default)]
    pub code: Option<String>,
    /// `error`: the message.
    #[serde(default)]
    pub message: Option<String>,
    /// `error` `version_conflict`: the record's version now.
    #[serde(default)]
    pub version: Option<u64>,
    /// `error` `version_conflict`: the record now.
    #[serde(default)]
    pub current: Option<Versioned>,
    /// `error` `version_conflict`: who changed it last.
    #[serde(default)]
    pub changed_by: Option<ActorLite>,
    /// `record_changed`: the change.
    #[serde(default)]
    pub change: Option<ChangeLite>,
    /// `reply`: what the customer-context replies carry.
    #[serde(default)]
    pub result: Option<ResultLite>,
    /// `goodbye`, `offer_ended`: why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A reply's result, as far as these scenarios read it.
#[derive(Debug, Deserialize)]
pub struct ResultLite {
    /// A CustomerView's record.
    #[serde(default)]
    pub customer: Option<Versioned>,
}

/// A record's id and version.
#[derive(Debug, Deserialize)]
pub struct Versioned {
    /// Its version.
    pub version: u64,
    /// A customer's id.
    #[serde(default)]
    pub customer_id: Option<String>,
}

/// Who changed a record.
#[derive(Debug, Deserialize)]
pub struct ActorLite {
    /// The agent id or the token subject.
    pub id: String,
    /// `agent` or `integration`.
    pub role: String,
}

/// A `record_changed` frame's change.
#[derive(Debug, Deserialize)]
pub struct ChangeLite {
    /// `customer`, `request`, `activity`, `note`.
    pub kind: String,
    /// The record's id.
    pub id: String,
    /// Its new version.
    pub version: u64,
    /// Who changed it.
    pub changed_by: ActorLite,
    /// The record as it is now.
    #[serde(default)]
    pub record: Option<Versioned>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_sources_over_loopback() {
        assert_eq!(source_addr(0, 0), None);
        assert_eq!(source_addr(0, 8), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_addr(9, 8), Some(Ipv4Addr::new(127, 0, 0, 3)));
    }

    #[test]
    fn reads_a_record_change_and_a_conflict() {
        let f: Lite = serde_json::from_str(
            r#"{"type":"record_changed","change":{"kind":"customer","id":"c1","customer_id":"c1","version":3,
               "changed_by":{"id":"ed-1","role":"agent"},"changed_at":"2026-11-24T09:40:02.117Z",
               "record":{"customer_id":"c1","kind":"person","name":"A","emails":[],"phones":[],"chat_handles":[],
               "fields":{"k":"v"},"version":3}}}"#,
        )
        .expect("parse");
        let c = f.change.expect("change");
        assert_eq!((c.version, c.changed_by.id.as_str()), (3, "ed-1"));
        assert_eq!(c.record.map(|r| r.version), Some(3));
        let e: Lite = serde_json::from_str(
            r#"{"type":"error","re":"7","code":"version_conflict","message":"m","current":{"customer_id":"c1","version":5},
               "version":5,"changed_by":{"id":"ed-2","role":"agent"},"changed_at":"2026-11-24T09:40:02.117Z"}"#,
        )
        .expect("parse");
        assert_eq!(e.version, Some(5));
        assert_eq!(e.current.map(|c| c.version), Some(5));
    }

    #[tokio::test]
    async fn connects_from_a_spread_source_address() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let s = tcp_connect(addr, source_addr(3, 8)).await.expect("connect");
        let (_, peer) = l.accept().await.expect("accept");
        assert_eq!(s.local_addr().expect("local").ip(), peer.ip());
        assert_eq!(peer.ip().to_string(), "127.0.0.5");
    }
}
