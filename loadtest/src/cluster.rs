//! The hub of a run and the plumbing every scenario shares: the processes a run
//! starts (one node, or several sharing a Redis of the run's own) or the external hub
//! it reaches, how they are stopped and checked at the end (clean exits, no warnings
//! logged, CPU and memory), and the helpers the scenarios drive them with (tokens,
//! waiting on a condition while watching the hub, looking every task up).

use crate::checks::Lookup;
use crate::httpc::HttpClient;
use crate::hubproc::{self, HubProcess, HubSetup};
use crate::redisproc::RedisProcess;
use crate::report::{Check, Failure, Report};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard::auth::{Claims, Keys, Role};

/// The most hub nodes one run may start.
pub const MAX_NODES: usize = 8;

/// Which hub a run drives.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start this binary for the run and stop it after.
    Spawn {
        /// The `switchboard` binary.
        bin: PathBuf,
        /// `RUST_LOG` for it; `None` keeps its default (info).
        rust_log: Option<String>,
    },
    /// A hub already running on loopback, configured to match the run (queues,
    /// `allow_token_profiles`, rate limits).
    External {
        /// Its address (loopback only).
        addr: SocketAddr,
        /// Its signing secret.
        secret: String,
    },
}

/// Raises this process's open-file soft limit to its hard limit; returns the limit now
/// in force.
pub fn raise_nofile_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return None;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    Some(r.rlim_cur as u64)
}

/// Waits until `done` holds, or `limit` passes, or the spawned hub dies. Returns
/// whether `done` held.
pub(crate) async fn wait_for(
    limit: Duration,
    hub: &mut Cluster,
    done: impl FnMut() -> bool,
) -> Result<bool, Failure> {
    wait_while_alive(limit, || hub.check_alive(), done).await
}

/// Polls `done` every 20 ms until it holds (`Ok(true)`) or `limit` passes
/// (`Ok(false)`); `alive` is asked between polls, and its error ends the wait.
pub(crate) async fn wait_while_alive(
    limit: Duration,
    mut alive: impl FnMut() -> Result<(), Failure>,
    mut done: impl FnMut() -> bool,
) -> Result<bool, Failure> {
    let end = Instant::now() + limit;
    loop {
        if done() {
            return Ok(true);
        }
        alive()?;
        if Instant::now() >= end {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Looks every created task up, over a few keep-alive connections.
pub(crate) async fn look_up_all(
    addrs: Arc<[SocketAddr]>,
    token: Arc<str>,
    created: &[(u64, String)],
    conns: usize,
) -> HashMap<String, Lookup> {
    let ids: Arc<Vec<String>> = Arc::new(created.iter().map(|(_, t)| t.clone()).collect());
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..conns.max(1) {
        let (ids, next, token) = (ids.clone(), next.clone(), token.clone());
        let addrs = addrs.clone();
        handles.push(tokio::spawn(async move {
            // Task `i` is looked up on node `i % nodes`: any node answers for any task.
            let mut clients: Vec<HttpClient> = addrs.iter().map(|a| HttpClient::new(*a)).collect();
            let mut found = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(id) = ids.get(i) else { break };
                let n = clients.len().max(1);
                let Some(client) = clients.get_mut(i % n) else {
                    break;
                };
                let l = match client.get(&format!("/v1/tasks/{id}"), Some(&token)).await {
                    Ok(r) if r.status == 200 => {
                        match serde_json::from_slice::<crate::wire::TaskMsg>(&r.body) {
                            Ok(t) => Lookup::Found {
                                state: t.state.unwrap_or_default(),
                                agent_id: t.agent_id,
                            },
                            Err(e) => Lookup::Unreadable(format!("{e}: {}", r.text())),
                        }
                    }
                    Ok(r) if r.status == 404 => Lookup::Missing,
                    Ok(r) => Lookup::Unreadable(format!("HTTP {}: {}", r.status, r.text())),
                    Err(e) => Lookup::Unreadable(e.to_string()),
                };
                found.push((id.clone(), l));
            }
            found
        }));
    }
    let mut all = HashMap::new();
    for h in handles {
        if let Ok(found) = h.await {
            all.extend(found);
        }
    }
    all
}

/// A token for `sub`, valid for `ttl` (at least a minute); `queues` makes it a token
/// profile.
pub(crate) fn sign(
    keys: &Keys,
    sub: &str,
    role: Role,
    ttl: Duration,
    queues: Option<Vec<String>>,
) -> String {
    keys.sign(&Claims {
        sub: sub.to_owned(),
        role,
        exp: switchboard::auth::unix_now() + ttl.as_secs().max(60),
        name: queues.as_ref().map(|_| format!("Load Test {sub}")),
        skills: queues.as_ref().map(|_| Vec::new()),
        queues,
    })
}

/// The processes a run started: one hub node, or several sharing a Redis of the
/// run's own; empty against an external hub.
pub(crate) struct Cluster {
    /// The hub nodes, in node order (`node-1`, `node-2`, ...).
    pub nodes: Vec<HubProcess>,
    /// Their node ids (`None` for a lone in-memory hub).
    pub node_ids: Vec<Option<String>>,
    /// The run's Redis.
    pub redis: Option<RedisProcess>,
    /// The run's temporary directory (config, logs, the Redis AOF).
    pub dir: Option<PathBuf>,
    /// Warnings the run causes on purpose (text a log line contains): counted in a
    /// note, not as breaches.
    pub expected_warnings: Vec<String>,
}

impl Cluster {
    fn external() -> Cluster {
        Cluster {
            nodes: Vec::new(),
            node_ids: Vec::new(),
            redis: None,
            dir: None,
            expected_warnings: Vec::new(),
        }
    }

    /// Starts the Redis (when `redis_bin` is given) and `nodes` nodes; stops what it
    /// started if one fails.
    async fn start(
        nodes: usize,
        redis_bin: Option<&std::path::Path>,
        bin: &std::path::Path,
        setup: HubSetup,
    ) -> Result<Cluster, Failure> {
        let secret = hubproc::random_secret();
        let dir = hubproc::run_dir(&secret);
        let mut c = Cluster {
            nodes: Vec::new(),
            node_ids: Vec::new(),
            redis: None,
            dir: Some(dir.clone()),
            expected_warnings: Vec::new(),
        };
        let mut setup = setup;
        if let Some(redis_bin) = redis_bin {
            match RedisProcess::start(redis_bin, &dir.join("redis")).await {
                Ok(r) => {
                    setup.redis = Some(r.url());
                    c.redis = Some(r);
                }
                Err(e) => {
                    HubProcess::remove_files(&dir);
                    return Err(Failure::new(e));
                }
            }
        }
        for i in 0..nodes.max(1) {
            let node_id = redis_bin.is_some().then(|| format!("node-{}", i + 1));
            match HubProcess::spawn_node(bin, &setup, &secret, &dir, node_id.as_deref()).await {
                Ok(h) => {
                    c.nodes.push(h);
                    c.node_ids.push(node_id);
                }
                Err(e) => {
                    let _ = c.stop().await;
                    HubProcess::remove_files(&dir);
                    return Err(Failure::new(e));
                }
            }
        }
        Ok(c)
    }

    /// The nodes' addresses.
    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|h| h.addr).collect()
    }

    /// A node's name for messages.
    pub(crate) fn name(&self, i: usize) -> String {
        match self.node_ids.get(i) {
            Some(Some(n)) => n.clone(),
            _ => "the hub".into(),
        }
    }

    /// CPU seconds by node, for a note: "node-1 1.23 s, node-2 ?".
    pub(crate) fn per_node(&self, cpu: &[Option<f64>]) -> String {
        let per: Vec<String> = cpu
            .iter()
            .enumerate()
            .map(|(i, c)| match c {
                Some(c) => format!("{} {c:.2} s", self.name(i)),
                None => format!("{} ?", self.name(i)),
            })
            .collect();
        per.join(", ")
    }

    /// `Err` when a node or the Redis has exited.
    pub(crate) fn check_alive(&mut self) -> Result<(), Failure> {
        for i in 0..self.nodes.len() {
            let name = self.name(i);
            let h = &mut self.nodes[i];
            if let Some(status) = h.exited() {
                return Err(Failure::new(format!(
                    "{name} exited during the run ({status}); its log ({}):\n{}",
                    h.log_path.display(),
                    hubproc::log_tail(&h.log_path, 30)
                )));
            }
        }
        if let Some(r) = self.redis.as_mut() {
            if let Some(status) = r.exited() {
                return Err(Failure::new(format!(
                    "redis-server exited during the run ({status}); its log ({}):\n{}",
                    r.log_path.display(),
                    hubproc::log_tail(&r.log_path, 30)
                )));
            }
        }
        Ok(())
    }

    /// Each node's CPU seconds so far (`None` for a node that cannot be read).
    pub(crate) fn node_cpu(&self) -> Vec<Option<f64>> {
        self.nodes.iter().map(|h| h.usage().map(|u| u.0)).collect()
    }

    /// The nodes' resident memory now, KiB in all (`None` when one cannot be read).
    pub(crate) fn node_rss_kib(&self) -> Option<u64> {
        self.nodes
            .iter()
            .map(|h| h.pid().and_then(hubproc::proc_rss_kib))
            .sum()
    }

    /// The Redis's CPU seconds so far.
    pub(crate) fn redis_cpu(&self) -> Option<f64> {
        self.redis.as_ref().and_then(|r| r.usage()).map(|u| u.0)
    }

    /// Stops every node at once (SIGTERM, a drain of up to 10 s), then the Redis.
    /// Returns what each node's end was, for the report.
    async fn stop(&mut self) -> ClusterEnd {
        let nodes = std::mem::take(&mut self.nodes);
        let ids = std::mem::take(&mut self.node_ids);
        let mut ends = Vec::with_capacity(nodes.len());
        let mut waits = Vec::with_capacity(nodes.len());
        for (mut h, id) in nodes.into_iter().zip(ids) {
            ends.push(NodeEnd {
                name: id,
                usage: h.usage(),
                log_path: h.log_path.clone(),
                status: None,
            });
            h.terminate();
            waits.push(h.wait_exit(Duration::from_secs(10)));
        }
        let statuses = futures_util::future::join_all(waits).await;
        for (e, s) in ends.iter_mut().zip(statuses) {
            e.status = s;
        }
        let redis = match self.redis.take() {
            Some(r) => {
                let stats = redis_stats(&r).await;
                let usage = r.usage();
                let version = r.version.clone();
                let status = r.stop(Duration::from_secs(10)).await;
                Some((version, usage, status, stats))
            }
            None => None,
        };
        ClusterEnd {
            nodes: ends,
            redis,
            expected: self.expected_warnings.clone(),
        }
    }
}

/// How one node ended.
struct NodeEnd {
    name: Option<String>,
    usage: Option<(f64, u64)>,
    log_path: PathBuf,
    status: Option<std::process::ExitStatus>,
}

/// How the Redis ended: its version, CPU seconds and peak RSS, exit.
type RedisEnd = (
    String,
    Option<(f64, u64)>,
    Option<std::process::ExitStatus>,
    Option<String>,
);

/// What the run asked of the Redis: calls and time per command (`INFO commandstats`),
/// and the AOF's size.
async fn redis_stats(r: &RedisProcess) -> Option<String> {
    let text = r.command(&["INFO", "commandstats"]).await.ok()?;
    let mut cmds: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            let calls: u64 = field("calls")?.parse().ok()?;
            let per: f64 = field("usec_per_call")?.parse().ok()?;
            Some((calls, format!("{name} {calls} x {per:.1} µs")))
        })
        .collect();
    cmds.sort_by_key(|c| std::cmp::Reverse(c.0));
    let top: Vec<String> = cmds.into_iter().take(6).map(|(_, t)| t).collect();
    let aof = r
        .info_field("persistence", "aof_current_size")
        .await
        .and_then(|v| v.parse::<f64>().ok())
        .map(|b| format!("; AOF {:.1} MiB", b / 1048576.0))
        .unwrap_or_default();
    Some(format!("{}{aof}", top.join(", ")))
}

/// How the cluster ended: each node, and the Redis.
struct ClusterEnd {
    nodes: Vec<NodeEnd>,
    redis: Option<RedisEnd>,
    expected: Vec<String>,
}

/// The hub of a run, reached: the processes started (none for an external hub), the
/// nodes' addresses, the signing secret, and a description for the report.
pub(crate) struct Launched {
    /// What was started.
    pub cluster: Cluster,
    /// The nodes' addresses (the external hub's alone).
    pub addrs: Vec<SocketAddr>,
    /// The signing secret.
    pub secret: String,
    /// `spawned ... on ...` or `external ...`.
    pub desc: String,
}

/// Starts `nodes` hub nodes with `setup` (and a Redis of the run's own shared by them
/// when `redis_bin` is given), or reaches the external hub of `target`.
pub(crate) async fn launch(
    target: &Target,
    nodes: usize,
    redis_bin: Option<&std::path::Path>,
    setup: HubSetup,
) -> Result<Launched, Failure> {
    match target {
        Target::Spawn { bin, rust_log } => {
            let setup = HubSetup {
                rust_log: rust_log.clone(),
                ..setup
            };
            let c = Cluster::start(nodes, redis_bin, bin, setup).await?;
            let addrs = c.addrs();
            let secret = c
                .nodes
                .first()
                .map(|h| h.secret.clone())
                .unwrap_or_default();
            let listed: Vec<String> = (0..c.nodes.len())
                .map(|i| match &c.node_ids[i] {
                    Some(n) => format!("{n} {}", c.nodes[i].addr),
                    None => c.nodes[i].addr.to_string(),
                })
                .collect();
            let desc = match &c.redis {
                Some(r) => format!(
                    "spawned {} x{} ({}) sharing {} at {} (appendonly yes, appendfsync always) (files in {})",
                    bin.display(),
                    c.nodes.len(),
                    listed.join(", "),
                    r.version,
                    r.addr,
                    c.dir
                        .as_ref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                ),
                None => format!(
                    "spawned {} on {} (files in {})",
                    bin.display(),
                    listed.join(", "),
                    c.dir
                        .as_ref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                ),
            };
            Ok(Launched {
                cluster: c,
                addrs,
                secret,
                desc,
            })
        }
        Target::External { addr, secret } => {
            if !addr.ip().is_loopback() {
                return Err(Failure::new(format!(
                    "--hub {addr}: only loopback addresses may be load-tested"
                )));
            }
            Ok(Launched {
                cluster: Cluster::external(),
                addrs: vec![*addr],
                secret: secret.clone(),
                desc: format!("external {addr}"),
            })
        }
    }
}

/// Ends a run: stops what [`launch`] started, adds the end checks (clean exits, no
/// warnings logged) and notes to the report, keeps the run's files when asked or when
/// a check failed, and turns a report with a broken check into `Err`.
pub(crate) async fn land(
    mut cluster: Cluster,
    mut result: Result<Report, Failure>,
    keep_files: bool,
) -> Result<Report, Failure> {
    let dir = cluster.dir.take();
    if !cluster.nodes.is_empty() {
        let end = cluster.stop().await;
        if let Some(r) = report_of(&mut result) {
            add_end_checks(r, &end);
        }
    }
    if let Some(dir) = dir {
        keep_or_remove(&dir, keep_files, &mut result);
    }
    broken_as_err(result)
}

/// The report a run's result carries: an `Err` may carry the report of a run that
/// broke part way.
pub(crate) fn report_of(result: &mut Result<Report, Failure>) -> Option<&mut Report> {
    match result {
        Ok(r) => Some(r),
        Err(Failure {
            report: Some(r), ..
        }) => Some(&mut **r),
        Err(_) => None,
    }
}

/// Keeps a run's hub files, saying where in the result, when asked or when a check
/// failed; else removes them.
pub(crate) fn keep_or_remove(
    dir: &std::path::Path,
    keep_files: bool,
    result: &mut Result<Report, Failure>,
) {
    let passed = matches!(&result, Ok(r) if r.passed());
    if !keep_files && passed {
        HubProcess::remove_files(dir);
        return;
    }
    let note = format!("hub config and log kept in {}", dir.display());
    match report_of(result) {
        Some(r) => r.notes.push(note),
        None => {
            if let Err(f) = result {
                f.message.push('\n');
                f.message.push_str(&note);
            }
        }
    }
}

/// A report with a broken check, as `Err`.
pub(crate) fn broken_as_err(result: Result<Report, Failure>) -> Result<Report, Failure> {
    match result {
        Ok(r) if !r.passed() => Err(Failure {
            message: format!("{} invariant check(s) broken", r.failed_checks().len()),
            report: Some(Box::new(r)),
        }),
        other => other,
    }
}

/// The checks and notes of the end of a run: every node exited cleanly and logged no
/// warnings; CPU and memory of each process.
fn add_end_checks(r: &mut Report, end: &ClusterEnd) {
    let several = end.nodes.len() > 1 || end.redis.is_some();
    let label = |n: &NodeEnd| n.name.clone().unwrap_or_else(|| "hub".into());
    let clean = end
        .nodes
        .iter()
        .all(|n| n.status.is_some_and(|s| s.success()));
    let detail: Vec<String> = end
        .nodes
        .iter()
        .map(|n| {
            let s = match n.status {
                Some(s) => s.to_string(),
                None => "did not exit within 10 s; killed".into(),
            };
            if several {
                format!("{}: {s}", label(n))
            } else {
                s
            }
        })
        .collect();
    r.checks.push(Check {
        name: if several {
            "every hub node drained and exited cleanly on SIGTERM".into()
        } else {
            "the hub drained and exited cleanly on SIGTERM".into()
        },
        passed: clean,
        detail: detail.join("; "),
    });
    let mut lines = 0;
    let mut breaches = Vec::new();
    let mut teardown = Vec::new();
    let mut expected = 0;
    for n in &end.nodes {
        let split = hubproc::log_split_expecting(&n.log_path, &end.expected);
        lines += split.lines;
        expected += split.expected;
        let who = |x: String| {
            if several {
                format!("{}: {x}", label(n))
            } else {
                x
            }
        };
        breaches.extend(split.samples.into_iter().map(who));
        if split.bad > 5 {
            breaches.push(who(format!("... {} in all", split.bad)));
        }
        if split.after_drain > 0 {
            teardown.push(who(format!(
                "{} after \"{}\", e.g. {}",
                split.after_drain,
                hubproc::DRAINED_LINE,
                split.after_samples.first().cloned().unwrap_or_default()
            )));
        }
    }
    if expected > 0 {
        r.notes.push(format!(
            "{expected} warning(s) the run caused on purpose, not counted as breaches: lines with {:?}",
            end.expected
        ));
    }
    if !teardown.is_empty() {
        // Not the run's: the process logging while it tears down after a clean drain
        // (a hub issue worth fixing, noted rather than failed).
        r.notes.push(format!(
            "warnings logged after the drain finished (process teardown, not counted as a breach): {}",
            teardown.join("; ")
        ));
    }
    r.checks.push(Check::from_breaches(
        if several {
            "no hub node logged warnings or errors"
        } else {
            "the hub logged no warnings or errors"
        },
        format!("{lines} log lines read, up to the end of each drain"),
        &breaches,
    ));
    let mut total_cpu = None;
    for n in &end.nodes {
        if let Some((cpu, rss_kib)) = n.usage {
            r.notes.push(format!(
                "{} process: {cpu:.2} CPU s from start to end, peak RSS {:.1} MiB; harness: {:.2} CPU s",
                if several { label(n) } else { "hub".into() },
                rss_kib as f64 / 1024.0,
                r.harness_cpu_secs
            ));
            total_cpu = Some(total_cpu.unwrap_or(0.0) + cpu);
        }
    }
    r.hub_cpu_secs = total_cpu;
    if let Some((_, _, _, Some(stats))) = &end.redis {
        r.notes.push(format!("redis commands: {stats}"));
    }
    if let Some((version, Some((cpu, rss_kib)), status, _)) = &end.redis {
        r.notes.push(format!(
            "{version}: {cpu:.2} CPU s from start to end, peak RSS {:.1} MiB; {}",
            *rss_kib as f64 / 1024.0,
            match status {
                Some(s) => format!("stopped ({s})"),
                None => "killed after 10 s".into(),
            }
        ));
    }
    r.notes.push(format!(
        "the hub{} wrote {lines} log lines ({:.1} per task created)",
        if several { " nodes" } else { "" },
        lines as f64 / r.counts.created.max(1) as f64
    ));
}
