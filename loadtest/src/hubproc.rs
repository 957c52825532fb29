//! Starting and stopping a `switchboard` hub process for a run: a temporary TOML
//! configuration, the binary on 127.0.0.1 with a free port, its log in a file.

use crate::rng::Rng;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Per-channel capacity of the agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Capacity {
    /// Calls: 0 or 1.
    pub voice: u32,
    /// Chats.
    pub chat: u32,
    /// Emails.
    pub email: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            voice: 1,
            chat: 3,
            email: 2,
        }
    }
}

/// What the spawned hub is configured with.
#[derive(Clone, Debug)]
pub struct HubSetup {
    /// Queue ids.
    pub queues: Vec<String>,
    /// `routing.offer_timeout_secs`.
    pub offer_timeout: Duration,
    /// Agent capacity.
    pub capacity: Capacity,
    /// `limits.finished_task_retention`: at least every task of the run, so each can
    /// be looked up at the end.
    pub retention: usize,
    /// `limits.send_queue`.
    pub send_queue: usize,
    /// `routing.reconnect_grace_secs`: how long a dropped agent keeps its offer and
    /// tasks ([`RECONNECT_GRACE`] unless a scenario needs another).
    pub reconnect_grace: Duration,
    /// `RUST_LOG` for the hub; `None` keeps its default (info).
    pub rust_log: Option<String>,
    /// `store.redis`: the nodes share state through this Redis; `None` keeps it in
    /// memory.
    pub redis: Option<String>,
    /// `store.snapshot_every`; `None` keeps the hub's default.
    pub snapshot_every: Option<u64>,
    /// Without Redis: the file store (a data directory in the run's directory)
    /// instead of the in-memory store.
    pub durable: bool,
    /// A `[[webhooks.endpoints]]` entry (`route --webhook-receiver`).
    pub webhook: Option<crate::webhook::Endpoint>,
    /// `events.stream_linger_ms`; `None` keeps the hub's default.
    pub stream_linger_ms: Option<u64>,
}

/// The reconnect grace period of the generated configs.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(5);

/// The configuration file text.
pub fn config_toml(setup: &HubSetup, secret: &str) -> String {
    let mut t = String::new();
    t.push_str("# written by loadtest for one run\n");
    t.push_str("[server]\nlisten = \"127.0.0.1:0\"\ndrain_secs = 2.0\nnode_id = \"loadtest\"\n\n");
    t.push_str(&format!(
        "[auth]\nsecret = \"{secret}\"\nallow_token_profiles = true\n\n"
    ));
    t.push_str(&format!(
        "[limits]\nrate_per_sec = 1000000.0\nrate_burst = 1000000.0\nsend_queue = {}\nfinished_task_retention = {}\n\n",
        setup.send_queue.max(1),
        setup.retention.max(1),
    ));
    t.push_str(&format!(
        "[routing]\noffer_timeout_secs = {:.3}\nwrap_up_secs = 0.0\nreconnect_grace_secs = {:.3}\n\n",
        setup.offer_timeout.as_secs_f64().max(0.001),
        setup.reconnect_grace.as_secs_f64()
    ));
    let c = setup.capacity;
    t.push_str(&format!(
        "[routing.capacity]\nvoice = {}\nchat = {}\nemail = {}\n\n",
        c.voice.min(1),
        c.chat,
        c.email
    ));
    if let Some(url) = &setup.redis {
        t.push_str(&format!("[store]\nredis = \"{url}\"\n"));
        if let Some(n) = setup.snapshot_every {
            t.push_str(&format!("snapshot_every = {}\n", n.max(1)));
        }
        t.push('\n');
    } else if setup.durable {
        // The data directory is given on the command line (the run's directory).
        t.push_str("[store]\nkind = \"file\"\n");
        if let Some(n) = setup.snapshot_every {
            t.push_str(&format!("snapshot_every = {}\n", n.max(1)));
        }
        t.push('\n');
    } else {
        // The in-memory store, as these runs measured before the file store existed.
        t.push_str("[store]\nkind = \"memory\"\n\n");
    }
    if let Some(ms) = setup.stream_linger_ms {
        t.push_str(&format!("[events]\nstream_linger_ms = {ms}\n\n"));
    }
    if let Some(w) = &setup.webhook {
        t.push_str(&w.config_toml());
    }
    for q in &setup.queues {
        t.push_str(&format!("[[queues]]\nid = \"{q}\"\n\n"));
    }
    t
}

/// A fresh secret for one run.
pub fn random_secret() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut r = Rng::new(nanos ^ (u64::from(std::process::id()) << 32));
    format!("lt-{:016x}{:016x}", r.next_u64(), r.next_u64())
}

/// The release `switchboard` binary next to the running executable.
pub fn default_hub_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("loadtest"));
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    dir.join(format!("switchboard{}", std::env::consts::EXE_SUFFIX))
}

/// A running hub process.
pub struct HubProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its signing secret.
    pub secret: String,
    /// The run's temporary directory (config and log).
    pub dir: PathBuf,
    /// The hub's stderr (its log).
    pub log_path: PathBuf,
    /// The binary.
    pub bin: PathBuf,
}

impl HubProcess {
    /// Writes the configuration and starts `bin` on 127.0.0.1 with a free port; returns
    /// once it listens.
    pub async fn spawn(bin: &Path, setup: &HubSetup) -> Result<HubProcess, String> {
        let secret = random_secret();
        let dir = run_dir(&secret);
        HubProcess::spawn_node(bin, setup, &secret, &dir, None).await
    }

    /// Starts one node of a run in `dir` (created) with `secret`: the configuration
    /// (`dir/hub.toml`, the same text for every node of the run), `--node-id` when
    /// given, its log in `dir/hub.log` or `dir/hub-<node>.log`.
    pub async fn spawn_node(
        bin: &Path,
        setup: &HubSetup,
        secret: &str,
        dir: &Path,
        node_id: Option<&str>,
    ) -> Result<HubProcess, String> {
        if !bin.is_file() {
            return Err(format!(
                "switchboard binary not found at {}: build it (cargo build --release -p switchboard) or pass --hub-bin",
                bin.display()
            ));
        }
        let secret = secret.to_owned();
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let config_path = dir.join("hub.toml");
        std::fs::write(&config_path, config_toml(setup, &secret))
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let log_path = match node_id {
            Some(n) => dir.join(format!("hub-{n}.log")),
            None => dir.join("hub.log"),
        };
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("SWITCHBOARD_SECRET", &secret)
            .env_remove("SWITCHBOARD_CONFIG")
            .env_remove("SWITCHBOARD_LISTEN")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if let Some(n) = node_id {
            cmd.arg("--node-id").arg(n);
        }
        if setup.durable && setup.redis.is_none() {
            cmd.arg("--data-dir").arg(dir.join("data"));
        }
        cmd.env_remove("SWITCHBOARD_REDIS")
            .env_remove("SWITCHBOARD_NODE_ID");
        match &setup.rust_log {
            Some(l) => {
                cmd.env("RUST_LOG", l);
            }
            None => {
                cmd.env_remove("RUST_LOG");
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            return Err("hub stdout not captured".into());
        };
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match tokio::time::timeout(left, lines.next_line()).await {
                Ok(Ok(Some(l))) => l,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    let status = child.wait().await.ok();
                    return Err(format!(
                        "the hub exited before listening ({}); its log:\n{}",
                        status.map(|s| s.to_string()).unwrap_or_default(),
                        log_tail(&log_path, 20)
                    ));
                }
                Err(_) => {
                    let _ = child.kill().await;
                    return Err(format!(
                        "the hub did not say it was listening within 20 s; its log:\n{}",
                        log_tail(&log_path, 20)
                    ));
                }
            };
            if let Some(rest) = line.strip_prefix("switchboard listening on http://") {
                let text = rest.split_whitespace().next().unwrap_or_default();
                match text.parse::<SocketAddr>() {
                    Ok(a) if a.ip().is_loopback() => break a,
                    Ok(a) => {
                        let _ = child.kill().await;
                        return Err(format!("the hub listens on {a}, not on loopback"));
                    }
                    Err(e) => {
                        let _ = child.kill().await;
                        return Err(format!("cannot read the hub's address from {line:?}: {e}"));
                    }
                }
            }
        };
        // Keep reading stdout so the hub never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(HubProcess {
            child,
            addr,
            secret,
            dir,
            log_path,
            bin: bin.to_path_buf(),
        })
    }

    /// CPU seconds (user + system) the hub has used so far, and its peak resident
    /// memory in KiB, from /proc (Linux).
    pub fn usage(&self) -> Option<(f64, u64)> {
        let pid = self.child.id()?;
        proc_usage(pid)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process has exited, and how.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM (the drain) without waiting.
    pub fn terminate(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with a pid this process started and has not reaped yet.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Waits for the process to exit (after [`HubProcess::terminate`]); kills it after
    /// `limit`. Returns its exit status, or `None` if it had to be killed.
    pub async fn wait_exit(mut self, limit: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited() {
            return Some(s);
        }
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(s)) => Some(s),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        }
    }

    /// Asks the hub to drain (SIGTERM) and waits for it; kills it after `limit`.
    /// Returns its exit status, or `None` if it had to be killed.
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

    /// Removes the temporary directory (config and log).
    pub fn remove_files(dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A fresh temporary directory name for one run's files.
pub fn run_dir(secret: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "switchboard-loadtest-{}-{}",
        std::process::id(),
        secret.get(3..11).unwrap_or("run")
    ))
}

/// CPU seconds and peak RSS (KiB) of a process, from /proc. The CPU includes that of
/// its children it has waited for (the file store's snapshot writer is a forked child).
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let cutime: u64 = f.get(13)?.parse().ok()?;
    let cstime: u64 = f.get(14)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tick = if tick > 0 { tick as f64 } else { 100.0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some(((utime + stime + cutime + cstime) as f64 / tick, hwm))
}

/// The resident memory (VmRSS) of a process now, in KiB, from /proc.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU seconds (user + system) this process has used.
pub fn self_cpu_secs() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) } == 0;
    if !ok {
        return 0.0;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised (and zeroed before).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The last lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The hub's last line of a clean drain.
pub const DRAINED_LINE: &str = "drained; bye";

/// Warnings and errors of a hub's log, split at its [`DRAINED_LINE`].
#[derive(Debug, Default)]
pub struct LogSplit {
    /// Lines read.
    pub lines: usize,
    /// WARN/ERROR lines before the drain finished (the run's own).
    pub bad: usize,
    /// The first few of them.
    pub samples: Vec<String>,
    /// WARN/ERROR lines after `drained; bye`: the process tearing down.
    pub after_drain: usize,
    /// The first few of those.
    pub after_samples: Vec<String>,
    /// WARN/ERROR lines the run expected (see [`log_split_expecting`]), not in `bad`.
    pub expected: usize,
}

/// Reads a hub's log and splits its warnings and errors at the end of its drain.
pub fn log_split(path: &Path) -> LogSplit {
    log_split_expecting(path, &[])
}

/// [`log_split`], with the warnings a run causes on purpose (a line containing one of
/// `expected`, e.g. a node killed by the run being declared lost) counted apart.
pub fn log_split_expecting(path: &Path, expected: &[String]) -> LogSplit {
    let mut out = LogSplit::default();
    let Ok(t) = std::fs::read_to_string(path) else {
        return out;
    };
    let mut drained = false;
    for l in t.lines() {
        out.lines += 1;
        let head: String = l.chars().take(64).collect();
        if (head.contains("WARN") || head.contains("ERROR"))
            && expected.iter().any(|e| l.contains(e.as_str()))
        {
            out.expected += 1;
        } else if head.contains("WARN") || head.contains("ERROR") {
            let (n, samples) = if drained {
                (&mut out.after_drain, &mut out.after_samples)
            } else {
                (&mut out.bad, &mut out.samples)
            };
            *n += 1;
            if samples.len() < 5 {
                samples.push(l.to_owned());
            }
        }
        if l.contains(DRAINED_LINE) {
            drained = true;
        }
    }
    out
}

/// Counts the lines of a log file and those at WARN or ERROR.
pub fn log_counts(path: &Path) -> (usize, usize, Vec<String>) {
    let Ok(t) = std::fs::read_to_string(path) else {
        return (0, 0, Vec::new());
    };
    let mut total = 0;
    let mut bad = Vec::new();
    let mut bad_count = 0;
    for l in t.lines() {
        total += 1;
        let head: String = l.chars().take(64).collect();
        if head.contains("WARN") || head.contains("ERROR") {
            bad_count += 1;
            if bad.len() < 5 {
                bad.push(l.to_owned());
            }
        }
    }
    (total, bad_count, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_as_a_switchboard_config() {
        let setup = HubSetup {
            queues: vec!["lt-q0".into(), "lt-q1".into()],
            offer_timeout: Duration::from_millis(1500),
            capacity: Capacity::default(),
            retention: 50_000,
            send_queue: 4096,
            reconnect_grace: RECONNECT_GRACE,
            rust_log: None,
            redis: None,
            snapshot_every: None,
            durable: false,
            webhook: None,
            stream_linger_ms: None,
        };
        let text = config_toml(&setup, "0123456789abcdef0123");
        let cfg = switchboard::config::Config::parse(&text).expect("valid config");
        assert!(cfg.auth.allow_token_profiles);
        assert_eq!(cfg.routing.wrap_up_secs, 0.0);
        assert_eq!(cfg.queues.len(), 2);
        assert_eq!(cfg.limits.finished_task_retention, 50_000);
        assert!(cfg.store.redis.is_none());
        assert_eq!(cfg.routing.reconnect_grace_secs, 5.0);
        let with_redis = HubSetup {
            redis: Some("redis://127.0.0.1:6399/".into()),
            snapshot_every: Some(50_000),
            ..setup
        };
        let text = config_toml(&with_redis, "0123456789abcdef0123");
        let cfg = switchboard::config::Config::parse(&text).expect("valid config");
        assert_eq!(cfg.store.redis.as_deref(), Some("redis://127.0.0.1:6399/"));
        assert_eq!(cfg.store.snapshot_every, 50_000);
        let with_hook = HubSetup {
            webhook: Some(crate::webhook::Endpoint {
                url: "http://127.0.0.1:9/hooks/loadtest".into(),
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                types: vec!["*".into()],
                linger_ms: Some(4),
            }),
            ..with_redis
        };
        let text = config_toml(&with_hook, "0123456789abcdef0123");
        let cfg = switchboard::config::Config::parse(&text).expect("valid config");
        assert!(cfg.webhooks.allow_private);
        assert_eq!(cfg.webhooks.endpoints.len(), 1);
        assert_eq!(cfg.webhooks.endpoints[0].types, vec!["*".to_owned()]);
        assert_eq!(cfg.webhooks.linger_ms, 4);
        let lingering = HubSetup {
            stream_linger_ms: Some(3),
            ..with_hook.clone()
        };
        let cfg =
            switchboard::config::Config::parse(&config_toml(&lingering, "0123456789abcdef0123"))
                .expect("valid config");
        assert_eq!(cfg.events.stream_linger_ms, 3);
        assert_eq!(cfg.webhooks.endpoints.len(), 1);
        let mut two = with_hook;
        if let Some(w) = two.webhook.as_mut() {
            w.types = vec!["task.offered".into(), "agent.*".into()];
        }
        let cfg = switchboard::config::Config::parse(&config_toml(&two, "0123456789abcdef0123"))
            .expect("valid config");
        assert_eq!(
            cfg.webhooks.endpoints[0].types,
            vec!["task.offered".to_owned(), "agent.*".to_owned()]
        );
    }
}
