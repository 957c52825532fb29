//! One `GET /v1/events` reader during the `route` scenario (`--stream-reader`): the
//! time from a create being sent to its `task.offered` reaching the reader, and the
//! stream's own checks (dense seqs, no cutoff).
//!
//! A plain TCP client: the request, the head, then the chunked body read line by line.
//! Each `task.created` names its idempotency key, which gives the run's sequence number
//! and so the create's send time; the first `task.offered` of that task closes the span.

use crate::shared::Shared;
use crate::stats::HistSet;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Create sent to its `task.offered` on the stream.
pub const H_CREATE_TO_STREAM_OFFER: &str = "create -> task.offered (stream)";

/// What the reader saw.
#[derive(Default)]
pub struct StreamOutcome {
    /// The histogram of [`H_CREATE_TO_STREAM_OFFER`].
    pub hists: HistSet,
    /// Events read.
    pub events: u64,
    /// With type patterns: the seqs of the events of those types (read from seq 1),
    /// what a webhook endpoint of the same types must receive.
    pub matching: Option<std::collections::HashSet<u64>>,
    /// With type patterns: the seqs of every `task.offered` (read from seq 1), the
    /// only events a webhook endpoint may miss (an offer past its deadline is not
    /// sent).
    pub offered: std::collections::HashSet<u64>,
    /// The last seq read.
    pub last_seq: u64,
    /// What went wrong (a gap in the seqs, a cutoff, a refusal, a read error).
    pub errors: Vec<String>,
}

/// Reads the stream from the next event on (from seq 1 with `types`: their seqs are
/// kept) until `stop` names a seq it has read up to.
pub async fn read(
    addr: SocketAddr,
    token: Arc<str>,
    shared: Arc<Shared>,
    types: Option<Vec<String>>,
    mut stop: watch::Receiver<Option<u64>>,
) -> StreamOutcome {
    let mut out = StreamOutcome {
        matching: types.as_ref().map(|_| Default::default()),
        ..Default::default()
    };
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            out.errors.push(format!("stream: cannot connect: {e}"));
            return out;
        }
    };
    let _ = s.set_nodelay(true);
    let since = if types.is_some() { "?since=0" } else { "" };
    let req = format!(
        "GET /v1/events{since} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\naccept: text/event-stream\r\n\r\n"
    );
    if let Err(e) = s.write_all(req.as_bytes()).await {
        out.errors
            .push(format!("stream: cannot send the request: {e}"));
        return out;
    }
    let mut r = BufReader::with_capacity(256 * 1024, s);
    let mut line = String::new();
    // The head.
    loop {
        line.clear();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => {
                out.errors.push("stream: closed in the head".into());
                return out;
            }
            Ok(_) if line.starts_with("HTTP/") && !line.contains(" 200 ") => {
                out.errors.push(format!("stream: refused: {}", line.trim()));
                return out;
            }
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let mut text = String::new();
    let mut task_seq: HashMap<String, u64> = HashMap::new();
    let mut last_seq: Option<u64> = None;
    loop {
        // One chunk: its size line, its bytes, CRLF.
        line.clear();
        let read_up_to = last_seq.unwrap_or(0);
        let n = tokio::select! {
            r = r.read_line(&mut line) => r,
            _ = stop.wait_for(|s| s.is_some_and(|n| read_up_to >= n)) => {
                out.last_seq = read_up_to;
                return out;
            }
        };
        let size = match n {
            Ok(0) => {
                out.errors.push("stream: the hub closed it".into());
                return out;
            }
            Ok(_) => usize::from_str_radix(line.trim(), 16).unwrap_or(0),
            Err(e) => {
                out.errors.push(format!("stream: read: {e}"));
                return out;
            }
        };
        let mut chunk = vec![0; size + 2];
        if let Err(e) = r.read_exact(&mut chunk).await {
            out.errors.push(format!("stream: read: {e}"));
            return out;
        }
        if size == 0 {
            out.errors.push("stream: ended".into());
            return out;
        }
        chunk.truncate(size);
        let now_ns = shared.now_ns();
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = text.find("\n\n") {
            let block: String = text.drain(..i + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            if block.contains("event: cutoff") {
                out.errors.push(format!("stream: cut off: {data}"));
                return out;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                out.errors.push("stream: an event that is not JSON".into());
                continue;
            };
            out.events += 1;
            let seq = v["seq"].as_u64().unwrap_or(0);
            if let Some(last) = last_seq {
                if seq != last + 1 && out.errors.len() < 10 {
                    out.errors.push(format!(
                        "stream: seq {seq} after {last} (a gap or a repeat)"
                    ));
                }
            }
            last_seq = Some(seq);
            if let (Some(m), Some(types), Some(ty)) =
                (out.matching.as_mut(), types.as_ref(), v["type"].as_str())
            {
                if crate::webhook::matches(types, ty) {
                    m.insert(seq);
                }
                if ty == "task.offered" {
                    out.offered.insert(seq);
                }
            }
            let d = &v["data"];
            match v["type"].as_str() {
                Some("task.created") => {
                    let key = d["task"]["idempotency_key"].as_str().unwrap_or_default();
                    if let (Some(run_seq), Some(id)) =
                        (shared.seq_of(key), d["task"]["task_id"].as_str())
                    {
                        task_seq.insert(id.to_owned(), run_seq);
                    }
                }
                Some("task.offered") => {
                    let id = d["task_id"].as_str().unwrap_or_default();
                    // The first offer only: the entry goes.
                    if let Some(sent) = task_seq.remove(id).and_then(|s| shared.sent_ns(s)) {
                        out.hists
                            .get(H_CREATE_TO_STREAM_OFFER)
                            .record_ns_span(sent, now_ns);
                    }
                }
                _ => {}
            }
        }
    }
}
