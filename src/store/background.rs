//! A low-priority thread for the stores' background work (building snapshots).

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
    /// Starts the thread, named `name`.
    pub fn start(name: &str) -> Result<Background, HubError> {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                lower_priority();
                // Ends when the store is dropped (the sender with it). A job that
                // panics (a corrupt stored snapshot) fails alone: its caller gets an
                // error, the thread goes on.
                for job in rx {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map_err(|e| {
                HubError::StoreUnavailable(format!("cannot start the snapshot thread: {e}"))
            })?;
        Ok(Background { jobs: tx })
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
            .map_err(|_| HubError::StoreUnavailable("the snapshot thread is gone".into()))?;
        rx.await
            .map_err(|_| HubError::StoreUnavailable("the snapshot thread dropped a job".into()))
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
