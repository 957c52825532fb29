//! What the scenarios beside `route` share: the hub of a run (started for it, or one
//! already running on loopback), tokens, waiting with a limit while watching the hub,
//! the end-of-run hub checks, and the few HTTP calls on customers.

use crate::cluster::Target;
use crate::httpc::HttpClient;
use crate::hubproc::{self, HubProcess, HubSetup};
use crate::report::{Check, Failure, Report};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use switchboard::auth::{Keys, Role};

/// How the hub of a run ended.
struct HubEnd {
    status: Option<ExitStatus>,
    usage: Option<(f64, u64)>,
    dir: PathBuf,
    log_path: PathBuf,
}

/// The hub a run drives.
pub struct RunHub {
    proc: Option<HubProcess>,
    ended: Option<HubEnd>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its signing secret.
    pub secret: String,
    /// `spawned ... on ...` or `external ...`.
    pub desc: String,
    keys: Keys,
}

impl RunHub {
    /// Starts a hub with `setup`, or checks that the external one is on loopback.
    pub async fn start(target: &Target, setup: HubSetup) -> Result<RunHub, Failure> {
        match target {
            Target::Spawn { bin, rust_log } => {
                let setup = HubSetup {
                    rust_log: rust_log.clone(),
                    ..setup
                };
                let h = HubProcess::spawn(bin, &setup).await.map_err(Failure::new)?;
                let desc = format!(
                    "spawned {} on {} (files in {})",
                    bin.display(),
                    h.addr,
                    h.dir.display()
                );
                Ok(RunHub {
                    addr: h.addr,
                    keys: Keys::new(h.secret.as_bytes()),
                    secret: h.secret.clone(),
                    desc,
                    proc: Some(h),
                    ended: None,
                })
            }
            Target::External { addr, secret } => {
                if !addr.ip().is_loopback() {
                    return Err(Failure::new(format!(
                        "--hub {addr}: only loopback addresses may be load-tested"
                    )));
                }
                Ok(RunHub {
                    addr: *addr,
                    keys: Keys::new(secret.as_bytes()),
                    secret: secret.clone(),
                    desc: format!("external {addr}"),
                    proc: None,
                    ended: None,
                })
            }
        }
    }

    /// Whether this run started the hub.
    pub fn spawned(&self) -> bool {
        self.proc.is_some() || self.ended.is_some()
    }

    /// The started hub's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(HubProcess::pid)
    }

    /// The started hub's CPU seconds so far.
    pub fn cpu_secs(&self) -> Option<f64> {
        self.proc.as_ref().and_then(|p| p.usage()).map(|u| u.0)
    }

    /// The started hub's resident memory now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(hubproc::proc_rss_kib)
    }

    /// A token for `sub`; `queues` makes it an agent token profile.
    pub fn token(&self, sub: &str, role: Role, queues: Option<Vec<String>>) -> String {
        crate::cluster::sign(&self.keys, sub, role, Duration::from_secs(6 * 3600), queues)
    }

    /// An integration token.
    pub fn integration_token(&self) -> String {
        self.token("lt-integration", Role::Integration, None)
    }

    /// `Err` when the started hub has exited.
    pub fn check_alive(&mut self) -> Result<(), Failure> {
        if let Some(h) = self.proc.as_mut() {
            if let Some(status) = h.exited() {
                return Err(Failure::new(format!(
                    "the hub exited during the run ({status}); its log ({}):\n{}",
                    h.log_path.display(),
                    hubproc::log_tail(&h.log_path, 30)
                )));
            }
        }
        Ok(())
    }

    /// Waits until `done` holds, `limit` passes, or the hub dies (`Err`). Returns
    /// whether `done` held.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        done: impl FnMut() -> bool,
    ) -> Result<bool, Failure> {
        crate::cluster::wait_while_alive(limit, || self.check_alive(), done).await
    }

    /// Stops the started hub (SIGTERM, a drain of up to 10 s); nothing for an external
    /// one or one already stopped.
    pub async fn stop(&mut self) {
        if let Some(h) = self.proc.take() {
            let usage = h.usage();
            let (dir, log_path) = (h.dir.clone(), h.log_path.clone());
            let status = h.stop(Duration::from_secs(10)).await;
            self.ended = Some(HubEnd {
                status,
                usage,
                dir,
                log_path,
            });
        }
    }

    /// Ends the run: stops the hub, adds its checks (a clean exit, no warnings logged)
    /// and notes to the report, keeps its files when asked or when a check failed,
    /// and turns a report with a broken check into `Err`.
    pub async fn finish(
        mut self,
        mut result: Result<Report, Failure>,
        keep_files: bool,
    ) -> Result<Report, Failure> {
        self.stop().await;
        if let Some(end) = self.ended.take() {
            let (lines, bad, samples) = hubproc::log_counts(&end.log_path);
            if let Some(r) = crate::cluster::report_of(&mut result) {
                r.checks.push(Check {
                    name: "the hub drained and exited cleanly on SIGTERM".into(),
                    passed: end.status.is_some_and(|s| s.success()),
                    detail: match end.status {
                        Some(s) => s.to_string(),
                        None => "did not exit within 10 s; killed".into(),
                    },
                });
                let mut breaches = samples;
                if bad > breaches.len() {
                    breaches.push(format!("... {bad} in all"));
                }
                r.checks.push(Check::from_breaches(
                    "the hub logged no warnings or errors",
                    format!("{lines} log lines read"),
                    &breaches,
                ));
                if let Some((cpu, rss_kib)) = end.usage {
                    r.notes.push(format!(
                        "hub process: {cpu:.2} CPU s from start to end, peak RSS {:.1} MiB",
                        rss_kib as f64 / 1024.0
                    ));
                    r.hub_cpu_secs = Some(cpu);
                }
            }
            crate::cluster::keep_or_remove(&end.dir, keep_files, &mut result);
        }
        crate::cluster::broken_as_err(result)
    }
}

/// A hub setup for the customer-context and presence scenarios: one queue `lt-q0`,
/// the generous rate limits of every generated config, and this send queue.
pub fn setup(send_queue: usize, offer_timeout: Duration) -> HubSetup {
    HubSetup {
        queues: vec![QUEUE.to_owned()],
        offer_timeout,
        capacity: hubproc::Capacity::default(),
        retention: 100_000,
        send_queue,
        reconnect_grace: hubproc::RECONNECT_GRACE,
        rust_log: None,
        redis: None,
        snapshot_every: None,
        durable: false,
        webhook: None,
        stream_linger_ms: None,
    }
}

/// The queue every agent of these scenarios serves.
pub const QUEUE: &str = "lt-q0";

/// Creates a customer over HTTP; returns its id and version.
pub async fn create_customer(
    addr: SocketAddr,
    token: &str,
    name: &str,
) -> Result<(String, u64), Failure> {
    let mut c = HttpClient::new(addr);
    let body = serde_json::json!({
        "name": name,
        "phones": ["+1 555 0100 000"],
        "emails": [format!("{}@loadtest.example", name.to_lowercase().replace(' ', "."))],
    })
    .to_string();
    let r = c
        .post_json("/v1/customers", Some(token), body.as_bytes())
        .await
        .map_err(|e| Failure::new(format!("POST /v1/customers: {e}")))?;
    if r.status != 201 {
        return Err(Failure::new(format!(
            "POST /v1/customers answered {}: {}",
            r.status,
            r.text()
        )));
    }
    customer_of(&r.body).ok_or_else(|| {
        Failure::new(format!(
            "POST /v1/customers: no customer id and version in {}",
            r.text()
        ))
    })
}

/// The id and version of a CustomerView body.
pub fn customer_of(body: &[u8]) -> Option<(String, u64)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let c = v.get("customer")?;
    Some((
        c.get("customer_id")?.as_str()?.to_owned(),
        c.get("version")?.as_u64()?,
    ))
}

/// A customer's version now, over HTTP.
pub async fn customer_version(addr: SocketAddr, token: &str, id: &str) -> Result<u64, String> {
    let mut c = HttpClient::new(addr);
    let r = c
        .get(&format!("/v1/customers/{id}"), Some(token))
        .await
        .map_err(|e| format!("GET /v1/customers/{id}: {e}"))?;
    if r.status != 200 {
        return Err(format!(
            "GET /v1/customers/{id} answered {}: {}",
            r.status,
            r.text()
        ));
    }
    customer_of(&r.body)
        .map(|(_, v)| v)
        .ok_or_else(|| format!("GET /v1/customers/{id}: no version in {}", r.text()))
}

/// One counter of the hub's `/metrics` (the sum of its series), if it can be read.
pub async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let mut c = HttpClient::new(addr);
    let r = c.get("/metrics", None).await.ok()?;
    if r.status != 200 {
        return None;
    }
    let text = r.text();
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// Prints `line()` on stderr once a second, stamped with the seconds since `t0`, until
/// `stop` changes: the progress of a long run.
pub async fn every_second(
    t0: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut line: impl FnMut() -> String,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        eprintln!("[{:>6.1}s] {}", t0.elapsed().as_secs_f64(), line());
    }
}

/// A short random hex nonce for one run's names.
pub fn nonce() -> String {
    hubproc::random_secret()[3..11].to_owned()
}

/// Seconds as `secs` checks them for the command line: more than 0, at most a day.
pub fn check_secs(d: Duration, what: &str) -> Result<(), Failure> {
    if d.is_zero() || d > Duration::from_secs(86_400) {
        Err(Failure::new(format!(
            "{what} must be more than 0 and at most a day"
        )))
    } else {
        Ok(())
    }
}

/// Waits for every task of a run, at most `limit` in all; tasks still running then
/// are aborted and named in the second list.
pub async fn join_all<T: Send + 'static>(
    handles: Vec<tokio::task::JoinHandle<T>>,
    limit: Duration,
) -> (Vec<T>, Vec<String>) {
    join_all_of("socket", handles, limit).await
}

/// [`join_all`], naming each task as `what #i` (an agent, a socket) in the second list.
pub async fn join_all_of<T: Send + 'static>(
    what: &str,
    handles: Vec<tokio::task::JoinHandle<T>>,
    limit: Duration,
) -> (Vec<T>, Vec<String>) {
    let end = tokio::time::Instant::now() + limit;
    let mut outs = Vec::with_capacity(handles.len());
    let mut lost = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let abort = h.abort_handle();
        match tokio::time::timeout_at(end, h).await {
            Ok(Ok(o)) => outs.push(o),
            Ok(Err(e)) => lost.push(format!("{what} #{i}: task failed: {e}")),
            Err(_) => {
                abort.abort();
                lost.push(format!("{what} #{i} did not finish in time"));
            }
        }
    }
    (outs, lost)
}

/// How one socket's notifications compare with the versions it should have seen.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Expected versions never notified.
    pub missing: usize,
    /// Versions notified more than once (extra copies).
    pub dup: usize,
    /// Versions notified that it should not have seen (never granted, or its own).
    pub extra: usize,
    /// Notifications that came after one of a higher version.
    pub inversions: usize,
    /// The first such, described.
    pub first_inversion: Option<String>,
    /// The first missing, duplicate or extra version, described.
    pub first_wrong: Option<String>,
}

/// Compares one socket's notifications (version, arrival, author) with the versions
/// it should have seen, in order; `name` names an author for the messages.
pub fn delivery(
    seen: &[(u64, u64, u32)],
    expected: &[u64],
    name: impl Fn(u32) -> String,
) -> Delivery {
    let mut d = Delivery::default();
    let want: std::collections::HashSet<u64> = expected.iter().copied().collect();
    let mut count: HashMap<u64, u32> = HashMap::with_capacity(seen.len());
    let mut high: Option<(u64, u32)> = None;
    for &(v, _, author) in seen {
        *count.entry(v).or_default() += 1;
        if !want.contains(&v) {
            d.extra += 1;
            d.first_wrong
                .get_or_insert_with(|| format!("notified of version {v}, which it should not see"));
        }
        match high {
            Some((h, by)) if v < h => {
                d.inversions += 1;
                d.first_inversion.get_or_insert_with(|| {
                    format!(
                        "version {v} (by {}) arrived after version {h} (by {})",
                        name(author),
                        name(by)
                    )
                });
            }
            _ => high = Some((v, author)),
        }
    }
    for (v, c) in &count {
        if *c > 1 {
            d.dup += (*c - 1) as usize;
            d.first_wrong
                .get_or_insert_with(|| format!("version {v} notified {c} times"));
        }
    }
    for v in expected {
        if !count.contains_key(v) {
            d.missing += 1;
            d.first_wrong
                .get_or_insert_with(|| format!("version {v} never notified"));
        }
    }
    d
}
