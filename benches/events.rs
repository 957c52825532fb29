//! What integration events cost: numbering a decision's events (their JSON is made by
//! the first reader, not here), a routing decision through `State` (book, context,
//! events) against the bare book, and (printed once, not a criterion measurement) a
//! snapshot with a full window against one without.
//!
//! `cargo bench --bench events`.

use criterion::{Criterion, criterion_group};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
use switchboard::clock::Ts;
use switchboard::config::Config;
use switchboard::context::record::Actor;
use switchboard::events::{EventData, EventLog, Retention};
use switchboard::ids::{Channel, ConnId};
use switchboard::routing::Command;
use switchboard::state::{Reply, State};
use switchboard::task::{CustomerIdentity, NewTask};

const AGENTS: usize = 500;

fn config() -> Config {
    let mut text = String::from(
        "[routing]\nwrap_up_secs = 0\n[limits]\nfinished_task_retention = 1000\n[[queues]]\nid = \"q\"\n",
    );
    for a in 0..AGENTS {
        text.push_str(&format!(
            "[[agents]]\nid = \"a{a}\"\nqueues = [\"q\"]\nskills = [\"en\"]\n"
        ));
    }
    Config::parse(&text).expect("bench config")
}

fn task(skill: &str) -> Command {
    Command::CreateTask(Box::new(NewTask {
        channel: Channel::Chat,
        queue: "q".into(),
        priority: 0,
        skills: vec![skill.to_owned()],
        skill_levels: Default::default(),
        customer: CustomerIdentity {
            phone: Some("+351 912 345 678".into()),
            ..Default::default()
        },
        attributes: serde_json::json!({"survey": {"motivo": "fatura", "score": 4}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        idempotency_key: None,
    }))
}

fn crm() -> Actor {
    Actor {
        id: "bench".into(),
        role: switchboard::auth::Role::Integration,
    }
}

/// Every agent Ready, `waiting` tasks nobody can take.
fn state(waiting: usize) -> State {
    let cfg = config();
    let rules = Arc::new(cfg.rules());
    let mut st = State::new(rules.clone(), Ts(1));
    for (i, p) in rules.agents.iter().enumerate() {
        let now = Ts(10 + i as u64);
        st.execute(
            Command::Connect {
                profile: p.clone(),
                conn: ConnId::new(),
                node: "bench".into(),
            },
            now,
        );
        st.execute(
            Command::SetReady {
                agent: p.id.clone(),
            },
            now,
        );
    }
    for i in 0..waiting {
        st.execute(task("klingon"), Ts(100_000 + i as u64));
    }
    st
}

/// A task arrives, is offered, and is cancelled (which frees the agent): through the
/// whole state, or through the book alone.
fn decisions(c: &mut Criterion) {
    let mut g = c.benchmark_group("create_offer_cancel");
    for whole in [false, true] {
        let mut st = state(10_000);
        let mut t = 1_000_000_000u64;
        let name = if whole { "state" } else { "book" };
        g.bench_function(name, |b| {
            b.iter(|| {
                t += 1;
                let o = if whole {
                    st.execute(task("en"), Ts(t))
                } else {
                    st.book.execute(task("en"), Ts(t))
                };
                black_box(&o.envelopes);
                let id = match o.reply {
                    Ok(Reply::Created { task, .. }) => task.task_id,
                    _ => return,
                };
                let cancel = Command::CancelTask {
                    task_id: id,
                    reason: None,
                    by: crm(),
                };
                let o = if whole {
                    st.execute(cancel, Ts(t))
                } else {
                    st.book.execute(cancel, Ts(t))
                };
                black_box(&o.envelopes);
            })
        });
    }
    g.finish();
}

/// Numbering one create's events (created, queued, offered, the agent's change).
fn numbering(c: &mut Criterion) {
    let mut st = state(0);
    let o = st.execute(task("en"), Ts(1_000_000_000));
    let events: Vec<EventData> = o.envelopes.iter().map(|e| e.data.clone()).collect();
    assert_eq!(events.len(), 4, "{events:?}");
    let mut log = EventLog::new(Retention::default());
    log.begin(1);
    let mut t = 2_000_000_000u64;
    c.bench_function("number_one_create", |b| {
        b.iter(|| {
            t += 1;
            // The copy is part of the figure (about one task's clone).
            black_box(log.record(events.clone(), Ts(t)));
        })
    });
}

/// Snapshot size and time with a full window (100,000 events of task lifecycles)
/// against the same state with an empty one.
fn snapshot_cost() {
    let mut st = state(0);
    let mut t = 3_000_000_000u64;
    let mut full = st.events.len();
    while st.events.len() < Retention::default().count && full < Retention::default().count {
        t += 1_000;
        let o = st.execute(task("en"), Ts(t));
        if let Ok(Reply::Created { task, .. }) = o.reply {
            st.execute(
                Command::CancelTask {
                    task_id: task.task_id,
                    reason: None,
                    by: crm(),
                },
                Ts(t),
            );
        }
        full = st.events.len();
    }
    let measure = |st: &State| {
        let t0 = Instant::now();
        let bytes = st.snapshot_bytes().expect("encodes");
        let enc = t0.elapsed();
        let t0 = Instant::now();
        let back = State::from_snapshot(st.book.rules().clone(), &bytes).expect("decodes");
        let dec = t0.elapsed();
        black_box(back);
        (bytes.len(), enc, dec)
    };
    let with = measure(&st);
    let json: usize = st
        .events
        .after(st.events.oldest_seq() - 1)
        // Made here, as a reader would.
        .map(|v| v.iter().map(|e| e.json().len()).sum())
        .unwrap_or(0);
    st.events = EventLog::new(Retention::default());
    let without = measure(&st);
    println!(
        "snapshot with {full} events: {} bytes, encode {:?}, decode {:?}; without: {} bytes, encode {:?}, decode {:?}; the window's wire text {json} bytes",
        with.0, with.1, with.2, without.0, without.1, without.2
    );
}

criterion_group!(benches, numbering, decisions);

/// `n` create-offer-cancel cycles through the whole state (7 events each, numbered,
/// encoded and folded into the statistics), and nothing else.
#[inline(never)]
fn fixed_cycles(st: &mut State, n: u64) {
    let mut t = 4_000_000_000u64;
    for _ in 0..n {
        t += 1_000;
        let o = st.execute(task("en"), Ts(t));
        black_box(&o.envelopes);
        if let Ok(Reply::Created { task, .. }) = o.reply {
            let o = st.execute(
                Command::CancelTask {
                    task_id: task.task_id,
                    reason: None,
                    by: crm(),
                },
                Ts(t),
            );
            black_box(&o.envelopes);
        }
    }
}

fn main() {
    // `EVENTS_FIXED=N`: only N cycles of `fixed_cycles`, for an instruction count that
    // the machine's load does not change:
    //   EVENTS_FIXED=2000 valgrind --tool=callgrind --toggle-collect='*fixed_cycles*' <bench binary>
    if let Some(n) = std::env::var("EVENTS_FIXED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let mut st = state(0);
        fixed_cycles(&mut st, n);
        return;
    }
    benches();
    snapshot_cost();
    Criterion::default().configure_from_args().final_summary();
}
