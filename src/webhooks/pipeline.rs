//! One kept-alive HTTP/1.1 connection to an endpoint, carrying requests pipelined (RFC
//! 9112 §9.3.2): every request ready when the connection's task wakes is written with
//! one `write`, up to `depth` unanswered, and the answers, which the receiver must send
//! in the order of the requests, are read in that order (`wire::Answers`) and handed to
//! the requests' attempts. So a burst of unrelated events costs one write and one read
//! in the kernel, not one of each per event.
//!
//! Generic over the stream: a `TcpStream`, or the TLS stream over it.
//!
//! What is never taken as an answer: a request the connection wrote but that got no
//! answer before the connection ended (closed, reset, an answer that breaks HTTP, a
//! timeout) fails ([`SendError::Closed`] and the others), and the attempt is retried on
//! the schedule (the same `webhook-id`). A request never written is handed back
//! ([`Outcome::Unsent`]) for another connection: it was no attempt.
//!
//! A request whose attempt ended before all its bytes were in the kernel's hands (an
//! offer at its deadline, its write stalled behind a receiver that reads slowly) never
//! reaches the receiver whole: not yet begun, it is taken out of the write; begun, the
//! connection is closed, so the receiver gets a request cut short, which HTTP discards
//! (the requests written before it fail and are retried, with their ids).
//!
//! A new connection writes one request and waits for its answer before pipelining,
//! unless the receiver is known to keep connections alive ([`KeepAlive`]): one that
//! answers `Connection: close` gets one request per connection, and no request is lost
//! to its close.

use super::client::SendError;
use super::wire::{Answers, Head, Request, Step};
use axum::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicUsize,
    Ordering::{Relaxed, Release},
};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

/// What one request adds to the endpoint's request line and constant fields: its
/// attempt's fields and its body. The connection encodes it straight into its write
/// buffer (`Request::encode_into`), so a request is never a buffer of its own: one of a
/// kilobyte or more per delivery, made, copied and freed, is past glibc's per-thread
/// cache, and the allocator was a fifth of what the consumers added in a profile
/// (BENCHMARKS, thirteenth pass; the CPU rounds could not see the gain).
pub struct Parts {
    /// The attempt's fields (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    pub fields: [(HeaderName, HeaderValue); 3],
    /// The event's wire text (shared, not copied).
    pub body: Bytes,
}

/// One request for a connection.
pub struct Job {
    /// The request's own parts.
    pub parts: Parts,
    /// When the connection gives up on it (and on the requests behind it)...
    pub deadline: Instant,
    /// ...its timeout: the endpoint's, even when the attempt ends sooner (an offer's,
    /// at its deadline: then the request is not written if it has not been yet).
    pub timeout: Duration,
    /// Where its outcome goes.
    pub answer: oneshot::Sender<Outcome>,
    /// Set once its bytes are all in the kernel's hands: the receiver has it (or will),
    /// so an attempt that ends now (an offer at its deadline) waits for its answer
    /// instead (see `Client::post`).
    pub written: Arc<AtomicBool>,
}

/// What became of a request.
pub enum Outcome {
    /// The receiver's answer (its head: the body is read and discarded).
    Answer(Head),
    /// Written, or the connection never made: the attempt failed.
    Failed(SendError),
    /// Never written (the connection ended first): for another connection.
    /// (Boxed: rare, and the other outcomes are small.)
    Unsent(Box<Parts>),
}

/// A connection's state as the client picking one sees it.
#[derive(Default)]
pub struct Shared {
    /// Requests given to it and not yet answered, failed or handed back.
    pub assigned: AtomicUsize,
    /// Closed, or closing: takes no new request.
    pub closed: AtomicBool,
}

/// Whether the endpoint's receiver keeps connections alive, as its last answer said.
pub struct KeepAlive(AtomicU8);

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive(AtomicU8::new(UNKNOWN))
    }
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

impl KeepAlive {
    /// Its last answer kept the connection alive.
    pub fn yes(&self) -> bool {
        self.0.load(Relaxed) == YES
    }

    /// Its last answer closed the connection.
    pub fn no(&self) -> bool {
        self.0.load(Relaxed) == NO
    }

    fn set(&self, keep: bool) {
        let v = if keep { YES } else { NO };
        if self.0.load(Relaxed) != v {
            self.0.store(v, Relaxed);
        }
    }

    #[cfg(test)]
    fn unknown(&self) -> bool {
        self.0.load(Relaxed) == UNKNOWN
    }
}

/// Bytes asked of the stream per read.
const READ: usize = 16 * 1024;
/// The write buffer kept between writes, at most (a burst of large events may grow it
/// past this once; it is then let go).
const KEEP_OUT: usize = 1024 * 1024;

/// Makes the connection (for the first request, within the endpoint's timeout), then carries
/// requests until it ends; every request left is then failed or handed back.
pub async fn run<S, C>(
    connect: C,
    request: Arc<Request>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    shared: Arc<Shared>,
    keep: Arc<KeepAlive>,
    depth: usize,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Future<Output = Result<S, SendError>>,
{
    let Some(first) = jobs.recv().await else {
        return;
    };
    let made = match tokio::time::timeout_at(first.deadline, connect).await {
        Ok(made) => made,
        Err(_) => Err(SendError::Timeout(first.timeout)),
    };
    let io = match made {
        Ok(io) => io,
        Err(e) => {
            // Every request routed here was an attempt to connect, and failed.
            shared.closed.store(true, Relaxed);
            let fail = |j: Job| {
                let _ = j.answer.send(Outcome::Failed(e.clone()));
                shared.assigned.fetch_sub(1, Relaxed);
            };
            fail(first);
            jobs.close();
            while let Ok(j) = jobs.try_recv() {
                fail(j);
            }
            return;
        }
    };
    let mut conn = Conn {
        io,
        request: &request,
        jobs,
        queued: VecDeque::from([first]),
        waiting: VecDeque::new(),
        out: Vec::new(),
        written: 0,
        in_out: 0,
        stalled: false,
        flush: false,
        inbuf: Vec::new(),
        rbuf: vec![0; READ].into_boxed_slice(),
        answers: Answers::new(),
        proven: false,
        last: false,
        timer: None,
        depth: depth.max(1),
        shared: &shared,
        keep: &keep,
    };
    let why = std::future::poll_fn(|cx| conn.poll(cx)).await;
    shared.closed.store(true, Relaxed);
    let Conn {
        mut jobs,
        queued,
        waiting,
        ..
    } = conn;
    if let Some(why) = why {
        for w in waiting {
            let _ = w.answer.send(Outcome::Failed(why.clone()));
            shared.assigned.fetch_sub(1, Relaxed);
        }
    }
    let unsent = |j: Job| {
        let _ = j.answer.send(Outcome::Unsent(Box::new(j.parts)));
        shared.assigned.fetch_sub(1, Relaxed);
    };
    queued.into_iter().for_each(unsent);
    jobs.close();
    while let Ok(j) = jobs.try_recv() {
        unsent(j);
    }
}

/// A request written and not yet answered.
struct Waiter {
    answer: oneshot::Sender<Outcome>,
    written: Arc<AtomicBool>,
    deadline: Instant,
    timeout: Duration,
    /// Its bytes in `out`, while they are part of the write under way.
    span: (usize, usize),
}

struct Conn<'a, S> {
    io: S,
    /// The request line and constant fields.
    request: &'a Request,
    jobs: mpsc::UnboundedReceiver<Job>,
    /// Taken from `jobs`, not yet written.
    queued: VecDeque<Job>,
    /// Written, unanswered, in the order written (the order answers come in).
    waiting: VecDeque<Waiter>,
    out: Vec<u8>,
    written: usize,
    /// How many of `waiting` (the last ones) are encoded in `out`.
    in_out: usize,
    /// The kernel did not take all of `out` when asked.
    stalled: bool,
    flush: bool,
    inbuf: Vec<u8>,
    rbuf: Box<[u8]>,
    answers: Answers,
    /// An answer on this connection kept it alive: requests may be pipelined.
    proven: bool,
    /// An answer said the connection closes after it: nothing more is written.
    last: bool,
    /// The first unanswered request's deadline (set late: re-armed when it fires).
    timer: Option<Pin<Box<Sleep>>>,
    depth: usize,
    shared: &'a Shared,
    keep: &'a KeepAlive,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<'_, S> {
    /// Runs until the connection ends: `None` when it ended with nothing unanswered
    /// (the client dropped it, or it closed between answers), else why.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<SendError>> {
        match self.step(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Some(e)),
            Poll::Ready(Ok(())) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        let mut jobs_done = false;
        loop {
            let mut again = false;
            // Take what the attempts have sent, up to the depth.
            while !self.last && self.queued.len() + self.waiting.len() < self.depth {
                match self.jobs.poll_recv(cx) {
                    Poll::Ready(Some(j)) => self.queued.push_back(j),
                    Poll::Ready(None) => {
                        jobs_done = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            // Into the write buffer: every one taken once the connection is known to
            // be kept alive, else one at a time. Only once the last write is all in the
            // kernel's hands: a request is checked for an attempt that ended (an offer
            // past its deadline) right before its bytes are handed to the socket, never
            // left encoded while the socket is full and sent after the deadline.
            let flushed = self.out.is_empty();
            while flushed
                && !self.last
                && (self.waiting.is_empty() || self.proven || self.keep.yes())
                && let Some(j) = self.queued.pop_front()
            {
                if j.answer.is_closed() {
                    // Its attempt is over (timed out): not sent.
                    self.shared.assigned.fetch_sub(1, Relaxed);
                    continue;
                }
                let start = self.out.len();
                self.request
                    .encode_into(&mut self.out, &j.parts.fields, &j.parts.body);
                self.waiting.push_back(Waiter {
                    answer: j.answer,
                    written: j.written,
                    deadline: j.deadline,
                    timeout: j.timeout,
                    span: (start, self.out.len()),
                });
                self.in_out += 1;
            }
            // A write that stalled: what ended meanwhile is not written now.
            if self.stalled {
                again |= self.drop_ended(cx)?;
            }
            // Write it: one write for all of it, when the kernel takes it.
            while self.written < self.out.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(SendError::Closed(
                            "the connection takes no more bytes".into(),
                        )));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        self.mark_written();
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(SendError::Closed(format!("write: {e}"))));
                    }
                    Poll::Pending => {
                        // The end of an attempt still to be written wakes this.
                        self.stalled = true;
                        again |= self.drop_ended(cx)?;
                        break;
                    }
                }
            }
            if !self.out.is_empty() && self.written == self.out.len() {
                if self.out.capacity() > KEEP_OUT {
                    self.out = Vec::new();
                }
                self.out.clear();
                self.written = 0;
                self.in_out = 0;
                self.stalled = false;
                self.flush = true;
                // Requests that came while it was written are encoded at once, not at
                // the next wake-up.
                again |= !self.queued.is_empty();
            }
            if self.flush {
                // TLS: what the record layer still holds goes out.
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flush = false,
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(SendError::Closed(format!("write: {e}"))));
                    }
                    Poll::Pending => {}
                }
            }
            // Read what came: always, so that a receiver closing an idle connection
            // is seen before a request is written to it.
            let mut rb = ReadBuf::new(&mut self.rbuf);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(self.ended()),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    self.inbuf.extend_from_slice(&self.rbuf[..n]);
                    self.read_answers()?;
                    if self.last && self.answers.between() {
                        // The receiver closes now: what it did not answer, it never will.
                        return Poll::Ready(self.unanswered(|n| {
                            format!("the receiver closed the connection (connection: close) with {n} request(s) unanswered")
                        }));
                    }
                    again = true;
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(SendError::Closed(format!("read: {e}"))));
                }
                Poll::Pending => {}
            }
            if let Some(e) = self.expired(cx) {
                return Poll::Ready(Err(e));
            }
            if !again {
                if jobs_done && self.queued.is_empty() && self.waiting.is_empty() {
                    // The client is gone and nothing is left to answer.
                    return Poll::Ready(Ok(()));
                }
                return Poll::Pending;
            }
        }
    }

    /// Marks the requests of the write under way whose bytes are now all written.
    fn mark_written(&self) {
        let from = self.waiting.len().saturating_sub(self.in_out);
        for w in self.waiting.iter().skip(from) {
            if w.span.1 <= self.written {
                w.written.store(true, Release);
            }
        }
    }

    /// The write stalled (the socket is full): a request of it whose attempt ended
    /// since (an offer at its deadline) must not reach the receiver later. One not
    /// begun is taken out of the write; one begun ends the connection. Whether the write
    /// changed. (Each request still unwritten is watched, so its attempt's end wakes the
    /// connection.)
    fn drop_ended(&mut self, cx: &mut Context<'_>) -> Result<bool, SendError> {
        let mut i = self.waiting.len().saturating_sub(self.in_out);
        let mut changed = false;
        while i < self.waiting.len() {
            let w = &mut self.waiting[i];
            let (start, end) = w.span;
            if end <= self.written || w.answer.poll_closed(cx).is_pending() {
                i += 1;
                continue;
            }
            if start < self.written {
                return Err(SendError::Closed(
                    "a request whose attempt ended (an offer at its deadline) was cut short mid-write, so that it never arrives whole".into(),
                ));
            }
            self.out.drain(start..end);
            for later in self.waiting.iter_mut().skip(i + 1) {
                later.span.0 -= end - start;
                later.span.1 -= end - start;
            }
            self.waiting.remove(i);
            self.in_out -= 1;
            self.shared.assigned.fetch_sub(1, Relaxed);
            changed = true;
        }
        if self.out.is_empty() {
            // Nothing of this write is left: the next one has not stalled.
            self.stalled = false;
        }
        Ok(changed)
    }

    /// Every answer complete in the buffer, handed to its request in order.
    fn read_answers(&mut self) -> Result<(), SendError> {
        let mut at = 0;
        while at < self.inbuf.len() {
            if self.last && self.answers.between() {
                // Nothing after an answer that closes the connection is an answer.
                break;
            }
            if self.answers.between() && self.waiting.is_empty() {
                return Err(super::wire::WireError::Unsolicited.into());
            }
            let (used, step) = self.answers.step(&self.inbuf[at..])?;
            at += used;
            match step {
                Step::More if used == 0 => break,
                Step::More | Step::End => {}
                Step::Head(head) => {
                    let Some(Waiter { answer, .. }) = self.waiting.pop_front() else {
                        return Err(super::wire::WireError::Unsolicited.into());
                    };
                    // An answer before its request was all written (a receiver may
                    // answer early, e.g. a 413): it was the write's first.
                    self.in_out = self.in_out.min(self.waiting.len());
                    self.shared.assigned.fetch_sub(1, Relaxed);
                    self.keep.set(!head.close);
                    if head.close {
                        self.last = true;
                        self.shared.closed.store(true, Relaxed);
                    } else {
                        self.proven = true;
                    }
                    let _ = answer.send(Outcome::Answer(head));
                }
            }
        }
        self.inbuf.drain(..at);
        Ok(())
    }

    /// The stream ended (the receiver closed, or reset).
    fn ended(&mut self) -> Result<(), SendError> {
        if !self.answers.between() && !self.answers.until_close() {
            return Err(SendError::Closed(
                "the connection closed in the middle of an answer".into(),
            ));
        }
        self.unanswered(|n| {
            format!("the receiver closed the connection with {n} request(s) unanswered")
        })
    }

    fn unanswered(&self, why: impl Fn(usize) -> String) -> Result<(), SendError> {
        match self.waiting.len() {
            0 => Ok(()),
            n => Err(SendError::Closed(why(n))),
        }
    }

    /// The first unanswered request's deadline passed: the receiver is stuck, and
    /// every request behind it would wait as long.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<SendError> {
        loop {
            let front = self.waiting.front().map(|w| (w.deadline, w.timeout));
            let timer = match (&mut self.timer, front) {
                (Some(t), _) => t,
                (None, None) => return None,
                (None, Some((d, _))) => self.timer.insert(Box::pin(tokio::time::sleep_until(d))),
            };
            if timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            match front {
                Some((d, timeout)) if d <= Instant::now() => {
                    return Some(SendError::Timeout(timeout));
                }
                Some((d, _)) => timer.as_mut().reset(d),
                None => {
                    self.timer = None;
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_follows_the_last_answer() {
        let k = KeepAlive::default();
        assert!(k.unknown() && !k.yes() && !k.no());
        k.set(false);
        assert!(k.no());
        k.set(true);
        assert!(k.yes());
    }

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

    /// A request with `id` and a body of `body` bytes, and where its outcome goes.
    fn job(id: &str, body: usize) -> (Job, oneshot::Receiver<Outcome>) {
        let (answer, outcome) = oneshot::channel();
        let fields = [
            (
                HeaderName::from_static("webhook-id"),
                HeaderValue::from_str(id).expect("id"),
            ),
            (
                HeaderName::from_static("webhook-timestamp"),
                HeaderValue::from_static("1"),
            ),
            (
                HeaderName::from_static("webhook-signature"),
                HeaderValue::from_static("v1,x"),
            ),
        ];
        let job = Job {
            parts: Parts {
                fields,
                body: Bytes::from(vec![b'x'; body]),
            },
            deadline: Instant::now() + Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            answer,
            written: Arc::default(),
        };
        (job, outcome)
    }

    /// A connection over an in-memory pipe of 4 KiB (so a write stalls until the test,
    /// the receiver, reads), and its jobs' sender.
    fn connection() -> (
        mpsc::UnboundedSender<Job>,
        DuplexStream,
        Arc<Shared>,
        tokio::task::JoinHandle<()>,
    ) {
        let (client, server) = tokio::io::duplex(4096);
        let (tx, jobs) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let request = Arc::new(Request::new(
            "/hook",
            &HeaderValue::from_static("hooks.test"),
        ));
        let conn = tokio::spawn(run(
            async { Ok(client) },
            request,
            jobs,
            shared.clone(),
            Arc::default(),
            16,
        ));
        (tx, server, shared, conn)
    }

    fn send(tx: &mpsc::UnboundedSender<Job>, shared: &Shared, j: Job) {
        // As the client does when it routes a request to the connection.
        shared.assigned.fetch_add(1, Relaxed);
        assert!(tx.send(j).is_ok(), "the connection ended");
    }

    /// The first whole request in `buf`, taken out: its `webhook-id`.
    fn take_request(buf: &mut Vec<u8>) -> Option<String> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let len: usize = field("content-length:").parse().expect("length");
        if buf.len() < end + 4 + len {
            return None;
        }
        buf.drain(..end + 4 + len);
        Some(field("webhook-id:"))
    }

    /// Reads the next whole request as the receiver: its `webhook-id`.
    async fn next_request(server: &mut DuplexStream, buf: &mut Vec<u8>) -> String {
        loop {
            if let Some(id) = take_request(buf) {
                return id;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), server.read(&mut chunk))
                .await
                .expect("a request within 5 s")
                .expect("read");
            assert!(n > 0, "the connection closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn answered(outcome: oneshot::Receiver<Outcome>) -> bool {
        matches!(outcome.await, Ok(Outcome::Answer(h)) if h.status == 200)
    }

    /// The connection carries one request until an answer shows it stays open, then
    /// pipelines what waited: here a request larger than the pipe, then an offer. The
    /// write stalls in the first; the offer's deadline passes (its attempt ends).
    async fn stall_behind_first_answer(
        tx: &mpsc::UnboundedSender<Job>,
        server: &mut DuplexStream,
        shared: &Shared,
        buf: &mut Vec<u8>,
        first: usize,
        offer: usize,
    ) -> oneshot::Receiver<Outcome> {
        let (j, e1) = job("e1", 10);
        send(tx, shared, j);
        assert_eq!(next_request(server, buf).await, "e1");
        let (j, a) = job("a", first);
        send(tx, shared, j);
        let (j, o) = job("offer", offer);
        send(tx, shared, j);
        server.write_all(OK).await.expect("answer");
        // The connection read the answer and wrote the other two in one write in the
        // same wake-up (one task runs at a time here), stalling on the full pipe.
        assert!(answered(e1).await);
        drop(o);
        a
    }

    #[tokio::test]
    async fn an_ended_request_not_yet_begun_in_a_stalled_write_is_taken_out_of_it() {
        let (tx, mut server, shared, conn) = connection();
        let mut buf = Vec::new();
        let a = stall_behind_first_answer(&tx, &mut server, &shared, &mut buf, 8 * 1024, 10).await;
        assert_eq!(next_request(&mut server, &mut buf).await, "a");
        server.write_all(OK).await.expect("answer");
        assert!(answered(a).await);
        // The connection goes on, and the offer never reached the receiver.
        let (j, next) = job("next", 10);
        send(&tx, &shared, j);
        assert_eq!(next_request(&mut server, &mut buf).await, "next");
        server.write_all(OK).await.expect("answer");
        assert!(answered(next).await);
        assert_eq!(shared.assigned.load(Relaxed), 0);
        drop(tx);
        conn.await.expect("the connection's task");
    }

    #[tokio::test]
    async fn an_ended_request_begun_in_a_stalled_write_ends_the_connection_before_it_is_whole() {
        let (tx, mut server, shared, conn) = connection();
        let mut buf = Vec::new();
        let a = stall_behind_first_answer(&tx, &mut server, &shared, &mut buf, 10, 8 * 1024).await;
        // What the receiver gets: `a`, then a part of the offer, then the end.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest))
            .await
            .expect("the connection closed within 5 s")
            .expect("read");
        buf.extend_from_slice(&rest);
        assert_eq!(take_request(&mut buf).as_deref(), Some("a"));
        assert_eq!(take_request(&mut buf), None, "the offer arrived whole");
        let offer_head = String::from_utf8_lossy(&buf).to_string();
        assert!(
            offer_head.contains("webhook-id: offer"),
            "{offer_head:.200}"
        );
        // `a` was written whole but never answered: it failed, to be retried.
        assert!(matches!(a.await, Ok(Outcome::Failed(_))));
        assert_eq!(shared.assigned.load(Relaxed), 0);
        conn.await.expect("the connection's task");
    }
}
