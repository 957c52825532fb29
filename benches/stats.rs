//! What the statistics cost on the hot path: `Statistics::apply` over the events of a
//! task's whole life (queued, offered, accepted, assigned, agent state changes,
//! completed), as every replica folds them for every decision; and a report of 4
//! queues and 1,000 agents, as the supervisor feed builds it once per tick.
//!
//! `cargo bench --bench stats`.

use criterion::{Criterion, criterion_group};
use std::hint::black_box;
use std::sync::Arc;
use switchboard::agent::Status;
use switchboard::clock::Ts;
use switchboard::config::Config;
use switchboard::events::EventData;
use switchboard::ids::{AgentId, Channel, OfferId, QueueId, TaskId};
use switchboard::routing::Book;
use switchboard::stats::Statistics;
use switchboard::stats::report::StatsQuery;

const AGENTS: usize = 1000;
const T0: u64 = 1_795_687_200_000_000;

fn config() -> Config {
    let mut text = String::from("[stats]\ntimezone = \"Europe/Rome\"\n");
    for q in 0..4 {
        text.push_str(&format!("[[queues]]\nid = \"q{q}\"\n"));
    }
    for a in 0..AGENTS {
        text.push_str(&format!(
            "[[agents]]\nid = \"a{a}\"\nqueues = [\"q{}\", \"q{}\"]\n",
            a % 4,
            (a + 1) % 4
        ));
    }
    Config::parse(&text).expect("bench config")
}

/// The events of task `n`'s life, with their times.
fn life(n: u64) -> Vec<(EventData, Ts)> {
    let t = Ts(T0 + n * 1_000);
    let task_id = TaskId(uuid::Uuid::from_u128(u128::from(n) + 1));
    let offer_id = OfferId(uuid::Uuid::from_u128((u128::from(n) + 1) << 64));
    let agent_id = AgentId::from(format!("a{}", n % AGENTS as u64).as_str());
    let queue = QueueId::from(format!("q{}", n % 4).as_str());
    let changed = |status, previous, since: Ts| EventData::AgentStateChanged {
        agent_id: agent_id.clone(),
        status,
        reason: None,
        previous,
        previous_reason: None,
        previous_since: since,
    };
    vec![
        (
            EventData::TaskQueued {
                task_id,
                queue: queue.clone(),
                channel: Channel::Chat,
                priority: 0,
                enqueued_at: t,
                requeued: false,
            },
            t,
        ),
        (
            EventData::TaskOffered {
                task_id,
                offer_id,
                agent_id: agent_id.clone(),
                queue: queue.clone(),
                channel: Channel::Chat,
                deadline: t,
            },
            t,
        ),
        (changed(Status::Reserved, Status::Ready, t), t),
        (
            EventData::OfferAccepted {
                task_id,
                offer_id,
                agent_id: agent_id.clone(),
            },
            t.plus(std::time::Duration::from_secs(3)),
        ),
        (
            EventData::TaskAssigned {
                task_id,
                agent_id: agent_id.clone(),
                queue: queue.clone(),
                channel: Channel::Chat,
                enqueued_at: t,
                activity_id: None,
                customer_id: None,
                request_id: None,
            },
            t.plus(std::time::Duration::from_secs(3)),
        ),
        (changed(Status::Busy, Status::Reserved, t), t),
        (
            EventData::TaskCompleted {
                task_id,
                agent_id: agent_id.clone(),
                queue: queue.clone(),
                channel: Channel::Chat,
                accepted_at: t,
                wrap_up_code: None,
            },
            t.plus(std::time::Duration::from_secs(60)),
        ),
        (
            changed(Status::Ready, Status::Busy, t),
            t.plus(std::time::Duration::from_secs(60)),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let cfg = config();
    let rules = Arc::new(cfg.rules());
    let lives: Vec<Vec<(EventData, Ts)>> = (0..10_000).map(life).collect();
    let per_life = lives[0].len();
    let mut g = c.benchmark_group("stats");
    g.bench_function(format!("fold one task's life ({per_life} events)"), |b| {
        let mut s = Statistics::new(rules.stats.clone());
        let mut i = 0;
        b.iter(|| {
            for (ev, t) in &lives[i % lives.len()] {
                s.apply(black_box(ev), *t);
            }
            i += 1;
        })
    });
    let mut s = Statistics::new(rules.stats.clone());
    for l in &lives {
        for (ev, t) in l {
            s.apply(ev, *t);
        }
    }
    let book = Book::new(rules.clone(), Ts(T0));
    let now = Ts(T0 + 10_000 * 1_000);
    g.bench_function("report: 4 queues, 1,000 agents", |b| {
        b.iter(|| {
            let r = s
                .report(&book, &StatsQuery::default(), now)
                .expect("report");
            black_box(r);
        })
    });
    g.bench_function("report as JSON", |b| {
        b.iter(|| {
            let r = s
                .report(&book, &StatsQuery::default(), now)
                .expect("report");
            black_box(serde_json::to_string(&r).expect("json"));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
