//! The data directory's lock: one hub per directory. Two writers appending to one log
//! would interleave records and corrupt it, so a second hub refuses to start.

use std::io::Write;
use std::path::Path;

/// The lock file's name.
pub const FILE: &str = "LOCK";

/// Held for as long as the store runs; the kernel releases it when the process ends,
/// however it ends (kill -9 included), so a stale lock never blocks a restart.
pub struct DirLock {
    _file: std::fs::File,
}

/// Takes the directory's lock, or says who holds it.
pub fn acquire(dir: &Path) -> Result<DirLock, String> {
    let path = dir.join(FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    take(&file).map_err(|e| {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        format!(
            "the data directory {} is in use by another switchboard ({}): {e}",
            dir.display(),
            match holder.trim() {
                "" => "pid unknown".to_string(),
                pid => format!("pid {pid}"),
            }
        )
    })?;
    // The holder's pid, for an operator wondering who holds it.
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(DirLock { _file: file })
}

#[cfg(unix)]
fn take(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock takes a file descriptor we own for the duration of the call and
    // touches no memory of ours.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn take(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}
