//! Webhooks: deliveries to a real HTTP receiver, verified with the `standardwebhooks`
//! crate's verifier. The delivery runner is fed events by the test here (the hub's
//! event window is exercised by the hub-level tests below); the API runs on a real hub.

mod common;

use common::pipelined::{Pipelined, Plan};
use common::receiver::{Answer, Received, Receiver};
use common::{TestHub, config};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use switchboard::auth::Role;
use switchboard::clock::{Clock, Ts};
use switchboard::error::HubError;
use switchboard::events::EventData;
use switchboard::ids::{AgentId, Channel, OfferId, QueueId, TaskId};
use switchboard::webhooks::client::Client;
use switchboard::webhooks::config::WebhooksConfig;
use switchboard::webhooks::delivery::{Control, Lease, Records, Runner};
use switchboard::webhooks::feed::{CHUNK, Envelope, EventChunk, EventsGone, Feed};
use switchboard::webhooks::signing::Secret;
use switchboard::webhooks::target::Target;
use tokio::sync::{broadcast, watch};

/// Events the test pushes.
struct TestFeed {
    held: Mutex<Vec<Arc<Envelope>>>,
    live: broadcast::Sender<Arc<Envelope>>,
    /// Reads of the held events, and the most events one of them handed out.
    reads: AtomicUsize,
    largest_read: AtomicUsize,
}

impl TestFeed {
    fn new() -> Arc<TestFeed> {
        Arc::new(TestFeed {
            held: Mutex::new(Vec::new()),
            live: broadcast::channel(4096).0,
            reads: AtomicUsize::new(0),
            largest_read: AtomicUsize::new(0),
        })
    }
    fn push(&self, data: EventData) -> u64 {
        let mut held = self.held.lock().unwrap();
        let seq = held.len() as u64 + 1;
        let e = Arc::new(Envelope::new("ep1", seq, Ts(0), data));
        held.push(e.clone());
        let _ = self.live.send(e);
        seq
    }
}

impl Feed for TestFeed {
    /// As the hub's: up to `max` events after `after`, subscribed to the live ones in
    /// the same step when they reach the newest.
    fn events_chunk(&self, after: u64, max: usize) -> Result<EventChunk, EventsGone> {
        let held = self.held.lock().unwrap();
        let events: Vec<_> = held
            .iter()
            .filter(|e| e.seq > after)
            .take(max)
            .cloned()
            .collect();
        let upto = events.last().map_or(after, |e| e.seq);
        self.reads.fetch_add(1, Relaxed);
        self.largest_read.fetch_max(events.len(), Relaxed);
        Ok(EventChunk {
            live: (upto >= held.len() as u64).then(|| self.live.subscribe()),
            events,
            oldest: 1,
        })
    }
    fn head(&self) -> u64 {
        self.held.lock().unwrap().len() as u64
    }
    fn epoch(&self) -> String {
        "ep1".into()
    }
}

/// Records what the runner writes.
#[derive(Default)]
struct TestControl {
    positions: Mutex<Vec<u64>>,
    /// Notified at every position written.
    advanced: tokio::sync::Notify,
    disabled: Mutex<Option<String>>,
    stopped: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Control for TestControl {
    async fn advance(&self, _id: &str, _token: u64, position: u64) -> Result<bool, HubError> {
        // As the book does: disabling lets the lease go, so the token is refused after.
        if self.disabled.lock().unwrap().is_some() {
            return Ok(false);
        }
        self.positions.lock().unwrap().push(position);
        self.advanced.notify_waiters();
        Ok(true)
    }
    async fn disable(&self, _id: &str, _token: u64, reason: String) -> Result<(), HubError> {
        *self.disabled.lock().unwrap() = Some(reason);
        self.stopped.notify_waiters();
        Ok(())
    }
}

fn task(n: u128) -> TaskId {
    TaskId(uuid::Uuid::from_u128(n))
}

fn queued(n: u128) -> EventData {
    EventData::TaskQueued {
        task_id: task(n),
        queue: QueueId::from("support"),
        channel: Channel::Chat,
        priority: 0,
        enqueued_at: Ts(0),
        requeued: false,
    }
}

fn offered(n: u128, agent: &str, deadline: Ts) -> EventData {
    EventData::TaskOffered {
        task_id: task(n),
        offer_id: OfferId(uuid::Uuid::from_u128(n + 1000)),
        agent_id: AgentId::from(agent),
        queue: QueueId::from("support"),
        channel: Channel::Chat,
        deadline,
    }
}

fn rules(schedule: &[u64]) -> WebhooksConfig {
    WebhooksConfig {
        allow_private: true,
        retry_schedule_ms: schedule.to_vec(),
        retry_jitter: 0.0,
        timeout_ms: 2_000,
        position_every_ms: 50,
        ..WebhooksConfig::default()
    }
}

struct Delivering {
    /// The runner holds the feed weakly: kept alive as long as the delivery is.
    _feed: Arc<TestFeed>,
    secret: Secret,
    control: Arc<TestControl>,
    records: Arc<Records>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

fn deliver(
    feed: &Arc<TestFeed>,
    rx: &Receiver,
    rules: WebhooksConfig,
    types: &[&str],
) -> Delivering {
    let client = Client::new(Target::parse(&rx.url()).unwrap(), rules.allow_private);
    deliver_with(feed, client, rules, types)
}

fn deliver_with(
    feed: &Arc<TestFeed>,
    client: Client,
    rules: WebhooksConfig,
    types: &[&str],
) -> Delivering {
    deliver_leased(feed, client, rules, types, None)
}

/// The same, the runner holding a lease until `lease` (never renewed); `None`: no lease
/// to watch.
fn deliver_leased(
    feed: &Arc<TestFeed>,
    client: Client,
    rules: WebhooksConfig,
    types: &[&str],
    lease: Option<tokio::time::Instant>,
) -> Delivering {
    let secret = Secret::generate();
    let runner = Arc::new(Runner {
        id: "crm".into(),
        types: types.iter().map(|t| t.to_string()).collect(),
        client,
        secrets: Mutex::new(Arc::new(vec![secret.clone()])),
        rules: Arc::new(rules),
        records: Arc::new(Records::default()),
        epoch: "ep1".into(),
        clock: Clock::new(),
        lease: lease.map_or_else(Lease::default, Lease::until),
        retries: Default::default(),
    });
    let control = Arc::new(TestControl::default());
    let (stop, stopped) = watch::channel(false);
    let feed_dyn: Arc<dyn Feed> = feed.clone();
    let weak: Weak<dyn Feed> = Arc::downgrade(&feed_dyn);
    let records = runner.records.clone();
    let c: Arc<dyn Control> = control.clone();
    let done = tokio::spawn(runner.run(weak, c, 1, 0, stopped));
    Delivering {
        _feed: feed.clone(),
        secret,
        control,
        records,
        stop,
        done,
    }
}

fn verify(secret: &Secret, r: &Received) {
    let wh = standardwebhooks::Webhook::new(&secret.text()).expect("secret");
    wh.verify(&r.body, &r.headers)
        .unwrap_or_else(|e| panic!("signature of {} does not verify: {e:?}", r.id()));
}

/// The first delivery of each event id, in arrival order.
fn firsts(got: &[Received]) -> Vec<Received> {
    let mut seen = std::collections::HashSet::new();
    got.iter()
        .filter(|r| r.status / 100 == 2 && seen.insert(r.id()))
        .cloned()
        .collect()
}

fn delivered_ids(got: &[Received]) -> std::collections::HashSet<String> {
    got.iter()
        .filter(|r| r.status / 100 == 2)
        .map(|r| r.id())
        .collect()
}

#[tokio::test]
async fn deliveries_are_signed_and_each_task_in_order_while_the_receiver_is_down_then_up() {
    let mut rx = Receiver::start().await;
    let feed = TestFeed::new();
    let d = deliver(
        &feed,
        &rx,
        rules(&[0, 100, 200, 400, 800, 800, 800, 800, 800, 800, 800, 800]),
        &["*"],
    );
    // Three tasks, interleaved, each with several events.
    for round in 0..4u128 {
        for t in 1..=3u128 {
            let _ = round;
            feed.push(queued(t));
        }
    }
    rx.wait_for(Duration::from_secs(5), "the first 12 events", |g| {
        delivered_ids(g).len() == 12
    })
    .await;
    // Down: connections refused while more events happen.
    rx.down();
    for _ in 0..3 {
        for t in 1..=3u128 {
            feed.push(queued(t));
        }
    }
    // Wait until the sender has really met the refusal before bringing the receiver up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while d
        .records
        .failures
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery failed while the receiver was down"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rx.up().await;
    let got = rx
        .wait_for(Duration::from_secs(10), "all 21 events", |g| {
            delivered_ids(g).len() == 21
        })
        .await;
    for r in &got {
        verify(&d.secret, r);
        let body = r.json();
        assert_eq!(r.id(), body["id"], "webhook-id is the event id");
    }
    // Per task: seq increases in arrival order of first deliveries.
    assert_in_order_by(&got, "task_id");
    // The position reaches the last event.
    await_position(&d, 21).await;
    let _ = d.stop.send(true);
    let _ = d.done.await;
}

#[tokio::test]
async fn an_endpoint_far_behind_reads_the_window_a_piece_at_a_time_and_misses_nothing() {
    let rx = Receiver::start().await;
    let feed = TestFeed::new();
    // What piled up while the receiver was down: more than three pieces, 40 tasks.
    let behind = 3 * CHUNK as u128 + 100;
    for n in 0..behind {
        feed.push(queued(n % 40));
    }
    let d = deliver(&feed, &rx, rules(&[0, 100, 200]), &["*"]);
    // And live ones, once it passed its first piece of the window.
    common::receiver::wait_notified(
        &d.control.advanced,
        Duration::from_secs(10),
        || d.control.positions.lock().unwrap().clone(),
        |p| p.last().is_some_and(|&p| p >= CHUNK as u64),
        |p| format!("position not past the first piece: {:?}", p.last()),
    )
    .await;
    for n in 0..10u128 {
        feed.push(queued(n));
    }
    let all = behind as usize + 10;
    let got = rx
        .wait_for(Duration::from_secs(30), "every event", |g| {
            delivered_ids(g).len() == all
        })
        .await;
    assert_in_order_by(&got, "task_id");
    await_position(&d, all as u64).await;
    // One read never copied the whole backlog (under the lock the hub's decisions
    // take, in the hub's feed): a piece at a time.
    let largest = feed.largest_read.load(Relaxed);
    assert!(largest <= CHUNK, "one read handed out {largest} events");
    let reads = feed.reads.load(Relaxed);
    assert!(reads >= 4, "{reads} reads for {behind} held events");
    let _ = d.stop.send(true);
    let _ = d.done.await;
}

#[tokio::test]
async fn a_410_disables_the_endpoint_at_that_event() {
    let rx = Receiver::start().await;
    rx.script([Answer::Status(200, None), Answer::Status(410, None)]);
    let feed = TestFeed::new();
    // No position written on the way: only the one written as the runner stops.
    let r = WebhooksConfig {
        position_every_ms: 60_000,
        position_every_events: 1_000_000,
        ..rules(&[0, 50])
    };
    let d = deliver(&feed, &rx, r, &["*"]);
    let stopped = d.control.stopped.notified();
    feed.push(queued(1));
    feed.push(queued(1));
    feed.push(queued(1));
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("disabled in time");
    let why = d.control.disabled.lock().unwrap().clone().unwrap();
    assert!(why.contains("410"), "{why}");
    tokio::time::timeout(Duration::from_secs(5), d.done)
        .await
        .expect("the runner stops")
        .unwrap();
    // Event 3 was never sent; the position stays at 1 (event 2 is not skipped), and it
    // was written before the endpoint was disabled (after, the lease is gone): enable
    // resumes at event 2, not at event 1 again.
    assert_eq!(rx.received().len(), 2);
    assert_eq!(*d.control.positions.lock().unwrap(), vec![1]);
}

#[tokio::test]
async fn an_event_waiting_for_its_retry_holds_no_slot_and_its_task_waits_behind_it() {
    // Two slots; the first two events fail and wait a minute for their next attempt.
    let rx = Receiver::start().await;
    rx.script([Answer::Status(500, None), Answer::Status(500, None)]);
    let feed = TestFeed::new();
    let r = WebhooksConfig {
        max_in_flight: 2,
        ..rules(&[0, 60_000])
    };
    let d = deliver(&feed, &rx, r, &["*"]);
    feed.push(queued(1));
    feed.push(queued(2));
    rx.wait_for(
        Duration::from_secs(5),
        "the first attempts of events 1 and 2",
        |g| g.len() == 2,
    )
    .await;
    // Task 1's next event waits behind event 1; tasks 3 and 4 go now, though both
    // slots' events are still undelivered.
    feed.push(queued(1));
    feed.push(queued(3));
    feed.push(queued(4));
    let got = rx
        .wait_for(Duration::from_secs(5), "events 4 and 5 delivered", |g| {
            delivered_ids(g).len() == 2
        })
        .await;
    let seqs: Vec<u64> = got
        .iter()
        .filter(|r| r.status / 100 == 2)
        .map(|r| r.json()["seq"].as_u64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![4, 5],
        "tasks 3 and 4, not task 1's second event"
    );
    assert!(
        got.iter().all(|r| r.json()["seq"].as_u64() != Some(3)),
        "task 1's second event went before its first was delivered"
    );
    // The position does not pass the events still to be delivered.
    // (The runner's own position, updated at every pass: the positions written, on a
    // tick, could still be none at all.)
    assert_eq!(d.records.position.load(Relaxed), 0);
    assert!(d.control.positions.lock().unwrap().iter().all(|p| *p == 0));
    let _ = d.stop.send(true);
    let _ = d.done.await;
}

#[tokio::test]
async fn one_event_waiting_for_its_retry_does_not_stop_the_other_tasks_past_the_window() {
    // Event 1 fails and its retry is a minute away. The endpoint reads ahead 16 events:
    // the 100 events of other tasks behind it are delivered all the same (the window
    // counts what is unfinished, not what the held position spans).
    let rx = Receiver::start().await;
    rx.script([Answer::Status(500, None)]);
    let feed = TestFeed::new();
    let r = WebhooksConfig {
        window: 16,
        max_in_flight: 4,
        ..rules(&[0, 60_000])
    };
    let d = deliver(&feed, &rx, r, &["*"]);
    for t in 1..=101u128 {
        feed.push(queued(t));
    }
    let got = rx
        .wait_for(Duration::from_secs(10), "the 100 other events", |g| {
            delivered_ids(g).len() == 100
        })
        .await;
    assert!(
        !delivered_ids(&got).contains("ep1-1"),
        "event 1 waits for its retry"
    );
    // The position stays before it.
    // (The runner's own position, updated at every pass: the positions written, on a
    // tick, could still be none at all.)
    assert_eq!(d.records.position.load(Relaxed), 0);
    assert!(d.control.positions.lock().unwrap().iter().all(|p| *p == 0));
    let _ = d.stop.send(true);
}

#[tokio::test]
async fn a_retry_takes_a_slot_again_so_no_more_than_max_in_flight_are_ever_open() {
    // Eight tasks' events; every first attempt fails, and each answer takes 150 ms. A
    // connection per request, so the receiver sees every request open at once.
    let rx = Receiver::start().await;
    rx.script((0..8).map(|_| Answer::Status(503, None)));
    rx.delay(Duration::from_millis(150));
    let feed = TestFeed::new();
    let r = WebhooksConfig {
        max_in_flight: 2,
        ..rules(&[0, 200, 200, 200])
    };
    let client = Client::new(Target::parse(&rx.url()).unwrap(), true).with_depth(1);
    let d = deliver_with(&feed, client, r, &["*"]);
    for t in 1..=8u128 {
        feed.push(queued(t));
    }
    // The first attempts go two by two (the others wait for a slot); the retries of the
    // first pairs end their waits while later pairs are still being answered.
    rx.wait_for(Duration::from_secs(20), "all 8 delivered", |g| {
        delivered_ids(g).len() == 8
    })
    .await;
    assert_eq!(
        rx.peak_open(),
        2,
        "max_in_flight is 2: retries must wait for a slot like any attempt"
    );
    let _ = d.stop.send(true);
    let _ = d.done.await;
}

#[tokio::test]
async fn a_failed_offer_waits_for_its_retry_no_longer_than_its_deadline() {
    // The offer's first attempt fails and its next one is a minute away; its deadline
    // is in 800 ms. Then it is recorded as expired, and its task's next event goes.
    let rx = Receiver::start().await;
    rx.script([Answer::Status(503, None)]);
    let feed = TestFeed::new();
    let d = deliver(&feed, &rx, rules(&[0, 60_000]), &["*"]);
    let clock = Clock::new();
    let started = tokio::time::Instant::now();
    feed.push(offered(
        1,
        "a1",
        clock.now().plus(Duration::from_millis(800)),
    ));
    feed.push(queued(1));
    let got = rx
        .wait_for(Duration::from_secs(10), "the task's next event", |g| {
            delivered_ids(g).contains("ep1-2")
        })
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "the next event went before the offer's deadline"
    );
    let ids: Vec<String> = got.iter().map(|r| r.id()).collect();
    assert_eq!(ids, ["ep1-1", "ep1-2"], "the offer is not sent again");
    let attempts = d.records.recent(10);
    assert!(
        attempts
            .iter()
            .any(|a| a.seq == 1 && a.outcome == "expired"),
        "{attempts:?}"
    );
    let first = attempts
        .iter()
        .find(|a| a.seq == 1 && a.attempt == 1)
        .expect("the first attempt");
    assert!(first.next_retry_ms.is_some_and(|ms| ms <= 800), "{first:?}");
    let _ = d.stop.send(true);
}

#[tokio::test]
async fn an_offer_past_its_deadline_is_recorded_expired_without_waiting_for_a_slot() {
    // One slot. Event 1 fails and waits 300 ms for its retry; meanwhile an offer of
    // another task takes the slot. Every answer now takes 1 s: the offer's is a 503,
    // after its deadline (500 ms), and event 1's retry, queued for the slot since 300 ms,
    // takes it then, for 1 s more. The offer is past its deadline: recorded expired at
    // once, not after waiting for a slot it no longer needs.
    let rx = Receiver::start().await;
    rx.script([Answer::Status(503, None), Answer::Status(503, None)]);
    let feed = TestFeed::new();
    let r = WebhooksConfig {
        max_in_flight: 1,
        timeout_ms: 10_000,
        ..rules(&[0, 300, 300])
    };
    let d = deliver(&feed, &rx, r, &["*"]);
    let clock = Clock::new();
    feed.push(queued(1));
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while d.records.failures.load(Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < until, "event 1 never failed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rx.delay(Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    feed.push(offered(
        2,
        "a1",
        clock.now().plus(Duration::from_millis(500)),
    ));
    while d.records.expired.load(Relaxed) == 0 {
        assert!(
            started.elapsed() < Duration::from_millis(1_700),
            "the expired offer waited for a slot before it was recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    let _ = d.stop.send(true);
}

#[tokio::test]
async fn a_lease_not_renewed_stops_the_runner_before_another_node_may_take_it() {
    // The first attempt fails; the retry would come after the lease has run out (its
    // holder cut off from the store: nobody renews it).
    let rx = Receiver::start().await;
    rx.script([Answer::Status(500, None)]);
    let feed = TestFeed::new();
    let client = Client::new(Target::parse(&rx.url()).unwrap(), true);
    let lease = tokio::time::Instant::now() + Duration::from_millis(400);
    let d = deliver_leased(&feed, client, rules(&[0, 1_500]), &["*"], Some(lease));
    feed.push(queued(1));
    rx.wait_for(Duration::from_secs(5), "the first attempt", |g| {
        g.len() == 1
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), d.done)
        .await
        .expect("the runner stops when its lease runs out")
        .unwrap();
    assert!(tokio::time::Instant::now() >= lease);
    // Stopped, nothing of it can send any more: the retry never comes from this node.
    assert_eq!(rx.received().len(), 1);
    assert!(d.control.positions.lock().unwrap().iter().all(|p| *p == 0));
}

#[tokio::test]
async fn retry_after_of_a_429_is_honoured_and_redirects_are_failures() {
    let rx = Receiver::start().await;
    rx.script([
        Answer::Status(429, Some("2")),
        Answer::Status(302, None),
        Answer::Status(200, None),
    ]);
    let feed = TestFeed::new();
    // The schedule alone would retry after 20 ms (its longest wait, which bounds a
    // `Retry-After`, is 3 s, later).
    let d = deliver(&feed, &rx, rules(&[0, 20, 20, 20, 3_000]), &["*"]);
    feed.push(queued(1));
    let got = rx
        .wait_for(Duration::from_secs(6), "three attempts", |g| g.len() == 3)
        .await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1_900),
        "retried after {gap:?}, Retry-After said 2 s"
    );
    let redirect = got[2].at - got[1].at;
    assert!(
        redirect < Duration::from_millis(1_000),
        "the 302 retried on the schedule: {redirect:?}"
    );
    assert!(
        got.iter().all(|r| r.id() == "ep1-1"),
        "the same webhook-id on every attempt"
    );
    // The receiver counts a request before the runner records its answer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while d.records.recent(10).len() < 3 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let attempts = d.records.recent(10);
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0].outcome, "delivered");
    assert!(
        attempts[1]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("redirect")
    );
    assert_eq!(attempts[2].next_retry_ms, Some(2_000));
    let _ = d.stop.send(true);
}

#[tokio::test]
async fn retry_after_never_hastens_the_schedule_nor_holds_it_past_its_longest_wait() {
    // A gateway that rate-limits with `Retry-After: 0` on every attempt would otherwise
    // spend the schedule in no time and disable the endpoint; one that says "in 3,000
    // years" would stall it for good.
    let rx = Receiver::start().await;
    rx.script([
        Answer::Status(429, Some("0")),
        Answer::Status(503, Some("99999999999")),
        Answer::Status(200, None),
    ]);
    let feed = TestFeed::new();
    let d = deliver(&feed, &rx, rules(&[0, 600, 300]), &["*"]);
    feed.push(queued(1));
    let got = rx
        .wait_for(Duration::from_secs(6), "three attempts", |g| g.len() == 3)
        .await;
    let first = got[1].at - got[0].at;
    assert!(
        first >= Duration::from_millis(550),
        "retried after {first:?}: `Retry-After: 0` cut the schedule's 600 ms"
    );
    let second = got[2].at - got[1].at;
    assert!(
        second < Duration::from_secs(3),
        "retried after {second:?}: the longest wait of the schedule is 600 ms"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while d.records.recent(10).len() < 3 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let attempts = d.records.recent(10);
    assert_eq!(attempts[0].outcome, "delivered");
    assert_eq!(
        attempts[1].next_retry_ms,
        Some(600),
        "capped at the longest wait"
    );
    assert_eq!(attempts[2].next_retry_ms, Some(600), "the schedule's wait");
    let _ = d.stop.send(true);
}

#[tokio::test]
async fn an_offer_past_its_deadline_is_not_delivered_and_other_types_are_filtered() {
    let rx = Receiver::start().await;
    rx.script([Answer::Status(500, None)]);
    let feed = TestFeed::new();
    let d = deliver(&feed, &rx, rules(&[0, 600, 600]), &["task.offered"]);
    let clock = Clock::new();
    // The first attempt fails; the retry would come after the deadline.
    feed.push(offered(
        1,
        "a1",
        clock.now().plus(Duration::from_millis(300)),
    ));
    feed.push(queued(2)); // not of the endpoint's types
    feed.push(offered(3, "a2", clock.now().plus(Duration::from_secs(60))));
    await_position(&d, 3).await;
    let got = rx.received();
    let ids: Vec<String> = got.iter().map(|r| r.id()).collect();
    assert_eq!(
        ids,
        ["ep1-1", "ep1-3"],
        "one failed attempt of the expired offer, then the live one"
    );
    let attempts = d.records.recent(10);
    assert!(
        attempts
            .iter()
            .any(|a| a.seq == 1 && a.outcome == "expired"),
        "{attempts:?}"
    );
    assert_eq!(
        d.records.expired.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let _ = d.stop.send(true);
}

#[tokio::test]
async fn an_offer_waiting_for_its_connection_is_not_written_after_its_deadline() {
    // A new connection carries one request until its first answer shows it stays open;
    // that answer is slow. An offer of another task waits behind it meanwhile.
    let rx = Receiver::start().await;
    rx.delay(Duration::from_millis(1_500));
    let feed = TestFeed::new();
    let d = deliver(&feed, &rx, rules(&[0, 50, 50]), &["*"]);
    let clock = Clock::new();
    feed.push(queued(1));
    rx.wait_arrivals(Duration::from_secs(5), "event 1", |a| a.len() == 1)
        .await;
    feed.push(offered(
        2,
        "a1",
        clock.now().plus(Duration::from_millis(300)),
    ));
    // After the slow answer, the connection is free; another task's event follows on
    // it. Had the offer been written when its turn came, it would have come before.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while d.records.delivered.load(Relaxed) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "event 1 not delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rx.delay(Duration::ZERO);
    feed.push(queued(3));
    await_position(&d, 3).await;
    // What reached the receiver, answered or not.
    let ids: Vec<String> = rx.arrivals().into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        ["ep1-1", "ep1-3"],
        "the offer was written after its deadline"
    );
    assert_eq!(d.records.expired.load(Relaxed), 1);
    let attempts = d.records.recent(10);
    assert!(
        attempts
            .iter()
            .any(|a| a.seq == 2 && a.outcome == "expired"),
        "{attempts:?}"
    );
    let _ = d.stop.send(true);
}

/// An offer's attempt ends at the offer's deadline (recorded, never sent or retried
/// past it), but the connection it went on is the endpoint's: it waits for the answer
/// as for any request (an HTTP/1.1 connection cannot skip an answer), so the events
/// routed to it meanwhile go on it once it is known to stay open, instead of the
/// connection being given up at the offer's deadline and made again. (Pipelined behind
/// the offer on a connection known to stay open, they failed with it and waited for a
/// retry.)
#[tokio::test]
async fn the_connection_an_offer_went_on_outlives_the_offers_deadline() {
    let rx = Receiver::start().await;
    rx.delay(Duration::from_millis(400));
    let feed = TestFeed::new();
    let d = deliver(&feed, &rx, rules(&[0, 50, 50]), &["*"]);
    let clock = Clock::new();
    feed.push(offered(
        1,
        "a1",
        clock.now().plus(Duration::from_millis(150)),
    ));
    for t in 2..=4 {
        feed.push(queued(t));
    }
    await_position(&d, 4).await;
    let attempts = d.records.recent(20);
    for seq in 2..=4 {
        let of: Vec<_> = attempts.iter().filter(|a| a.seq == seq).collect();
        assert!(
            of.len() == 1 && of[0].outcome == "delivered",
            "event {seq} was not delivered on its first attempt: {attempts:?}"
        );
    }
    assert!(
        attempts
            .iter()
            .any(|a| a.seq == 1 && a.outcome == "delivered" && a.duration_ms >= 350),
        "the offer, written before its deadline, waited for its answer: {attempts:?}"
    );
    assert_eq!(
        rx.connections(),
        1,
        "the connection was given up at the offer's deadline"
    );
    let _ = d.stop.send(true);
}

#[tokio::test]
async fn an_offer_written_before_its_deadline_holds_its_tasks_next_event_until_answered() {
    // The receiver takes 600 ms to answer (a database lock); the offer's deadline is
    // 150 ms away. The offer is on the wire before the deadline, so the receiver has it
    // and may bridge the call: the task's next event (its expiry, say) must not reach
    // the receiver before the offer's answer, on the connection kept alive (pipelined
    // behind it) or on another one.
    let rx = Receiver::start().await;
    rx.delay(Duration::from_millis(600));
    let feed = TestFeed::new();
    let d = deliver(&feed, &rx, rules(&[0, 50, 50]), &["*"]);
    // A first answer proves the connection is kept alive, so later requests pipeline.
    feed.push(queued(9));
    await_position(&d, 1).await;
    let clock = Clock::new();
    feed.push(offered(
        1,
        "a1",
        clock.now().plus(Duration::from_millis(150)),
    ));
    feed.push(queued(1));
    let got = rx
        .wait_arrivals(
            Duration::from_secs(5),
            "the offer and the next event",
            |a| a.len() == 3,
        )
        .await;
    let (offer, next) = (got[1].1, got[2].1);
    assert_eq!(got[1].0, "ep1-2");
    assert!(
        next >= offer + Duration::from_millis(550),
        "task 1's next event came {:?} after its offer, which was answered after 600 ms",
        next - offer
    );
    await_position(&d, 3).await;
    let attempts = d.records.recent(10);
    assert!(
        attempts
            .iter()
            .any(|a| a.seq == 2 && a.outcome == "delivered"),
        "the offer was received and answered 200: {attempts:?}"
    );
    let _ = d.stop.send(true);
}

#[tokio::test]
async fn one_agent_in_order_across_tasks() {
    let rx = Receiver::start().await;
    let feed = TestFeed::new();
    let d = deliver(&feed, &rx, rules(&[0, 50]), &["*"]);
    let far = Clock::new().now().plus(Duration::from_secs(60));
    for t in 1..=20u128 {
        feed.push(offered(t, if t % 2 == 0 { "a1" } else { "a2" }, far));
    }
    let got = rx
        .wait_for(Duration::from_secs(5), "20 offers", |g| {
            delivered_ids(g).len() == 20
        })
        .await;
    assert_in_order_by(&got, "agent_id");
    let _ = d.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_one_after_another_keep_one_connection() {
    // Each event of one task is sent when the previous one's 2xx came back: the
    // connection that carried it is the one to reuse, even though its own task may
    // not yet have seen the end of the exchange when the next event goes.
    let rx = Receiver::start().await;
    let feed = TestFeed::new();
    let d = deliver(&feed, &rx, rules(&[0, 50]), &["*"]);
    for _ in 0..60 {
        feed.push(queued(7));
    }
    rx.wait_for(Duration::from_secs(10), "60 events", |g| {
        delivered_ids(g).len() == 60
    })
    .await;
    assert_eq!(
        rx.connections(),
        1,
        "one kept-alive connection carried them all"
    );
    let _ = d.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_one_is_in_flight_new_events_wait_for_an_answer_or_the_linger_then_go_together() {
    // One request per connection (no pipelining): an event taken is sent at once on a
    // connection of its own, so when each arrives says when the runner took it.
    let rx = Receiver::start().await;
    let feed = TestFeed::new();
    let client = Client::new(Target::parse(&rx.url()).unwrap(), true).with_depth(1);
    let d = deliver_with(
        &feed,
        client,
        WebhooksConfig {
            linger_ms: 1_000,
            // No position ticks: they wake the runner too, and a wake-up takes what
            // the feed has.
            position_every_ms: 60_000,
            ..rules(&[0, 50])
        },
        &["*"],
    );
    // Pushes events of `tasks`; when the first and the last of them arrived.
    let burst = |tasks: std::ops::RangeInclusive<u128>| {
        let (feed, rx) = (&feed, &rx);
        async move {
            let n = tasks.clone().count();
            let before = rx.arrivals().len();
            for t in tasks {
                feed.push(queued(t));
            }
            let got = rx
                .wait_arrivals(Duration::from_secs(5), "the burst", |a| {
                    a.len() == before + n
                })
                .await;
            let t = got[before..].iter().map(|(_, at)| *at);
            (t.clone().min().expect("some"), t.max().expect("some"))
        }
    };
    // Nothing in flight: an event goes at once.
    rx.delay(Duration::from_millis(400));
    let pushed = std::time::Instant::now();
    feed.push(queued(1));
    let got = rx
        .wait_arrivals(Duration::from_secs(5), "the first event", |a| a.len() == 1)
        .await;
    let first = got[0].1;
    assert!(
        first - pushed < Duration::from_millis(300),
        "a lone event waited {:?}",
        first - pushed
    );
    // While it is in flight (its answer takes 400 ms), eight more: taken together
    // when its answer comes back, not one by one, and not at the linger's end (1 s).
    let (early, late) = burst(2..=9).await;
    assert!(
        early - first >= Duration::from_millis(300),
        "taken while the first was in flight ({:?} after it)",
        early - first
    );
    assert!(
        early - first < Duration::from_millis(900),
        "taken at the first's answer, not at the linger's end ({:?} after it)",
        early - first
    );
    assert!(
        late - early < Duration::from_millis(200),
        "taken together, sent together: {:?} apart",
        late - early
    );
    rx.wait_for(Duration::from_secs(5), "nine answers", |g| {
        delivered_ids(g).len() == 9
    })
    .await;
    // The receiver has written its nine answers; wait until the runner has read them
    // all too (its position passes the ninth only then). An answer read after the 10th
    // is taken would wake the runner, and a wake-up takes what the feed has: the burst
    // below would go at once, which is by design, not the linger under test.
    let read_all = std::time::Instant::now() + Duration::from_secs(5);
    while d.records.position.load(Relaxed) < 9 {
        assert!(
            std::time::Instant::now() < read_all,
            "the runner never read the nine answers"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // An answer slower than the linger does not hold new events past it: what comes
    // while the 10th is in flight (3 s) goes when the linger (1 s) ends.
    rx.delay(Duration::from_secs(3));
    feed.push(queued(10));
    let got = rx
        .wait_arrivals(Duration::from_secs(5), "the 10th", |a| a.len() == 10)
        .await;
    let tenth = got[9].1;
    let (early, late) = burst(11..=14).await;
    assert!(
        early - tenth >= Duration::from_millis(700) && early - tenth < Duration::from_millis(2_500),
        "taken at the linger's end, before the slow answer: {:?} after the 10th",
        early - tenth
    );
    assert!(
        late - early < Duration::from_millis(200),
        "{:?} apart",
        late - early
    );
    let _ = d.stop.send(true);
}

// ---- The API on a real hub ----

fn hub_config(allow_private: bool) -> switchboard::config::Config {
    let mut c = config(common::QUEUES_AND_AGENTS);
    c.webhooks.allow_private = allow_private;
    c
}

/// `POST /v1/webhooks` of an endpoint with `url`.
async fn post_url(hub: &TestHub, tok: &str, url: &str) -> (u16, Value) {
    hub.http(
        "POST",
        "/v1/webhooks",
        Some(tok),
        Some(&json!({"url": url}).to_string()),
    )
    .await
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let hub = TestHub::start_with(hub_config(false)).await;
    let tok = hub.token("crm", Role::Integration);
    for url in [
        "http://127.0.0.1:9/x",
        "http://169.254.169.254/latest",
        "http://10.0.0.1/",
        "http://localhost:8080/",
        // The same rule for https: the address is judged, not the certificate.
        "https://127.0.0.1:8443/x",
        "https://localhost/",
        // An IPv4 address carried in IPv6: NAT64, 6to4, compatible.
        "http://[64:ff9b::a00:5]:8080/",
        "http://[2002:7f00:1::]/",
        "http://[::127.0.0.1]/",
    ] {
        let (s, v) = post_url(&hub, &tok, url).await;
        assert_eq!(s, 400, "{url}: {v}");
        assert_eq!(v["error"]["code"], "invalid_field", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("private"),
            "{v}"
        );
    }
    // Not a URL to send to; a port that is not one (read as port 80 before).
    for url in [
        "ftp://example.com/",
        "http://example.com:99999/",
        "http://example.com:0/",
    ] {
        let (s, v) = post_url(&hub, &tok, url).await;
        assert_eq!(
            (s, &v["error"]["code"]),
            (400, &json!("invalid_field")),
            "{url}: {v}"
        );
    }
    hub.shutdown().await;
}

/// Makes endpoint `id` through the API, delivering `task.created` to `rx`; its secret.
async fn api_endpoint(hub: &TestHub, tok: &str, id: &str, rx: &Receiver) -> String {
    let body = json!({"id": id, "url": rx.url(), "types": ["task.created"]});
    let (s, v) = hub
        .http("POST", "/v1/webhooks", Some(tok), Some(&body.to_string()))
        .await;
    assert_eq!(s, 201, "{v}");
    v["secret"].as_str().expect("secret").to_owned()
}

/// The API makes at most `webhooks.max_endpoints` endpoints (each costs every node a
/// runner and lease entries): past it, a typed 400; after a delete, one more.
#[tokio::test]
async fn the_api_makes_no_more_endpoints_than_max_endpoints() {
    let mut c = hub_config(true);
    c.webhooks.max_endpoints = 2;
    let hub = TestHub::start_with(c).await;
    let tok = hub.token("crm", Role::Integration);
    let rx = Receiver::start().await;
    api_endpoint(&hub, &tok, "one", &rx).await;
    api_endpoint(&hub, &tok, "two", &rx).await;
    let create = || json!({"id": "three", "url": rx.url()}).to_string();
    let (s, v) = hub
        .http("POST", "/v1/webhooks", Some(&tok), Some(&create()))
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (400, &json!("invalid_field")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_endpoints"),
        "{v}"
    );
    let (s, _) = hub
        .http("DELETE", "/v1/webhooks/one", Some(&tok), None)
        .await;
    assert!((200..300).contains(&s), "delete: {s}");
    let (s, v) = hub
        .http("POST", "/v1/webhooks", Some(&tok), Some(&create()))
        .await;
    assert_eq!(s, 201, "{v}");
    hub.shutdown().await;
}

/// Deletes of one endpoint at once (a client's retries): one deletes it, the others
/// find it gone: 404, as a moment later, never a 400 about a field they got right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_of_one_endpoint_at_once_answer_204_once_and_404_to_the_others() {
    let hub = TestHub::start_with(hub_config(true)).await;
    let tok = hub.token("crm", Role::Integration);
    let rx = Receiver::start().await;
    for n in 0..20 {
        let id = format!("twice{n}");
        api_endpoint(&hub, &tok, &id, &rx).await;
        let path = format!("/v1/webhooks/{id}");
        let got = futures_util::future::join_all(
            (0..8).map(|_| hub.http("DELETE", &path, Some(&tok), None)),
        )
        .await;
        let mut statuses: Vec<(u16, Value)> = got
            .iter()
            .map(|(s, v)| (*s, v["error"]["code"].clone()))
            .collect();
        statuses.sort_by_key(|g| g.0);
        let mut want = vec![(404, json!("not_found")); 7];
        want.insert(0, (204, Value::Null));
        assert_eq!(statuses, want, "round {n}");
    }
    hub.shutdown().await;
}

/// Creates a task and waits until `rx` has its `task.created`; that delivery.
async fn created_reaches(hub: &TestHub, rx: &Receiver) -> Received {
    let t = hub.create(common::chat()).await;
    let got = rx
        .wait_for(Duration::from_secs(10), "the task's task.created", |g| {
            g.iter()
                .any(|r| r.json()["data"]["task"]["task_id"] == t["task_id"])
        })
        .await;
    got.into_iter()
        .find(|r| r.json()["data"]["task"]["task_id"] == t["task_id"])
        .expect("found")
}

#[tokio::test]
async fn a_rotated_secret_signs_the_very_next_delivery() {
    let rx = Receiver::start().await;
    let hub = TestHub::start_with(hub_config(true)).await;
    let tok = hub.token("crm", Role::Integration);
    api_endpoint(&hub, &tok, "crm", &rx).await;
    // Delivering.
    created_reaches(&hub, &rx).await;
    let (s, v) = hub
        .http("POST", "/v1/webhooks/crm/rotate", Some(&tok), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let new = Secret::parse(v["secret"].as_str().unwrap()).unwrap();
    // A receiver that switched to the new secret on the 200 accepts what follows.
    let r = created_reaches(&hub, &rx).await;
    verify(&new, &r);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_disabled_endpoint_gets_nothing_decided_after_its_200() {
    let (rx_a, rx_b) = (Receiver::start().await, Receiver::start().await);
    let hub = TestHub::start_with(hub_config(true)).await;
    let tok = hub.token("crm", Role::Integration);
    api_endpoint(&hub, &tok, "a", &rx_a).await;
    api_endpoint(&hub, &tok, "b", &rx_b).await;
    created_reaches(&hub, &rx_a).await;
    let (s, v) = hub
        .http("POST", "/v1/webhooks/a/disable", Some(&tok), None)
        .await;
    assert_eq!((s, &v["enabled"]), (200, &json!(false)), "{v}");
    let before = rx_a.received().len();
    // `b` gets the next task; `a`, disabled before it was made, does not.
    created_reaches(&hub, &rx_b).await;
    created_reaches(&hub, &rx_b).await;
    assert_eq!(rx_a.received().len(), before, "delivered after the disable");
    hub.shutdown().await;
}

#[tokio::test]
async fn endpoints_through_the_api_show_the_secret_only_on_create_and_rotate() {
    let hub = TestHub::start_with(hub_config(true)).await;
    let tok = hub.token("crm", Role::Integration);
    // A supervisor may not manage webhooks.
    let sup = hub.token("boss", Role::Supervisor);
    let (s, _) = hub.http("GET", "/v1/webhooks", Some(&sup), None).await;
    assert_eq!(s, 403);
    let (s, created) = hub
        .http(
            "POST",
            "/v1/webhooks",
            Some(&tok),
            Some(
                &json!({"id": "crm", "url": "http://127.0.0.1:9/hook", "types": ["task.*"]})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(Secret::parse(&secret).is_ok());
    assert_eq!(created["types"], json!(["task.*"]));
    let (s, v) = hub
        .http(
            "POST",
            "/v1/webhooks",
            Some(&tok),
            Some(&json!({"id": "crm", "url": "http://127.0.0.1:9/"}).to_string()),
        )
        .await;
    assert_eq!(s, 400, "a second endpoint with the same id: {v}");
    let (s, list) = hub.http("GET", "/v1/webhooks", Some(&tok), None).await;
    assert_eq!(s, 200);
    assert_eq!(list["webhooks"][0]["id"], "crm");
    assert!(
        !list.to_string().contains(&secret),
        "the list shows no secret"
    );
    let (s, v) = hub
        .http("POST", "/v1/webhooks/crm/rotate", Some(&tok), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["secret"], Value::String(secret.clone()));
    assert!(v["previous_secret_until"].is_string(), "{v}");
    let (s, v) = hub
        .http("POST", "/v1/webhooks/crm/disable", Some(&tok), None)
        .await;
    assert_eq!((s, &v["enabled"]), (200, &json!(false)), "{v}");
    let (s, v) = hub
        .http("POST", "/v1/webhooks/crm/enable", Some(&tok), None)
        .await;
    assert_eq!((s, &v["enabled"]), (200, &json!(true)), "{v}");
    let (s, v) = hub
        .http("GET", "/v1/webhooks/crm/attempts", Some(&tok), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["attempts"].is_array());
    for limit in ["ten", "0", "1001"] {
        let (s, v) = hub
            .http(
                "GET",
                &format!("/v1/webhooks/crm/attempts?limit={limit}"),
                Some(&tok),
                None,
            )
            .await;
        assert_eq!(
            (s, &v["error"]["code"]),
            (400, &json!("invalid_field")),
            "{limit}: {v}"
        );
    }
    let (s, v) = hub
        .http(
            "POST",
            "/v1/webhooks/crm/replay",
            Some(&tok),
            Some(r#"{"since": 99999}"#),
        )
        .await;
    assert_eq!(s, 400, "a replay past the newest event: {v}");
    let (s, v) = hub
        .http(
            "POST",
            "/v1/webhooks/crm/replay",
            Some(&tok),
            Some(r#"{"since": "x"}"#),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = hub
        .http("DELETE", "/v1/webhooks/crm", Some(&tok), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = hub.http("GET", "/v1/webhooks/crm", Some(&tok), None).await;
    assert_eq!(s, 404);
    hub.shutdown().await;
}

/// A replay from before the event window answers 410 `events_gone` with the oldest
/// position held, at once. Before, it answered 200 and the endpoint was disabled a moment
/// later for the events it could never get.
#[tokio::test]
async fn a_replay_from_before_the_window_answers_410_with_the_oldest_held() {
    let rx = Receiver::start().await;
    let mut c = hub_config(true);
    c.events.retain_count = 5;
    c.events.max_held = 5;
    let hub = TestHub::start_with(c).await;
    let tok = hub.token("crm", Role::Integration);
    let (s, v) = hub
        .http(
            "POST",
            "/v1/webhooks",
            Some(&tok),
            Some(&json!({"id": "crm", "url": rx.url()}).to_string()),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = hub
        .http("POST", "/v1/webhooks/crm/disable", Some(&tok), None)
        .await;
    assert_eq!(s, 200);
    for _ in 0..4 {
        hub.create(common::chat()).await;
    }
    let (s, v) = hub
        .http(
            "POST",
            "/v1/webhooks/crm/replay",
            Some(&tok),
            Some(r#"{"since": 0}"#),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (410, &json!("events_gone")),
        "{v}"
    );
    let oldest = v["error"]["oldest_seq"].as_u64().expect("oldest_seq");
    assert!(oldest > 1, "{v}");
    let (s, v) = hub
        .http(
            "POST",
            "/v1/webhooks/crm/replay",
            Some(&tok),
            Some(&json!({"since": oldest - 1}).to_string()),
        )
        .await;
    assert_eq!(s, 200, "from the oldest held: {v}");
    // Replaying resumes: the endpoint is enabled, and the replayed events are held
    // for it and delivered, though more events come meanwhile.
    assert_eq!(v["enabled"], true, "{v}");
    for _ in 0..3 {
        hub.create(common::chat()).await;
    }
    rx.wait_for(Duration::from_secs(10), "the oldest held event", |g| {
        g.iter()
            .any(|r| r.status == 200 && r.json()["seq"].as_u64() == Some(oldest))
    })
    .await;
    let (s, v) = hub.http("GET", "/v1/webhooks/crm", Some(&tok), None).await;
    assert_eq!((s, &v["enabled"]), (200, &json!(true)), "{v}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_config_endpoint_cannot_be_deleted_or_rotated_through_the_api() {
    let mut c = hub_config(true);
    c.webhooks
        .endpoints
        .push(switchboard::webhooks::config::EndpointConfig {
            id: "wfm".into(),
            url: "http://127.0.0.1:9/".into(),
            secret: Secret::generate().text(),
            types: vec!["agent.*".into()],
        });
    let hub = TestHub::start_with(c).await;
    let tok = hub.token("crm", Role::Integration);
    let (s, v) = hub.http("GET", "/v1/webhooks/wfm", Some(&tok), None).await;
    assert_eq!((s, &v["source"]), (200, &json!("config")), "{v}");
    let (s, _) = hub
        .http("DELETE", "/v1/webhooks/wfm", Some(&tok), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = hub
        .http("POST", "/v1/webhooks/wfm/rotate", Some(&tok), None)
        .await;
    assert_eq!(s, 403);
    let (s, v) = hub
        .http("POST", "/v1/webhooks/wfm/disable", Some(&tok), None)
        .await;
    assert_eq!(s, 200, "{v}");
    hub.shutdown().await;
}

// ---- Pipelining: several requests on one kept-alive connection ----

/// A runner sending to `rx` with at most `depth` requests unanswered per connection.
fn deliver_pipelined(feed: &Arc<TestFeed>, rx: &Pipelined, depth: usize) -> Delivering {
    // Retries jittered, as in production: without it, events that failed together
    // retry together, in the same order, and against a receiver that refuses every
    // third request the same one could be refused every time until its schedule ran
    // out (seen: "event ep1-25 failed 6 times").
    // No more in flight than one connection carries: the tests count connections.
    let r = WebhooksConfig {
        retry_jitter: 0.5,
        max_in_flight: depth,
        ..rules(&[0, 50, 50, 50, 50, 50, 50, 50, 50, 50])
    };
    let client = Client::new(Target::parse(&rx.url()).unwrap(), true).with_depth(depth);
    deliver_with(feed, client, r, &["*"])
}

/// One event of each of `tasks` (a task may come again) delivered to a raw receiver
/// following `plan`, 16 deep; what it received once every event had arrived.
struct PipelinedRun {
    rx: Pipelined,
    d: Delivering,
    got: Vec<Received>,
}

async fn pipelined_run(plan: Plan, tasks: impl IntoIterator<Item = u128>) -> PipelinedRun {
    let rx = Pipelined::start(plan).await;
    let feed = TestFeed::new();
    let mut n = 0;
    for t in tasks {
        feed.push(queued(t));
        n += 1;
    }
    let d = deliver_pipelined(&feed, &rx, 16);
    let stopped = d.control.stopped.notified();
    let what = format!("{n} events");
    let got = tokio::select! {
        got = rx.wait_for(Duration::from_secs(20), &what, |g| {
            delivered_ids(g).len() == n
        }) => got,
        _ = stopped => panic!("the endpoint was disabled: {:?}", d.control.disabled.lock().unwrap()),
    };
    PipelinedRun { rx, d, got }
}

/// Waits until the runner has written `seq` as its position: every event up to it
/// answered 2xx as the runner saw it.
async fn await_position(d: &Delivering, seq: u64) {
    common::receiver::wait_notified(
        &d.control.advanced,
        Duration::from_secs(5),
        || d.control.positions.lock().unwrap().clone(),
        |p| p.last() == Some(&seq),
        |p| format!("position not at {seq}: {p:?}"),
    )
    .await;
}

/// Checks that, per value of `data.<key>` (`task_id`, `agent_id`), the first
/// deliveries of events arrived in the order of their seqs.
fn assert_in_order_by(got: &[Received], key: &str) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for r in firsts(got) {
        let b = r.json();
        let k = b["data"][key].as_str().unwrap().to_owned();
        let seq = b["seq"].as_u64().unwrap();
        let prev = last.insert(k.clone(), seq).unwrap_or(0);
        assert!(seq > prev, "{key} {k}: {seq} after {prev}");
    }
}

/// Checks that every request of a task was sent after its earlier events were
/// answered 2xx (the receiver records in the order it answered).
fn assert_each_task_waited_for_its_2xx(got: &[Received]) {
    let mut done: HashMap<String, std::collections::BTreeSet<u64>> = HashMap::new();
    let mut seqs: HashMap<String, std::collections::BTreeSet<u64>> = HashMap::new();
    for r in got {
        let b = r.json();
        seqs.entry(b["data"]["task_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(b["seq"].as_u64().unwrap());
    }
    for r in got {
        let b = r.json();
        let t = b["data"]["task_id"].as_str().unwrap().to_owned();
        let seq = b["seq"].as_u64().unwrap();
        let delivered = done.entry(t.clone()).or_default();
        for earlier in seqs[&t].range(..seq) {
            assert!(
                delivered.contains(earlier),
                "task {t}: event {seq} sent before event {earlier} was answered 2xx"
            );
        }
        if r.status / 100 == 2 {
            delivered.insert(seq);
        }
    }
}

#[tokio::test]
async fn unrelated_events_are_pipelined_on_one_connection_and_verify() {
    let PipelinedRun { rx, d, got, .. } = pipelined_run(
        Plan {
            batch: 4,
            ..Plan::default()
        },
        1..=40,
    )
    .await;
    for r in &got {
        verify(&d.secret, r);
    }
    assert!(
        rx.max_batch() >= 4,
        "requests were read {} at most before an answer: not pipelined",
        rx.max_batch()
    );
    assert_eq!(
        rx.connections(),
        1,
        "one kept-alive connection carried them"
    );
    await_position(&d, 40).await;
    assert_eq!(d.records.failures.load(Relaxed), 0);
    assert_eq!(d.records.delivered.load(Relaxed), 40);
    let _ = d.stop.send(true);
}

#[tokio::test]
async fn a_connection_closed_after_one_answer_redelivers_the_rest_with_their_ids() {
    // The first two connections: several requests read, the first answered, then the
    // connection closes on the others.
    let PipelinedRun { d, got, .. } = pipelined_run(
        Plan {
            batch: 4,
            drop_after_first: 2,
            ..Plan::default()
        },
        1..=40,
    )
    .await;
    let dropped: Vec<String> = got
        .iter()
        .filter(|r| r.status == 0)
        .map(|r| r.id())
        .collect();
    assert!(
        dropped.len() >= 2,
        "the receiver closed on unanswered requests: {dropped:?}"
    );
    let delivered = delivered_ids(&got);
    for id in &dropped {
        assert!(delivered.contains(id), "{id} never redelivered");
    }
    for r in &got {
        verify(&d.secret, r);
    }
    // Only the receiver's 2xx count: nothing it never answered.
    let answered_2xx = got.iter().filter(|r| r.status / 100 == 2).count() as u64;
    assert_eq!(answered_2xx, 40, "each event answered 2xx once");
    await_position(&d, 40).await;
    assert_eq!(d.records.delivered.load(Relaxed), answered_2xx);
    assert!(d.records.failures.load(Relaxed) >= dropped.len() as u64);
    let _ = d.stop.send(true);
}

#[tokio::test]
async fn chunked_answers_are_read_and_connection_close_gets_one_request_per_connection() {
    let PipelinedRun { rx: chunked, d, .. } = pipelined_run(
        Plan {
            batch: 4,
            chunked: true,
            ..Plan::default()
        },
        1..=40,
    )
    .await;
    await_position(&d, 40).await;
    assert_eq!(d.records.failures.load(Relaxed), 0, "every answer read");
    assert!(chunked.max_batch() >= 4);
    assert_eq!(chunked.connections(), 1);
    let _ = d.stop.send(true);

    // A receiver that closes after each answer: never pipelined to, nothing lost.
    let PipelinedRun {
        rx: closing,
        d,
        got,
        ..
    } = pipelined_run(
        Plan {
            close: true,
            ..Plan::default()
        },
        1..=20,
    )
    .await;
    await_position(&d, 20).await;
    assert_eq!(
        d.records.failures.load(Relaxed),
        0,
        "no request lost to a close"
    );
    assert!(got.iter().all(|r| r.status == 200), "none left unanswered");
    assert_eq!(closing.connections(), 20, "one request per connection");
    let _ = d.stop.send(true);
}

#[tokio::test]
async fn each_tasks_events_stay_in_order_when_pipelined_with_503s() {
    let PipelinedRun { rx, d, got, .. } = pipelined_run(
        Plan {
            batch: 4,
            busy_every: 3,
            ..Plan::default()
        },
        (0..5).flat_map(|_| 1..=20u128),
    )
    .await;
    assert!(got.iter().any(|r| r.status == 503));
    assert!(rx.max_batch() >= 4, "pipelined");
    assert_each_task_waited_for_its_2xx(&got);
    assert_in_order_by(&got, "task_id");
    let _ = d.stop.send(true);
}
