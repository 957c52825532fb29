//! The threads customer searches run on. A broad search over a million customers takes
//! milliseconds of CPU; on a tokio worker it would hold up every session and decision
//! queued behind that worker. So a search, which needs no lock of the state's (the
//! index has its own), runs here: threads of their own, at a lower CPU priority than
//! the decisions, so that when the cores are busy routing comes first and searches take
//! what is left over. Measured on 2 cores with 20 agents searching a million customers
//! at 10/s each (`loadtest route --customers 1000000 --searchers 20`, BENCHMARKS):
//! create -> offer p99 28 ms with searches on the workers, 5.9 ms on two threads at
//! nice 5, 3.7 ms on one at nice 10 (2.0 ms without searches); a search's p99 rose to
//! 94 ms, which a person typing does not notice, where a ringing call would.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// How many threads search at once: half the cores, at least one, so that searches
/// never take every core from the decisions.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The nice value of the search threads: weight 110 against a decision thread's 1,024,
/// about a tenth of a contended core (the snapshot thread's too).
const NICE: i32 = 10;

fn pool() -> Option<&'static Mutex<Sender<Job>>> {
    static POOL: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..threads() {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("search-{i}"))
                .spawn(move || work(rx));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(error = %e, "cannot start a search thread"),
            }
        }
        (started > 0).then(|| Mutex::new(tx))
    })
    .as_ref()
}

fn work(rx: Arc<Mutex<Receiver<Job>>>) {
    crate::store::background::set_nice(NICE);
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        // A job that panics fails alone: its caller sees the dropped answer.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Runs `f` on a search thread and waits for it; `None` when it panicked. Without
/// search threads (none could be started) it runs here.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let Some(pool) = pool() else {
        return Some(f());
    };
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let sent = pool
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .is_ok();
    if !sent {
        return None;
    }
    rx.await.ok()
}
