//! One behaviour suite, run against every store: the in-memory one, the file one (in a
//! fresh temporary directory) and the Redis one (against a `redis-server` this test
//! starts on a free port). The suite is the list of public functions below; each
//! backend's module calls every one of them (`suite!`). In the races each side runs on
//! an OS thread of its own, released together by a spinning barrier (`contend`), so
//! that they contend for real, and each race test asserts that both outcomes occurred.

mod common;

use common::held::Held;
use common::redis_server::RedisServer;
use std::sync::Arc;
use std::time::Duration;
use switchboard::auth::Role;
use switchboard::clock::{Clock, Ts};
use switchboard::config::Config;
use switchboard::context::record::{Actor, CustomerFields};
use switchboard::context::{ContextCommand, ContextReply};
use switchboard::error::{HubError, OfferEnd};
use switchboard::ids::CustomerId;
use switchboard::ids::{AgentId, Channel, ConnId, TaskId};
use switchboard::routing::{Command, Rules};
use switchboard::state::Reply;
use switchboard::store::file::FileStore;
use switchboard::store::memory::MemoryStore;
use switchboard::store::redis::RedisStore;
use switchboard::store::{Sink, Store};
use switchboard::task::{CustomerIdentity, NewTask};

const CFG: &str = r#"
[routing]
offer_timeout_secs = 15
wrap_up_secs = 0

[[queues]]
id = "support"

[[agents]]
id = "a1"
queues = ["support"]

[[agents]]
id = "a2"
queues = ["support"]
"#;

const T0: Ts = Ts(1_800_000_000_000_000);

fn at(ms: u64) -> Ts {
    Ts(T0.0 + ms * 1000)
}

fn rules() -> Arc<Rules> {
    Arc::new(Config::parse(CFG).expect("config").rules())
}

/// A store and whatever keeps it alive.
struct Subject {
    store: Arc<dyn Store>,
    _redis: Option<RedisServer>,
    _dir: Option<TempDir>,
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "sb-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn memory() -> Subject {
    Subject {
        store: Arc::new(MemoryStore::new(rules(), T0, Sink::detached())),
        _redis: None,
        _dir: None,
    }
}

async fn file() -> Subject {
    let dir = TempDir::new("suite");
    let store = FileStore::open(&dir.0, "suite", rules(), || T0, 1_000_000, Sink::detached())
        .await
        .expect("open the file store");
    Subject {
        store: Arc::new(store),
        _redis: None,
        _dir: Some(dir),
    }
}

async fn redis() -> Subject {
    let server = RedisServer::start();
    let store = RedisStore::connect(
        &server.url(),
        "suite",
        rules(),
        Clock::new(),
        Sink::detached(),
    )
    .await
    .expect("connect to the test's redis-server");
    Subject {
        store: Arc::new(store),
        _redis: Some(server),
        _dir: None,
    }
}

/// A Redis store on `server` as node `name`, storing a snapshot every
/// `snapshot_every` entries.
async fn node(server: &RedisServer, name: &str, snapshot_every: u64) -> RedisStore {
    RedisStore::connect_with(
        &server.url(),
        name,
        rules(),
        Clock::new(),
        snapshot_every,
        Sink::detached(),
    )
    .await
    .unwrap_or_else(|e| panic!("node {name}: {e}"))
}

fn new_task(key: Option<&str>) -> Command {
    Command::CreateTask(Box::new(NewTask {
        channel: Channel::Chat,
        queue: "support".into(),
        priority: 0,
        skills: vec![],
        skill_levels: Default::default(),
        customer: CustomerIdentity {
            phone: Some("+351 912 000 111".into()),
            ..Default::default()
        },
        attributes: Default::default(),
        idempotency_key: key.map(str::to_owned),
    }))
}

async fn ready(s: &dyn Store, agent: &str, now: Ts) {
    ready_on(s, agent, now, "suite").await
}

/// Connects and readies an agent as if its desktop were on `node` (which must be the
/// store's own node name: a node that does not heartbeat is soon declared lost).
async fn ready_on(s: &dyn Store, agent: &str, now: Ts, node: &str) {
    let profile = rules()
        .agents
        .iter()
        .find(|p| &*p.id.0 == agent)
        .cloned()
        .expect("profile");
    let o = s
        .execute(
            Command::Connect {
                profile,
                conn: ConnId::new(),
                // A shared store files connections under its own incarnation.
                node: s.node_tag().unwrap_or_else(|| node.into()),
            },
            now,
        )
        .await
        .expect("store");
    o.reply.expect("connect");
    s.execute(
        Command::SetReady {
            agent: agent.into(),
        },
        now,
    )
    .await
    .expect("store")
    .reply
    .expect("ready");
}

async fn create(s: &dyn Store, now: Ts) -> TaskId {
    match s.execute(new_task(None), now).await.expect("store").reply {
        Ok(Reply::Created { task, .. }) => task.task_id,
        other => panic!("create: {other:?}"),
    }
}

async fn offer_of(s: &dyn Store, agent: &str) -> Option<(switchboard::ids::OfferId, TaskId)> {
    let v = s.agent_view(&AgentId::from(agent)).await.expect("store")?;
    v.offer.map(|o| (o.offer_id, o.task.task_id))
}

async fn task_state(s: &dyn Store, t: TaskId) -> String {
    let task = s.task(t).await.expect("store").expect("task");
    serde_json::to_value(&task).expect("json")["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---- the suite: each takes a store and checks one behaviour -------------------------

pub async fn routes_accepts_completes_and_attaches(shared: &Arc<dyn Store>) {
    let s: &dyn Store = shared.as_ref();
    ready(s, "a1", at(0)).await;
    let t = create(s, at(1)).await;
    let (offer, task) = offer_of(s, "a1").await.expect("offered");
    assert_eq!(task, t);
    let o = s
        .execute(
            Command::Accept {
                agent: "a1".into(),
                offer_id: offer,
            },
            at(2),
        )
        .await
        .expect("store");
    match o.reply {
        Ok(Reply::Accepted { activity, .. }) => {
            let a = activity.expect("an activity");
            assert_eq!(a.task_id, t);
        }
        other => panic!("accept: {other:?}"),
    }
    assert_eq!(task_state(s, t).await, "assigned");
    s.execute(
        Command::Complete {
            agent: "a1".into(),
            task_id: t,
            wrap_up_code: None,
        },
        at(3),
    )
    .await
    .expect("store")
    .reply
    .expect("complete");
    assert_eq!(task_state(s, t).await, "completed");
}

pub async fn expires_once_and_moves_on_in_place(shared: &Arc<dyn Store>) {
    let s: &dyn Store = shared.as_ref();
    ready(s, "a1", at(0)).await;
    let first = create(s, at(1)).await;
    ready(s, "a2", at(2)).await;
    let second = create(s, at(3)).await;
    assert_eq!(offer_of(s, "a2").await.map(|o| o.1), Some(second));
    let deadline = at(1 + 15_000);
    assert_eq!(s.next_deadline().await.expect("store"), Some(deadline));
    s.expire_due(Ts(deadline.0 - 1)).await.expect("store");
    assert_eq!(task_state(s, first).await, "offered");
    let o = s.expire_due(deadline).await.expect("store");
    assert_eq!(o.stats.expired, 1);
    let v = s
        .agent_view(&AgentId::from("a1"))
        .await
        .expect("store")
        .expect("a1");
    assert_eq!(v.reason.as_deref(), Some("missed_offer"));
    // Twice at the same time: nothing more.
    let o = s.expire_due(deadline).await.expect("store");
    assert_eq!(o.stats.expired, 0);
    // a2 finishes its task and gets the first, which kept its place.
    let (offer, _) = offer_of(s, "a2").await.expect("a2's offer");
    s.execute(
        Command::Accept {
            agent: "a2".into(),
            offer_id: offer,
        },
        at(15_002),
    )
    .await
    .expect("store")
    .reply
    .expect("accept");
    s.execute(
        Command::Complete {
            agent: "a2".into(),
            task_id: second,
            wrap_up_code: None,
        },
        at(15_003),
    )
    .await
    .expect("store")
    .reply
    .expect("complete");
    assert_eq!(offer_of(s, "a2").await.map(|o| o.1), Some(first));
}

pub async fn accept_racing_expiry_has_one_winner(shared: &Arc<dyn Store>) {
    let s: &dyn Store = shared.as_ref();
    // Until both outcomes were seen (at least 10 rounds): which side wins is up to the
    // scheduler, and a test that only ever saw one side would prove nothing.
    let (mut accepts, mut expiries) = (0, 0);
    let mut round = 0u64;
    while round < 10 || ((accepts == 0 || expiries == 0) && round < 400) {
        let base = round * 100_000;
        round += 1;
        ready(s, "a1", at(base)).await;
        let t = create(s, at(base + 1)).await;
        let (offer, _) = offer_of(s, "a1").await.expect("offered");
        let deadline = at(base + 1 + 15_000);
        enum Side {
            Accept(Result<switchboard::state::Outcome, HubError>),
            Expire(Result<switchboard::state::Outcome, HubError>),
        }
        let accept = Box::pin(async move {
            Side::Accept(
                s.execute(
                    Command::Accept {
                        agent: "a1".into(),
                        offer_id: offer,
                    },
                    Ts(deadline.0 - 1),
                )
                .await,
            )
        })
            as std::pin::Pin<Box<dyn std::future::Future<Output = Side> + Send>>;
        let expire = Box::pin(async move { Side::Expire(s.expire_due(deadline).await) })
            as std::pin::Pin<Box<dyn std::future::Future<Output = Side> + Send>>;
        let jobs = if round % 2 == 0 {
            vec![accept, expire]
        } else {
            vec![expire, accept]
        };
        let (mut a, mut expired) = (None, None);
        // Each side starts 0-200 µs after the release, at random: on a store whose one
        // path reaches its writer a little sooner than the other (the file store's
        // expiry, under CI's load: 400 expiries in 400 rounds, seen once) that side
        // would win every round, and the other outcome would go untested.
        for side in contend(jobs, Duration::from_micros(200)) {
            match side {
                Side::Accept(r) => a = Some(r.expect("store").reply),
                Side::Expire(r) => expired = Some(r.expect("store").stats.expired),
            }
        }
        let (a, expired) = (a.expect("accept ran"), expired.expect("expiry ran"));
        match a {
            Ok(_) => {
                accepts += 1;
                assert_eq!(expired, 0, "round {round}: both won");
                assert_eq!(task_state(s, t).await, "assigned");
                s.execute(
                    Command::Complete {
                        agent: "a1".into(),
                        task_id: t,
                        wrap_up_code: None,
                    },
                    at(base + 20_000),
                )
                .await
                .expect("store")
                .reply
                .expect("complete");
                assert_eq!(task_state(s, t).await, "completed");
            }
            Err(HubError::OfferEnded(OfferEnd::Expired)) => {
                expiries += 1;
                assert_eq!(expired, 1, "round {round}: nobody won");
                assert_ne!(task_state(s, t).await, "assigned", "round {round}");
                s.execute(
                    Command::CancelTask {
                        task_id: t,
                        reason: None,
                        by: crm(),
                    },
                    at(base + 20_000),
                )
                .await
                .expect("store")
                .reply
                .expect("cancel");
                assert_eq!(task_state(s, t).await, "cancelled");
            }
            Err(other) => panic!("round {round}: {other:?}"),
        }
    }
    assert!(
        accepts > 0 && expiries > 0,
        "both outcomes must occur: {accepts} accepts, {expiries} expiries in {round} rounds"
    );
}

/// Runs every future on an OS thread of its own, all released at once by a spinning
/// barrier, so that they contend for real even on a store that never awaits (the
/// memory store decides within one poll: two tasks on one tokio worker would run one
/// after the other). Threads are started in the order given; a caller alternates it,
/// because on a busy machine the last one started tends to go first. Results in the
/// order given.
///
/// With `stagger`, each job starts a random time up to it after the release.
fn contend<'a, T: Send>(
    jobs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>>,
    stagger: std::time::Duration,
) -> Vec<T> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let handle = tokio::runtime::Handle::current();
    let n = jobs.len();
    let arrived = AtomicUsize::new(0);
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let threads: Vec<_> = jobs
                .into_iter()
                .map(|job| {
                    let (handle, arrived) = (&handle, &arrived);
                    let stagger = std::time::Duration::from_nanos(
                        (switchboard::ids::random_v4().as_u128() % (stagger.as_nanos().max(1)))
                            as u64,
                    );
                    scope.spawn(move || {
                        arrived.fetch_add(1, Ordering::SeqCst);
                        while arrived.load(Ordering::SeqCst) < n {
                            std::hint::spin_loop();
                        }
                        let released = std::time::Instant::now();
                        while released.elapsed() < stagger {
                            std::hint::spin_loop();
                        }
                        handle.block_on(job)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("contending thread"))
                .collect()
        })
    })
}

fn crm() -> Actor {
    Actor {
        id: "crm".into(),
        role: Role::Integration,
    }
}

/// Creates a customer named `name` at time 0 and returns its id.
async fn create_customer(s: &dyn Store, name: &str) -> CustomerId {
    let created = s
        .context(
            ContextCommand::CreateCustomer {
                by: crm(),
                fields: CustomerFields {
                    name: Some(name.into()),
                    ..Default::default()
                },
                activity_id: None,
            },
            at(0),
        )
        .await
        .expect("store")
        .reply;
    match created {
        Ok(Reply::Context(ContextReply::Customer(v))) => v.customer.customer_id,
        other => panic!("{other:?}"),
    }
}

pub async fn a_record_version_is_granted_once(shared: &Arc<dyn Store>) {
    let s: &dyn Store = shared.as_ref();
    let id = create_customer(s, "Åsa Öberg").await;
    for version in 1..=5u64 {
        // Eight writers on threads of their own, released together, each changing the
        // record (a save of what it already holds is no change, and keeps the version).
        let saves = (0..8)
            .map(|i| {
                Box::pin(s.context(
                    ContextCommand::UpdateCustomer {
                        by: crm(),
                        customer_id: id,
                        base_version: version,
                        changes: CustomerFields {
                            name: Some(format!("writer {i} of version {version}")),
                            ..Default::default()
                        },
                    },
                    at(version),
                ))
                    as std::pin::Pin<
                        Box<
                            dyn std::future::Future<
                                    Output = Result<switchboard::state::Outcome, HubError>,
                                > + Send,
                        >,
                    >
            })
            .collect();
        let results = contend(saves, Duration::ZERO);
        let wins = results
            .into_iter()
            .map(|r| r.expect("store").reply)
            .filter(|r| match r {
                Ok(_) => true,
                Err(HubError::VersionConflict { version: v, .. }) => {
                    assert_eq!(*v, version + 1);
                    false
                }
                Err(e) => panic!("{e:?}"),
            })
            .count();
        assert_eq!(wins, 1, "version {version}");
    }
}

pub async fn idempotent_create(shared: &Arc<dyn Store>) {
    let s: &dyn Store = shared.as_ref();
    let a = s
        .execute(new_task(Some("k-1")), at(0))
        .await
        .expect("store")
        .reply;
    let b = s
        .execute(new_task(Some("k-1")), at(1))
        .await
        .expect("store")
        .reply;
    match (a, b) {
        (
            Ok(Reply::Created {
                task: a,
                created: true,
            }),
            Ok(Reply::Created {
                task: b,
                created: false,
            }),
        ) => {
            assert_eq!(a.task_id, b.task_id)
        }
        other => panic!("{other:?}"),
    }
}

/// Names of the customers `query` finds, through the store's read path (the index's
/// handle taken under the store's lock, the search after it), with their versions.
async fn found(s: &dyn Store, query: &str) -> Vec<(String, u64)> {
    let cmd = ContextCommand::Search {
        query: query.into(),
        limit: 10,
    };
    match s.context_read(cmd, at(9)).await.expect("store").reply {
        Ok(Reply::Context(ContextReply::Customers(v))) => {
            v.into_iter().map(|c| (c.name, c.version)).collect()
        }
        other => panic!("{other:?}"),
    }
}

/// Renames customer `id` from `version`; the rename must be accepted.
async fn rename(s: &dyn Store, id: CustomerId, version: u64, name: &str) {
    let renamed = s
        .context(
            ContextCommand::UpdateCustomer {
                by: crm(),
                customer_id: id,
                base_version: version,
                changes: CustomerFields {
                    name: Some(name.into()),
                    ..Default::default()
                },
            },
            at(1),
        )
        .await
        .expect("store")
        .reply;
    assert!(renamed.is_ok(), "{renamed:?}");
}

pub async fn a_search_sees_every_change_answered_before_it(shared: &Arc<dyn Store>) {
    let s: &dyn Store = shared.as_ref();
    let id = create_customer(s, "Åsa Öberg").await;
    assert_eq!(found(s, "oberg").await, [("Åsa Öberg".to_owned(), 1)]);
    rename(s, id, 1, "Åsa Lindqvist").await;
    // The result line comes from the index: the new name and version, at once.
    assert_eq!(found(s, "oberg").await, []);
    assert_eq!(found(s, "ÅSA").await, [("Åsa Lindqvist".to_owned(), 2)]);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let s = memory().await; super::$name(&s.store).await; })*
        }
        mod file_store {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let s = file().await; super::$name(&s.store).await; })*
        }
        mod redis_store {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let s = redis().await; super::$name(&s.store).await; })*
        }
    };
}

suite!(
    routes_accepts_completes_and_attaches,
    expires_once_and_moves_on_in_place,
    accept_racing_expiry_has_one_winner,
    a_record_version_is_granted_once,
    idempotent_create,
    a_search_sees_every_change_answered_before_it,
);

#[tokio::test]
async fn a_redis_node_started_later_sees_the_same_state() {
    let server = RedisServer::start();
    let a = RedisStore::connect(
        &server.url(),
        "n-a",
        rules(),
        Clock::new(),
        Sink::detached(),
    )
    .await
    .expect("a");
    ready_on(&a, "a1", at(0), "n-a").await;
    let t = create(&a, at(1)).await;
    assert_eq!(task_state(&a, t).await, "offered", "on a");
    let b = RedisStore::connect(
        &server.url(),
        "n-b",
        rules(),
        Clock::new(),
        Sink::detached(),
    )
    .await
    .expect("b");
    let v = b.agent_view(&AgentId::from("a1")).await.expect("store");
    assert_eq!(
        task_state(&b, t).await,
        "offered",
        "on b; a1 there: {:?}",
        v.map(|v| (v.status, v.connected, v.reason))
    );
    assert_eq!(offer_of(&b, "a1").await.map(|o| o.1), Some(t));
    // A decision made on b is seen on a.
    let (offer, _) = offer_of(&b, "a1").await.expect("offer");
    b.execute(
        Command::Accept {
            agent: "a1".into(),
            offer_id: offer,
        },
        at(3),
    )
    .await
    .expect("store")
    .reply
    .expect("accept");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while task_state(&a, t).await != "assigned" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a never saw the accept"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn snapshots_bound_the_log_and_a_new_node_starts_from_one() {
    let server = RedisServer::start();
    let a = node(&server, "n-a", 50).await;
    ready_on(&a, "a1", at(0), "n-a").await;
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let t = create(&a, at(1 + i)).await;
        if let Some((offer, _)) = offer_of(&a, "a1").await {
            a.execute(
                Command::Accept {
                    agent: "a1".into(),
                    offer_id: offer,
                },
                at(1 + i),
            )
            .await
            .expect("store")
            .reply
            .expect("accept");
            a.execute(
                Command::Complete {
                    agent: "a1".into(),
                    task_id: t,
                    wrap_up_code: None,
                },
                at(1 + i),
            )
            .await
            .expect("store")
            .reply
            .expect("complete");
        }
        tasks.push(t);
    }
    // The log holds far fewer than the ~600 entries written.
    let client = redis::Client::open(server.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    until_trimmed_below(&mut c, 100).await;
    let has: bool = redis::cmd("EXISTS")
        .arg("sb:snapshot")
        .query_async(&mut c)
        .await
        .expect("exists");
    assert!(has);
    // A node that starts now has every task, from the snapshot plus the log's tail.
    let b = node(&server, "n-b", 50).await;
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(task_state(&b, *t).await, "completed", "task {i}");
        // Snapshots are built by replaying the log, not by copying a's replica: the
        // replay must land on exactly the same tasks.
        let (on_a, on_b) = (
            a.task(*t).await.expect("store"),
            b.task(*t).await.expect("store"),
        );
        assert_eq!(
            serde_json::to_value(on_a).expect("json"),
            serde_json::to_value(on_b).expect("json"),
            "task {i}"
        );
    }
    let va = serde_json::to_value(a.snapshot(T0).await.expect("store")).expect("json");
    let vb = serde_json::to_value(b.snapshot(T0).await.expect("store")).expect("json");
    assert_eq!(va, vb, "agents and queues");
    // And decides like the first: the next task goes to a1.
    let t = create(&b, at(1001)).await;
    assert_eq!(offer_of(&b, "a1").await.map(|o| o.1), Some(t));
}

#[tokio::test]
async fn a_node_started_later_replays_to_exactly_the_same_decisions() {
    let server = RedisServer::start();
    let clock = Clock::new();
    let a = RedisStore::connect(
        &server.url(),
        "n-a",
        rules(),
        clock.clone(),
        Sink::detached(),
    )
    .await
    .expect("a");
    ready_on(&a, "a1", clock.now(), "n-a").await;
    let t = create(&a, clock.now()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = RedisStore::connect(
        &server.url(),
        "n-b",
        rules(),
        Clock::new(),
        Sink::detached(),
    )
    .await
    .expect("b");
    let on_a = a.task(t).await.expect("store").expect("task");
    let on_b = b.task(t).await.expect("store").expect("task");
    let (ja, jb) = (
        serde_json::to_value(&on_a).expect("json"),
        serde_json::to_value(&on_b).expect("json"),
    );
    assert_eq!(ja["deadline"], jb["deadline"], "the offer's deadline");
    assert_eq!(ja, jb);
    let va = serde_json::to_value(a.snapshot(T0).await.expect("store")).expect("json");
    let vb = serde_json::to_value(b.snapshot(T0).await.expect("store")).expect("json");
    assert_eq!(va["agents"], vb["agents"], "agents' since and state");
}

/// A node cut off from Redis for longer than its heartbeat (its key expires) while
/// another node writes, stores a snapshot and trims the log past it: once back, it
/// notices that entries after its position are gone (XREAD would skip them without a
/// word) and loads the snapshot, so it ends with every task.
#[tokio::test]
async fn a_node_away_while_the_log_was_trimmed_past_it_loads_the_snapshot() {
    let server = RedisServer::start();
    let held = Held::start(([127, 0, 0, 1], server.port).into()).await;
    let a = node(&server, "n-a", 50).await;
    let b = RedisStore::connect_with(
        &format!("redis://{}/", held.addr),
        "n-b",
        rules(),
        Clock::new(),
        1_000_000,
        Sink::detached(),
    )
    .await
    .expect("b");
    let client = redis::Client::open(server.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let until = |what: &'static str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        move || assert!(tokio::time::Instant::now() < deadline, "never {what}")
    };
    let first = create(&a, at(0)).await;
    let check = until("b had the first task");
    while b.task(first).await.expect("store").is_none() {
        check();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Cut off: its heartbeat key expires.
    held.hold();
    let check = until("b's heartbeat key expired");
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("sb:node:n-b*")
            .query_async(&mut c)
            .await
            .expect("keys");
        if keys.is_empty() {
            break;
        }
        check();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Meanwhile a writes, stores a snapshot, and trims past b's position.
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        tasks.push(create(&a, at(1 + i)).await);
    }
    let check = until("the log was trimmed");
    loop {
        let head: redis::Value = redis::cmd("XRANGE")
            .arg("sb:log")
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut c)
            .await
            .expect("xrange");
        let len: u64 = redis::cmd("XLEN")
            .arg("sb:log")
            .query_async(&mut c)
            .await
            .expect("xlen");
        if len < 150 && head != redis::Value::Nil {
            break;
        }
        check();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    held.release();
    let check = until("b had every task");
    for t in &tasks {
        while b.task(*t).await.expect("store").is_none() {
            check();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let va = serde_json::to_value(a.snapshot(T0).await.expect("store")).expect("json");
    let vb = serde_json::to_value(b.snapshot(T0).await.expect("store")).expect("json");
    assert_eq!(va, vb, "the same queues and agents");
}

/// Waits until the log holds fewer than `below` entries: a snapshot trimmed it.
async fn until_trimmed_below(c: &mut redis::aio::MultiplexedConnection, below: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let len: u64 = redis::cmd("XLEN")
            .arg("sb:log")
            .query_async(c)
            .await
            .expect("xlen");
        if len < below {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "log length {len}: never trimmed below {below}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A log trimmed below a snapshot that is gone since (deleted, evicted), or a snapshot
/// whose head is half there: a node starting would replay the part of the log left onto
/// a blank state and serve it, in silence. It refuses to start, saying why.
#[tokio::test]
async fn a_node_refuses_to_start_on_a_trimmed_log_without_its_snapshot() {
    let server = RedisServer::start();
    let a = node(&server, "n-a", 50).await;
    for i in 0..200u64 {
        create(&a, at(i)).await;
    }
    let client = redis::Client::open(server.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    until_trimmed_below(&mut c, 150).await;
    drop(a);
    let url = server.url();
    let start = || {
        RedisStore::connect_with(
            &url,
            "n-b",
            rules(),
            Clock::new(),
            1_000_000,
            Sink::detached(),
        )
    };
    // Half a head.
    let _: i64 = redis::cmd("HDEL")
        .arg("sb:snapshot")
        .arg("now")
        .query_async(&mut c)
        .await
        .expect("hdel");
    match start().await {
        Ok(_) => panic!("started from half a snapshot"),
        Err(e) => assert!(e.to_string().contains("damaged"), "{e}"),
    }
    // No head at all.
    let _: i64 = redis::cmd("DEL")
        .arg("sb:snapshot")
        .query_async(&mut c)
        .await
        .expect("del");
    match start().await {
        Ok(_) => panic!("started on a trimmed log without its snapshot"),
        Err(e) => assert!(e.to_string().contains("no snapshot"), "{e}"),
    }
}

/// How many `XREAD`s Redis has served.
async fn xreads(c: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_xread:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An entry another program (or a newer version) appended to the log, without the
/// field this version reads: skipped, the same on every node, and read past. Before, it
/// was left out of each read's entries, so the node read it again at once, for good,
/// spinning against Redis while it looked healthy.
#[tokio::test]
async fn a_stray_log_entry_is_read_past_not_read_again_and_again() {
    let server = RedisServer::start();
    let a = node(&server, "n-a", 1_000_000).await;
    let before = create(&a, at(0)).await;
    let client = redis::Client::open(server.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let _: String = redis::cmd("XADD")
        .arg("sb:log")
        .arg("*")
        .arg("x")
        .arg("1")
        .query_async(&mut c)
        .await
        .expect("xadd");
    // Idle with it last in the log, a node blocks on the log a second at a time.
    let first = xreads(&mut c).await;
    let since = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let reads = xreads(&mut c).await - first;
    let per_sec = reads as f64 / since.elapsed().as_secs_f64();
    assert!(
        per_sec < 20.0,
        "{per_sec:.0} reads of the log a second while idle"
    );
    // Commands go on after it.
    let after = create(&a, at(1)).await;
    assert!(a.task(before).await.expect("store").is_some());
    assert!(a.task(after).await.expect("store").is_some());
}

/// Notices a node delivers to its sessions, kept for a test to read.
#[derive(Default)]
struct Captured(std::sync::Mutex<Vec<switchboard::state::Notice>>);

impl switchboard::store::Dispatch for Captured {
    fn deliver(&self, o: switchboard::state::Outcome) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(o.notices);
    }
}

/// A node cut off long enough to be declared lost, and away while the log was trimmed
/// past the declaration: it loads the snapshot and never applies the entry that told its
/// desktops to reconnect. Their agents are Away in every node's state (Offline at the
/// grace's end, their tasks offered to others) while their sessions stay open here, idle
/// for good. Loading the snapshot tells them to reconnect, as the entry would have.
#[tokio::test]
async fn a_node_that_loads_a_snapshot_past_its_own_loss_tells_its_desktops_to_reconnect() {
    let server = RedisServer::start();
    let held = Held::start(([127, 0, 0, 1], server.port).into()).await;
    let a = node(&server, "n-a", 50).await;
    let (sink, binding) = switchboard::store::sink::sink();
    let captured = Arc::new(Captured::default());
    let as_dispatch: Arc<dyn switchboard::store::Dispatch> = captured.clone();
    binding.bind(Arc::downgrade(&as_dispatch));
    let b = RedisStore::connect_with(
        &format!("redis://{}/", held.addr),
        "n-b",
        rules(),
        Clock::new(),
        1_000_000,
        sink,
    )
    .await
    .expect("b");
    let agent = rules().agents[0].id.clone();
    ready_on(&b, &agent.0, at(0), "n-b").await;
    let until = |what: &'static str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        move || assert!(tokio::time::Instant::now() < deadline, "never {what}")
    };
    async fn connected(s: &dyn Store, agent: &AgentId) -> bool {
        s.agent_view(agent)
            .await
            .expect("store")
            .is_some_and(|v| v.connected)
    }
    let check = until("a saw the desktop on b");
    while !connected(&a, &agent).await {
        check();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Cut off until a declares b lost.
    held.hold();
    let check = until("a declared b lost");
    while connected(&a, &agent).await {
        check();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Meanwhile a writes, stores a snapshot, and trims past the declaration.
    let client = redis::Client::open(server.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        tasks.push(create(&a, at(1 + i)).await);
    }
    until_trimmed_below(&mut c, 150).await;
    held.release();
    let check = until("b had every task");
    for t in &tasks {
        while b.task(*t).await.expect("store").is_none() {
            check();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let closes: Vec<String> = captured
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|n| match n {
            switchboard::state::Notice::Close {
                agent_id, reason, ..
            } => Some(format!("{} {reason:?}", agent_id.0)),
            _ => None,
        })
        .collect();
    assert_eq!(
        closes,
        [format!("{} Reconnect", agent.0)],
        "b's desktop was not told to reconnect"
    );
}

/// The log is trimmed only below every live node's position, read when the snapshot is
/// put in place: a node stuck at the start of the log (here a heartbeat key at "0-1",
/// as a node that is still loading leaves) keeps every entry; once it is gone, the next
/// snapshot trims. And no upload leaves its staging key behind.
#[tokio::test]
async fn the_log_is_never_trimmed_past_a_live_node() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let a = node(&server, "n-a", 50).await;
    let _: () = redis::cmd("SET")
        .arg("sb:node:n-slow/boot")
        .arg("0-1")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut c)
        .await
        .expect("set");
    ready_on(&a, "a1", at(0), "n-a").await;
    let xlen = |mut c: redis::aio::MultiplexedConnection| async move {
        redis::cmd("XLEN")
            .arg("sb:log")
            .query_async::<u64>(&mut c)
            .await
            .expect("xlen")
    };
    let snapshot_pos = |mut c: redis::aio::MultiplexedConnection| async move {
        redis::cmd("HGET")
            .arg("sb:snapshot")
            .arg("pos")
            .query_async::<Option<String>>(&mut c)
            .await
            .expect("hget")
    };
    for i in 0..150u64 {
        create(&a, at(1 + i)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while snapshot_pos(c.clone()).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot was stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = xlen(c.clone()).await;
    assert!(
        kept >= 150,
        "a snapshot trimmed the log to {kept} entries past a live node at 0-1"
    );
    // The slow node goes away: the next snapshot trims.
    let _: () = redis::cmd("DEL")
        .arg("sb:node:n-slow/boot")
        .query_async(&mut c)
        .await
        .expect("del");
    let first = snapshot_pos(c.clone()).await;
    for i in 0..150u64 {
        create(&a, at(1000 + i)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let len = xlen(c.clone()).await;
        if snapshot_pos(c.clone()).await != first && len < 100 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "log length {len}: never trimmed once the slow node was gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let staging: Vec<String> = redis::cmd("KEYS")
        .arg("sb:snapshot:staging:*")
        .query_async(&mut c)
        .await
        .expect("keys");
    assert!(staging.is_empty(), "left behind: {staging:?}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg("sb:snapshot:state")
        .query_async(&mut c)
        .await
        .expect("pttl");
    assert_eq!(ttl, -1, "the stored snapshot does not expire");
}

/// A node that starts on a stream with a snapshot replays without a search index and
/// builds it once before it serves: its searches find what the snapshot and the tail
/// hold (renames after the snapshot included), and its index is kept up from then on.
#[tokio::test]
async fn a_node_started_later_finds_the_customers_snapshot_and_tail_hold() {
    let server = RedisServer::start();
    let a = node(&server, "n-a", 40).await;
    let mut ids = Vec::new();
    for i in 0..90u64 {
        ids.push(create_customer(&a, &format!("Åsa {i:02} Öberg")).await);
    }
    for (k, id) in ids.iter().enumerate().filter(|(k, _)| k % 3 == 0) {
        rename(&a, *id, 1, &format!("Bo {k:02} Lindqvist")).await;
    }
    let client = redis::Client::open(server.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !redis::cmd("EXISTS")
        .arg("sb:snapshot")
        .query_async::<bool>(&mut c)
        .await
        .expect("exists")
    {
        assert!(tokio::time::Instant::now() < deadline, "no snapshot stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = node(&server, "n-b", 40).await;
    for q in ["oberg", "lindqvist", "bo 3", "asa 1", "7"] {
        // `found` caps at 10; these are in name order on both.
        assert_eq!(found(&b, q).await, found(&a, q).await, "query {q:?}");
    }
    assert_eq!(
        found(&b, "bo 03").await,
        [("Bo 03 Lindqvist".to_owned(), 2)]
    );
    assert_eq!(found(&b, "asa 02").await, [("Åsa 02 Öberg".to_owned(), 1)]);
    create_customer(&b, "Zora Öberg").await;
    assert_eq!(found(&b, "zora").await, [("Zora Öberg".to_owned(), 1)]);
}

/// A snapshot larger than one read (`SNAPSHOT_CHUNK`, 512 KiB) is read in pieces by a
/// node starting later, and whole: the customers whose log entries the snapshot trimmed
/// away are there. One `GET` of the whole state, as before, could outlast the call
/// timeout for a large customer database.
#[tokio::test]
async fn a_node_started_later_reads_a_snapshot_of_several_pieces() {
    let server = RedisServer::start();
    let a = RedisStore::connect_with(
        &server.url(),
        "n-a",
        rules(),
        Clock::new(),
        500,
        Sink::detached(),
    )
    .await
    .expect("a");
    let long = "Ž".repeat(700);
    let mut ids = Vec::new();
    for batch in 0..30 {
        let names: Vec<String> = (batch * 50..batch * 50 + 50)
            .map(|i| format!("{i} {long}"))
            .collect();
        let made = futures_util::future::join_all(names.iter().map(|n| create_customer(&a, n)));
        ids.extend(made.await);
    }
    let client = redis::Client::open(server.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let len: usize = redis::cmd("STRLEN")
            .arg("sb:snapshot:state")
            .query_async(&mut c)
            .await
            .expect("strlen");
        let entries: usize = redis::cmd("XLEN")
            .arg("sb:log")
            .query_async(&mut c)
            .await
            .expect("xlen");
        // Big enough for three pieces, and the first customers' entries trimmed.
        if len > 3 * 512 * 1024 && entries < 1500 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot of several pieces (state {len} bytes)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = RedisStore::connect(
        &server.url(),
        "n-b",
        rules(),
        Clock::new(),
        Sink::detached(),
    )
    .await
    .expect("b");
    for (i, id) in ids.iter().enumerate().step_by(149) {
        let got = b
            .context(
                ContextCommand::GetCustomer {
                    by: crm(),
                    customer_id: *id,
                },
                at(1),
            )
            .await
            .expect("store")
            .reply;
        match got {
            Ok(Reply::Context(ContextReply::Customer(v))) => {
                assert_eq!(v.customer.name, format!("{i} {long}"))
            }
            other => panic!("customer {i}: {other:?}"),
        }
    }
}
