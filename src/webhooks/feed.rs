//! Where an endpoint's events come from: the hub's feed (`Hub::events_chunk`: the
//! replica's window a piece at a time, then the live events, with no gap), behind a
//! small trait so the delivery can be fed by a test.
//!
//! An endpoint that fell behind (its receiver was down) reads the window as a stream
//! reader does, [`CHUNK`] events per read: one read copies no more than a piece under
//! the lock the decisions take, and the reader holds no more than a piece.

use std::sync::Arc;
use tokio::sync::broadcast;

pub use crate::events::{Envelope, EventChunk, EventsGone};

/// How many held events one read of the window takes.
pub const CHUNK: usize = 1024;

/// A source of events.
pub trait Feed: Send + Sync + 'static {
    /// Up to `max` held events after `after`; with the live events (subscribed in the
    /// same step, so nothing falls between) when they reach the newest.
    fn events_chunk(&self, after: u64, max: usize) -> Result<EventChunk, EventsGone>;
    /// The last event's sequence number.
    fn head(&self) -> u64;
    /// The epoch (part of every event id).
    fn epoch(&self) -> String;
}

/// Reads one endpoint's events in order from a [`Feed`]: the window a piece at a
/// time, then the live events; the window again after a lag.
pub struct Reader {
    after: u64,
    backlog: std::collections::VecDeque<Arc<Envelope>>,
    live: Option<broadcast::Receiver<Arc<Envelope>>>,
}

impl Reader {
    /// A reader from `after`.
    pub fn new(after: u64) -> Reader {
        Reader {
            after,
            backlog: Default::default(),
            live: None,
        }
    }

    /// The next event; `None` when the feed closed (the hub stops).
    /// The feed is held weakly: a reader waiting for live events does not keep a hub
    /// that is gone alive.
    pub async fn next(
        &mut self,
        feed: &std::sync::Weak<dyn Feed>,
    ) -> Result<Option<Arc<Envelope>>, EventsGone> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                if e.seq > self.after {
                    self.after = e.seq;
                    return Ok(Some(e));
                }
                continue;
            }
            let live = match &mut self.live {
                Some(l) => l,
                None => {
                    let c = match feed.upgrade() {
                        Some(feed) => feed.events_chunk(self.after, CHUNK)?,
                        None => return Ok(None),
                    };
                    if c.events.is_empty() && c.live.is_none() {
                        // Not a feed's answer (nothing held after a position below
                        // the newest, which the window's dense numbers rule out):
                        // ask again a little later rather than spin.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                    self.backlog = c.events.into();
                    self.live = c.live;
                    continue;
                }
            };
            match live.recv().await {
                // A jump (this node reloaded a snapshot): read the window again.
                Ok(e) if e.seq > self.after + 1 => self.live = None,
                Ok(e) if e.seq > self.after => {
                    self.after = e.seq;
                    return Ok(Some(e));
                }
                Ok(_) => {}
                // Fell behind the live channel: ask again from the last event seen.
                Err(broadcast::error::RecvError::Lagged(_)) => self.live = None,
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }
}

impl Feed for crate::hub::Hub {
    fn events_chunk(&self, after: u64, max: usize) -> Result<EventChunk, EventsGone> {
        crate::hub::Hub::events_chunk(self, after, max)
    }

    fn head(&self) -> u64 {
        self.event_bounds().1
    }

    fn epoch(&self) -> String {
        self.event_epoch()
    }
}
