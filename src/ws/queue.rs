//! A session's send queue: frames the hub pushes to one connection, bounded, and the
//! signal that closes it.
//!
//! Not a tokio channel: an idle connection should cost as little as possible, and a
//! bounded mpsc allocates a block of slots up front. This queue allocates nothing until
//! the first frame, and carries the close signal too, so a session needs one queue and
//! one `Notify` rather than a channel plus a watch.

use crate::hub::Outbound;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

/// The queue is full: the session is not reading.
#[derive(Debug)]
pub struct Full;

/// What the session should do next.
#[derive(Debug)]
pub enum Next {
    /// Write this frame.
    Frame(Outbound),
    /// Say goodbye with this reason and close.
    Close(&'static str),
}

#[derive(Default)]
struct Inner {
    frames: VecDeque<Outbound>,
    close: Option<&'static str>,
}

/// One session's queue. See the module documentation.
pub struct SendQueue {
    inner: Mutex<Inner>,
    ready: Notify,
    cap: usize,
}

impl std::fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendQueue")
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl SendQueue {
    /// An empty queue holding at most `cap` frames.
    pub fn new(cap: usize) -> SendQueue {
        SendQueue {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            cap,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame; never waits.
    pub fn push(&self, frame: Outbound) -> Result<(), Full> {
        {
            let mut q = self.inner();
            if q.frames.len() >= self.cap {
                return Err(Full);
            }
            q.frames.push_back(frame);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Asks the session to close; the first reason given wins.
    pub fn close(&self, reason: &'static str) {
        self.inner().close.get_or_insert(reason);
        self.ready.notify_one();
    }

    /// The next frame if one is queued and no close is pending: what a writer adds to
    /// the frame it is already writing, so that both leave in one write.
    pub fn try_pop(&self) -> Option<Outbound> {
        let mut q = self.inner();
        if q.close.is_some() {
            return None;
        }
        q.frames.pop_front()
    }

    /// Waits for the next thing to do. Cancel-safe: nothing is taken until it returns.
    pub async fn next(&self) -> Next {
        loop {
            {
                let mut q = self.inner();
                if let Some(r) = q.close {
                    return Next::Close(r);
                }
                if let Some(f) = q.frames.pop_front() {
                    return Next::Frame(f);
                }
            }
            // A push between the check and this wait leaves a permit: no lost wake-up.
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_in_order_then_full_and_close_wins() {
        let q = SendQueue::new(2);
        q.push(Outbound::Text("a".into())).expect("room");
        q.push(Outbound::Text("b".into())).expect("room");
        assert!(q.push(Outbound::Text("c".into())).is_err());
        assert!(matches!(q.next().await, Next::Frame(Outbound::Text(t)) if &*t == "a"));
        assert!(matches!(q.try_pop(), Some(Outbound::Text(t)) if &*t == "b"));
        assert!(q.try_pop().is_none());
        q.push(Outbound::Text("c".into())).expect("room");
        q.close("replaced");
        assert!(q.try_pop().is_none(), "a pending close stops the batch");
        q.close("slow_consumer");
        assert!(matches!(q.next().await, Next::Close("replaced")));
    }
}
