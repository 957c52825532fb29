//! A `redis-server` of the run's own: loopback, a free port, its own directory, AOF on
//! every write (`appendonly yes`, `appendfsync always`: what the hub needs to lose
//! nothing it acknowledged), stopped at the end of the run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A running `redis-server`.
pub struct RedisProcess {
    child: Child,
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// Its data directory (the AOF) and log.
    pub dir: PathBuf,
    /// Its log.
    pub log_path: PathBuf,
    /// `redis-server <version>`, from `redis-server --version`.
    pub version: String,
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

impl RedisProcess {
    /// Starts `bin` in `dir` (created) on a free loopback port and waits until it
    /// answers `PING` and reports `appendfsync always`. Tries three ports.
    pub async fn start(bin: &Path, dir: &Path) -> Result<RedisProcess, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let version = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .map_err(|e| {
                format!(
                    "cannot run {} (install redis-server, or pass --redis-bin): {e}",
                    bin.display()
                )
            })
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                // "Redis server v=7.0.15 sha=... malloc=..." -> "redis-server 7.0.15"
                match text.split_whitespace().find_map(|w| w.strip_prefix("v=")) {
                    Some(v) => format!("redis-server {v}"),
                    None => text.lines().next().unwrap_or("redis-server").to_owned(),
                }
            })?;
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(bin, dir, &version).await {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn try_start(bin: &Path, dir: &Path, version: &str) -> Result<RedisProcess, String> {
        let port = free_port()?;
        let log_path = dir.join("redis.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(dir)
            .arg("--appendonly")
            .arg("yes")
            .arg("--appendfsync")
            .arg("always")
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut r = RedisProcess {
            child,
            addr,
            dir: dir.to_path_buf(),
            log_path,
            version: version.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = r.exited() {
                return Err(format!(
                    "redis-server exited at start ({status}); its log:\n{}",
                    crate::hubproc::log_tail(&r.log_path, 10)
                ));
            }
            if let Ok(reply) = r.command(&["PING"]).await {
                if reply.contains("PONG") {
                    break;
                }
            }
            if Instant::now() >= deadline {
                let _ = r.child.kill().await;
                return Err("redis-server did not answer PING within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let fsync = r
            .command(&["CONFIG", "GET", "appendfsync"])
            .await
            .unwrap_or_default();
        let aof = r
            .command(&["CONFIG", "GET", "appendonly"])
            .await
            .unwrap_or_default();
        if !fsync.contains("always") || !aof.contains("yes") {
            let _ = r.child.kill().await;
            return Err(format!(
                "redis-server did not take appendonly yes / appendfsync always: {aof:?} {fsync:?}"
            ));
        }
        Ok(r)
    }

    /// The URL the hub is given.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Sends one command (RESP) on a fresh connection and returns the raw reply, read
    /// until it goes quiet (small replies only: PING, CONFIG GET, INFO).
    pub async fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(self.addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        // The first read waits for the answer; later ones only take what follows.
        let mut wait = Duration::from_secs(2);
        while out.len() < 1 << 20 {
            match tokio::time::timeout(wait, s.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => return Err(e),
            }
            wait = Duration::from_millis(30);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// One field of `INFO` (e.g. `total_commands_processed`), if it can be read.
    pub async fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let text = self.command(&["INFO", section]).await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// CPU seconds and peak RSS (KiB), from /proc.
    pub fn usage(&self) -> Option<(f64, u64)> {
        crate::hubproc::proc_usage(self.child.id()?)
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL after `limit`; returns its exit status unless killed.
    pub async fn stop(mut self, limit: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited() {
            return Some(s);
        }
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with a pid this process started and has not reaped yet.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(s)) => Some(s),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}
