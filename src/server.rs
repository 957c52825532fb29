//! Starting and draining a hub: the listener, the background loops, and the SIGTERM path.

use crate::auth::Keys;
use crate::clock::Clock;
use crate::config::Config;
use crate::config::StoreKind;
use crate::conn;
use crate::http;
use crate::hub::Hub;
use crate::store::Store;
use crate::store::file::FileStore;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A hub that is listening.
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// The hub itself.
    pub hub: Arc<Hub>,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<()>,
}

/// Connections the kernel holds for the hub before it accepts them (capped by
/// `net.core.somaxconn`). tokio's default of 128 is too few for a reconnect storm: when
/// a node is lost, or a network blip drops every desktop at once, they all come back
/// within a second, and the kernel drops the attempts past the backlog (each then waits
/// about a second for its SYN to be retried).
const LISTEN_BACKLOG: u32 = 4096;

fn bind(config: &Config) -> std::io::Result<tokio::net::TcpListener> {
    let addr = config
        .listen_addr()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    listen(addr)
}

/// A listener on `addr` as the hub makes it: `LISTEN_BACKLOG`, and the port can be
/// taken back at once after a restart (as std's bind does). Public so that the
/// load-test's echo floor listens the same way.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds, starts the background loops and serves, with the configured store.
pub async fn start(config: Config, secret: &[u8]) -> std::io::Result<Running> {
    let config = Arc::new(config);
    let clock = Clock::new();
    let rules = Arc::new(config.rules());
    let redis = match config.store.effective_kind() {
        StoreKind::Redis => config.store.redis.as_ref(),
        _ => None,
    };
    // The store delivers through this sink from its first decision; the hub binds it.
    let (sink, binding) = crate::store::sink::sink();
    let (store, poll): (Arc<dyn Store>, Option<Duration>) = match redis {
        None if config.store.effective_kind() == StoreKind::File => {
            let s = FileStore::open(
                &config.store.data_dir,
                &config.server.node_id,
                rules,
                || clock.now(),
                config.store.snapshot_every,
                sink,
            )
            .await
            .map_err(|e| std::io::Error::other(format!("file store: {e}")))?
            .with_call_timeout(Duration::from_millis(config.store.call_timeout_ms));
            (Arc::new(s), None)
        }
        None => (Arc::new(MemoryStore::new(rules, clock.now(), sink)), None),
        Some(url) => {
            let s = RedisStore::connect_with(
                url,
                &config.server.node_id,
                rules,
                clock.clone(),
                config.store.snapshot_every,
                sink,
            )
            .await
            .map_err(|e| std::io::Error::other(format!("redis: {e}")))?;
            s.set_call_timeout(Duration::from_millis(config.store.call_timeout_ms));
            // Deadlines may be set by other nodes' commands: look every so often.
            (Arc::new(s), Some(Duration::from_millis(50)))
        }
    };
    // A config endpoint whose id an API endpoint already has would hide it (the config
    // one taking over its position and state, the API one undeletable, and back in
    // service if the config one is removed): said now, with what to do.
    if !config.webhooks.endpoints.is_empty() {
        let book = store
            .webhooks()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if let Some(e) = config
            .webhooks
            .endpoints
            .iter()
            .find(|e| book.endpoints.contains_key(&e.id))
        {
            return Err(std::io::Error::other(format!(
                "webhooks.endpoints: {:?} is also an endpoint made through the API; give the config's another id, or start without it and DELETE /v1/webhooks/{} first",
                e.id, e.id
            )));
        }
    }
    let hub = Hub::new(config.clone(), Keys::new(secret), store, binding, clock);
    // The webhooks read the hub's event window (held weakly: they never keep a hub
    // that stopped alive).
    let feed: Arc<dyn crate::webhooks::feed::Feed> = hub.clone();
    crate::webhooks::Webhooks::start(&hub, Arc::downgrade(&feed));
    let listener = bind(&config)?;
    let addr = listener.local_addr()?;
    tokio::spawn(hub.clone().run_timers(poll));
    tokio::spawn(
        hub.clone()
            .run_queue_updates(Duration::from_millis(config.server.queue_update_ms)),
    );
    tokio::spawn(
        hub.clone()
            .run_stats_updates(Duration::from_millis(config.server.stats_update_ms)),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let app = http::router(hub.clone());
    let drain_hub = hub.clone();
    let serve_hub = hub.clone();
    let served = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
            // Sessions say goodbye and close; new upgrades are refused.
            drain_hub.start_drain();
        };
        // Timeouts and caps on every connection: see `conn`.
        conn::serve(listener, app, serve_hub, shutdown).await;
    });
    Ok(Running {
        addr,
        hub,
        stop: Some(stop),
        served,
    })
}

impl Running {
    /// Drains: stops accepting, tells every connected client, lets in-flight replies
    /// finish, and waits (up to `server.drain_secs`) for connections to close.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let limit = Duration::from_secs_f64(self.hub.config.server.drain_secs);
        let left = self.hub.wait_connections_closed(limit).await;
        if left > 0 {
            tracing::warn!(left, "drain limit reached with connections still open");
        }
        let _ = tokio::time::timeout(limit, &mut self.served).await;
        if let Some(w) = self.hub.webhooks.get() {
            // Positions written and leases let go, so another node takes over at once.
            w.stop().await;
        }
        // Stopping may wait for a last snapshot (the file store: up to a minute), which
        // is blocking work: off the runtime's workers.
        self.hub.store().close().await;
        let hub = self.hub.clone();
        let _ = tokio::task::spawn_blocking(move || hub.store().stop()).await;
    }
}
