//! Connections before they are authenticated: the accept loop and its caps, hyper's
//! HTTP/1 server with its head timeout, the per-request limits, and the drain.
//!
//! Anyone who can reach the port can open a connection and then do nothing, or send a
//! request one byte at a time; none of that may hold a descriptor for long or shut out
//! the desktops. So every connection is counted from its accept (an upgraded websocket
//! keeps its count: the count travels inside its socket), a connection past a cap is
//! answered `503 too_many_connections` at once, a request's head must arrive within
//! `limits.request_head_timeout_ms` (also the keep-alive idle limit), and its body
//! within `limits.request_body_timeout_ms` ([`request`]).

mod io;
mod request;

use crate::config::LimitsConfig;
use crate::error::ErrorCode;
use crate::hub::Hub;
use crate::protocol::ErrorBody;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Descriptors kept out of the default connection cap: the listener, the store's
/// connections, logs, the snapshot thread's files.
const RESERVED_FDS: usize = 128;
/// The cap when the open-file limit cannot be read (or is unlimited).
const FALLBACK_MAX_CONNECTIONS: usize = 65_536;
/// Refused connections being answered at one time; past it a refusal is a bare close,
/// so that a flood of refusals cannot itself hold descriptors.
const MAX_REFUSING: usize = 1024;
/// How long a refused connection is given to read its answer and close.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// The most the soft open-file limit is raised to: a cap in the millions would only
/// hide a configuration mistake.
const MAX_RAISED_FDS: libc::rlim_t = 1 << 20;

/// The process's soft open-file limit, first raised towards the hard limit: the soft
/// default (often 1,024) would cap a contact center's desktops far below what the
/// machine allows, and only the hard limit is an operator's decision.
fn open_file_limit() -> Option<usize> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    let want = r.rlim_max.min(MAX_RAISED_FDS);
    if r.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(from = r.rlim_cur, to = want, "open-file limit raised");
            r.rlim_cur = want;
        }
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    usize::try_from(r.rlim_cur).ok()
}

/// `limits.max_connections`, or the default derived from the open-file limit (raised
/// to the hard limit first).
pub fn max_connections(limits: &LimitsConfig) -> usize {
    limits.max_connections.unwrap_or_else(|| {
        open_file_limit()
            .map(|n| n.saturating_sub(RESERVED_FDS).max(16))
            .unwrap_or(FALLBACK_MAX_CONNECTIONS)
    })
}

/// The connection counts, in all and by source address.
struct Caps {
    hub: Arc<Hub>,
    total: AtomicUsize,
    max_total: usize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    /// 0: no per-address cap.
    max_per_ip: usize,
}

/// One counted connection; dropping it gives the place back.
pub(crate) struct Slot {
    caps: Arc<Caps>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.caps.total.fetch_sub(1, Ordering::AcqRel);
        self.caps.hub.metrics.tcp_closed();
        if let Some(ip) = self.ip {
            let mut by_ip = self.caps.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
    }
}

impl Caps {
    fn take(self: &Arc<Caps>, ip: IpAddr) -> Result<Slot, &'static str> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("the hub holds as many connections as it takes; retry with backoff");
        }
        self.hub.metrics.tcp_opened();
        let mut slot = Slot {
            caps: self.clone(),
            ip: None,
        };
        if self.max_per_ip > 0 {
            let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = by_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                // `slot` gives the total back when it drops.
                return Err("this address holds as many connections as it may; retry with backoff");
            }
            *n += 1;
            slot.ip = Some(ip);
        }
        Ok(slot)
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, asks
/// every connection to finish its request and close, and waits for them (websockets
/// are handed to their sessions and drained by the hub).
pub async fn serve(
    mut listener: TcpListener,
    app: Router,
    hub: Arc<Hub>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limits = &hub.config.limits;
    let caps = Arc::new(Caps {
        hub: hub.clone(),
        total: AtomicUsize::new(0),
        max_total: max_connections(limits),
        by_ip: Mutex::new(HashMap::new()),
        max_per_ip: limits.max_connections_per_ip,
    });
    tracing::info!(
        max_connections = caps.max_total,
        max_connections_per_ip = caps.max_per_ip,
        "connection caps"
    );
    let app = app.layer(axum::middleware::from_fn_with_state(
        Arc::new(request::Limits::new(limits, hub.clone())),
        request::guard,
    ));
    let service = TowerToHyperService::new(app);
    let head_timeout = Duration::from_millis(limits.request_head_timeout_ms);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    // The websocket sessions' own write timeout, for every write on the socket.
    let write_stall = Duration::from_millis(limits.ping_timeout_ms);
    let refusing = Arc::new(AtomicUsize::new(0));
    // Closed (sender dropped) when the drain begins.
    let (drain_tx, drain_rx) = watch::channel(());
    // Every connection task holds a receiver; the sender sees them all gone.
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            // Waits and retries by itself on accept errors (descriptors exhausted).
            c = axum::serve::Listener::accept(&mut listener) => c,
            _ = &mut shutdown => break,
        };
        // Frames are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let slot = match caps.take(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                hub.metrics.connection_refused();
                refuse(tcp, why, &refusing);
                continue;
            }
        };
        let io = TokioIo::new(io::Guarded::new(
            tcp,
            slot,
            limits.max_header_bytes,
            write_stall,
        ));
        let conn = with_spread_head_timeout(&builder, head_timeout)
            .serve_connection(io, service.clone())
            .with_upgrades();
        let mut drain = drain_rx.clone();
        let done = done_rx.clone();
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let mut draining = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            if e.is_timeout() {
                                hub.metrics.head_timeout();
                                tracing::debug!(%peer, "request head not received in time; closed");
                            } else {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        }
                        break;
                    }
                    _ = drain.changed(), if !draining => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(done);
        });
    }
    drop(listener);
    drop(drain_tx);
    drop(done_rx);
    done_tx.closed().await;
}

/// The part of a request's time limits over which they are spread.
const TIMEOUT_SPREAD: u32 = 4;

/// `limit` less up to a quarter of it, drawn afresh on each call. Connections opened
/// together (a flood of silent ones) would otherwise all time out in the same
/// millisecond, and their closes come as one burst of work in front of the decisions;
/// spread, they come as a trickle. Never more than `limit`: what the documentation
/// promises is that a connection is closed by then.
pub(crate) fn spread(limit: Duration) -> Duration {
    // The top 48 bits of a v4 uuid are random (its version and variant bits are lower).
    let r = (crate::ids::random_v4().as_u128() >> 80) as u64;
    let off = (limit / TIMEOUT_SPREAD).mul_f64(r as f64 / (1u64 << 48) as f64);
    limit - off
}

/// `builder` with this connection's head timeout, [`spread`].
fn with_spread_head_timeout(builder: &http1::Builder, limit: Duration) -> http1::Builder {
    let mut b = builder.clone();
    b.header_read_timeout(spread(limit));
    b
}

/// Answers a connection past a cap with `503 too_many_connections` and closes it.
fn refuse(mut tcp: TcpStream, why: &'static str, refusing: &Arc<AtomicUsize>) {
    if refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
        refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    tracing::debug!("connection refused: {why}");
    let refusing = refusing.clone();
    tokio::spawn(async move {
        let answer = io::answer(ErrorBody::new(ErrorCode::TooManyConnections, why));
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            tcp.write_all(&answer).await?;
            tcp.shutdown().await?;
            // Read what the client sent until it closes: closing with unread data
            // would reset the connection, and the client could lose the answer.
            let mut sink = [0u8; 1024];
            while tcp.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_limit_lies_in_the_last_quarter_and_covers_it() {
        let limit = Duration::from_millis(10_000);
        let draws: Vec<Duration> = (0..2_000).map(|_| spread(limit)).collect();
        assert!(draws.iter().all(|d| *d <= limit && *d >= limit * 3 / 4));
        // Over the whole quarter, not bunched in a part of it (a first version drew
        // from bits of the uuid that are fixed, and put every draw in one part).
        let (lo, hi) = (draws.iter().min(), draws.iter().max());
        assert!(
            lo.is_some_and(|d| *d < Duration::from_millis(7_600)),
            "{lo:?}"
        );
        assert!(
            hi.is_some_and(|d| *d > Duration::from_millis(9_900)),
            "{hi:?}"
        );
        let below_mid = draws
            .iter()
            .filter(|d| **d < Duration::from_millis(8_750))
            .count();
        assert!(
            (800..1_200).contains(&below_mid),
            "{below_mid} of 2000 below the middle"
        );
    }
}
