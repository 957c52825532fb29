//! Low-priority threads for work that should use what the live path leaves over:
//! the stores' snapshots, customer searches.

use crate::error::HubError;
use tokio::sync::oneshot;

/// A job: the work, which returns what hands its result back.
type Job = Box<dyn FnOnce() -> HandBack + Send>;
/// Hands a job's result to whoever waits for it (wakes a tokio task).
type HandBack = Box<dyn FnOnce() + Send>;

/// A thread of its own, at a low CPU priority, for building snapshots: seconds of
/// replay and encoding that should use what the live path leaves over, not compete
/// with it (on a busy node the scheduler would otherwise share the cores evenly, and
/// every command would slow down while a snapshot is built).
///
/// A pool in `SCHED_IDLE` ([`Priority::Idle`], the searches) shares no lock with the
/// runtime's workers. A thread in `SCHED_IDLE` that a waking worker preempts runs
/// again only when a core falls idle, and whatever lock it holds meanwhile keeps every
/// thread that wants it waiting as long. Handing a result to a tokio task takes the
/// scheduler's locks, and blocking on a channel takes the channel's. So:
/// - its threads take jobs with `try_recv` and park when there are none (a sender
///   unparks them: no lock);
/// - a thread at the normal priority (`NAME-back`) hands the results back.
///
/// Why it matters is a measurement as much as a principle (BENCHMARKS, fifteenth
/// pass). With 20 agents' searches that read nothing, one set of six 20 s rounds gave
/// these create -> offer p99s against runs without searches:
/// - 1.30x handed back from `SCHED_IDLE` (slower in 6 of 6 rounds);
/// - 1.02x run on the workers;
/// - 1.11x on a pool at the normal priority.
///
/// Rounds measured after the change, with real searches: 1.13x for the old pool and
/// 1.09x for this one, which was lower in 5 of 6 rounds. That difference is within
/// the rounds' spread.
pub struct Background {
    jobs: std::sync::mpsc::Sender<Job>,
    /// The threads to unpark when a job is sent (an idle pool's; none otherwise).
    wake: Vec<std::thread::Thread>,
}

impl Background {
    /// Starts the thread, named `name`, at nice 10.
    pub fn start(name: &str) -> Result<Background, HubError> {
        Background::pool(name, 1, Priority::Nice(10))
    }

    /// Starts `threads` threads (`name-0`, ...) at the given priority, taking jobs
    /// from one queue: at least one must start.
    pub fn pool(name: &str, threads: usize, priority: Priority) -> Result<Background, HubError> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let back = match priority {
            Priority::Idle => Some(HandBacks::start(name)?),
            Priority::Nice(_) => None,
        };
        // The threads started; an idle pool's are unparked for each job.
        let mut wake = Vec::new();
        let mut failure = None;
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let back = back.clone();
            let thread_name = if threads <= 1 {
                name.to_owned()
            } else {
                format!("{name}-{i}")
            };
            let spawned = std::thread::Builder::new()
                .name(thread_name)
                .spawn(move || match back {
                    Some(back) => idle_worker(&rx, &back),
                    None => {
                        if let Priority::Nice(n) = priority {
                            set_nice(n);
                        }
                        // Ends when the owner is dropped (the sender with it). A job that
                        // panics (a corrupt stored snapshot) fails alone: its caller gets
                        // an error, the thread goes on. Only this pool's threads share the
                        // receiver.
                        loop {
                            let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            let Ok(job) = job else { return };
                            if let Ok(give) =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                            {
                                give();
                            }
                        }
                    }
                });
            match spawned {
                Ok(h) => wake.push(h.thread().clone()),
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if wake.is_empty() => Err(HubError::StoreUnavailable(format!(
                "cannot start the {name} thread: {e}"
            ))),
            _ => {
                if back.is_none() {
                    // They block on the queue and need no wake-up.
                    wake.clear();
                }
                Ok(Background { jobs: tx, wake })
            }
        }
    }

    /// Runs `f` on the background thread and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HubError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let out = f();
            Box::new(move || {
                let _ = tx.send(out);
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| HubError::StoreUnavailable("the background thread is gone".into()))?;
        for t in &self.wake {
            t.unpark();
        }
        rx.await
            .map_err(|_| HubError::StoreUnavailable("a background thread dropped a job".into()))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // An idle pool's threads are parked: woken, they find the queue closed and end.
        let (closed, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        for t in &self.wake {
            t.unpark();
        }
    }
}

/// The thread that hands an idle pool's results back, at the normal priority.
#[derive(Clone)]
struct HandBacks {
    queue: std::sync::mpsc::Sender<HandBack>,
    thread: std::thread::Thread,
}

impl HandBacks {
    fn start(name: &str) -> Result<HandBacks, HubError> {
        let (queue, rx) = std::sync::mpsc::channel::<HandBack>();
        let h = std::thread::Builder::new()
            .name(format!("{name}-back"))
            .spawn(move || {
                loop {
                    match rx.try_recv() {
                        Ok(give) => give(),
                        Err(std::sync::mpsc::TryRecvError::Empty) => std::thread::park(),
                        // Every pool thread has ended.
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                    }
                }
            })
            .map_err(|e| {
                HubError::StoreUnavailable(format!("cannot start the {name}-back thread: {e}"))
            })?;
        Ok(HandBacks {
            queue,
            thread: h.thread().clone(),
        })
    }

    fn give(&self, give: HandBack) {
        let _ = self.queue.send(give);
        self.thread.unpark();
    }
}

impl Drop for HandBacks {
    fn drop(&mut self) {
        // This sender first, then the wake-up: woken before the last sender is gone,
        // the thread would find its queue open and empty, and park for good.
        let (closed, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.queue, closed));
        self.thread.unpark();
    }
}

/// An idle pool's thread: jobs taken without blocking on the channel (parked when there
/// are none), the work in `SCHED_IDLE`, the result handed to [`HandBacks`].
fn idle_worker(rx: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>, back: &HandBacks) {
    set_idle();
    loop {
        // Only this pool's threads share the receiver's lock.
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).try_recv();
        match next {
            Ok(job) => {
                if let Ok(give) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
                    back.give(give);
                }
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => std::thread::park(),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
        }
    }
}

/// How a background thread shares the cores with the node's own threads.
#[derive(Clone, Copy, Debug)]
pub enum Priority {
    /// A nice value: a share of a contended core by weight (10: about a tenth).
    Nice(i32),
    /// `SCHED_IDLE`: runs when no other thread of the machine wants the core, and
    /// gives it up the moment one wakes (weight 3 against 1,024, so it is never
    /// starved outright on a saturated node, only slowed).
    Idle,
}

/// Gives the calling thread a low CPU priority (nice 10: about a tenth of a core's share
/// against the node's own threads when they keep the cores busy; not 19, whose ~1.5%
/// could stretch a build past any bound on a saturated node).
#[cfg(target_os = "linux")]
pub fn lower_priority() {
    set_nice(10);
}

/// Sets the calling thread's nice value (Linux: per thread).
#[cfg(target_os = "linux")]
pub fn set_nice(nice: i32) {
    // SAFETY: setpriority takes plain integers and touches no memory of ours. On Linux
    // the nice value is per thread, and `who = 0` names the calling thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r != 0 {
        tracing::debug!(nice, "cannot lower a background thread's priority");
    }
}

/// Puts the calling thread in `SCHED_IDLE` (Linux: per thread); nice 19 where the
/// kernel refuses.
#[cfg(target_os = "linux")]
pub fn set_idle() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a live, initialized sched_param; pid 0 names the calling
    // thread.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if r != 0 {
        tracing::debug!("cannot put a background thread in SCHED_IDLE");
        set_nice(19);
    }
}

#[cfg(not(target_os = "linux"))]
pub fn lower_priority() {}

/// `SCHED_IDLE` (not on this platform).
#[cfg(not(target_os = "linux"))]
pub fn set_idle() {}

/// Sets the calling thread's nice value (not on this platform).
#[cfg(not(target_os = "linux"))]
pub fn set_nice(_nice: i32) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Duration;

    /// What the calling thread runs at: (policy, nice).
    fn own_priority() -> (i32, i32) {
        // SAFETY: plain integer calls about the calling thread (pid/who 0).
        unsafe {
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, 0),
            )
        }
    }

    #[tokio::test]
    async fn each_pool_thread_runs_at_the_priority_it_was_given() {
        let idle = Background::pool("t-idle", 2, Priority::Idle).expect("pool");
        let (policy, _) = idle.run(own_priority).await.expect("ran");
        assert_eq!(policy, libc::SCHED_IDLE);
        let nice = Background::pool("t-nice", 1, Priority::Nice(10)).expect("pool");
        assert_eq!(
            nice.run(own_priority).await.expect("ran"),
            (libc::SCHED_OTHER, 10)
        );
        // The caller's own thread is left as it was.
        assert_eq!(own_priority().0, libc::SCHED_OTHER);
    }

    /// This process's threads named `name`, with their scheduling policy.
    fn threads_named(name: &str) -> Vec<i32> {
        let mut found = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return found;
        };
        for t in dir.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == name {
                let tid: i32 = t.file_name().to_string_lossy().parse().unwrap_or(0);
                // SAFETY: a plain integer call about one of this process's threads.
                found.push(unsafe { libc::sched_getscheduler(tid) });
            }
        }
        found
    }

    #[tokio::test]
    async fn an_idle_pool_hands_back_at_the_normal_priority_and_ends_when_dropped() {
        let idle = Background::pool("t-back", 1, Priority::Idle).expect("pool");
        // Many jobs in a row: each is taken from the queue (parked in between) and
        // handed back.
        for i in 0..200u32 {
            assert_eq!(idle.run(move || i * 2).await.expect("ran"), i * 2);
        }
        assert_eq!(threads_named("t-back"), vec![libc::SCHED_IDLE]);
        assert_eq!(threads_named("t-back-back"), vec![libc::SCHED_OTHER]);
        // A job that panics is answered with an error, and the pool goes on.
        assert!(
            idle.run(|| -> u32 { panic!("a job's own bug") })
                .await
                .is_err()
        );
        assert_eq!(idle.run(|| 7).await.expect("ran after a panic"), 7);
        drop(idle);
        // Both threads end: the pool's when woken to a closed queue, then the
        // hand-back's when the last pool thread is gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(threads_named("t-back").is_empty() && threads_named("t-back-back").is_empty()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the pool's threads did not end"
            );
            std::thread::yield_now();
        }
    }
}
