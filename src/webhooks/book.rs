//! The webhooks' replicated state: endpoints made through the API, and every
//! endpoint's delivery position and lease. Pure, like the routing book: a
//! [`WebhookCommand`] is a log entry, applied by [`WebhookBook::execute`] at the
//! entry's time, so every replica (every node, every replay after a restart) holds the
//! same endpoints, the same positions and the same lease holder.
//!
//! **The lease.** With several nodes, one at a time delivers an endpoint: the node
//! whose `Claim` entry found the lease free (or expired, by log time) holds it, with a
//! fencing token that grows with every new holder. The holder renews it with further
//! claims; a position written with another token is refused, so a holder that stalled
//! past its lease (and was replaced) cannot move the position over events it never
//! delivered. Who holds the lease is decided by log order, never by clocks compared
//! across nodes (a claim is judged at its entry's time).

use crate::clock::Ts;
use crate::error::HubError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// An endpoint made through the API (those of the config are read from the config).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    /// Its id (letters, digits, `-`, `_`).
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Type patterns: `task.offered`, `task.*`, `*`.
    pub types: Vec<String>,
    /// The current secret, `whsec_<base64>`.
    pub secret: String,
    /// The secret before the last rotation, still signing until the given time.
    pub previous: Option<(String, Ts)>,
    /// Secrets of earlier rotations whose overlap still ran at the last one, newest
    /// first (at most `KEPT_OLDER`): a rotation retried (its answer lost) must not cut
    /// short the overlap of the secret receivers still hold.
    #[serde(default)]
    pub older: Vec<(String, Ts)>,
    /// When it was made.
    pub created: Ts,
}

/// Where one endpoint's delivery stands (config and API endpoints alike).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    /// Every event up to and including this sequence number was delivered (or
    /// skipped: not of its types, an offer past its deadline). `None` until a first
    /// claim sets the starting point.
    pub position: Option<u64>,
    /// Stopped by an operator, by a 410 or by an exhausted retry schedule.
    pub disabled: Option<String>,
    /// The node delivering it.
    pub lease: Option<Lease>,
    /// When a node last claimed or renewed its lease (a released or revoked lease keeps
    /// it): how long no node has delivered it.
    #[serde(default)]
    pub last_claim: Option<Ts>,
}

impl Cursor {
    /// Whether it may be forgotten at `now` (`WebhookCommand::Forget`): not disabled
    /// (a disabled one holds nothing), no live lease, and no claim for `unclaimed_ms`
    /// (its last claim, or its lease's end when it was claimed before claims were
    /// dated; never claimed: long ago).
    pub fn forgettable(&self, now: Ts, unclaimed_ms: u64) -> bool {
        let leased = self.lease.as_ref().is_some_and(|l| l.until > now);
        let last = self.last_claim.or(self.lease.as_ref().map(|l| l.until));
        let lately = last.is_some_and(|t| now < t.plus(Duration::from_millis(unclaimed_ms)));
        self.disabled.is_none() && !leased && !lately
    }
}

/// Who delivers an endpoint, until when, under which fencing token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    /// The holder (node tag).
    pub node: String,
    /// The fencing token: grows with every new holder.
    pub token: u64,
    /// Expiry, in log time.
    pub until: Ts,
}

/// A change to the webhooks' state: one log entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WebhookCommand {
    /// Makes an endpoint; delivery starts after sequence number `start`.
    Create {
        /// The endpoint.
        endpoint: Endpoint,
        /// The last event it does not get.
        start: u64,
        /// How many API endpoints there may be (`webhooks.max_endpoints`; 0: any).
        #[serde(default)]
        max: u32,
    },
    /// Removes an API endpoint and its position.
    Delete {
        /// The endpoint.
        id: String,
    },
    /// Replaces an API endpoint's secret; the old one signs too until `overlap_until`.
    Rotate {
        /// The endpoint.
        id: String,
        /// The new secret.
        secret: String,
        /// End of the overlap.
        overlap_until: Ts,
    },
    /// Stops (with a reason) or restarts delivery.
    SetDisabled {
        /// The endpoint.
        id: String,
        /// Why, or `None` to enable.
        reason: Option<String>,
        /// Only if the lease holder is still this token (a 410 seen by a holder that
        /// has since been replaced changes nothing); `None` from an operator.
        token: Option<u64>,
        /// The operator names a config endpoint (its cursor may not exist yet); else
        /// the id must be an API endpoint's (one deleted meanwhile is refused, not
        /// given a cursor that nothing would ever remove).
        #[serde(default)]
        config: bool,
    },
    /// Delivers again every event after `since`.
    Replay {
        /// The endpoint.
        id: String,
        /// The new position.
        since: u64,
        /// A config endpoint's (see `SetDisabled`).
        #[serde(default)]
        config: bool,
    },
    /// Takes or renews the lease.
    Claim {
        /// The endpoint.
        id: String,
        /// From the config (its cursor may not exist yet) or the API (must exist).
        config: bool,
        /// The claiming node.
        node: String,
        /// How long the lease lasts from the entry's time, in milliseconds.
        lease_ms: u64,
        /// The starting position of an endpoint that has none.
        start: u64,
    },
    /// Moves the position forward.
    Advance {
        /// The endpoint.
        id: String,
        /// The writer's fencing token.
        token: u64,
        /// The new position.
        position: u64,
    },
    /// Lets the lease go (a node that stops).
    Release {
        /// The endpoint.
        id: String,
        /// The holder's token.
        token: u64,
    },
    /// Drops the position of a config endpoint that the config of the node asking no
    /// longer names (removed from the file): otherwise its position would hold the
    /// event window at the last event it got, for good. Only while nobody holds its
    /// lease and no node has claimed it for `unclaimed_ms` (0 with one replica; in a
    /// cluster, long enough that a node still configured with it, restarting, claims
    /// it first); never an API endpoint's, nor a disabled one's (which holds nothing).
    Forget {
        /// The endpoint.
        id: String,
        /// How long no node may have claimed it, in milliseconds.
        unclaimed_ms: u64,
    },
}

/// What a webhook command answers.
#[derive(Clone, Debug, PartialEq)]
pub enum WebhookReply {
    /// Done.
    Done,
    /// The endpoint after the change.
    Endpoint(Box<Endpoint>),
    /// The lease is the caller's: deliver from `position` under `token`.
    Granted {
        /// The fencing token.
        token: u64,
        /// Delivered through this sequence number.
        position: u64,
    },
    /// Another node holds the lease, or the endpoint is disabled or gone.
    NotGranted,
    /// A position or a release with a token that is no longer the holder's.
    Fenced,
}

/// The webhooks' replicated state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WebhookBook {
    /// API endpoints by id.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Every endpoint's position and lease, by id.
    pub cursors: BTreeMap<String, Cursor>,
    /// The last fencing token handed out.
    pub last_token: u64,
}

/// How many secrets of earlier rotations still sign, besides the current and previous.
pub const KEPT_OLDER: usize = 2;

fn no_endpoint(id: &str) -> HubError {
    HubError::WebhookNotFound(id.to_owned())
}

impl WebhookBook {
    /// Applies one command at log time `now`.
    pub fn execute(&mut self, cmd: WebhookCommand, now: Ts) -> Result<WebhookReply, HubError> {
        match cmd {
            WebhookCommand::Create {
                endpoint,
                start,
                max,
            } => {
                if self.endpoints.contains_key(&endpoint.id) {
                    return Err(HubError::invalid(
                        "id",
                        format!("a webhook endpoint {:?} exists", endpoint.id),
                    ));
                }
                if max > 0 && self.endpoints.len() >= max as usize {
                    return Err(HubError::invalid(
                        "url",
                        format!(
                            "there are {} webhook endpoints, the most webhooks.max_endpoints allows: delete one first",
                            self.endpoints.len()
                        ),
                    ));
                }
                self.cursors.insert(
                    endpoint.id.clone(),
                    Cursor {
                        position: Some(start),
                        disabled: None,
                        lease: None,
                        last_claim: None,
                    },
                );
                self.endpoints.insert(endpoint.id.clone(), endpoint.clone());
                Ok(WebhookReply::Endpoint(Box::new(endpoint)))
            }
            WebhookCommand::Delete { id } => {
                self.endpoints.remove(&id).ok_or_else(|| no_endpoint(&id))?;
                self.cursors.remove(&id);
                Ok(WebhookReply::Done)
            }
            WebhookCommand::Rotate {
                id,
                secret,
                overlap_until,
            } => {
                let e = self
                    .endpoints
                    .get_mut(&id)
                    .ok_or_else(|| no_endpoint(&id))?;
                let old = std::mem::replace(&mut e.secret, secret);
                if let Some(p) = e.previous.take() {
                    e.older.insert(0, p);
                }
                e.older.retain(|(_, until)| *until > now);
                e.older.truncate(KEPT_OLDER);
                e.previous = Some((old, overlap_until));
                Ok(WebhookReply::Endpoint(Box::new(e.clone())))
            }
            WebhookCommand::SetDisabled {
                id,
                reason,
                token,
                config,
            } => {
                match token {
                    // A holder's: only while it holds the lease (so the cursor exists).
                    Some(t) => {
                        let held = self.cursors.get(&id).and_then(|c| c.lease.as_ref());
                        if held.map(|l| l.token) != Some(t) {
                            return Ok(WebhookReply::Fenced);
                        }
                    }
                    None if !config && !self.endpoints.contains_key(&id) => {
                        return Err(no_endpoint(&id));
                    }
                    None => {}
                }
                let c = self.cursors.entry(id).or_insert_with(|| Cursor {
                    position: None,
                    disabled: None,
                    lease: None,
                    last_claim: None,
                });
                if reason.is_some() {
                    // The holder stops at its next renewal.
                    c.lease = None;
                }
                c.disabled = reason;
                Ok(WebhookReply::Done)
            }
            WebhookCommand::Replay { id, since, config } => {
                if !config && !self.endpoints.contains_key(&id) {
                    return Err(no_endpoint(&id));
                }
                let c = self.cursors.entry(id).or_insert_with(|| Cursor {
                    position: None,
                    disabled: None,
                    lease: None,
                    last_claim: None,
                });
                c.position = Some(since);
                // Delivering again is resuming: a disabled endpoint is enabled, so that
                // its position holds the replayed events in the window from now on.
                c.disabled = None;
                // The holder's in-memory window is past `since`: revoking the lease
                // makes it start over from the new position at its next claim, and
                // refuses any position it still writes from the old window.
                c.lease = None;
                Ok(WebhookReply::Done)
            }
            WebhookCommand::Claim {
                id,
                config,
                node,
                lease_ms,
                start,
            } => {
                if !config && !self.endpoints.contains_key(&id) {
                    return Ok(WebhookReply::NotGranted);
                }
                let c = self.cursors.entry(id).or_insert_with(|| Cursor {
                    position: None,
                    disabled: None,
                    lease: None,
                    last_claim: None,
                });
                if c.disabled.is_some() {
                    return Ok(WebhookReply::NotGranted);
                }
                let until = now.plus(Duration::from_millis(lease_ms));
                let token = match &c.lease {
                    Some(l) if l.node == node => l.token,
                    Some(l) if l.until > now => return Ok(WebhookReply::NotGranted),
                    _ => {
                        self.last_token += 1;
                        self.last_token
                    }
                };
                c.lease = Some(Lease { node, token, until });
                c.last_claim = Some(now);
                let position = *c.position.get_or_insert(start);
                Ok(WebhookReply::Granted { token, position })
            }
            WebhookCommand::Advance {
                id,
                token,
                position,
            } => {
                let Some(c) = self.cursors.get_mut(&id) else {
                    return Ok(WebhookReply::Fenced);
                };
                if c.lease.as_ref().map(|l| l.token) != Some(token) {
                    return Ok(WebhookReply::Fenced);
                }
                // Never backwards: a late write of an older batch changes nothing.
                c.position = Some(c.position.map_or(position, |p| p.max(position)));
                Ok(WebhookReply::Done)
            }
            WebhookCommand::Release { id, token } => {
                if let Some(c) = self.cursors.get_mut(&id) {
                    if c.lease.as_ref().map(|l| l.token) == Some(token) {
                        c.lease = None;
                        return Ok(WebhookReply::Done);
                    }
                }
                Ok(WebhookReply::Fenced)
            }
            WebhookCommand::Forget { id, unclaimed_ms } => {
                let Some(c) = self.cursors.get(&id) else {
                    return Ok(WebhookReply::NotGranted);
                };
                if self.endpoints.contains_key(&id) || !c.forgettable(now, unclaimed_ms) {
                    return Ok(WebhookReply::NotGranted);
                }
                self.cursors.remove(&id);
                Ok(WebhookReply::Done)
            }
        }
    }

    /// Whether applying `cmd` may change what a node delivers and how (endpoints, their
    /// secrets, enabled or not, positions moved by hand, revoked leases): the node's
    /// webhook service then looks again at once instead of at its next round.
    pub fn changes_delivery(cmd: &WebhookCommand) -> bool {
        !matches!(
            cmd,
            WebhookCommand::Claim { .. }
                | WebhookCommand::Advance { .. }
                | WebhookCommand::Release { .. }
        )
    }

    /// The lowest position of any enabled endpoint: events after it must be kept.
    pub fn floor(&self) -> Option<u64> {
        self.cursors
            .values()
            .filter(|c| c.disabled.is_none())
            .filter_map(|c| c.position)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operator's disable (with a reason) or enable of the config endpoint "crm".
    fn by_hand(reason: Option<&str>) -> WebhookCommand {
        WebhookCommand::SetDisabled {
            id: "crm".into(),
            reason: reason.map(str::to_owned),
            token: None,
            config: true,
        }
    }

    fn claim(b: &mut WebhookBook, node: &str, now: u64) -> WebhookReply {
        b.execute(
            WebhookCommand::Claim {
                id: "crm".into(),
                config: true,
                node: node.into(),
                lease_ms: 5_000,
                start: 7,
            },
            Ts(now * 1000),
        )
        .expect("claim")
    }

    fn advance(b: &mut WebhookBook, token: u64, position: u64) -> WebhookReply {
        b.execute(
            WebhookCommand::Advance {
                id: "crm".into(),
                token,
                position,
            },
            Ts(0),
        )
        .expect("advance")
    }

    #[test]
    fn one_holder_at_a_time_and_a_stale_holder_is_fenced() {
        let mut b = WebhookBook::default();
        assert_eq!(
            claim(&mut b, "a", 0),
            WebhookReply::Granted {
                token: 1,
                position: 7
            }
        );
        // b waits while a's lease runs; a renews under the same token.
        assert_eq!(claim(&mut b, "b", 4_000), WebhookReply::NotGranted);
        assert_eq!(
            claim(&mut b, "a", 4_000),
            WebhookReply::Granted {
                token: 1,
                position: 7
            }
        );
        assert_eq!(advance(&mut b, 1, 20), WebhookReply::Done);
        // a stops renewing: after its lease b takes over from a's position.
        assert_eq!(
            claim(&mut b, "b", 9_000),
            WebhookReply::Granted {
                token: 2,
                position: 20
            }
        );
        // a wakes up: its positions are refused, its claim too.
        assert_eq!(advance(&mut b, 1, 30), WebhookReply::Fenced);
        assert_eq!(claim(&mut b, "a", 9_500), WebhookReply::NotGranted);
        assert_eq!(b.cursors["crm"].position, Some(20));
        // Positions never go back.
        assert_eq!(advance(&mut b, 2, 25), WebhookReply::Done);
        assert_eq!(advance(&mut b, 2, 22), WebhookReply::Done);
        assert_eq!(b.cursors["crm"].position, Some(25));
    }

    #[test]
    fn a_config_endpoints_position_is_forgotten_only_unleased_unclaimed_and_enabled() {
        let forget = |b: &mut WebhookBook, unclaimed_ms: u64, now_ms: u64| {
            b.execute(
                WebhookCommand::Forget {
                    id: "crm".into(),
                    unclaimed_ms,
                },
                Ts(now_ms * 1000),
            )
            .expect("forget")
        };
        let mut b = WebhookBook::default();
        let WebhookReply::Granted { token, .. } = claim(&mut b, "a", 0) else {
            panic!("not granted");
        };
        // Leased: kept, whatever the wait asked.
        assert_eq!(forget(&mut b, 0, 1_000), WebhookReply::NotGranted);
        // Its holder lets it go (a clean stop): in a cluster it is kept for the wait
        // after its last claim, so a node still configured with it claims it first.
        b.execute(
            WebhookCommand::Release {
                id: "crm".into(),
                token,
            },
            Ts(2_000 * 1000),
        )
        .expect("release");
        assert_eq!(forget(&mut b, 60_000, 3_000), WebhookReply::NotGranted);
        assert!(b.cursors.contains_key("crm"));
        // A disabled one holds nothing in the window: kept, even past the wait.
        b.execute(by_hand(Some("410")), Ts(4_000 * 1000))
            .expect("disable");
        assert_eq!(forget(&mut b, 60_000, 100_000), WebhookReply::NotGranted);
        b.execute(by_hand(None), Ts(100_000 * 1000))
            .expect("enable");
        // Enabled, unleased, unclaimed past the wait: forgotten.
        assert_eq!(forget(&mut b, 60_000, 100_000), WebhookReply::Done);
        assert!(!b.cursors.contains_key("crm"));
        assert_eq!(b.floor(), None);
    }

    /// A disable or a replay that lands after the API endpoint was deleted (two API
    /// calls racing) is refused: it used to make a cursor for the gone id, disabled,
    /// which nothing would ever remove and every snapshot would carry.
    #[test]
    fn a_disable_or_replay_of_a_deleted_api_endpoint_leaves_nothing_behind() {
        let mut b = WebhookBook::default();
        for cmd in [
            WebhookCommand::SetDisabled {
                id: "wh_gone".into(),
                reason: Some("by hand".into()),
                token: None,
                config: false,
            },
            WebhookCommand::Replay {
                id: "wh_gone".into(),
                since: 0,
                config: false,
            },
            WebhookCommand::SetDisabled {
                id: "wh_gone".into(),
                reason: Some("410".into()),
                token: Some(1),
                config: false,
            },
        ] {
            assert!(
                matches!(b.execute(cmd, Ts(0)), Err(_) | Ok(WebhookReply::Fenced)),
                "refused"
            );
        }
        assert!(b.cursors.is_empty(), "{:?}", b.cursors);
    }

    #[test]
    fn replay_and_disable_revoke_the_lease() {
        let mut b = WebhookBook::default();
        claim(&mut b, "a", 0);
        b.execute(
            WebhookCommand::Replay {
                id: "crm".into(),
                since: 3,
                config: true,
            },
            Ts(0),
        )
        .expect("replay");
        assert_eq!(advance(&mut b, 1, 9), WebhookReply::Fenced);
        assert_eq!(
            claim(&mut b, "a", 1),
            WebhookReply::Granted {
                token: 2,
                position: 3
            }
        );
        // A 410 seen under an old token changes nothing; under the current one it stops.
        let off = |token| WebhookCommand::SetDisabled {
            id: "crm".into(),
            reason: Some("gone".into()),
            token,
            config: true,
        };
        assert_eq!(b.execute(off(Some(1)), Ts(0)), Ok(WebhookReply::Fenced));
        assert_eq!(b.execute(off(Some(2)), Ts(0)), Ok(WebhookReply::Done));
        assert_eq!(claim(&mut b, "a", 2), WebhookReply::NotGranted);
        b.execute(by_hand(None), Ts(0)).expect("enable");
        assert_eq!(
            claim(&mut b, "a", 3),
            WebhookReply::Granted {
                token: 3,
                position: 3
            }
        );
    }

    #[test]
    fn an_api_endpoint_must_exist_to_be_claimed() {
        let mut b = WebhookBook::default();
        let claim_api = |b: &mut WebhookBook| {
            b.execute(
                WebhookCommand::Claim {
                    id: "x".into(),
                    config: false,
                    node: "a".into(),
                    lease_ms: 1000,
                    start: 0,
                },
                Ts(0),
            )
        };
        assert_eq!(claim_api(&mut b), Ok(WebhookReply::NotGranted));
        let e = Endpoint {
            id: "x".into(),
            url: "http://127.0.0.1:1/".into(),
            types: vec!["*".into()],
            secret: "whsec_x".into(),
            previous: None,
            older: Vec::new(),
            created: Ts(0),
        };
        b.execute(
            WebhookCommand::Create {
                endpoint: e.clone(),
                start: 5,
                max: 0,
            },
            Ts(0),
        )
        .expect("create");
        assert!(
            b.execute(
                WebhookCommand::Create {
                    endpoint: e,
                    start: 5,
                    max: 0,
                },
                Ts(0)
            )
            .is_err()
        );
        assert_eq!(
            claim_api(&mut b),
            Ok(WebhookReply::Granted {
                token: 1,
                position: 5
            })
        );
        b.execute(WebhookCommand::Delete { id: "x".into() }, Ts(0))
            .expect("delete");
        assert_eq!(claim_api(&mut b), Ok(WebhookReply::NotGranted));
        assert!(b.cursors.is_empty());
    }
}
