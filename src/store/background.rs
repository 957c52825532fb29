//! Low-priority threads for work that should use what the live path leaves over:
//! the stores' snapshots, customer searches.

use crate::error::HubError;
use tokio::sync::oneshot;

/// A thread of its own, at a low CPU priority, for building snapshots: seconds of
/// replay and encoding that should use what the live path leaves over, not compete
/// with it (on a busy node the scheduler would otherwise share the cores evenly, and
/// every command would slow down while a snapshot is built).
pub struct Background {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Background {
    /// Starts the thread, named `name`, at nice 10.
    pub fn start(name: &str) -> Result<Background, HubError> {
        Background::pool(name, 1, Priority::Nice(10))
    }

    /// Starts `threads` threads (`name-0`, ...) at the given priority, taking jobs
    /// from one queue: at least one must start.
    pub fn pool(name: &str, threads: usize, priority: Priority) -> Result<Background, HubError> {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let mut started = 0;
        let mut failure = None;
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let thread_name = if threads <= 1 {
                name.to_owned()
            } else {
                format!("{name}-{i}")
            };
            let spawned = std::thread::Builder::new()
                .name(thread_name)
                .spawn(move || {
                    match priority {
                        Priority::Nice(n) => set_nice(n),
                        Priority::Idle => set_idle(),
                    }
                    // Ends when the owner is dropped (the sender with it). A job that
                    // panics (a corrupt stored snapshot) fails alone: its caller gets an
                    // error, the thread goes on.
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = job else { return };
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if started == 0 => Err(HubError::StoreUnavailable(format!(
                "cannot start the {name} thread: {e}"
            ))),
            _ => Ok(Background { jobs: tx }),
        }
    }

    /// Runs `f` on the background thread and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HubError> {
        let (tx, rx) = oneshot::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .send(job)
            .map_err(|_| HubError::StoreUnavailable("the background thread is gone".into()))?;
        rx.await
            .map_err(|_| HubError::StoreUnavailable("a background thread dropped a job".into()))
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
}
