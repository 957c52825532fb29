//! The routing decision itself, on the pure book: how its cost grows with the number of
//! queued tasks (100 to 100,000) with 5,000 agents.
//!
//! `cargo bench --bench routing`. Two decisions are measured, each twice: with plain
//! queues, and (`*_escalation`) with every queue escalating (priority steps, skill
//! levels relaxing, an overflow queue) and every task asking for a skill level, so that
//! buckets carry levels and every new task arms its escalation timers:
//! - `agent_frees_up`: an agent becomes Ready and is offered the best task across its
//!   queues (then a supervisor sets it Not Ready, which puts the task back in its place;
//!   each iteration is both).
//! - `task_arrives`: a task arrives and goes to the longest-idle eligible agent (then it
//!   is cancelled, which frees the agent; each iteration is both).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use switchboard::clock::Ts;
use switchboard::config::Config;
use switchboard::context::record::Actor;
use switchboard::ids::{Channel, ConnId};
use switchboard::routing::{Book, Command};
use switchboard::state::Reply;
use switchboard::task::{CustomerIdentity, NewTask};

const AGENTS: usize = 5_000;
const QUEUES: usize = 10;
const SKILLS: [&str; 4] = ["en", "pt", "sv", "it"];

fn config(escalation: bool) -> Config {
    let mut text = String::from("[limits]\nfinished_task_retention = 1000\n");
    for q in 0..QUEUES {
        text.push_str(&format!("[[queues]]\nid = \"q{q}\"\n"));
        if escalation {
            text.push_str(&format!(
                "escalation = {{ priority_every_secs = 10, priority_step = 1, priority_max = 1000, relax_every_secs = 30, relax_levels = 2, overflow_after_secs = 600, overflow_queue = \"q{}\" }}\n",
                (q + 1) % QUEUES
            ));
        }
    }
    for a in 0..AGENTS {
        let queues: Vec<String> = (0..3)
            .map(|k| format!("\"q{}\"", (a + k) % QUEUES))
            .collect();
        let skills: Vec<String> = (0..2)
            .map(|k| format!("\"{}\"", SKILLS[(a + k) % SKILLS.len()]))
            .collect();
        text.push_str(&format!(
            "[[agents]]\nid = \"a{a}\"\nqueues = [{}]\nskills = [{}]\n",
            queues.join(","),
            skills.join(",")
        ));
        if escalation {
            // Levels 1 to 10 on the first skill.
            text.push_str(&format!(
                "skill_levels = {{ {} = {} }}\n",
                SKILLS[a % SKILLS.len()],
                1 + a % 10
            ));
        }
    }
    Config::parse(&text).expect("bench config")
}

fn task(i: usize, escalation: bool) -> Command {
    Command::CreateTask(Box::new(NewTask {
        channel: if i % 5 == 0 {
            Channel::Voice
        } else {
            Channel::Chat
        },
        queue: format!("q{}", i % QUEUES),
        priority: (i % 3) as i64,
        skills: vec![SKILLS[i % SKILLS.len()].to_owned()],
        skill_levels: if escalation {
            [(SKILLS[i % SKILLS.len()].to_owned(), (1 + i % 10) as u8)]
                .into_iter()
                .collect()
        } else {
            Default::default()
        },
        customer: CustomerIdentity::default(),
        attributes: Default::default(),
        idempotency_key: None,
    }))
}

/// A book with every agent logged in, and `ready` of them Ready.
fn book(cfg: &Config, ready: bool) -> Book {
    let rules = Arc::new(cfg.rules());
    let mut b = Book::new(rules.clone(), Ts(1));
    for (i, p) in rules.agents.iter().enumerate() {
        let now = Ts(10 + i as u64);
        b.execute(
            Command::Connect {
                profile: p.clone(),
                conn: ConnId::new(),
                node: "bench".into(),
            },
            now,
        );
        if ready {
            b.execute(
                Command::SetReady {
                    agent: p.id.clone(),
                },
                now,
            );
        }
    }
    b
}

fn crm() -> Actor {
    Actor {
        id: "bench".into(),
        role: switchboard::auth::Role::Integration,
    }
}

fn agent_frees_up(c: &mut Criterion) {
    agent_frees_up_with(c, false);
    agent_frees_up_with(c, true);
}

fn task_arrives(c: &mut Criterion) {
    task_arrives_with(c, false);
    task_arrives_with(c, true);
}

fn group(name: &str, escalation: bool) -> String {
    if escalation {
        format!("{name}_escalation")
    } else {
        name.to_owned()
    }
}

fn agent_frees_up_with(c: &mut Criterion, esc: bool) {
    let cfg = config(esc);
    let mut g = c.benchmark_group(group("agent_frees_up", esc));
    for n in [100usize, 1_000, 10_000, 100_000] {
        let mut b = book(&cfg, false);
        for i in 0..n {
            b.execute(task(i, esc), Ts(100_000 + i as u64));
        }
        let mut t = 1_000_000u64;
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| {
                t += 1;
                k = (k + 7) % AGENTS;
                let agent: switchboard::ids::AgentId = format!("a{k}").as_str().into();
                let o = b.execute(
                    Command::SetReady {
                        agent: agent.clone(),
                    },
                    Ts(t),
                );
                black_box(&o.notices);
                b.execute(
                    Command::ForceNotReady {
                        agent,
                        reason: None,
                    },
                    Ts(t),
                );
            })
        });
    }
    g.finish();
}

fn task_arrives_with(c: &mut Criterion, esc: bool) {
    let cfg = config(esc);
    let mut g = c.benchmark_group(group("task_arrives", esc));
    for n in [100usize, 1_000, 10_000, 100_000] {
        // n tasks wait that no agent can take (a skill nobody has), all agents Ready.
        let mut b = book(&cfg, true);
        for i in 0..n {
            if let Command::CreateTask(mut t) = task(i, esc) {
                t.skills = vec!["klingon".into()];
                b.execute(Command::CreateTask(t), Ts(100_000 + i as u64));
            }
        }
        let mut t = 1_000_000u64;
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| {
                t += 1;
                i += 1;
                let o = b.execute(task(i, esc), Ts(t));
                let id = match o.reply {
                    Ok(Reply::Created { task, .. }) => task.task_id,
                    _ => return,
                };
                b.execute(
                    Command::CancelTask {
                        task_id: id,
                        reason: None,
                        by: crm(),
                    },
                    Ts(t),
                );
            })
        });
    }
    g.finish();
}

criterion_group!(benches, agent_frees_up, task_arrives);
criterion_main!(benches);
