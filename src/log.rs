//! The command log: the spine both durable stores share.
//!
//! A decision is a command written to a log ([`Entry`]), then applied to a replica of
//! the [`State`] by [`step`], with the entry's time and ids derived from its position.
//! The books are deterministic, so replaying the same entries from the same state
//! makes exactly the same decisions: that is how a Redis node follows the other nodes
//! (`store::redis`, positions are stream ids), how the file store comes back after a
//! restart (`store::file`, positions are record numbers), and how both build their
//! snapshots. An entry is one MessagePack value; a snapshot is
//! [`State::snapshot_bytes`] at a position.

use crate::clock::Ts;
use crate::context::ContextCommand;
use crate::error::HubError;
use crate::routing::{Command, Rules};
use crate::state::{Outcome, State};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One log entry.
#[derive(Serialize, Deserialize)]
pub struct Entry {
    /// The submitting node's request id, to hand the outcome back.
    pub req: Option<uuid::Uuid>,
    /// The submitting node.
    pub node: String,
    /// The submitter's clock; the applier never lets time go backwards.
    pub now: Ts,
    /// The command.
    pub body: Body,
}

/// What an entry asks for.
#[derive(Serialize, Deserialize)]
pub enum Body {
    /// A routing command.
    Routing(Box<Command>),
    /// A customer-context command.
    Context(Box<ContextCommand>),
    /// Fire every timer due at the entry's time.
    Expire,
    /// A change to the webhooks' endpoints, positions or leases.
    Webhook(Box<crate::webhooks::book::WebhookCommand>),
    /// This log's history forked: a file store started from a backup copy, whose
    /// records after the copy differ from those the original went on to write. The
    /// events get a new epoch from `nonce` (random, kept in the record so that every
    /// replay names the same one), so that no event id names two different events.
    NewHistory {
        /// The new epoch's seed.
        nonce: u64,
    },
}

impl Body {
    /// Makes the decision on `state` at `now`: the one place a body becomes a call on
    /// the books, for a log replay ([`step`]) and the in-memory store alike.
    pub fn apply(self, state: &mut State, now: Ts) -> Outcome {
        match self {
            Body::Routing(cmd) => state.execute(*cmd, now),
            Body::Context(cmd) => state.context(*cmd, now),
            Body::Expire => state.expire_due(now),
            Body::Webhook(cmd) => state.webhook(*cmd, now),
            Body::NewHistory { nonce } => {
                state.events.new_history(nonce);
                Outcome::done()
            }
        }
    }
}

impl Entry {
    /// The entry as log bytes.
    pub fn encode(&self) -> Result<Vec<u8>, HubError> {
        rmp_serde::to_vec_named(self)
            .map_err(|e| HubError::StoreUnavailable(format!("cannot encode a log entry: {e}")))
    }
}

/// A replica: the state and where in the log it is. `P` is the backend's position
/// (a Redis stream id, a file record number).
pub struct Replica<P> {
    /// The books.
    pub state: State,
    /// The last applied position.
    pub pos: P,
    /// The latest time applied.
    pub now: Ts,
    /// Entries applied since this replica was built.
    pub applied: u64,
}

impl<P> Replica<P> {
    /// A blank replica at `pos`, at time zero: every replica starts the same way and
    /// takes its time from the log only.
    pub fn blank(rules: Arc<Rules>, pos: P) -> Replica<P> {
        Replica {
            state: State::new(rules, Ts(0)),
            pos,
            now: Ts(0),
            applied: 0,
        }
    }
}

/// What [`step`] hands back for an entry: the outcome, the submitting node and its
/// request id.
pub type Stepped = (Outcome, String, Option<uuid::Uuid>);

/// Applies one log entry to a replica: the one place where an entry becomes a decision,
/// for a live replica, a replay after a restart and a snapshot build alike. `seed` is
/// derived from the position (the same on every node and every replay). Returns
/// nothing for an entry that cannot be decoded (skipped the same way everywhere).
pub fn step<P: std::fmt::Display>(
    r: &mut Replica<P>,
    pos: P,
    seed: u64,
    bytes: &[u8],
) -> Option<Stepped> {
    r.pos = pos;
    r.applied += 1;
    let entry: Entry = match rmp_serde::from_slice(bytes) {
        Ok(e) => e,
        Err(e) => {
            // Written by a newer or broken node.
            tracing::error!(pos = %r.pos, error = %e, "cannot decode a log entry; skipped");
            return None;
        }
    };
    let now = entry.now.max(r.now);
    r.now = now;
    r.state.reseed(seed);
    if r.state.events.epoch().is_none() {
        // The first entry a blank state applies names the epoch: the same on every
        // replica of this log, new with a new log (its position, time, node and request
        // id differ).
        let mut h = seed ^ entry.now.0.rotate_left(23) ^ seed_of(&entry.node).rotate_left(41);
        if let Some(req) = entry.req {
            h ^= req.as_u64_pair().0;
        }
        r.state.events.begin(h);
        r.state.book.begin_at(now);
    }
    let o = entry.body.apply(&mut r.state, now);
    Some((o, entry.node, entry.req))
}

/// A 64-bit seed from a log position's text, the same on every node.
pub fn seed_of(pos: &str) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pos.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_stable() {
        assert_eq!(seed_of("1700000000000-0"), seed_of("1700000000000-0"));
        assert_ne!(seed_of("1700000000000-0"), seed_of("1700000000000-1"));
    }
}
