//! A snapshot written by a forked child: the replica as the applier holds it
//! between two batches, encoded and written by a copy of the process.
//!
//! Why: the other way ([`super::compact`]) reads the previous snapshot and decides
//! every record since then a second time, on the same two cores as the live hub; over a
//! long run at 5,000 tasks/s that second replay was most of the snapshot's cost (~22 µs
//! a task; ~4 with the fork: BENCHMARKS, seventh pass). A fork costs the applier only
//! the copy of the page tables; the kernel shares the pages copy-on-write, and the
//! parent copies a page only when it writes one while the child runs (as Redis's
//! `BGSAVE` does; those copies are now the snapshot's share of the latency tail). So
//! the child's life is kept short: it streams the encoding to the file (no copy of the
//! state, nor of the encoded bytes). It still syncs the file itself (30-130 ms of its
//! 0.8-2 s): a write-back error reaches only descriptors open when it happens.
//!
//! The child of a threaded process holds only the thread that forked, so it must not
//! wait for a lock another thread may have held at the fork: it touches the state (the
//! applier's, whose lock the applier holds across the fork), allocates (glibc's
//! `fork` leaves malloc's locks usable in the child), writes files, and leaves with
//! `_exit`: no logging (the subscriber's locks), no destructors. It tells its result
//! through a pipe.
//!
//! On other platforms [`spawn`] always fails, and the file store builds every snapshot
//! from the log.

#[cfg(target_os = "linux")]
pub use linux::spawn;
#[cfg(not(target_os = "linux"))]
pub use other::spawn;

#[cfg(not(target_os = "linux"))]
mod other {
    use crate::state::State;
    use std::path::Path;

    /// Never made here.
    pub struct Child(std::convert::Infallible);

    /// No fork on this platform.
    pub fn spawn(_: &State, _: &Path, _: u64, _: u64) -> std::io::Result<Child> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    impl Child {
        /// Never called: there is no child.
        pub fn wait(self, _limit: std::time::Duration) -> Result<u64, String> {
            match self.0 {}
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use crate::state::State;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// A child writing a snapshot.
    pub struct Child {
        pid: libc::pid_t,
        /// The read end of the pipe the child writes its result to.
        result: std::fs::File,
    }

    /// Forks a child that writes `state`, the replica at record `pos` with time `now`, as
    /// the snapshot of `dir` (`snapshot.tmp`, synced; the parent puts it in place with
    /// [`super::super::snapshot::publish`]), then exits. Call it on the applier thread, with the
    /// replica's lock held: the applier is the only thread that changes the replica, so
    /// the child's copy is the state at `pos` exactly. An error: no child (the fork or the
    /// pipe failed); the caller builds the snapshot the other way.
    pub fn spawn(state: &State, dir: &Path, pos: u64, now: u64) -> std::io::Result<Child> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array we pass, which has room for
        // them.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors are new and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: fork itself is sound to call; what makes it delicate is what the child
        // does before it exits, which `child` keeps to the list in the module documentation.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            child(state, dir, pos, now, parent, fds[1]);
        }
        drop(write);
        Ok(Child {
            pid,
            result: std::fs::File::from(read),
        })
    }

    impl Child {
        /// Waits for the child to end: the written file's size, or why there is none. A
        /// child still writing after `limit` is killed (a hung child would otherwise
        /// hold off every later snapshot, and a stop).
        pub fn wait(mut self, limit: Duration) -> Result<u64, String> {
            let deadline = Instant::now() + limit;
            let mut said = Vec::new();
            let mut late = false;
            // EOF once the child has exited (its end of the pipe closes with it).
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // SAFETY: kill takes plain integers; the pid is our unreaped child.
                    unsafe { libc::kill(self.pid, libc::SIGKILL) };
                    late = true;
                    break;
                }
                let mut p = libc::pollfd {
                    fd: self.result.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = left.as_millis().clamp(1, 60_000) as libc::c_int;
                // SAFETY: poll reads and writes the one pollfd we pass.
                match unsafe { libc::poll(&mut p, 1, ms) } {
                    // Nothing yet, or a signal (a stop's SIGTERM) came first: wait on,
                    // within the limit. (A read now could block past it.)
                    0 => continue,
                    -1 if std::io::Error::last_os_error().kind()
                        == std::io::ErrorKind::Interrupted =>
                    {
                        continue;
                    }
                    // Any other failure (ENOMEM under the memory a fork takes) returns
                    // at once, every time: retried in a loop it spun a core until the
                    // limit. A short pause between tries instead.
                    -1 => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                    _ => {}
                }
                let mut chunk = [0u8; 512];
                match self.result.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => said.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let said = String::from_utf8_lossy(&said).into_owned();
            let mut status: libc::c_int = 0;
            loop {
                // SAFETY: waitpid writes the status into the integer we pass.
                let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
                if r == self.pid {
                    break;
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(format!("cannot wait for the snapshot writer: {e}"));
                }
            }
            if late {
                return Err(format!(
                    "the snapshot writer took longer than {} s: killed",
                    limit.as_secs()
                ));
            }
            if libc::WIFSIGNALED(status) {
                return Err(format!(
                    "the snapshot writer was killed by signal {}",
                    libc::WTERMSIG(status)
                ));
            }
            match said.strip_prefix("ok ") {
                Some(n) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => n
                    .trim()
                    .parse()
                    .map_err(|_| format!("the snapshot writer said {said:?}")),
                _ if said.is_empty() => Err(format!(
                    "the snapshot writer ended without a word (status {status})"
                )),
                _ => Err(said),
            }
        }
    }

    const NICE: i32 = 10;

    /// The child's whole life. It never returns: a panic in it is caught and ends it
    /// too (unwinding into the applier's frames would drop what the parent owns).
    fn child(state: &State, dir: &Path, pos: u64, now: u64, parent: libc::pid_t, out: i32) -> ! {
        // SAFETY (this block): plain system calls on integers, made by the only thread of
        // this process. They make it die with the thread that forked it (a hub killed
        // mid-snapshot leaves no writer behind holding its directory's lock or listening
        // sockets, and a parent gone before this line is caught by the ppid check),
        // ignore the stop signals (a Ctrl-C or a service manager signals the whole
        // group; the hub waits for this child at a stop, and dies of nothing it would
        // not), let go of every descriptor but the pipe (the sockets and the lock file),
        // make this process the one the OOM killer takes first (as Redis's save child
        // does), and run after the hub's own threads.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(3);
            }
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_IGN);
            }
            close_all_but(out);
            libc::setpriority(libc::PRIO_PROCESS, 0, NICE);
        }
        let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
        let said = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let encode = |out: &mut _| state.write_snapshot(out).map_err(|e| e.to_string());
            match super::super::snapshot::write_synced(dir, pos, now, encode) {
                Ok(size) => format!("ok {size}"),
                Err(e) => format!("cannot write the snapshot in {}: {e}", dir.display()),
            }
        }))
        .unwrap_or_else(|_| "the snapshot writer panicked".into());
        // SAFETY: `out` is the pipe's write end, open in this process; `said` lives across
        // the call. A short write only shortens the message the parent reads.
        unsafe {
            libc::write(out, said.as_ptr().cast(), said.len());
            libc::_exit(if said.starts_with("ok ") { 0 } else { 1 });
        }
    }

    /// Closes every descriptor from 3 up but `keep`: with `close_range` (Linux 5.9),
    /// or one by one up to the descriptor limit where that is missing or refused.
    ///
    /// # Safety
    /// Only in the forked child: it closes descriptors other code may think it owns.
    unsafe fn close_all_but(keep: i32) {
        let range = |from: i32, to: u32| {
            // SAFETY: close_range takes plain integers.
            unsafe { libc::syscall(libc::SYS_close_range, from as u32, to, 0u32) == 0 }
        };
        let ok = (keep <= 3 || range(3, (keep - 1) as u32)) && range(keep + 1, u32::MAX);
        if ok {
            return;
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_cur.min(1 << 20) as i32
        } else {
            65_536
        };
        for fd in (3..max).filter(|fd| *fd != keep) {
            // SAFETY: close takes an integer; one not open fails harmlessly.
            unsafe { libc::close(fd) };
        }
    }
}
