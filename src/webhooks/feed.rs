//! Where an endpoint's events come from: the hub's feed (`Hub::events_from`: the
//! replica's window, then the live events, with no gap), behind a small trait so the
//! delivery can be fed by a test.
//!

use std::sync::Arc;
use tokio::sync::broadcast;

pub use crate::events::{Envelope, EventFeed, EventsGone};

/// A source of events.
pub trait Feed: Send + Sync + 'static {
    /// Events after `after`.
    fn events_from(&self, after: u64) -> Result<EventFeed, EventsGone>;
    /// The last event's sequence number.
    fn head(&self) -> u64;
    /// The epoch (part of every event id).
    fn epoch(&self) -> String;
}

/// Reads one endpoint's events in order from a [`Feed`], re-subscribing after a lag.
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
                    let Some(feed) = feed.upgrade() else {
                        return Ok(None);
                    };
                    let f = feed.events_from(self.after)?;
                    self.backlog = f.backlog.into();
                    self.live = Some(f.live);
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
    fn events_from(&self, after: u64) -> Result<EventFeed, EventsGone> {
        crate::hub::Hub::events_from(self, after)
    }

    fn head(&self) -> u64 {
        self.event_bounds().1
    }

    fn epoch(&self) -> String {
        self.event_epoch()
    }
}
