//! Supervisor consoles for `route` (`--supervisors M`) and the `supervise` scenario:
//! each holds a supervisor websocket for the whole load and measures how far behind
//! the decisions its feed is.
//!
//! - decision -> supervisor: for each `agent_changed` whose `since` moved (the agent's
//!   status changed; `since` is the decision's own time, in the hub's clock), the
//!   console's wall clock at receipt minus `since`. Hub and harness share the machine's
//!   clock; `since` has millisecond precision.
//! - stats message age: for each `stats` message, receipt minus its `generated_at`
//!   (the report's staleness is at most this plus `server.stats_update_ms`).

use crate::client::{self, Ws, wall_us};
use crate::stats::HistSet;
use crate::wire::rfc3339_ms;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

/// decision -> the supervisor's `agent_changed`.
pub const H_SUP_LAG: &str = "decision -> supervisor (agent_changed)";
/// `stats` generated_at -> received.
pub const H_STATS_AGE: &str = "stats message: generated_at -> received";

/// What one console saw.
#[derive(Debug, Default)]
pub struct SupOutcome {
    /// Its histograms.
    pub hists: HistSet,
    /// Frames received.
    pub frames: u64,
    /// `stats` messages received.
    pub stats_msgs: u64,
    /// `snapshot` frames after the first (catch-ups after falling behind).
    pub catch_ups: u64,
    /// Whether the first snapshot carried `stats`.
    pub snapshot_had_stats: bool,
    /// Why it ended early, if it did.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct AgentLine {
    agent_id: String,
    since: String,
}

#[derive(Deserialize)]
struct StatsHead {
    generated_at: String,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    agent: Option<AgentLine>,
    #[serde(default)]
    agents: Option<Vec<AgentLine>>,
    #[serde(default)]
    stats: Option<StatsHead>,
}

/// A connected console: its socket and the agents' `since` from its snapshot.
pub struct Console {
    ws: Ws,
    since: HashMap<String, i64>,
    had_stats: bool,
}

/// Connects a supervisor console and reads its first `snapshot`.
pub async fn connect(addr: SocketAddr, token: &str, src_index: usize) -> Result<Console, String> {
    let mut ws = client::ws_connect(
        addr,
        &format!("/v1/ws?access_token={token}"),
        client::source_addr(src_index, 8),
        true,
    )
    .await?;
    let first = client::next_text(&mut ws, client::CONNECT_TIMEOUT).await?;
    let f: Frame =
        serde_json::from_str(&first).map_err(|e| format!("unreadable first frame: {e}"))?;
    if f.ty != "snapshot" {
        return Err(format!("first frame is {}, not snapshot", f.ty));
    }
    let since = f
        .agents
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| Some((a.agent_id, rfc3339_ms(&a.since)?)))
        .collect();
    Ok(Console {
        ws,
        since,
        had_stats: f.stats.is_some(),
    })
}

/// Reads the console's feed until `stop` turns true.
pub async fn watch(mut c: Console, mut stop: watch::Receiver<bool>) -> SupOutcome {
    let mut out = SupOutcome {
        snapshot_had_stats: c.had_stats,
        ..SupOutcome::default()
    };
    loop {
        let text = tokio::select! {
            biased;
            _ = stop.changed() => break,
            t = client::next_text(&mut c.ws, Duration::from_secs(120)) => t,
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                out.error = Some(e);
                break;
            }
        };
        let now_ms = wall_us() / 1000;
        out.frames += 1;
        let Ok(f) = serde_json::from_str::<Frame>(&text) else {
            continue;
        };
        match f.ty.as_str() {
            "agent_changed" => {
                let Some(a) = f.agent else { continue };
                let Some(since) = rfc3339_ms(&a.since) else {
                    continue;
                };
                let moved = c.since.get(&a.agent_id).is_none_or(|s| since > *s);
                if moved {
                    let lag_ms = (now_ms - since).max(0) as u64;
                    out.hists.get(H_SUP_LAG).record_us(lag_ms * 1000);
                    c.since.insert(a.agent_id, since);
                }
            }
            "stats" => {
                out.stats_msgs += 1;
                if let Some(at) = f.stats.and_then(|s| rfc3339_ms(&s.generated_at)) {
                    out.hists
                        .get(H_STATS_AGE)
                        .record_us(((now_ms - at).max(0) as u64) * 1000);
                }
            }
            "snapshot" => {
                out.catch_ups += 1;
                for a in f.agents.unwrap_or_default() {
                    if let Some(s) = rfc3339_ms(&a.since) {
                        c.since.insert(a.agent_id, s);
                    }
                }
            }
            _ => {}
        }
    }
    client::close(&mut c.ws).await;
    out
}
