//! The smoke scenario as a test: starts the debug `switchboard` binary, runs about 3 s
//! of routing (300 tasks, 20 agents, with declines, misses and hold times), and
//! asserts every invariant held and every task was accounted for.
//!
//! The hub binary is not built by this crate: `cargo test --workspace` builds it (the
//! root package has integration tests); with `-p loadtest` alone, build it first with
//! `cargo build -p switchboard`. `SWITCHBOARD_BIN` overrides the path.

use loadtest::{RouteOpts, Target, run_route};
use std::path::PathBuf;

fn hub_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHBOARD_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target
        .join("debug")
        .join(format!("switchboard{}", std::env::consts::EXE_SUFFIX))
}

/// The hub binary, checked to be there (these tests do not skip).
fn checked_hub_bin() -> PathBuf {
    let bin = hub_bin();
    assert!(
        bin.is_file(),
        "the switchboard binary is missing at {}: build it with `cargo build -p switchboard` \
         (or set SWITCHBOARD_BIN); this test does not skip",
        bin.display()
    );
    bin
}

/// The hub for a scenario to start.
fn spawned() -> Target {
    Target::Spawn {
        bin: checked_hub_bin(),
        rust_log: None,
    }
}

/// The report of a run that completed; a run that could not is the test's failure,
/// with its partial report printed.
fn passed_run(run: Result<loadtest::Report, loadtest::Failure>, what: &str) -> loadtest::Report {
    match run {
        Ok(r) => r,
        Err(f) => {
            if let Some(r) = &f.report {
                eprintln!("{}", r.table());
            }
            panic!("{what}: {f}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_routing_holds_every_invariant() {
    let opts = RouteOpts::smoke(spawned());
    let total = opts.total_tasks();
    let report = passed_run(run_route(opts).await, "smoke run failed");
    println!("{}", report.table());
    assert!(
        report.passed(),
        "checks failed: {:?}",
        report.failed_checks()
    );
    assert_eq!(report.counts.created, total, "every create answered");
    let a = &report.accounting;
    assert_eq!(a.looked_up, total);
    assert_eq!(a.missing + a.mismatched + a.unreadable, 0, "{a:?}");
    assert_eq!(
        a.completed + a.cancelled + a.queued + a.offered + a.assigned,
        total,
        "every task in a known state: {a:?}"
    );
    assert!(a.completed > 0, "some tasks completed: {a:?}");
    assert!(report.counts.declined > 0, "the declines path ran");
    for name in [
        "no task offered to two agents at once",
        "no task assigned twice",
    ] {
        assert!(
            report.checks.iter().any(|c| c.name == name && c.passed),
            "{name} was checked and held"
        );
    }
}

/// The smoke run with one `GET /v1/events` reader and one webhook endpoint of the
/// harness's own (a receiver on loopback named in the hub's config): every delivery's
/// signature verifies, every event up to the hub's last seq arrives, in order per task
/// and per agent, and every first offer is timed at the reader and at the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_with_a_stream_reader_and_a_webhook_endpoint_gets_every_event() {
    let mut opts = RouteOpts::smoke(spawned());
    opts.stream_reader = true;
    opts.webhook_receiver = true;
    let report = passed_run(
        run_route(opts).await,
        "smoke run with events consumers failed",
    );
    println!("{}", report.table());
    assert!(report.passed(), "{:?}", report.failed_checks());
    for name in [
        "every webhook delivery carried a valid signature and an envelope",
        "webhook deliveries in order per task and per agent",
    ] {
        assert!(
            report.checks.iter().any(|c| c.name == name && c.passed),
            "{name} was checked and held"
        );
    }
    let figure = |n: &str| {
        report
            .figures
            .iter()
            .find(|f| f.name == n)
            .map(|f| f.value)
            .unwrap_or_else(|| panic!("figure {n} reported"))
    };
    // Several events per task: created, queued, offered, ... completed.
    assert!(
        figure("webhook events (distinct)") > 3.0 * report.counts.created as f64,
        "the receiver got the run's events"
    );
    // An offer whose deadline passed before its turn is recorded expired, not sent
    // (a loaded CI machine can take longer than the smoke's 0.5 s offers): those and
    // only those may be missing.
    let expired = figure("webhook offers expired before sending");
    assert!(
        figure("webhook events missing") <= expired,
        "no event missing beyond the {expired} offers expired before sending"
    );
    let timed = |n: &str| {
        report
            .latencies
            .iter()
            .find(|l| l.name == n)
            .map_or(0, |l| l.count)
    };
    let at_receiver = timed("create -> task.offered (webhook)");
    assert!(
        at_receiver <= report.counts.first_offers
            && at_receiver + expired as u64 >= report.counts.first_offers,
        "every first offer timed at the receiver ({at_receiver} of {}) or recorded expired ({expired})",
        report.counts.first_offers
    );
    assert_eq!(
        timed("create -> task.offered (stream)"),
        report.counts.first_offers
    );
}

/// The same short run over two nodes sharing a Redis of the run's own (started by the
/// harness: free port, temporary directory, AOF always): agents and creates alternate
/// between the nodes, so offers, accepts and completes cross nodes, and every check
/// still holds. Needs `redis-server` (`.ci/run` installs it); a missing one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_over_two_nodes_and_redis_holds_every_invariant() {
    let mut opts = RouteOpts::smoke(spawned());
    opts.nodes = 2;
    opts.redis = true;
    let total = opts.total_tasks();
    let report = passed_run(run_route(opts).await, "two-node smoke run failed");
    println!("{}", report.table());
    assert!(report.passed(), "{:?}", report.failed_checks());
    assert_eq!(report.counts.created, total);
    assert_eq!(report.params["nodes"], 2);
    assert_eq!(report.params["store"], "redis");
    let a = &report.accounting;
    assert_eq!(a.looked_up, total);
    assert_eq!(a.missing + a.mismatched + a.unreadable, 0, "{a:?}");
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.name == "every hub node drained and exited cleanly on SIGTERM" && c.passed),
        "both nodes stopped cleanly"
    );
}

/// The reconnect scenario, small: 200 agents on two nodes sharing a Redis, half holding
/// an offer and half a task, all dropped at once (TCP reset, no close frame); each
/// reconnects to the other node and must resume with exactly what it held, then act on
/// it; every task ends completed by the agent that held it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_reconnect_resumes_every_agent_on_the_other_node() {
    use loadtest::reconnect::{ReconnectOpts, run_reconnect};
    let mut opts = ReconnectOpts::new(spawned());
    opts.agents = 200;
    opts.nodes = 2;
    opts.redis = true;
    let report = passed_run(run_reconnect(opts).await, "reconnect smoke run failed");
    println!("{}", report.table());
    assert!(report.passed(), "{:?}", report.failed_checks());
    for name in [
        "every reconnect resumed (welcome resumed: true)",
        "every created task accounted for",
    ] {
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.name.starts_with(name) && c.passed),
            "{name} was checked and held: {:?}",
            report.checks.iter().map(|c| &c.name).collect::<Vec<_>>()
        );
    }
}

/// The node-loss scenario, small: 40 agents on two nodes sharing a Redis; node 1's 20
/// agents each hold an offer when node 1 is killed with SIGKILL; every task must reach
/// exactly one live agent on node 2, as its second offer, and none be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_node_loss_moves_every_offer_to_one_live_agent() {
    use loadtest::nodeloss::{NodeLossOpts, run_nodeloss};
    let mut opts = NodeLossOpts::new(spawned());
    opts.agents = 40;
    opts.progress = false;
    let report = passed_run(run_nodeloss(opts).await, "node-loss smoke run failed");
    println!("{}", report.table());
    assert!(report.passed(), "{:?}", report.failed_checks());
    assert!(
        report.checks.iter().any(|c| c
            .name
            .starts_with("every task reached exactly one live agent")
            && c.passed),
        "the exactly-once check ran: {:?}",
        report.checks.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    assert_eq!(report.latencies.first().map(|l| l.count), Some(20));
}

/// The smoke run with a preloaded customer base and agents searching it for the whole
/// load window: every search answered with a reply and timed, and routing's checks
/// all still hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_with_searchers_times_every_search_and_routing_still_holds() {
    let mut opts = RouteOpts::smoke(spawned());
    opts.customers = 2000;
    opts.searchers = 3;
    let report = passed_run(run_route(opts).await, "smoke run with searchers failed");
    println!("{}", report.table());
    assert!(report.passed(), "{:?}", report.failed_checks());
    let search = report
        .latencies
        .iter()
        .find(|l| l.name == loadtest::searchers::H_SEARCH)
        .expect("the search latency is reported");
    // Three searchers at 10/s over a 3 s window, each at least one search.
    assert!(search.count >= 3, "{search:?}");
    let check = report
        .checks
        .iter()
        .find(|c| c.name == "every search answered without an error")
        .expect("the searchers' check is there");
    assert!(
        check.detail.contains(&format!(
            "{} searches from 3 searchers, {} replies",
            search.count, search.count
        )),
        "{check:?}"
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.starts_with("2000 customers preloaded")),
        "{:?}",
        report.notes
    );
}

/// A searcher whose searches the hub refuses counts every refusal by its code, and the
/// report's check fails on them: errors are never taken for answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_searcher_counts_the_errors_it_is_answered_with() {
    use loadtest::hubproc::{Capacity, HubProcess, HubSetup, RECONNECT_GRACE};
    use loadtest::searchers::{SearcherOutcome, add_to_report, run_searcher};
    use std::time::Duration;
    use switchboard::auth::{Claims, Keys, Role};
    let setup = HubSetup {
        queues: vec!["lt-q0".into()],
        offer_timeout: Duration::from_secs(2),
        capacity: Capacity::default(),
        retention: 1000,
        send_queue: 1024,
        reconnect_grace: RECONNECT_GRACE,
        rust_log: None,
        redis: None,
        snapshot_every: None,
        durable: false,
        webhook: None,
        stream_linger_ms: None,
    };
    let hub = HubProcess::spawn(&checked_hub_bin(), &setup)
        .await
        .expect("the hub starts");
    let token = Keys::new(hub.secret.as_bytes()).sign(&Claims {
        sub: "lt-searcher-0".into(),
        role: Role::Agent,
        exp: switchboard::auth::unix_now() + 600,
        name: None,
        skills: None,
        queues: Some(Vec::new()),
    });
    // Over the 2000 characters a search query may have: field_too_long, every time.
    fn too_long(_: &mut loadtest::rng::Rng, _: u64) -> String {
        "a".repeat(2001)
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let searcher = tokio::spawn(run_searcher(
        hub.addr, token, 50.0, too_long, 10, 1, stop_rx,
    ));
    // Stopped at once, it still sends its first search (the schedule's first tick).
    stop.send(true).expect("the searcher listens");
    let out: SearcherOutcome = searcher.await.expect("the searcher ends");
    let (dir, _) = (hub.dir.clone(), hub.stop(Duration::from_secs(10)).await);
    HubProcess::remove_files(&dir);
    assert_eq!(out.broke, None);
    assert!(out.sent >= 1);
    assert_eq!(out.replied, 0);
    assert_eq!(
        out.errors.get("field_too_long").copied(),
        Some(out.sent),
        "{:?}",
        out.errors
    );
    let mut report = loadtest::Report::new("route", serde_json::json!({}), "test".into());
    add_to_report(&mut report, &[out], 0, 50.0, "test");
    let check = &report.checks[0];
    assert!(!check.passed, "{check:?}");
    assert!(check.detail.contains("field_too_long x"), "{check:?}");
}
