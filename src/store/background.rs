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
        Background::pool(name, 1, 10)
    }

    /// Starts `threads` threads (`name-0`, ...) at the given nice value, taking jobs
    /// from one queue: at least one must start.
    pub fn pool(name: &str, threads: usize, nice: i32) -> Result<Background, HubError> {
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
                    set_nice(nice);
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

#[cfg(not(target_os = "linux"))]
pub fn lower_priority() {}

/// Sets the calling thread's nice value (not on this platform).
#[cfg(not(target_os = "linux"))]
pub fn set_nice(_nice: i32) {}
