//! The threads customer searches run on. A broad search over a million customers takes
//! milliseconds of CPU; on a tokio worker it would hold up every session and decision
//! queued behind that worker. So a search, which needs no lock of the state's (the
//! index has its own), runs here: threads of their own, at a lower CPU priority than
//! the decisions, so that when the cores are busy routing comes first and searches take
//! what is left over. Measured on 2 cores with 20 agents searching a million customers
//! at 10/s each (`loadtest route --customers 1000000 --searchers 20`, BENCHMARKS):
//! create -> offer p99 28 ms with searches on the workers, 5.9 ms on two threads at
//! nice 5, 3.7 ms on one at nice 10 (2.0 ms without searches); a search's p99 rose to
//! 94 ms, which a person typing does not notice, where a ringing call would. At nice
//! 10 a waking decision could still wait for a search's time slice to end (2.6x the
//! p99 without searches on 26 Nov); in `SCHED_IDLE` it takes the core at once: 2.37 ms
//! against 2.26 ms without (1.05x), searches p99 21 ms (loadtest/results/2026-11-26-s3).
//! Under a load that leaves no core idle searches slow down instead (weight 3 against
//! 1,024), and their rate limit keeps them from piling up.
//!
//! Only the search itself runs in `SCHED_IDLE`: a thread at the normal priority hands
//! the results back to the sessions, and the search threads take their work without
//! blocking on a lock the workers take ([`Background`]). A thread in `SCHED_IDLE` that
//! is preempted while holding such a lock (the tokio scheduler's, to wake a session)
//! keeps the workers that want it waiting until a core falls idle.

use crate::store::background::{Background, Priority};
use std::sync::OnceLock;

/// How many threads search at once: half the cores, at least one, so that searches
/// never take every core from the decisions.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The search threads' priority.
const PRIORITY: Priority = Priority::Idle;

fn pool() -> Option<&'static Background> {
    static POOL: OnceLock<Option<Background>> = OnceLock::new();
    POOL.get_or_init(|| match Background::pool("search", threads(), PRIORITY) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(error = %e, "searches run on the tokio workers");
            None
        }
    })
    .as_ref()
}

/// Runs `f` on a search thread and waits for it; `None` when it panicked. Without
/// search threads (none could be started) it runs here.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match pool() {
        Some(pool) => pool.run(f).await.ok(),
        None => Some(f()),
    }
}
