//! Heartbeats: this node says it is alive (and how far it applied the log), and
//! declares lost the nodes that stopped saying so.

use super::{Body, HEARTBEAT, HEARTBEAT_TTL, Shared, unavailable};
use crate::error::HubError;
use crate::routing::Command;
use std::sync::Arc;

impl Shared {
    /// Beats, and declares lost the nodes that stopped beating. After its own beats
    /// failed (Redis away, this node stalled), it waits a whole expiry period of good
    /// beats before judging others: their keys lapsed for the same reason.
    pub(super) async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ok_since: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            let beat = async {
                let mut c = self.conn().await?;
                let pos = self.replica().pos.clone();
                redis::cmd("SET")
                    .arg(format!("sb:node:{}", self.incarnation))
                    .arg(&pos)
                    .arg("PX")
                    .arg(HEARTBEAT_TTL.as_millis() as u64)
                    .query_async::<()>(&mut c)
                    .await
                    .map_err(unavailable)?;
                Ok::<_, HubError>(c)
            };
            let mut c = match beat.await {
                Ok(c) => c,
                Err(_) => {
                    ok_since = None;
                    self.broken().await;
                    continue;
                }
            };
            let since = *ok_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() < HEARTBEAT_TTL + HEARTBEAT {
                continue;
            }
            let nodes = self.replica().state.book.nodes_in_use();
            for n in nodes.iter().filter(|n| ***n != *self.incarnation) {
                let alive: Result<bool, _> = redis::cmd("EXISTS")
                    .arg(format!("sb:node:{n}"))
                    .query_async(&mut c)
                    .await;
                if let Ok(false) = alive {
                    tracing::warn!(node = %n, "node stopped heartbeating: its desktops enter their grace period");
                    let body = Body::Routing(Box::new(Command::NodeLost { node: n.clone() }));
                    let _ = self.append(body, self.clock.now(), false).await;
                }
            }
        }
    }
}
