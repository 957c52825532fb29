//! `loadtest restart`: how long the file store takes to be ready after a restart with
//! a large log on disk. In process, against [`FileStore`] directly (no sockets): writes
//! `customers` customer creates and then saves until `records` log records exist, many
//! at once (so group commit batches them), stops the store, and times the next open:
//! snapshot load plus replay of the log after it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::auth::Role;
use switchboard::clock::Ts;
use switchboard::config::Config;
use switchboard::context::ContextCommand;
use switchboard::context::record::{Actor, CustomerFields};
use switchboard::ids::CustomerId;
use switchboard::state::Reply;
use switchboard::store::file::{FileStore, disk_bytes};
use switchboard::store::{Sink, Store};

/// What `restart` does.
pub struct RestartOpts {
    /// Log records to write in all.
    pub records: u64,
    /// Customers among them.
    pub customers: u64,
    /// `store.snapshot_every`.
    pub snapshot_every: u64,
    /// Commands in flight at once while writing.
    pub concurrency: usize,
    /// The data directory (created; removed at the end unless kept).
    pub dir: PathBuf,
    /// Keep the data directory.
    pub keep: bool,
}

/// What it measured.
pub struct RestartReport {
    /// Records written.
    pub records: u64,
    /// Writing them.
    pub write: Duration,
    /// Bytes of snapshot and log on disk at the stop.
    pub disk_bytes: u64,
    /// The open after the stop, until the store answers.
    pub ready: Duration,
    /// The position the reopened store holds.
    pub position: u64,
}

fn actor() -> Actor {
    Actor {
        id: "loadtest".into(),
        role: Role::Integration,
    }
}

fn rules() -> Arc<switchboard::routing::Rules> {
    let cfg = Config::parse("[[queues]]\nid = \"q\"\n").unwrap_or_else(|_| Config::demo());
    Arc::new(cfg.rules())
}

/// Runs it. Errors are the store's, as text.
pub async fn run_restart(o: RestartOpts) -> Result<RestartReport, String> {
    if o.dir.exists() {
        return Err(format!(
            "{} exists; give a fresh directory",
            o.dir.display()
        ));
    }
    let now = Ts(1_800_000_000_000_000);
    let store = Arc::new(
        FileStore::open(
            &o.dir,
            "loadtest",
            rules(),
            || now,
            o.snapshot_every,
            Sink::detached(),
        )
        .await
        .map_err(|e| e.to_string())?,
    );
    let started = Instant::now();
    let workers = o.concurrency.max(1) as u64;
    let customers = o.customers.max(1);
    let saves = o.records.saturating_sub(customers);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Each worker owns its customers, so it knows their versions.
            let mut mine: Vec<(CustomerId, u64)> = Vec::new();
            let mut i = w;
            while i < customers {
                let cmd = ContextCommand::CreateCustomer {
                    by: actor(),
                    fields: CustomerFields {
                        name: Some(format!("Customer {i}")),
                        phones: Some(vec![format!("+351 91{i:07}")]),
                        ..Default::default()
                    },
                    activity_id: None,
                };
                let o = store.context(cmd, now).await.map_err(|e| e.to_string())?;
                match o.reply {
                    Ok(Reply::Context(switchboard::context::ContextReply::Customer(v))) => {
                        mine.push((v.customer.customer_id, v.customer.stamp.version))
                    }
                    other => return Err(format!("create customer: {other:?}")),
                }
                i += workers;
            }
            let mut i = w;
            let mut k = 0usize;
            while i < saves && !mine.is_empty() {
                let slot = k % mine.len();
                let (id, version) = mine[slot];
                let cmd = ContextCommand::UpdateCustomer {
                    by: actor(),
                    customer_id: id,
                    base_version: version,
                    changes: CustomerFields {
                        name: Some(format!("Customer {i} renamed")),
                        ..Default::default()
                    },
                };
                let o = store.context(cmd, now).await.map_err(|e| e.to_string())?;
                if o.reply.is_err() {
                    return Err(format!("save: {:?}", o.reply));
                }
                mine[slot].1 = version + 1;
                k += 1;
                i += workers;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let write = started.elapsed();
    let records = store.position();
    let dir = store.dir().to_path_buf();
    // Dropping the store waits for a snapshot being written.
    drop(store);
    let bytes = disk_bytes(&dir);
    let t = Instant::now();
    let reopened = FileStore::open(
        &dir,
        "loadtest",
        rules(),
        || now,
        o.snapshot_every,
        Sink::detached(),
    )
    .await
    .map_err(|e| e.to_string())?;
    reopened.ping().await.map_err(|e| e.to_string())?;
    let ready = t.elapsed();
    let position = reopened.position();
    drop(reopened);
    if !o.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(RestartReport {
        records,
        write,
        disk_bytes: bytes,
        ready,
        position,
    })
}
