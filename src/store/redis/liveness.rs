//! Heartbeats: this node says it is alive (and how far it applied the log), and
//! declares lost the nodes that stopped saying so.

use super::{Body, HEARTBEAT, HEARTBEAT_TTL, LOG, LOG_RULES, Shared, unavailable};
use crate::error::HubError;
use crate::routing::Command;
use std::sync::Arc;

/// The keys that say which rules each live node runs with (`Rules::fingerprint`),
/// beside its heartbeat and expiring with it.
const RULES_KEYS: &str = "sb:rules:*";

impl Shared {
    /// This node's rules key, written with every beat.
    fn rules_beat(&self) -> redis::Cmd {
        let mut c = redis::cmd("SET");
        c.arg(format!("sb:rules:{}", self.incarnation))
            .arg(&*self.rules_print)
            .arg("PX")
            .arg(HEARTBEAT_TTL.as_millis() as u64);
        c
    }

    /// Refuses to replay, by other rules, the log after the stored snapshot (loaded
    /// just before): `LOG_RULES` names the rules those entries were decided by, and a
    /// cluster whose nodes all stopped and start again with changed rules or another
    /// version (`DECISIONS_VERSION`) would decide them differently than the nodes that
    /// wrote them told their agents. With nothing after the snapshot (the last node to
    /// stop cleanly stores one) the new rules are written and go on; so do they in a
    /// store made before the key existed.
    pub(super) async fn check_log_rules(
        &self,
        c: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), HubError> {
        let logged: Option<String> = redis::cmd("GET")
            .arg(LOG_RULES)
            .query_async(c)
            .await
            .map_err(unavailable)?;
        if let Some(print) = logged.filter(|p| *p != *self.rules_print) {
            let pos = self.replica().pos.clone();
            let after: Vec<redis::Value> = redis::cmd("XRANGE")
                .arg(LOG)
                .arg(format!("({pos}"))
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(c)
                .await
                .map_err(unavailable)?;
            if !after.is_empty() {
                return Err(HubError::StoreUnavailable(format!(
                    "the log after the stored snapshot (position {pos}) was decided by other \
                     rules ({print}; this node's: {}): [routing], [[queues]], [[agents]], \
                     [stats] or [events] changed, or another version of switchboard wrote it, \
                     and it would be decided differently; start the previous configuration \
                     and version, stop every node with SIGTERM (the last one to stop stores \
                     a snapshot), then start the new one",
                    self.rules_print
                )));
            }
        }
        redis::cmd("SET")
            .arg(LOG_RULES)
            .arg(&*self.rules_print)
            .query_async::<()>(c)
            .await
            .map_err(unavailable)
    }

    /// Refuses to start beside a live node whose rules differ from this one's: every
    /// node applies every entry by its own rules, so the two would decide differently
    /// from the same log and drift apart without a word. Written first, then read: of
    /// two nodes starting at once with different rules, the later reader sees the other.
    pub(super) async fn check_rules(
        &self,
        c: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), HubError> {
        let () = self
            .rules_beat()
            .query_async(c)
            .await
            .map_err(unavailable)?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(RULES_KEYS)
            .query_async(c)
            .await
            .map_err(unavailable)?;
        for key in keys {
            let print: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(c)
                .await
                .map_err(unavailable)?;
            let Some(print) = print else { continue };
            let node = key.trim_start_matches("sb:rules:");
            // An earlier run of this node (restarted with new rules within the key's
            // life) is gone: this start declares it lost.
            let earlier_run = node
                .strip_prefix(self.node.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
            if print != *self.rules_print && !earlier_run {
                return Err(HubError::StoreUnavailable(format!(
                    "node {node} runs with other rules ({print}; this node's: {}): every node \
                     sharing a Redis needs the same [routing], [[queues]], [[agents]], [stats] \
                     and [events] (and the same version); stop the others to change them",
                    self.rules_print
                )));
            }
        }
        Ok(())
    }

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
                redis::pipe()
                    .cmd("SET")
                    .arg(format!("sb:node:{}", self.incarnation))
                    .arg(&pos)
                    .arg("PX")
                    .arg(HEARTBEAT_TTL.as_millis() as u64)
                    .ignore()
                    .add_command(self.rules_beat())
                    .ignore()
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
