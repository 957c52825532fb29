//! The echo floor, measured in the same run as a scenario: once the hub's part is over
//! (the hub stopped, so that the floor has the machine to itself), an echo server on the
//! hub's stack ([`crate::echo`], in a process of its own so that its CPU can be read from
//! /proc) gets the same number of connections, frames of the same size and the same
//! frames per second, and the scenario reports the hub's figures as ratios to it: CPU per
//! frame, resident memory per connection, latency.
//!
//! A scenario fills [`Report::floor_basis`] with what its hub did ([`Basis`]); the
//! command line then calls [`attach`].

use crate::echo::{EchoOpts, H_ECHO_CONNECT, H_ECHO_RTT, run_echo};
use crate::hubproc::{proc_rss_kib, proc_usage};
use crate::report::{Check, Failure, Report};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What the hub did in a scenario's measured window, for the comparison.
#[derive(Clone, Debug, Default)]
pub struct Basis {
    /// Client connections (websockets) the hub held.
    pub conns: usize,
    /// Frames the hub read and wrote in the window: websocket frames both ways, and an
    /// HTTP request and its response as one each.
    pub frames: u64,
    /// The window, seconds.
    pub window_secs: f64,
    /// The hub's CPU seconds over the window (all nodes).
    pub hub_cpu_secs: f64,
    /// The average size of a frame the hub wrote, bytes.
    pub frame_bytes: usize,
    /// The hub's resident memory growth per connection while the clients logged in
    /// (KiB), when measured.
    pub rss_per_conn_kib: Option<f64>,
    /// The hub latency set against the echo round trip: name, p50 and p99 (µs).
    pub latency: Option<(String, u64, u64)>,
    /// Set the latency against the echo's connect -> open (every connection opened at
    /// once) instead of its round trip: for a latency that is a connection's setup.
    pub vs_connect: bool,
}

impl Basis {
    /// The hub's CPU per frame, µs.
    pub fn cpu_per_frame_us(&self) -> f64 {
        self.hub_cpu_secs * 1e6 / self.frames.max(1) as f64
    }

    /// The latency summary `name` of a report, as (name, p50, p99).
    pub fn latency_of(r: &Report, name: &str) -> Option<(String, u64, u64)> {
        r.latencies
            .iter()
            .find(|l| l.name == name && l.count > 0)
            .map(|l| (l.name.clone(), l.p50_us, l.p99_us))
    }
}

/// The echo server, started as `<bin> echo-server` (this harness's own executable by
/// default) on a loopback port.
pub(crate) struct EchoProc {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

/// Starts the echo server in its own process, for at most `secs`.
pub(crate) async fn spawn_echo(bin: &Path, secs: u64) -> Result<EchoProc, Failure> {
    let mut child = Command::new(bin)
        .arg("echo-server")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--secs")
        .arg(secs.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::new(format!("cannot start {} echo-server: {e}", bin.display())))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(Failure::new("echo-server stdout not captured"));
    };
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .map_err(|_| Failure::new("echo-server did not start within 20 s"))?
        .map_err(|e| Failure::new(format!("echo-server: {e}")))?
        .unwrap_or_default();
    let addr = line
        .strip_prefix("echo server on ws://")
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .filter(|a| a.ip().is_loopback())
        .ok_or_else(|| Failure::new(format!("echo-server said {line:?}")))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(EchoProc { child, addr })
}

/// The echo binary: the one given, or this executable.
pub fn echo_bin(given: Option<&Path>) -> Result<PathBuf, Failure> {
    match given {
        Some(b) => Ok(b.to_path_buf()),
        None => std::env::current_exe()
            .map_err(|e| Failure::new(format!("cannot find this executable: {e}"))),
    }
}

/// The floor's figures.
struct Measured {
    rate: f64,
    secs: f64,
    cpu_per_frame_us: f64,
    rss_per_conn_kib: f64,
    /// The floor's latency: name, p50, p99 (µs).
    rtt: Option<(String, u64, u64)>,
}

async fn measure(b: &Basis, bin: &Path) -> Result<Measured, Failure> {
    // The same frames per second (an echoed message is a frame in and a frame out), at
    // least a hundred messages a second, within what one run may send.
    let rate = (b.frames as f64 / 2.0 / b.window_secs.max(1e-3)).clamp(100.0, 60_000.0);
    let secs = b.window_secs.clamp(2.0, 5.0);
    let conns = b.conns.clamp(1, 20_000);
    let mut echo = spawn_echo(bin, 120 + conns as u64 / 50).await?;
    let Some(pid) = echo.child.id() else {
        return Err(Failure::new("the echo server has no process id"));
    };
    let rss0 = proc_rss_kib(pid).unwrap_or(0);
    let cpu0 = proc_usage(pid).map(|u| u.0);
    let run = run_echo(EchoOpts {
        addr: Some(echo.addr),
        conns,
        rate,
        duration: Duration::from_secs_f64(secs),
        size: b.frame_bytes.max(32),
    })
    .await;
    let after = proc_usage(pid);
    let _ = echo.child.kill().await;
    let report = run.map_err(|f| Failure::new(format!("the echo floor failed: {f}")))?;
    let (Some(cpu0), Some((cpu1, hwm))) = (cpu0, after) else {
        return Err(Failure::new("cannot read the echo server's CPU from /proc"));
    };
    let echoed = report.counts.completed.max(1) as f64;
    Ok(Measured {
        rate,
        secs,
        cpu_per_frame_us: (cpu1 - cpu0) * 1e6 / (2.0 * echoed),
        rss_per_conn_kib: hwm.saturating_sub(rss0) as f64 / conns as f64,
        rtt: Basis::latency_of(
            &report,
            if b.vs_connect {
                H_ECHO_CONNECT
            } else {
                H_ECHO_RTT
            },
        ),
    })
}

/// Runs the echo floor against the report's [`Basis`] (nothing when it has none) and
/// adds the side-by-side figures and ratios. A floor that cannot be measured fails the
/// run: the ratios are part of what it reports.
pub async fn attach(report: &mut Report, bin: Option<&Path>) {
    let Some(b) = report.floor_basis.take() else {
        return;
    };
    let measured = match echo_bin(bin) {
        Ok(bin) => measure(&b, &bin).await,
        Err(f) => Err(f),
    };
    let m = match measured {
        Ok(m) => m,
        Err(f) => {
            report.checks.push(Check::from_breaches(
                "the echo floor was measured in the same run",
                String::new(),
                &[f.message],
            ));
            return;
        }
    };
    report.notes.push(format!(
        "floor: an echo server on the hub's stack, in its own process, after the hub stopped: \
         {} connections, {:.0} messages/s of {} B for {:.1} s (the hub's frames per second, \
         each message a frame in and a frame out)",
        b.conns, m.rate, b.frame_bytes, m.secs
    ));
    let hub_cpu = b.cpu_per_frame_us();
    report.figure("hub: CPU per frame", hub_cpu, "µs");
    report.figure("floor: CPU per frame", m.cpu_per_frame_us, "µs");
    report.figure(
        "CPU per frame, hub / floor",
        hub_cpu / m.cpu_per_frame_us.max(1e-9),
        "x",
    );
    if let Some(hub_rss) = b.rss_per_conn_kib {
        report.figure("hub: RSS per connection (login)", hub_rss, "KiB");
        report.figure("floor: RSS per connection", m.rss_per_conn_kib, "KiB");
        report.figure(
            "RSS per connection, hub / floor",
            hub_rss / m.rss_per_conn_kib.max(1e-9),
            "x",
        );
    }
    if let (Some((name, p50, p99)), Some((fname, f50, f99))) = (&b.latency, m.rtt) {
        report.figure(format!("hub: {name} p50"), *p50 as f64 / 1e3, "ms");
        report.figure(format!("hub: {name} p99"), *p99 as f64 / 1e3, "ms");
        report.figure(format!("floor: {fname} p50"), f50 as f64 / 1e3, "ms");
        report.figure(format!("floor: {fname} p99"), f99 as f64 / 1e3, "ms");
        report.figure(
            "latency p50, hub / floor",
            *p50 as f64 / (f50 as f64).max(1.0),
            "x",
        );
        report.figure(
            "latency p99, hub / floor",
            *p99 as f64 / (f99 as f64).max(1.0),
            "x",
        );
    }
}
