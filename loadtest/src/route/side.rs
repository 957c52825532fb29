//! The actors beside the agents and the creates in a `route` run, each started before
//! the load and stopped after it: supervisor consoles, the event stream reader, the
//! webhook endpoint's finish, and the customer traffic (preload, searchers, writer).

use super::Run;
use crate::cluster::sign;
use crate::events::StreamOutcome;
use crate::report::Failure;
use crate::searchers::{SearcherOutcome, WriterOutcome};
use crate::supervisor;
use crate::webhook::{HookOutcome, Receiver};
use std::time::Duration;
use switchboard::auth::Role;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The supervisor consoles of `--supervisors`, each watching its feed.
pub(super) struct Consoles {
    sup_stop: watch::Sender<bool>,
    consoles: Vec<JoinHandle<supervisor::SupOutcome>>,
}

impl Consoles {
    /// Connects the consoles (spread over the nodes), before the load so that their
    /// feed covers it; `Err` when one cannot connect.
    pub(super) async fn connect(run: &Run<'_>) -> Result<Consoles, Failure> {
        let (opts, addrs) = (run.opts, &run.addrs);
        let (sup_stop, sup_stop_rx) = watch::channel(false);
        let mut consoles = Vec::with_capacity(opts.supervisors);
        for i in 0..opts.supervisors {
            let token = sign(
                &run.keys,
                &format!("lt-sup-{i}"),
                Role::Supervisor,
                run.ttl,
                None,
            );
            match supervisor::connect(addrs[i % addrs.len()], &token, i).await {
                Ok(c) => consoles.push(tokio::spawn(supervisor::watch(c, sup_stop_rx.clone()))),
                Err(e) => {
                    return Err(Failure::new(format!(
                        "supervisor {i} could not connect: {e}"
                    )));
                }
            }
        }
        Ok(Consoles { sup_stop, consoles })
    }

    /// Stops every console and collects what each saw.
    pub(super) async fn stop(self) -> Vec<supervisor::SupOutcome> {
        let _ = self.sup_stop.send(true);
        let mut sup_outs = Vec::with_capacity(self.consoles.len());
        for h in self.consoles {
            match h.await {
                Ok(o) => sup_outs.push(o),
                Err(e) => sup_outs.push(supervisor::SupOutcome {
                    error: Some(format!("a console task failed: {e}")),
                    ..Default::default()
                }),
            }
        }
        sup_outs
    }
}

/// The `GET /v1/events` reader of `--stream-reader` (on the first node).
pub(super) struct StreamReader {
    reader_stop: watch::Sender<Option<u64>>,
    reader: Option<JoinHandle<StreamOutcome>>,
    /// With webhook type patterns: those types, whose events the endpoint must receive.
    hook_types: Option<Vec<String>>,
}

impl StreamReader {
    /// Starts the reader, when the options ask for it, and gives its request time to
    /// reach the hub before the first create.
    pub(super) async fn start(run: &Run<'_>) -> StreamReader {
        let opts = run.opts;
        let (reader_stop, reader_stop_rx) = watch::channel(None);
        // With webhook type patterns the reader reads from seq 1 and keeps the seqs of
        // those types: what the endpoint must receive.
        let hook_types = (opts.webhook_receiver
            && !crate::webhook::every_type(&opts.webhook_types))
        .then(|| opts.webhook_types.clone());
        let reader = opts.stream_reader.then(|| {
            tokio::spawn(crate::events::read(
                run.addrs[0],
                run.integration.clone(),
                run.shared.clone(),
                hook_types.clone(),
                reader_stop_rx,
            ))
        });
        if reader.is_some() {
            // Its request reaches the hub before the creates start.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        StreamReader {
            reader_stop,
            reader,
            hook_types,
        }
    }

    /// Stops the reader and returns what it read (`None` without one), and the
    /// webhook type patterns it kept the seqs of.
    pub(super) async fn stop(self, run: &Run<'_>) -> (Option<StreamOutcome>, Option<Vec<String>>) {
        let StreamReader {
            reader_stop,
            reader,
            hook_types,
        } = self;
        let (addrs, integration) = (&run.addrs, &run.integration);
        // The reader stops at once, or, when it names what the endpoint must receive,
        // once it has read up to the hub's last event (within 30 s).
        let read_up_to = match (&hook_types, &reader) {
            (Some(_), Some(_)) => crate::webhook::last_seq(addrs[0], integration)
                .await
                .unwrap_or(0),
            _ => 0,
        };
        let _ = reader_stop.send(Some(read_up_to));
        let stream = match reader {
            Some(mut h) => {
                let r = match tokio::time::timeout(Duration::from_secs(30), &mut h).await {
                    Ok(r) => r,
                    Err(_) => {
                        let _ = reader_stop.send(Some(0));
                        h.await
                    }
                };
                Some(r.unwrap_or_else(|e| crate::events::StreamOutcome {
                    errors: vec![format!("the stream reader failed: {e}")],
                    ..Default::default()
                }))
            }
            None => None,
        };
        let mut stream = stream;
        if let (Some(_), Some(s)) = (&hook_types, stream.as_mut()) {
            if s.last_seq < read_up_to {
                let why = format!(
                    "stream: read up to seq {} of {read_up_to}: the events the webhook endpoint must receive are not all known",
                    s.last_seq
                );
                s.errors.push(why);
            }
        }
        (stream, hook_types)
    }
}

/// The webhook endpoint's finish: every event up to the hub's last (with type
/// patterns, those the stream reader saw of them), given time to arrive.
pub(super) async fn finish_hook(
    run: &Run<'_>,
    receiver: Option<&Receiver>,
    created: &[(u64, String)],
    hook_types: &Option<Vec<String>>,
    stream: &Option<StreamOutcome>,
) -> Option<HookOutcome> {
    let expected = match (hook_types, stream) {
        (Some(_), Some(s)) => s.matching.as_ref(),
        _ => None,
    };
    match receiver {
        Some(r) => Some(
            r.finish(
                &run.addrs,
                &run.integration,
                created,
                expected,
                Duration::from_secs(30),
            )
            .await,
        ),
        None => None,
    }
}

/// Creates the customer base the searchers search (`--customers`), before anyone
/// logs in; how long it took, seconds (`None`: no preload).
pub(super) async fn preload_customers(run: &Run<'_>) -> Result<Option<f64>, Failure> {
    let opts = run.opts;
    let preload_secs = if opts.customers > 0 {
        if opts.progress {
            eprintln!("preloading {} customers", opts.customers);
        }
        let took = crate::searchers::preload(
            run.addrs.clone(),
            run.integration.clone(),
            opts.customers,
            opts.http_conns.clamp(8, 64),
            opts.progress,
        )
        .await?;
        Some(took.as_secs_f64())
    } else {
        None
    };
    Ok(preload_secs)
}

/// The searchers and the customer writer: connected before the load, working until
/// its last create.
pub(super) struct CustomerTraffic {
    search_stop: watch::Sender<bool>,
    searchers: Vec<JoinHandle<SearcherOutcome>>,
    writer: Option<JoinHandle<WriterOutcome>>,
    search_rate: f64,
    why_rate: String,
    /// The searchers' own runtime, with `--searchers-apart`.
    apart: Option<tokio::runtime::Runtime>,
}

/// A runtime for the searchers alone: one worker thread in `SCHED_IDLE`, so that it
/// runs only on a core nothing else wants and never delays the agents that time the
/// offers (`--searchers-apart`).
fn searchers_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("lt-searchers")
        .on_thread_start(|| {
            let p = libc::sched_param { sched_priority: 0 };
            // SAFETY: `p` is a plain struct that outlives the call; pid 0 is this
            // thread. A refusal leaves the thread at its priority (said below).
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &p) } != 0 {
                eprintln!(
                    "loadtest: the searchers' thread stays at its priority: {}",
                    std::io::Error::last_os_error()
                );
            }
        })
        .enable_all()
        .build()
}

/// What the searchers and the customer writer did.
pub(super) struct CustomerOutcome {
    /// Each searcher's that finished.
    pub(super) search_outs: Vec<SearcherOutcome>,
    /// Searcher tasks that failed.
    pub(super) searchers_lost: usize,
    /// The writer's, when it ran and finished.
    pub(super) writer_out: Option<WriterOutcome>,
    /// Searches a second per searcher.
    pub(super) search_rate: f64,
    /// Why that rate.
    pub(super) why_rate: String,
}

impl CustomerTraffic {
    /// Starts the searchers (at the hub's per-connection limit `hub_limit`, as its
    /// config says it) and the writer, as the options ask.
    pub(super) fn start(run: &Run<'_>, hub_limit: Option<f64>) -> CustomerTraffic {
        let (opts, addrs, keys, ttl) = (run.opts, &run.addrs, &run.keys, run.ttl);
        // The searchers, connected before the load and searching until its last create.
        let (search_stop, search_stop_rx) = watch::channel(false);
        let (search_rate, why_rate) = crate::searchers::searcher_rate(hub_limit);
        if opts.searchers > 0 && opts.progress {
            eprintln!(
                "{} searchers at {search_rate}/s each ({why_rate})",
                opts.searchers
            );
        }
        let apart = if opts.searchers_apart && opts.searchers > 0 {
            searchers_runtime()
                .map_err(|e| {
                    eprintln!(
                        "loadtest: no runtime for the searchers ({e}): they run with the agents"
                    )
                })
                .ok()
        } else {
            None
        };
        let spawner = match &apart {
            Some(rt) => rt.handle().clone(),
            None => tokio::runtime::Handle::current(),
        };
        let searchers: Vec<_> = (0..opts.searchers)
            .map(|i| {
                // No queues: never offered a task; never Ready.
                let token = sign(
                    keys,
                    &format!("lt-searcher-{i}"),
                    Role::Agent,
                    ttl,
                    Some(Vec::new()),
                );
                spawner.spawn(crate::searchers::run_searcher(
                    addrs[i % addrs.len()],
                    token,
                    search_rate,
                    opts.searcher_queries.generator(),
                    opts.customers + opts.customers_present,
                    opts.seed ^ (0x5ea7_c4e5 + i as u64),
                    search_stop_rx.clone(),
                ))
            })
            .collect();

        // Customers written while the load runs, until its last create.
        let writer = (opts.customer_rate > 0.0).then(|| {
            tokio::spawn(crate::searchers::run_writer(
                addrs[0],
                run.integration.clone(),
                opts.customer_rate,
                opts.customers + opts.customers_present,
                search_stop_rx.clone(),
            ))
        });
        CustomerTraffic {
            search_stop,
            searchers,
            writer,
            search_rate,
            why_rate,
            apart,
        }
    }

    /// Stops the searchers and the writer and collects what they did.
    pub(super) async fn stop(self) -> CustomerOutcome {
        let _ = self.search_stop.send(true);
        let mut search_outs = Vec::with_capacity(self.searchers.len());
        let mut searchers_lost = 0;
        for h in self.searchers {
            match h.await {
                Ok(o) => search_outs.push(o),
                Err(_) => searchers_lost += 1,
            }
        }
        if let Some(rt) = self.apart {
            // Every searcher has ended; this is called on the main runtime, where a
            // blocking shutdown would panic.
            rt.shutdown_background();
        }
        let writer_out = match self.writer {
            Some(h) => h.await.ok(),
            None => None,
        };
        CustomerOutcome {
            search_outs,
            searchers_lost,
            writer_out,
            search_rate: self.search_rate,
            why_rate: self.why_rate,
        }
    }
}
