//! The routing rules, tested on the pure book with explicit time.

use super::*;
use crate::agent::{REASON_MISSED_OFFER, Status};
use crate::config::Config;
use crate::task::CustomerIdentity;

const T0: Ts = Ts(1_700_000_000_000_000);

fn crm() -> Actor {
    Actor {
        id: "crm".into(),
        role: crate::auth::Role::Integration,
    }
}

fn at_ms(ms: u64) -> Ts {
    Ts(T0.0 + ms * 1000)
}

const CONFIG: &str = r#"
[routing]
wrap_up_secs = 0
reconnect_grace_secs = 30

[[queues]]
id = "support"

[[queues]]
id = "vip"
offer_timeout_secs = 5

[[agents]]
id = "a1"
skills = ["en"]
queues = ["support"]

[[agents]]
id = "a2"
skills = ["en", "pt"]
queues = ["support", "vip"]

[[agents]]
id = "a3"
skills = ["sv"]
queues = ["support"]
"#;

struct World {
    book: Book,
    conns: HashMap<AgentId, ConnId>,
}

impl World {
    fn new() -> World {
        Self::with(CONFIG)
    }

    fn with(cfg: &str) -> World {
        let cfg = Config::parse(cfg).expect("config");
        World {
            book: Book::new(Arc::new(cfg.rules()), T0),
            conns: HashMap::new(),
        }
    }

    fn profile(&self, id: &str) -> Arc<Profile> {
        self.book
            .rules()
            .agents
            .iter()
            .find(|p| &*p.id.0 == id)
            .cloned()
            .expect("configured agent")
    }

    fn run(&mut self, cmd: Command, now: Ts) -> Outcome {
        self.book.execute(cmd, now)
    }

    fn login_ready(&mut self, id: &str, now: Ts) {
        let conn = ConnId::new();
        self.conns.insert(AgentId::from(id), conn);
        let p = self.profile(id);
        self.run(
            Command::Connect {
                profile: p,
                conn,
                node: "n1".into(),
            },
            now,
        )
        .reply
        .expect("connect");
        self.run(Command::SetReady { agent: id.into() }, now)
            .reply
            .expect("ready");
    }

    fn create(
        &mut self,
        queue: &str,
        channel: Channel,
        priority: i64,
        skills: &[&str],
        now: Ts,
    ) -> (TaskId, Outcome) {
        let o = self.run(
            Command::CreateTask(Box::new(NewTask {
                channel,
                queue: queue.into(),
                priority,
                skills: skills.iter().map(|s| s.to_string()).collect(),
                skill_levels: Default::default(),
                customer: CustomerIdentity::default(),
                attributes: Default::default(),
                idempotency_key: None,
            })),
            now,
        );
        let id = match &o.reply {
            Ok(Reply::Created { task, .. }) => task.task_id,
            other => panic!("create failed: {other:?}"),
        };
        (id, o)
    }

    fn offer_of(&self, agent: &str) -> Option<(OfferId, TaskId)> {
        let v = self.book.agent_view(&AgentId::from(agent))?;
        v.offer.map(|o| (o.offer_id, o.task.task_id))
    }

    fn status(&self, agent: &str) -> Status {
        self.book
            .agent_view(&AgentId::from(agent))
            .map(|v| v.status)
            .expect("agent")
    }

    fn accept(&mut self, agent: &str, now: Ts) -> TaskId {
        let (offer_id, task_id) = self.offer_of(agent).expect("an offer");
        self.run(
            Command::Accept {
                agent: agent.into(),
                offer_id,
            },
            now,
        )
        .reply
        .expect("accept");
        task_id
    }

    fn task_state(&self, id: TaskId) -> TaskState {
        self.book.task(id).expect("task").state.clone()
    }
}

fn offers_in(o: &Outcome) -> Vec<(AgentId, TaskId)> {
    o.notices
        .iter()
        .filter_map(|n| match n {
            Notice::ToAgent {
                agent_id,
                notice: AgentNotice::Offer(v),
            } => Some((agent_id.clone(), v.task.task_id)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_task_goes_to_the_longest_idle_eligible_agent() {
    let mut w = World::new();
    w.login_ready("a2", at_ms(0));
    w.login_ready("a1", at_ms(10));
    let (t, o) = w.create("support", Channel::Chat, 0, &[], at_ms(20));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a2"), t)]);
    assert_eq!(w.status("a2"), Status::Reserved);
    assert_eq!(w.status("a1"), Status::Ready);
}

#[test]
fn skills_decide_eligibility() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    w.login_ready("a3", at_ms(1));
    let (t, o) = w.create("support", Channel::Email, 0, &["sv"], at_ms(2));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a3"), t)]);
    // Nobody speaks Italian: the task waits.
    let (t2, o) = w.create("support", Channel::Email, 0, &["it"], at_ms(3));
    assert!(offers_in(&o).is_empty());
    assert_eq!(w.task_state(t2), TaskState::Queued);
}

#[test]
fn priority_then_arrival_orders_the_queue() {
    let mut w = World::new();
    let (low_old, _) = w.create("support", Channel::Chat, 0, &[], at_ms(0));
    let (high, _) = w.create("support", Channel::Chat, 5, &[], at_ms(1));
    let (low_new, _) = w.create("support", Channel::Chat, 0, &[], at_ms(2));
    let mut order = Vec::new();
    w.login_ready("a1", at_ms(3));
    for i in 0..3 {
        let t = w.accept("a1", at_ms(4 + i));
        order.push(t);
        w.run(
            Command::Complete {
                agent: "a1".into(),
                task_id: t,
                wrap_up_code: None,
            },
            at_ms(5 + i),
        )
        .reply
        .expect("complete");
    }
    assert_eq!(order, vec![high, low_old, low_new]);
}

#[test]
fn an_agent_takes_the_best_task_across_its_queues() {
    let mut w = World::new();
    let (_s, _) = w.create("support", Channel::Chat, 1, &[], at_ms(0));
    let (v, _) = w.create("vip", Channel::Chat, 9, &[], at_ms(1));
    w.login_ready("a2", at_ms(2));
    assert_eq!(w.offer_of("a2").map(|o| o.1), Some(v));
}

#[test]
fn one_call_at_a_time_and_nothing_else_meanwhile() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (call, _) = w.create("support", Channel::Voice, 0, &[], at_ms(1));
    w.accept("a1", at_ms(2));
    let (call2, o) = w.create("support", Channel::Voice, 0, &[], at_ms(3));
    assert!(offers_in(&o).is_empty());
    let (chat, o) = w.create("support", Channel::Chat, 0, &[], at_ms(4));
    assert!(offers_in(&o).is_empty(), "nothing else while on a call");
    let o = w.run(
        Command::Complete {
            agent: "a1".into(),
            task_id: call,
            wrap_up_code: Some("resolved".into()),
        },
        at_ms(5),
    );
    // Free again: the oldest waiting task (the second call) comes first.
    assert_eq!(offers_in(&o), vec![(AgentId::from("a1"), call2)]);
    assert_eq!(w.task_state(chat), TaskState::Queued);
}

#[test]
fn chat_capacity_allows_several_then_stops() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let mut got = Vec::new();
    for i in 0..4 {
        let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1 + i));
        if w.offer_of("a1").is_some() {
            got.push(w.accept("a1", at_ms(1 + i)));
        } else {
            assert_eq!(w.task_state(t), TaskState::Queued);
        }
    }
    assert_eq!(got.len(), 3, "default chat capacity is 3");
    assert_eq!(w.status("a1"), Status::Busy);
}

#[test]
fn expiry_sets_not_ready_and_offers_the_next_agent_in_place() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    w.login_ready("a2", at_ms(1));
    let (first, _) = w.create("support", Channel::Chat, 0, &[], at_ms(2));
    assert_eq!(w.offer_of("a1").map(|o| o.1), Some(first));
    // a2 takes the second task.
    let (second, _) = w.create("support", Channel::Chat, 0, &[], at_ms(3));
    assert_eq!(w.offer_of("a2").map(|o| o.1), Some(second));
    w.accept("a2", at_ms(4));
    // A third waits behind the first.
    let (third, _) = w.create("support", Channel::Email, 0, &[], at_ms(5));
    // a2 has capacity left for email: it was offered the third.
    assert_eq!(w.offer_of("a2").map(|o| o.1), Some(third));
    w.accept("a2", at_ms(6));
    // The default timeout is 15 s: nothing at 14.999 s.
    let deadline = at_ms(2 + 15_000);
    assert_eq!(w.book.next_deadline(), Some(deadline));
    let o = w.book.expire_due(Ts(deadline.0 - 1));
    assert!(o.notices.is_empty());
    let o = w.book.expire_due(deadline);
    assert_eq!(o.stats.expired, 1);
    let v = w.book.agent_view(&AgentId::from("a1")).expect("a1");
    assert_eq!(v.status, Status::NotReady);
    assert_eq!(v.reason.as_deref(), Some(REASON_MISSED_OFFER));
    // Straight to the next eligible agent.
    assert_eq!(offers_in(&o), vec![(AgentId::from("a2"), first)]);
    assert!(o.notices.iter().any(|n| matches!(n,
        Notice::ToAgent { agent_id, notice: AgentNotice::OfferEnded { reason: OfferEnd::Expired, .. } } if &*agent_id.0 == "a1")));
}

#[test]
fn an_expired_task_keeps_its_place_and_does_not_return_to_the_agent_who_missed_it_at_once() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (first, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    let (second, _) = w.create("support", Channel::Voice, 0, &[], at_ms(2));
    let o = w.book.expire_due(at_ms(1 + 15_000));
    assert!(offers_in(&o).is_empty(), "no other agent");
    // a1 comes back within the re-offer time (30 s): it gets the second task, not the
    // one it missed.
    w.run(Command::SetReady { agent: "a1".into() }, at_ms(20_000));
    assert_eq!(w.offer_of("a1").map(|o| o.1), Some(second));
    // A new agent gets the first task, which is still ahead of later arrivals.
    let (_third, _) = w.create("support", Channel::Chat, 0, &[], at_ms(20_001));
    w.login_ready("a2", at_ms(20_002));
    assert_eq!(w.offer_of("a2").map(|o| o.1), Some(first));
}

impl World {
    fn decline(&mut self, agent: &str, now: Ts) -> Outcome {
        let (offer_id, _) = self.offer_of(agent).expect("an offer");
        let o = self.run(
            Command::Decline {
                agent: agent.into(),
                offer_id,
            },
            now,
        );
        assert!(o.reply.is_ok(), "decline: {:?}", o.reply);
        o
    }
}

#[test]
fn a_refused_task_returns_to_the_only_agent_after_the_reoffer_time() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    let o = w.decline("a1", at_ms(2));
    assert!(offers_in(&o).is_empty());
    assert_eq!(w.task_state(t), TaskState::Queued);
    // The re-offer time (routing.reoffer_after_secs, 30 s by default) is a timer.
    assert_eq!(w.book.next_deadline(), Some(at_ms(2 + 30_000)));
    let o = w.book.expire_due(at_ms(2 + 30_000 - 1));
    assert!(offers_in(&o).is_empty(), "not before the re-offer time");
    let o = w.book.expire_due(at_ms(2 + 30_000));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a1"), t)]);
    // Declined again: away from it for another re-offer time.
    let o = w.decline("a1", at_ms(30_010));
    assert!(offers_in(&o).is_empty());
    assert_eq!(w.book.next_deadline(), Some(at_ms(30_010 + 30_000)));
    // A missed offer counts the same: a1 missed it, comes back Ready, and gets it once
    // the time has passed.
    let o = w.book.expire_due(at_ms(60_010));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a1"), t)]);
    w.book.expire_due(at_ms(60_010 + 15_000));
    assert_eq!(w.status("a1"), Status::NotReady);
    w.run(Command::SetReady { agent: "a1".into() }, at_ms(80_000));
    assert!(w.offer_of("a1").is_none(), "within the re-offer time");
    let o = w.book.expire_due(at_ms(75_010 + 30_000));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a1"), t)]);
}

#[test]
fn a_queue_may_set_its_own_reoffer_time() {
    let mut w = World::with(&CONFIG.replace(
        "id = \"vip\"\noffer_timeout_secs = 5",
        "id = \"vip\"\noffer_timeout_secs = 5\nreoffer_after_secs = 0",
    ));
    w.login_ready("a2", at_ms(0));
    let (t, _) = w.create("vip", Channel::Chat, 0, &[], at_ms(1));
    // No wait at all: declined, and straight back to the only agent who can take it.
    let o = w.decline("a2", at_ms(2));
    assert_eq!(offers_in(&o), vec![]);
    let o = w.book.expire_due(at_ms(2));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a2"), t)]);
}

#[test]
fn an_agent_who_refused_a_task_is_passed_over_while_another_can_take_it() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    w.decline("a1", at_ms(2));
    w.run(
        Command::SetNotReady {
            agent: "a1".into(),
            reason: "break".into(),
        },
        at_ms(3),
    )
    .reply
    .expect("break");
    // The re-offer time passes while a1 is on a break.
    let o = w.book.expire_due(at_ms(2 + 30_000));
    assert!(offers_in(&o).is_empty());
    w.login_ready("a3", at_ms(30_003));
    assert_eq!(w.offer_of("a3").map(|o| o.1), Some(t));
    // a1, then a2, become Ready: a1 has been idle longer.
    w.run(Command::SetReady { agent: "a1".into() }, at_ms(30_004));
    w.login_ready("a2", at_ms(30_005));
    // a3 declines: a2 gets it, though a1 has waited longer, since a1 refused it.
    let o = w.decline("a3", at_ms(30_006));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a2"), t)]);
    // a2 declines too: a1 is the only one left whose time has passed.
    let o = w.decline("a2", at_ms(30_007));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a1"), t)]);
}

#[test]
fn agents_freed_in_one_step_leave_a_refused_task_to_the_one_who_did_not_refuse_it() {
    let mut w = World::with(&CONFIG.replace("wrap_up_secs = 0", "wrap_up_secs = 30"));
    let complete = |w: &mut World, agent: &str, task_id: TaskId, now: Ts| {
        w.run(
            Command::Complete {
                agent: agent.into(),
                task_id,
                wrap_up_code: None,
            },
            now,
        )
        .reply
        .expect("complete");
    };
    // a2 on a call; a1 declines call t, then takes another.
    w.login_ready("a2", at_ms(0));
    w.create("support", Channel::Voice, 0, &[], at_ms(1));
    let v2 = w.accept("a2", at_ms(2));
    w.login_ready("a1", at_ms(3));
    let (t, _) = w.create("support", Channel::Voice, 0, &[], at_ms(4));
    w.decline("a1", at_ms(5));
    w.create("support", Channel::Voice, 0, &[], at_ms(6));
    let v1 = w.accept("a1", at_ms(7));
    // a1's re-offer time passes while both are on calls: t waits.
    w.book.expire_due(at_ms(5 + 30_000));
    assert_eq!(w.task_state(t), TaskState::Queued);
    // Both finish; their wrap-ups end in the same step, a1's first.
    complete(&mut w, "a1", v1, at_ms(40_000));
    complete(&mut w, "a2", v2, at_ms(40_001));
    let o = w.book.expire_due(at_ms(70_001));
    // a2 never refused it: a2 gets it, not a1 (who gets it back only when no other can).
    assert_eq!(offers_in(&o), vec![(AgentId::from("a2"), t)]);
}

#[test]
fn no_task_waits_while_an_agent_who_could_take_it_refused_it_longer_ago_than_the_reoffer_time() {
    // A random walk with declines and missed offers. After each step (its due timers
    // fired), no waiting task may have an agent free to take it, except one who
    // declined or missed that very task less than the re-offer time ago. The test keeps
    // its own record of refusals, from the replies and the notices, not the book's.
    const REOFFER_MS: u64 = 3_000;
    let mut w = World::with(
        &CONFIG
            .replace(
                "reconnect_grace_secs = 30",
                "reconnect_grace_secs = 30\noffer_timeout_secs = 2\nreoffer_after_secs = 3",
            )
            .replace("offer_timeout_secs = 5", "offer_timeout_secs = 1"),
    );
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let agents = ["a1", "a2", "a3"];
    for a in agents {
        w.login_ready(a, at_ms(0));
    }
    let skills: [&[&str]; 3] = [&[], &["en"], &["pt"]];
    let mut refused: HashMap<(TaskId, AgentId), Ts> = HashMap::new();
    let (mut declines, mut misses, mut returns) = (0, 0, 0);
    for step in 1..3000u64 {
        let now = at_ms(step * 150);
        let mut outs = Vec::new();
        match rnd(8) {
            0 | 1 => {
                let ch = Channel::ALL[rnd(3) as usize];
                let q = if rnd(3) == 0 { "vip" } else { "support" };
                outs.push(
                    w.create(q, ch, rnd(3) as i64, skills[rnd(3) as usize], now)
                        .1,
                );
            }
            2 => {
                let a = agents[rnd(3) as usize];
                if let Some((offer_id, _)) = w.offer_of(a) {
                    outs.push(w.run(
                        Command::Accept {
                            agent: a.into(),
                            offer_id,
                        },
                        now,
                    ));
                }
            }
            3 | 4 => {
                let a = agents[rnd(3) as usize];
                if let Some((offer_id, task_id)) = w.offer_of(a) {
                    let o = w.run(
                        Command::Decline {
                            agent: a.into(),
                            offer_id,
                        },
                        now,
                    );
                    if o.reply.is_ok() {
                        declines += 1;
                        refused.insert((task_id, AgentId::from(a)), now);
                    }
                    outs.push(o);
                }
            }
            5 => {
                let a = agents[rnd(3) as usize];
                let v = w.book.agent_view(&AgentId::from(a)).expect("agent");
                if let Some(t) = v.in_progress.first() {
                    outs.push(w.run(
                        Command::Complete {
                            agent: a.into(),
                            task_id: t.task_id,
                            wrap_up_code: None,
                        },
                        now,
                    ));
                }
            }
            _ => outs.push(w.run(
                Command::SetReady {
                    agent: agents[rnd(3) as usize].into(),
                },
                now,
            )),
        }
        outs.push(w.book.expire_due(now));
        for o in &outs {
            for n in &o.notices {
                match n {
                    Notice::ToAgent {
                        agent_id,
                        notice:
                            AgentNotice::OfferEnded {
                                task_id,
                                reason: OfferEnd::Expired,
                                ..
                            },
                    } => {
                        misses += 1;
                        refused.insert((*task_id, agent_id.clone()), now);
                    }
                    Notice::ToAgent {
                        agent_id,
                        notice: AgentNotice::Offer(v),
                    } if refused.contains_key(&(v.task.task_id, agent_id.clone())) => {
                        returns += 1;
                    }
                    _ => {}
                }
            }
        }
        for (id, e) in &w.book.agents {
            let v = w.book.agent_view(id).expect("agent");
            for t in w
                .book
                .tasks
                .values()
                .filter(|t| t.state == TaskState::Queued)
            {
                let mut t = Task::clone(t);
                t.excluded.clear();
                if !could_take(&v, &e.profile, &t) {
                    continue;
                }
                let refused_at = refused.get(&(t.task_id, id.clone()));
                assert!(
                    refused_at.is_some_and(|r| now.since(*r).as_millis() < REOFFER_MS as u128),
                    "step {step}: task {} waits while {id} could take it (refused at {refused_at:?}, now {now:?})",
                    t.task_id
                );
            }
        }
        check_invariants(&w.book);
    }
    assert!(
        declines > 100 && misses > 20 && returns > 20,
        "the walk did too little: {declines} declines, {misses} missed offers, {returns} offers back to an agent who had refused the task"
    );
}

#[test]
fn accept_racing_expiry_has_one_winner() {
    // Accept just before the deadline wins; the timer afterwards does nothing.
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    let (offer_id, _) = w.offer_of("a1").expect("offer");
    let o = w.run(
        Command::Accept {
            agent: "a1".into(),
            offer_id,
        },
        at_ms(15_000),
    );
    assert!(o.reply.is_ok());
    let o = w.book.expire_due(at_ms(15_001));
    assert_eq!(o.stats.expired, 0);
    assert!(matches!(w.task_state(t), TaskState::Assigned { .. }));

    // Accept at the deadline loses, even before the timer fired, and is told so.
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    let (offer_id, _) = w.offer_of("a1").expect("offer");
    let o = w.run(
        Command::Accept {
            agent: "a1".into(),
            offer_id,
        },
        at_ms(15_001),
    );
    assert_eq!(o.reply.err(), Some(HubError::OfferEnded(OfferEnd::Expired)));
    assert_eq!(o.stats.expired, 1);
    assert_eq!(w.task_state(t), TaskState::Queued);
    // The timer then finds nothing: an offer never expires twice.
    let o = w.book.expire_due(at_ms(15_002));
    assert_eq!(o.stats.expired, 0);
    // A second accept of the same offer says how it ended.
    let o = w.run(
        Command::Accept {
            agent: "a1".into(),
            offer_id,
        },
        at_ms(15_003),
    );
    assert_eq!(o.reply.err(), Some(HubError::OfferEnded(OfferEnd::Expired)));
}

#[test]
fn accepting_someone_elses_offer_is_refused() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    w.login_ready("a2", at_ms(1));
    w.create("support", Channel::Chat, 0, &[], at_ms(2));
    let (offer_id, _) = w.offer_of("a1").expect("offer");
    let o = w.run(
        Command::Accept {
            agent: "a2".into(),
            offer_id,
        },
        at_ms(3),
    );
    assert_eq!(o.reply.err(), Some(HubError::NotYourOffer));
    assert!(o.notices.is_empty());
}

#[test]
fn decline_sends_the_task_on_and_keeps_the_agent_ready() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    w.login_ready("a2", at_ms(1));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(2));
    let (offer_id, _) = w.offer_of("a1").expect("offer");
    let o = w.run(
        Command::Decline {
            agent: "a1".into(),
            offer_id,
        },
        at_ms(3),
    );
    assert_eq!(offers_in(&o), vec![(AgentId::from("a2"), t)]);
    assert_eq!(w.status("a1"), Status::Ready);
    assert_eq!(o.stats.declined, 1);
}

#[test]
fn cancel_removes_the_task_from_queue_offer_and_progress() {
    let mut w = World::new();
    // Queued.
    let (q, _) = w.create("support", Channel::Chat, 0, &[], at_ms(0));
    w.run(
        Command::CancelTask {
            task_id: q,
            reason: None,
            by: crm(),
        },
        at_ms(1),
    )
    .reply
    .expect("cancel queued");
    w.login_ready("a1", at_ms(2));
    assert!(
        w.offer_of("a1").is_none(),
        "a cancelled task is never offered"
    );
    // Offered.
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(3));
    let o = w.run(
        Command::CancelTask {
            task_id: t,
            reason: Some("abandoned".into()),
            by: crm(),
        },
        at_ms(4),
    );
    assert!(o.notices.iter().any(|n| matches!(
        n,
        Notice::ToAgent {
            notice: AgentNotice::OfferEnded {
                reason: OfferEnd::Withdrawn,
                ..
            },
            ..
        }
    )));
    assert_eq!(w.status("a1"), Status::Ready);
    assert_eq!(w.book.next_deadline(), None, "its offer timer is gone");
    // In progress.
    let (t, _) = w.create("support", Channel::Voice, 0, &[], at_ms(5));
    w.accept("a1", at_ms(6));
    let o = w.run(
        Command::CancelTask {
            task_id: t,
            reason: None,
            by: crm(),
        },
        at_ms(7),
    );
    assert!(o.notices.iter().any(|n| matches!(
        n,
        Notice::ToAgent {
            notice: AgentNotice::TaskCancelled { .. },
            ..
        }
    )));
    assert_eq!(w.status("a1"), Status::Ready);
    // Twice.
    let o = w.run(
        Command::CancelTask {
            task_id: t,
            reason: None,
            by: crm(),
        },
        at_ms(8),
    );
    assert_eq!(o.reply.err(), Some(HubError::TaskFinished(t)));
}

#[test]
fn wrap_up_follows_a_task_then_ready() {
    let mut w = World::with(&CONFIG.replace("wrap_up_secs = 0", "wrap_up_secs = 10"));
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Voice, 0, &[], at_ms(1));
    w.accept("a1", at_ms(2));
    w.run(
        Command::Complete {
            agent: "a1".into(),
            task_id: t,
            wrap_up_code: None,
        },
        at_ms(3),
    );
    assert_eq!(w.status("a1"), Status::WrapUp);
    let (t2, o) = w.create("support", Channel::Chat, 0, &[], at_ms(4));
    assert!(offers_in(&o).is_empty(), "no offers during wrap-up");
    let o = w.book.expire_due(at_ms(3 + 10_000));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a1"), t2)]);
}

#[test]
fn a_dropped_agent_keeps_its_offer_in_grace_and_loses_it_after() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    let conn = w.conns[&AgentId::from("a1")];
    w.run(
        Command::Disconnect {
            agent: "a1".into(),
            conn,
        },
        at_ms(2),
    );
    assert_eq!(w.status("a1"), Status::Reserved);
    // Reconnect within grace resumes with the offer.
    let p = w.profile("a1");
    let o = w.run(
        Command::Connect {
            profile: p,
            conn: ConnId::new(),
            node: "n1".into(),
        },
        at_ms(3),
    );
    match o.reply {
        Ok(Reply::Agent { view, resumed }) => {
            assert!(resumed);
            assert_eq!(view.offer.map(|o| o.task.task_id), Some(t));
        }
        other => panic!("{other:?}"),
    }
    // Drop again and stay away: the offer expires first (15 s) since grace is 30 s.
    let mut w =
        World::with(&CONFIG.replace("reconnect_grace_secs = 30", "reconnect_grace_secs = 2"));
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    let conn = w.conns[&AgentId::from("a1")];
    w.run(
        Command::Disconnect {
            agent: "a1".into(),
            conn,
        },
        at_ms(2),
    );
    w.book.expire_due(at_ms(2 + 2_000));
    assert_eq!(w.status("a1"), Status::Offline);
    assert_eq!(w.task_state(t), TaskState::Queued, "back in its queue");
    w.login_ready("a2", at_ms(3_000));
    assert_eq!(w.offer_of("a2").map(|o| o.1), Some(t));
}

#[test]
fn idempotent_create_returns_the_same_task() {
    let mut w = World::new();
    let new = || {
        Command::CreateTask(Box::new(NewTask {
            channel: Channel::Chat,
            queue: "support".into(),
            priority: 0,
            skills: vec![],
            skill_levels: Default::default(),
            customer: CustomerIdentity::default(),
            attributes: Default::default(),
            idempotency_key: Some("k1".into()),
        }))
    };
    let a = w.run(new(), at_ms(0)).reply.expect("first");
    let b = w.run(new(), at_ms(1)).reply.expect("second");
    match (a, b) {
        (
            Reply::Created {
                task: a,
                created: true,
            },
            Reply::Created {
                task: b,
                created: false,
            },
        ) => {
            assert_eq!(a.task_id, b.task_id)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_queue_and_channel_are_refused() {
    let mut w = World::with("[[queues]]\nid = \"mail\"\nchannels = [\"email\"]\n");
    let mk = |queue: &str, channel| {
        Command::CreateTask(Box::new(NewTask {
            channel,
            queue: queue.into(),
            priority: 0,
            skills: vec![],
            skill_levels: Default::default(),
            customer: CustomerIdentity::default(),
            attributes: Default::default(),
            idempotency_key: None,
        }))
    };
    assert!(matches!(
        w.run(mk("nope", Channel::Email), T0).reply,
        Err(HubError::UnknownQueue(_))
    ));
    assert!(matches!(
        w.run(mk("mail", Channel::Voice), T0).reply,
        Err(HubError::ChannelNotServed { .. })
    ));
}

#[test]
fn no_waiting_task_and_open_agent_could_be_paired_after_any_command() {
    // A small random walk over commands, checking the book's central invariant.
    let mut w = World::new();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let agents = ["a1", "a2", "a3"];
    for a in agents {
        w.login_ready(a, at_ms(0));
    }
    let skills: [&[&str]; 3] = [&[], &["en"], &["pt"]];
    // What the walk did, so that it cannot pass by doing nothing.
    let (mut offers, mut accepts, mut completes, mut expiries) = (0, 0, 0, 0);
    let (mut transfers, mut consults) = (0, 0);
    for step in 1..2000u64 {
        let now = at_ms(step * 100);
        let o = match rnd(8) {
            0 | 1 => {
                let ch = Channel::ALL[rnd(3) as usize];
                let q = if rnd(2) == 0 { "support" } else { "vip" };
                Some(
                    w.create(q, ch, rnd(3) as i64, skills[rnd(3) as usize], now)
                        .1,
                )
            }
            2 => {
                // An accept may come after the deadline (no tick since): it loses, and
                // that is a decision too.
                let a = agents[rnd(3) as usize];
                w.offer_of(a).map(|(offer_id, _)| {
                    let o = w.run(
                        Command::Accept {
                            agent: a.into(),
                            offer_id,
                        },
                        now,
                    );
                    if o.reply.is_ok() {
                        accepts += 1;
                    }
                    o
                })
            }
            3 => {
                let a = agents[rnd(3) as usize];
                let v = w.book.agent_view(&AgentId::from(a)).expect("agent");
                v.in_progress.first().map(|t| {
                    completes += 1;
                    w.run(
                        Command::Complete {
                            agent: a.into(),
                            task_id: t.task_id,
                            wrap_up_code: None,
                        },
                        now,
                    )
                })
            }
            4 => Some(w.run(
                Command::SetReady {
                    agent: agents[rnd(3) as usize].into(),
                },
                now,
            )),
            6 => {
                // A transfer (to a queue, maybe its head, or to an agent) or a consult
                // of what an agent has in progress.
                let a = agents[rnd(3) as usize];
                let v = w.book.agent_view(&AgentId::from(a)).expect("agent");
                v.in_progress.first().map(|t| {
                    // Mostly an agent who can take an offer now, so that consults
                    // happen; sometimes any (then refused, or unavailable).
                    let open = agents.iter().find(|x| {
                        **x != a
                            && w.book
                                .agents
                                .get(&AgentId::from(**x))
                                .is_some_and(|e| e.state.open_for_work())
                    });
                    let to_agent = match open {
                        Some(x) if rnd(4) != 0 => AgentId::from(*x),
                        _ => AgentId::from(agents[rnd(3) as usize]),
                    };
                    let cmd = match rnd(3) {
                        0 => Command::Transfer {
                            task_id: t.task_id,
                            to: TransferTo::Queue {
                                queue: QueueId::from(if rnd(2) == 0 { "support" } else { "vip" }),
                                priority: None,
                                skills: None,
                                head: rnd(2) == 0,
                            },
                            by: agent_actor(a),
                        },
                        1 => Command::Transfer {
                            task_id: t.task_id,
                            to: TransferTo::Agent(to_agent),
                            by: agent_actor(a),
                        },
                        _ => Command::Consult {
                            agent: a.into(),
                            task_id: t.task_id,
                            to: to_agent,
                        },
                    };
                    let consult = matches!(cmd, Command::Consult { .. });
                    let o = w.run(cmd, now);
                    // A consult needs an open target, which a busy walk rarely has:
                    // attempts are counted (the refusals must keep the invariants too).
                    if consult {
                        consults += 1;
                    } else if o.reply.is_ok() {
                        transfers += 1;
                    }
                    o
                })
            }
            _ => Some(w.book.expire_due(now)),
        };
        if let Some(o) = o {
            offers += offers_in(&o).len();
            expiries += o.stats.expired;
        }
        check_invariants(&w.book);
    }
    // The walk is deterministic (a fixed seed): these only guard against a change that
    // leaves it doing nothing, which would check nothing.
    assert!(
        offers > 50
            && accepts > 100
            && completes > 80
            && expiries > 0
            && transfers > 20
            && consults > 20,
        "the walk did too little: {offers} offers, {accepts} accepts, {completes} completes, {expiries} expiries, {transfers} transfers, {consults} consults asked"
    );
}

/// Whether the documented rules let the agent be offered `t` now, judged from its view
/// and profile, not from the book's index of open agents nor its `eligible` (they are
/// what the invariant checks): connected, Ready (no Not Ready reason, no offer, no
/// wrap-up), not on a call, room on the channel, the queue, the skills, and not an agent
/// who declined or missed the task.
fn could_take(v: &AgentView, profile: &Profile, t: &Task) -> bool {
    let load = v
        .in_progress
        .iter()
        .filter(|w| w.channel == t.channel)
        .count();
    v.connected
        && matches!(v.status, Status::Ready | Status::Busy)
        && v.reason.is_none()
        && v.offer.is_none()
        && v.wrap_up.is_none()
        && !v.in_progress.iter().any(|w| w.channel == Channel::Voice)
        && load < profile.capacity.of(t.channel)
        && profile.queues.contains(&t.queue)
        && t.skills.iter().all(|s| profile.skills.contains(s))
        && t.skill_levels.iter().all(|(s, l)| profile.level(s) >= *l)
        && !t.excluded.contains(&v.agent_id)
}

/// No waiting task could go to an agent free to take it; every offer is on exactly one
/// agent and one task; no agent holds two calls.
fn check_invariants(b: &Book) {
    for (id, e) in &b.agents {
        let voice = e.state.load(Channel::Voice);
        assert!(voice <= 1, "{id} holds {voice} calls");
        if let Some(o) = &e.state.offer {
            let live = b.offers.get(&o.offer_id).expect("agent's offer is live");
            assert_eq!(&live.agent_id, id);
            // Offered to this agent, or, for a consult, still another agent's with a
            // handoff naming this one.
            let t = b
                .tasks
                .get(&o.task_id)
                .expect("an offer names a task the book holds");
            match &t.state {
                TaskState::Offered { agent_id, .. } => assert_eq!(agent_id, id),
                TaskState::Assigned { agent_id, .. } => {
                    assert_ne!(agent_id, id);
                    assert_eq!(t.handoff.as_ref().map(|h| &h.to), Some(id));
                }
                other => panic!("{id}'s offer is of a task {other:?}"),
            }
        }
        let v = b.agent_view(id).expect("agent");
        for t in b.tasks.values().filter(|t| t.state == TaskState::Queued) {
            assert!(
                !could_take(&v, &e.profile, t),
                "task {} waits while {id} could take it",
                t.task_id
            );
        }
    }
    assert_eq!(
        b.offers.len(),
        b.agents
            .values()
            .filter(|e| e.state.offer.is_some())
            .count()
    );
}

#[test]
fn a_new_profile_on_connect_takes_the_agent_out_of_queues_it_left() {
    let mut w = World::new();
    w.login_ready("a2", at_ms(0));
    // a2 reconnects with a profile that serves only "support".
    let mut p = (*w.profile("a2")).clone();
    p.queues = vec![QueueId::from("support")];
    w.run(
        Command::Connect {
            profile: Arc::new(p),
            conn: ConnId::new(),
            node: "n1".into(),
        },
        at_ms(1),
    )
    .reply
    .expect("connect");
    let (vip, o) = w.create("vip", Channel::Chat, 0, &[], at_ms(2));
    assert!(offers_in(&o).is_empty(), "a2 no longer serves vip");
    assert_eq!(w.task_state(vip), TaskState::Queued);
    let (sup, o) = w.create("support", Channel::Chat, 0, &[], at_ms(3));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a2"), sup)]);
}

#[test]
fn not_ready_during_an_offer_declines_it_and_the_task_goes_on() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    w.login_ready("a2", at_ms(1));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(2));
    let (offer_id, _) = w.offer_of("a1").expect("offer");
    let o = w.run(
        Command::SetNotReady {
            agent: "a1".into(),
            reason: "lunch".into(),
        },
        at_ms(3),
    );
    assert!(o.reply.is_ok(), "{:?}", o.reply);
    assert_eq!(o.stats.declined, 1);
    assert_eq!(offers_in(&o), vec![(AgentId::from("a2"), t)]);
    assert!(o.notices.iter().any(|n| matches!(n,
        Notice::ToAgent { agent_id, notice: AgentNotice::OfferEnded { offer_id: id, reason: OfferEnd::Declined, .. } }
            if &*agent_id.0 == "a1" && *id == offer_id)));
    assert_eq!(w.status("a1"), Status::NotReady);
    // Like a decline: a1 is excluded from the task for the re-offer time.
    assert!(
        w.book
            .task(t)
            .is_some_and(|t| t.excluded.contains(&AgentId::from("a1")))
    );
    let o = w.run(
        Command::Accept {
            agent: "a1".into(),
            offer_id,
        },
        at_ms(4),
    );
    assert_eq!(
        o.reply.err(),
        Some(HubError::OfferEnded(OfferEnd::Declined))
    );
}

#[test]
fn a_pending_not_ready_takes_no_offers_and_supervisors_see_it() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    w.create("support", Channel::Chat, 0, &[], at_ms(1));
    let first = w.accept("a1", at_ms(2));
    let o = w.run(
        Command::SetNotReady {
            agent: "a1".into(),
            reason: "lunch".into(),
        },
        at_ms(3),
    );
    assert!(o.notices.iter().any(|n| matches!(n,
        Notice::AgentChanged(s) if &*s.agent_id.0 == "a1" && s.pending_not_ready.as_deref() == Some("lunch"))));
    let (second, o) = w.create("support", Channel::Chat, 0, &[], at_ms(4));
    assert!(
        offers_in(&o).is_empty(),
        "a pending Not Ready takes no new work"
    );
    let o = w.run(
        Command::Complete {
            agent: "a1".into(),
            task_id: first,
            wrap_up_code: None,
        },
        at_ms(5),
    );
    assert!(offers_in(&o).is_empty());
    let v = w.book.agent_view(&AgentId::from("a1")).expect("a1");
    assert_eq!(
        (v.status, v.reason.as_deref(), v.pending_not_ready),
        (Status::NotReady, Some("lunch"), None)
    );
    assert_eq!(w.task_state(second), TaskState::Queued);
}

#[test]
fn a_dropped_desktops_offer_goes_to_the_next_agent_after_the_away_time() {
    // routing.away_offer_secs is 3 s by default; the grace here is 30 s.
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    w.login_ready("a2", at_ms(1));
    w.create("support", Channel::Chat, 0, &[], at_ms(2));
    let chat = w.accept("a1", at_ms(3));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(4));
    // The first accept made a1 the most recently idle: a2 gets the second chat.
    assert_eq!(w.offer_of("a2").map(|o| o.1), Some(t));
    let conn = w.conns[&AgentId::from("a2")];
    w.run(
        Command::Disconnect {
            agent: "a2".into(),
            conn,
        },
        at_ms(5),
    )
    .reply
    .expect("drop");
    assert!(offers_in(&w.book.expire_due(at_ms(5 + 3_000 - 1))).is_empty());
    let o = w.book.expire_due(at_ms(5 + 3_000));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a1"), t)]);
    assert!(o.notices.iter().any(|n| matches!(n,
        Notice::ToAgent { agent_id, notice: AgentNotice::OfferEnded { reason: OfferEnd::Withdrawn, .. } } if &*agent_id.0 == "a2")));
    // a2 is still in its grace: Ready, away, no offer.
    let v = w.book.agent_view(&AgentId::from("a2")).expect("a2");
    assert_eq!((v.status, v.connected), (Status::Ready, false));
    // a1 drops too, with a chat in progress and the offer pending: the offer goes after
    // the away time, the chat stays for the grace.
    let conn = w.conns[&AgentId::from("a1")];
    w.run(
        Command::Disconnect {
            agent: "a1".into(),
            conn,
        },
        at_ms(4_000),
    );
    w.book.expire_due(at_ms(7_000));
    let v = w.book.agent_view(&AgentId::from("a1")).expect("a1");
    assert!(v.offer.is_none());
    assert_eq!(v.in_progress.first().map(|t| t.task_id), Some(chat));
    assert_eq!(
        w.task_state(t),
        TaskState::Queued,
        "nobody connected to take it"
    );
    // a2 comes back within its grace: not a refuser, it gets the task.
    let p = w.profile("a2");
    let o = w.run(
        Command::Connect {
            profile: p,
            conn: ConnId::new(),
            node: "n1".into(),
        },
        at_ms(8_000),
    );
    assert!(matches!(o.reply, Ok(Reply::Agent { resumed: true, .. })));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a2"), t)]);
}

fn transfer(w: &mut World, task_id: TaskId, to: TransferTo, by: Actor, now: Ts) -> Outcome {
    w.run(Command::Transfer { task_id, to, by }, now)
}

fn agent_actor(id: &str) -> Actor {
    Actor::agent(&AgentId::from(id))
}

fn to_queue(q: &str, priority: Option<i64>, head: bool) -> TransferTo {
    TransferTo::Queue {
        queue: QueueId::from(q),
        priority,
        skills: None,
        head,
    }
}

#[test]
fn a_blind_transfer_keeps_the_task_its_age_and_place_and_the_head_option_jumps_the_queue() {
    let mut w = World::new();
    // Three chats wait in vip (a2 is its only agent, and is not there yet).
    let (v1, _) = w.create("vip", Channel::Chat, 5, &[], at_ms(0));
    let (v2, _) = w.create("vip", Channel::Chat, 0, &[], at_ms(1));
    // a1 takes a support chat and transfers it to vip.
    w.login_ready("a1", at_ms(2));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(3));
    w.accept("a1", at_ms(4));
    let o = transfer(
        &mut w,
        t,
        to_queue("vip", None, false),
        agent_actor("a1"),
        at_ms(5),
    );
    let task = match o.reply {
        Ok(Reply::Task(task)) => task,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (task.task_id, task.created_at, task.priority),
        (t, at_ms(3), 0)
    );
    assert_eq!(task.queue, QueueId::from("vip"));
    assert_eq!(task.transfers, 1);
    assert_eq!(task.state, TaskState::Queued);
    assert!(
        w.book
            .agent_view(&AgentId::from("a1"))
            .is_some_and(|v| v.in_progress.is_empty())
    );
    // Its place is by priority, then arrival: v1 (priority 5), v2 (arrived at 1 ms),
    // then t (arrived at 3 ms, in support: its age came along).
    w.login_ready("a2", at_ms(6));
    let mut order = vec![];
    for i in 0..3 {
        let got = w.accept("a2", at_ms(7 + i));
        order.push(got);
    }
    assert_eq!(order, vec![v1, v2, t]);

    // With head: ahead of a higher priority.
    let mut w = World::new();
    let (v1, _) = w.create("vip", Channel::Chat, 9, &[], at_ms(0));
    w.login_ready("a1", at_ms(1));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(2));
    w.accept("a1", at_ms(3));
    transfer(
        &mut w,
        t,
        to_queue("vip", None, true),
        agent_actor("a1"),
        at_ms(4),
    )
    .reply
    .expect("transfer");
    w.login_ready("a2", at_ms(5));
    assert_eq!(w.offer_of("a2").map(|o| o.1), Some(t));
    w.accept("a2", at_ms(6));
    assert_eq!(w.offer_of("a2").map(|o| o.1), Some(v1));
}

#[test]
fn a_transfer_to_an_agent_is_an_offer_and_comes_back_to_the_queue_when_refused() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Voice, 0, &[], at_ms(1));
    w.accept("a1", at_ms(2));
    w.login_ready("a3", at_ms(3));
    let o = transfer(
        &mut w,
        t,
        TransferTo::Agent(AgentId::from("a3")),
        agent_actor("a1"),
        at_ms(4),
    );
    assert_eq!(offers_in(&o), vec![(AgentId::from("a3"), t)]);
    let o = w.decline("a3", at_ms(5));
    // Back in its queue: a1 let it go and a3 declined it, nobody else: it waits, and
    // a1 is told.
    assert!(offers_in(&o).is_empty());
    assert_eq!(w.task_state(t), TaskState::Queued);
    assert!(o.notices.iter().any(|n| matches!(n,
        Notice::ToAgent { agent_id, notice: AgentNotice::TransferEnded { result: TransferResult::Declined, .. } } if &*agent_id.0 == "a1")));
    // A supervisor sends it to a2, who is not there: unavailable, and it stays queued.
    let sup = Actor {
        id: "boss".into(),
        role: crate::auth::Role::Supervisor,
    };
    let o = transfer(
        &mut w,
        t,
        TransferTo::Agent(AgentId::from("a2")),
        sup.clone(),
        at_ms(6),
    );
    assert!(o.reply.is_ok());
    assert_eq!(w.task_state(t), TaskState::Queued);
    // a2 comes: the queue gives it the task as usual; then it is transferred once more
    // to a3, who accepts.
    w.login_ready("a2", at_ms(7));
    assert_eq!(w.offer_of("a2").map(|o| o.1), Some(t));
    let o = transfer(
        &mut w,
        t,
        TransferTo::Agent(AgentId::from("a1")),
        sup.clone(),
        at_ms(8),
    );
    // The offer to a2 was withdrawn; a1 is on no call now and Ready: offered.
    assert_eq!(offers_in(&o), vec![(AgentId::from("a1"), t)]);
    w.accept("a1", at_ms(9));
    assert!(matches!(w.task_state(t), TaskState::Assigned { .. }));
    // The cap: 5 transfers by default; this task has had 3.
    for i in 0..2 {
        transfer(
            &mut w,
            t,
            to_queue("support", None, false),
            sup.clone(),
            at_ms(10 + i),
        )
        .reply
        .expect("under the cap");
    }
    let o = transfer(&mut w, t, to_queue("support", None, false), sup, at_ms(20));
    assert_eq!(o.reply.err(), Some(HubError::TransferLimit(5)));
}

#[test]
fn an_agent_transfers_only_its_own_tasks_in_progress() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    // Offered, not accepted: not the agent's to transfer.
    let o = transfer(
        &mut w,
        t,
        to_queue("vip", None, false),
        agent_actor("a1"),
        at_ms(2),
    );
    assert!(matches!(o.reply, Err(HubError::Transition(_))));
    w.accept("a1", at_ms(3));
    let o = transfer(
        &mut w,
        t,
        to_queue("vip", None, false),
        agent_actor("a2"),
        at_ms(4),
    );
    assert!(matches!(o.reply, Err(HubError::Transition(_))));
    let o = transfer(
        &mut w,
        t,
        to_queue("nope", None, false),
        agent_actor("a1"),
        at_ms(5),
    );
    assert!(matches!(o.reply, Err(HubError::UnknownQueue(_))));
    assert!(
        matches!(w.task_state(t), TaskState::Assigned { .. }),
        "nothing changed"
    );
}

const ESCALATING: &str = r#"
[routing]
wrap_up_secs = 0

[[queues]]
id = "support"
escalation = { priority_every_secs = 10, priority_step = 2, priority_max = 5, relax_every_secs = 30, relax_levels = 3, overflow_after_secs = 100, overflow_queue = "overflow" }

[[queues]]
id = "overflow"
skills = ["any"]

[[agents]]
id = "junior"
skill_levels = { en = 4 }
queues = ["support"]

[[agents]]
id = "senior"
skills = ["en"]
queues = ["support"]

[[agents]]
id = "backup"
skills = ["any", "en"]
queues = ["overflow"]
"#;

fn create_levels(w: &mut World, priority: i64, levels: &[(&str, u8)], now: Ts) -> TaskId {
    let o = w.run(
        Command::CreateTask(Box::new(NewTask {
            channel: Channel::Chat,
            queue: "support".into(),
            priority,
            skills: vec![],
            skill_levels: levels.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
            customer: CustomerIdentity::default(),
            attributes: Default::default(),
            idempotency_key: None,
        })),
        now,
    );
    match o.reply {
        Ok(Reply::Created { task, .. }) => task.task_id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn priority_rises_a_step_every_period_up_to_the_cap_and_reorders_the_queue() {
    let mut w = World::with(ESCALATING);
    let old = create_levels(&mut w, 0, &[], at_ms(0));
    let new = create_levels(&mut w, 3, &[], at_ms(5_000));
    let prio = |w: &World, t| w.book.task(t).map(|t| t.priority);
    w.book.expire_due(at_ms(9_999));
    assert_eq!(prio(&w, old), Some(0));
    w.book.expire_due(at_ms(10_000));
    assert_eq!(prio(&w, old), Some(2));
    w.book.expire_due(at_ms(20_000));
    assert_eq!(prio(&w, old), Some(4));
    // new: 3 at 5 s, 5 (the cap) at 15 s, and no higher.
    w.book.expire_due(at_ms(30_000));
    assert_eq!((prio(&w, old), prio(&w, new)), (Some(5), Some(5)));
    w.book.expire_due(at_ms(90_000));
    assert_eq!((prio(&w, old), prio(&w, new)), (Some(5), Some(5)));
    // Equal priority now: the older comes first, though it started lower.
    w.login_ready("senior", at_ms(90_001));
    assert_eq!(w.offer_of("senior").map(|o| o.1), Some(old));
}

#[test]
fn required_levels_relax_after_a_wait_and_plain_skills_still_work() {
    let mut w = World::with(ESCALATING);
    w.login_ready("junior", at_ms(0));
    // "At least 7" in English: junior (level 4) cannot take it.
    let t = create_levels(&mut w, 0, &[("en", 7)], at_ms(1));
    assert_eq!(w.task_state(t), TaskState::Queued);
    assert!(w.offer_of("junior").is_none());
    // After 30 s: at least 4, and junior gets it in the same step.
    let o = w.book.expire_due(at_ms(30_001));
    assert_eq!(offers_in(&o), vec![(AgentId::from("junior"), t)]);
    assert_eq!(
        w.book.task(t).map(|t| t.skill_levels.clone()),
        Some([("en".to_string(), 4)].into_iter().collect())
    );
    // A plain skill on an agent counts as level 10; a plain skill on a task as any
    // level: senior takes both kinds.
    w.login_ready("senior", at_ms(30_002));
    let t2 = create_levels(&mut w, 0, &[("en", 10)], at_ms(30_003));
    assert_eq!(w.offer_of("senior").map(|o| o.1), Some(t2));
}

#[test]
fn a_task_waiting_past_the_overflow_time_moves_to_the_overflow_queue_in_its_place() {
    let mut w = World::with(ESCALATING);
    // Nobody in support is connected.
    let t = w.create("support", Channel::Chat, 0, &["en"], at_ms(0)).0;
    w.login_ready("backup", at_ms(1));
    assert!(
        w.offer_of("backup").is_none(),
        "backup serves overflow only"
    );
    let o = w.book.expire_due(at_ms(100_000));
    assert_eq!(offers_in(&o), vec![(AgentId::from("backup"), t)]);
    let task = w.book.task(t).expect("task").clone();
    assert_eq!(task.queue, QueueId::from("overflow"));
    assert_eq!(task.created_at, at_ms(0), "its age came along");
    assert_eq!(task.skills, vec!["any".to_string(), "en".to_string()]);
    // Accepted tasks escalate no more: the timers find nothing to do.
    w.accept("backup", at_ms(100_001));
    let before = w.book.task(t).map(|t| t.priority);
    w.book.expire_due(at_ms(500_000));
    assert_eq!(w.book.task(t).map(|t| t.priority), before);
}

#[test]
fn a_snapshot_keeps_refusals_heads_and_transfers_in_flight() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t1, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    w.decline("a1", at_ms(2));
    // a1's re-offer time passes: a1 is `passed` for t1, is offered it again, takes it.
    w.book.expire_due(at_ms(2 + 30_000));
    assert_eq!(w.accept("a1", at_ms(30_003)), t1);
    // A transfer to an agent in flight, and a task at the head of vip.
    w.login_ready("a2", at_ms(30_004));
    w.login_ready("a3", at_ms(30_005));
    let (t2, _) = w.create("vip", Channel::Voice, 0, &[], at_ms(30_006));
    w.accept("a2", at_ms(30_007));
    transfer(
        &mut w,
        t2,
        TransferTo::Agent(AgentId::from("a3")),
        agent_actor("a2"),
        at_ms(30_008),
    )
    .reply
    .expect("to a3");
    let (t3, _) = w.create("vip", Channel::Chat, 0, &[], at_ms(30_009));
    w.accept("a2", at_ms(30_010));
    transfer(
        &mut w,
        t3,
        to_queue("vip", None, true),
        agent_actor("a2"),
        at_ms(30_011),
    )
    .reply
    .expect("to the head");
    let b = &w.book;
    assert!(b.task(t1).is_some_and(|t| !t.passed.is_empty()));
    assert!(b.task(t2).is_some_and(|t| t.handoff.is_some()));
    assert!(
        b.task(t3)
            .is_some_and(|t| t.head && t.state == TaskState::Queued)
    );
    let bytes = rmp_serde::to_vec_named(&b.snapshot_state()).expect("encode");
    let snap: BookSnapshot = rmp_serde::from_slice(&bytes).expect("decode");
    // The borrowed form writes what the owned form reads and writes, byte for byte.
    let owned = rmp_serde::to_vec_named(&snap).expect("encode");
    assert!(
        owned == bytes,
        "the owned and the borrowed snapshot encode differently"
    );
    let restored = Book::restore(b.rules().clone(), snap);
    let again = rmp_serde::to_vec_named(&restored.snapshot_state()).expect("encode");
    assert!(again == bytes, "the restored book encodes differently");
    assert!(restored.task(t2).is_some_and(|t| t.handoff.is_some()));
    assert!(restored.task(t3).is_some_and(|t| t.head));
    assert!(restored.task(t1).is_some_and(|t| !t.passed.is_empty()));
}

#[test]
fn a_consult_keeps_the_task_with_the_first_agent_until_the_accept_then_hands_over_in_one_step() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Voice, 0, &[], at_ms(1));
    w.accept("a1", at_ms(2));
    w.login_ready("a2", at_ms(3));
    let consult = |w: &mut World, now| {
        w.run(
            Command::Consult {
                agent: "a1".into(),
                task_id: t,
                to: "a2".into(),
            },
            now,
        )
    };
    let o = consult(&mut w, at_ms(4));
    assert!(o.reply.is_ok(), "{:?}", o.reply);
    assert_eq!(offers_in(&o), vec![(AgentId::from("a2"), t)]);
    assert!(
        matches!(&w.task_state(t), TaskState::Assigned { agent_id, .. } if &*agent_id.0 == "a1")
    );
    // One at a time.
    assert!(matches!(
        consult(&mut w, at_ms(5)).reply,
        Err(HubError::Transition(agent::TransitionError::OfferPending))
    ));
    // a2 declines: the task stays with a1, who is told.
    let o = w.decline("a2", at_ms(6));
    assert!(o.notices.iter().any(|n| matches!(n,
        Notice::ToAgent { agent_id, notice: AgentNotice::TransferEnded { result: TransferResult::Declined, .. } } if &*agent_id.0 == "a1")));
    assert!(
        matches!(&w.task_state(t), TaskState::Assigned { agent_id, .. } if &*agent_id.0 == "a1")
    );
    assert_eq!(w.status("a1"), Status::Busy);
    // Asked again, taken back by a1.
    consult(&mut w, at_ms(7)).reply.expect("again");
    let o = w.run(
        Command::CancelConsult {
            agent: "a1".into(),
            task_id: t,
        },
        at_ms(8),
    );
    assert!(o.notices.iter().any(|n| matches!(n,
        Notice::ToAgent { agent_id, notice: AgentNotice::OfferEnded { reason: OfferEnd::Withdrawn, .. } } if &*agent_id.0 == "a2")));
    assert_eq!(w.status("a2"), Status::Ready);
    // Asked once more and accepted: one step.
    consult(&mut w, at_ms(9)).reply.expect("once more");
    let o = w.run(
        Command::Accept {
            agent: "a2".into(),
            offer_id: w.offer_of("a2").expect("offer").0,
        },
        at_ms(10),
    );
    assert!(o.reply.is_ok(), "{:?}", o.reply);
    assert!(
        matches!(&w.task_state(t), TaskState::Assigned { agent_id, .. } if &*agent_id.0 == "a2")
    );
    assert_eq!(w.status("a1"), Status::Ready);
    assert_eq!(w.status("a2"), Status::Busy);
    assert!(o.notices.iter().any(|n| matches!(n,
        Notice::ToAgent { agent_id, notice: AgentNotice::TransferEnded { result: TransferResult::Accepted, .. } } if &*agent_id.0 == "a1")));
    // The context hears of the handover before the accept.
    let kinds: Vec<&str> = o
        .task_events
        .iter()
        .map(|e| match e {
            TaskEvent::Transferred { .. } => "transferred",
            TaskEvent::Assigned { .. } => "assigned",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, vec!["transferred", "assigned"]);
    assert_eq!(w.book.task(t).map(|t| t.transfers), Some(3));
}

#[test]
fn completing_a_task_with_a_consult_in_flight_withdraws_the_consult() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Voice, 0, &[], at_ms(1));
    w.accept("a1", at_ms(2));
    w.login_ready("a2", at_ms(3));
    w.run(
        Command::Consult {
            agent: "a1".into(),
            task_id: t,
            to: "a2".into(),
        },
        at_ms(4),
    )
    .reply
    .expect("consult");
    let o = w.run(
        Command::Complete {
            agent: "a1".into(),
            task_id: t,
            wrap_up_code: None,
        },
        at_ms(5),
    );
    assert!(o.reply.is_ok());
    assert!(o.notices.iter().any(|n| matches!(n,
        Notice::ToAgent { agent_id, notice: AgentNotice::OfferEnded { reason: OfferEnd::Withdrawn, .. } } if &*agent_id.0 == "a2")));
    assert_eq!(w.status("a2"), Status::Ready);
    check_invariants(&w.book);
}

#[test]
fn a_lost_nodes_offers_go_on_at_once_and_its_tasks_keep_the_grace() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    w.create("support", Channel::Chat, 0, &[], at_ms(1));
    let chat = w.accept("a1", at_ms(2));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(3));
    assert_eq!(w.offer_of("a1").map(|o| o.1), Some(t));
    w.run(Command::NodeLost { node: "n1".into() }, at_ms(4))
        .reply
        .expect("lost");
    // Due at once: the first tick withdraws it (a2 is on another node, Ready).
    w.login_ready("a2", at_ms(4));
    let o = w.book.expire_due(at_ms(4));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a2"), t)]);
    let v = w.book.agent_view(&AgentId::from("a1")).expect("a1");
    assert_eq!(v.in_progress.first().map(|t| t.task_id), Some(chat));
    assert!(!v.connected);
}

#[test]
fn a_task_back_from_an_agent_who_went_offline_escalates_again() {
    let mut w = World::with(ESCALATING);
    w.login_ready("senior", at_ms(0));
    let t = create_levels(&mut w, 0, &[], at_ms(1));
    w.accept("senior", at_ms(2));
    w.run(
        Command::Logout {
            agent: "senior".into(),
        },
        at_ms(3),
    )
    .reply
    .expect("logout");
    assert_eq!(w.task_state(t), TaskState::Queued);
    // Its priority rises again, 10 s after it started waiting again.
    w.book.expire_due(at_ms(3 + 10_000 - 1));
    assert_eq!(w.book.task(t).map(|t| t.priority), Some(0));
    w.book.expire_due(at_ms(3 + 10_000));
    assert_eq!(w.book.task(t).map(|t| t.priority), Some(2));
}

#[test]
fn a_task_an_agent_transferred_to_an_agent_who_cannot_take_it_escalates_again() {
    let mut w = World::with(ESCALATING);
    w.login_ready("senior", at_ms(0));
    let t = create_levels(&mut w, 0, &[], at_ms(1));
    w.accept("senior", at_ms(2));
    // Its first wait's timers come due while the agent has it: they end there.
    w.book.expire_due(at_ms(20_000));
    assert_eq!(w.book.task(t).map(|t| t.priority), Some(0));
    // Handed to an agent who is not there: it waits in its queue again...
    let o = transfer(
        &mut w,
        t,
        TransferTo::Agent(AgentId::from("junior")),
        agent_actor("senior"),
        at_ms(20_001),
    );
    o.reply.expect("transfer");
    assert_eq!(w.task_state(t), TaskState::Queued);
    // ...and its priority rises again, 10 s after.
    w.book.expire_due(at_ms(20_001 + 10_000 - 1));
    assert_eq!(w.book.task(t).map(|t| t.priority), Some(0));
    w.book.expire_due(at_ms(20_001 + 10_000));
    assert_eq!(w.book.task(t).map(|t| t.priority), Some(2));
}

mod events;

/// An agent a transfer named although it had refused the task, refusing it again: its
/// re-offer time runs from the second refusal. Before, the second refusal armed nothing
/// and the timer of the first gave the task back 20 s early.
#[test]
fn a_refusal_while_still_excluded_restarts_the_reoffer_time() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    w.decline("a1", at_ms(2));
    let sup = Actor {
        id: "boss".into(),
        role: crate::auth::Role::Supervisor,
    };
    let o = transfer(
        &mut w,
        t,
        TransferTo::Agent(AgentId::from("a1")),
        sup,
        at_ms(10_000),
    );
    assert_eq!(offers_in(&o), vec![(AgentId::from("a1"), t)]);
    w.decline("a1", at_ms(10_001));
    // The same in a book restored from a snapshot: when the exclusion ends is derived
    // from the timers.
    let bytes = rmp_serde::to_vec_named(&w.book.snapshot_state()).expect("encode");
    let snap: BookSnapshot = rmp_serde::from_slice(&bytes).expect("decode");
    let mut restored = Book::restore(w.book.rules().clone(), snap);
    for book in [&mut w.book, &mut restored] {
        let o = book.expire_due(at_ms(30_002));
        assert!(offers_in(&o).is_empty(), "a1 refused it 20 s ago");
        assert_eq!(
            book.task(t).map(|t| t.state.clone()),
            Some(TaskState::Queued)
        );
        let o = book.expire_due(at_ms(40_000));
        assert!(offers_in(&o).is_empty());
        let o = book.expire_due(at_ms(40_001));
        assert_eq!(offers_in(&o), vec![(AgentId::from("a1"), t)]);
    }
}

/// An agent that took a transferred task it had refused, then transferred it away: it
/// is not given it back before the re-offer time from its transfer.
#[test]
fn a_transfer_away_while_still_excluded_restarts_the_reoffer_time() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    w.decline("a1", at_ms(2));
    let sup = Actor {
        id: "boss".into(),
        role: crate::auth::Role::Supervisor,
    };
    transfer(
        &mut w,
        t,
        TransferTo::Agent(AgentId::from("a1")),
        sup,
        at_ms(10_000),
    );
    w.accept("a1", at_ms(10_001));
    transfer(
        &mut w,
        t,
        to_queue("support", None, false),
        agent_actor("a1"),
        at_ms(20_000),
    )
    .reply
    .expect("transferred");
    let o = w.book.expire_due(at_ms(30_002));
    assert!(offers_in(&o).is_empty(), "a1 let it go 10 s ago");
    let o = w.book.expire_due(at_ms(50_000));
    assert_eq!(offers_in(&o), vec![(AgentId::from("a1"), t)]);
}

#[test]
fn a_wrap_up_timer_left_from_an_earlier_wrap_up_of_the_task_does_not_end_a_later_one() {
    let mut w = World::with(&CONFIG.replace("wrap_up_secs = 0", "wrap_up_secs = 30"));
    let consult = |w: &mut World, from: &str, to: &str, t: TaskId, now| {
        w.run(
            Command::Consult {
                agent: from.into(),
                task_id: t,
                to: to.into(),
            },
            now,
        )
        .reply
        .expect("consult");
    };
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    w.accept("a1", at_ms(2));
    w.login_ready("a2", at_ms(3));
    // a2 takes it over: a1's wrap-up runs to 30.005 s; a1 ends it early.
    consult(&mut w, "a1", "a2", t, at_ms(4));
    w.accept("a2", at_ms(5));
    assert_eq!(w.status("a1"), Status::WrapUp);
    w.run(Command::SetReady { agent: "a1".into() }, at_ms(6))
        .reply
        .expect("ready");
    assert_eq!(w.status("a1"), Status::Ready);
    // The task comes back to a1, who completes it: a wrap-up to 30.010 s.
    consult(&mut w, "a2", "a1", t, at_ms(7));
    w.accept("a1", at_ms(8));
    w.run(
        Command::Complete {
            agent: "a1".into(),
            task_id: t,
            wrap_up_code: None,
        },
        at_ms(10),
    )
    .reply
    .expect("complete");
    // The first wrap-up's timer fires: it is not this wrap-up's.
    w.book.expire_due(at_ms(30_005));
    assert_eq!(w.status("a1"), Status::WrapUp);
    w.book.expire_due(at_ms(30_010));
    assert_eq!(w.status("a1"), Status::Ready);
    check_invariants(&w.book);
}

#[test]
fn tasks_freed_in_one_step_go_first_by_priority_and_arrival_not_in_the_order_let_go() {
    let mut w = World::with(
        r#"
[routing]
wrap_up_secs = 0
capacity = { chat = 2 }

[[queues]]
id = "support"

[[agents]]
id = "a1"
queues = ["support"]

[[agents]]
id = "b"
queues = ["support"]
capacity = { chat = 1 }
"#,
    );
    w.login_ready("a1", at_ms(0));
    let (c1, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    w.accept("a1", at_ms(2));
    let (c2, _) = w.create("support", Channel::Chat, 0, &[], at_ms(3));
    assert_eq!(w.offer_of("a1").map(|o| o.1), Some(c2));
    w.login_ready("b", at_ms(4));
    // a1 leaves: its offer (c2) is let go first, then its chat (c1). b has room for one:
    // the older, c1.
    let o = w.run(Command::Logout { agent: "a1".into() }, at_ms(5));
    assert!(o.reply.is_ok(), "{:?}", o.reply);
    assert_eq!(offers_in(&o), vec![(AgentId::from("b"), c1)]);
    assert_eq!(w.task_state(c2), TaskState::Queued);
    check_invariants(&w.book);
}

#[test]
fn the_head_of_one_queue_is_not_carried_to_the_next_transfer() {
    let mut w = World::new();
    // An older, higher-priority chat waits in vip (a2, its only agent, is not there).
    let (v1, _) = w.create("vip", Channel::Chat, 9, &[], at_ms(0));
    // A support chat is sent to the head of support, then on to vip without the head.
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    transfer(&mut w, t, to_queue("support", None, true), crm(), at_ms(2))
        .reply
        .expect("to the head of support");
    transfer(&mut w, t, to_queue("vip", None, false), crm(), at_ms(3))
        .reply
        .expect("to vip");
    // In vip it waits in its place: after v1.
    w.login_ready("a2", at_ms(4));
    assert_eq!(w.offer_of("a2").map(|o| o.1), Some(v1));
    check_invariants(&w.book);
}

#[test]
fn a_consults_offer_withdrawn_by_a_cancel_or_a_transfer_says_so() {
    let withdrawn = |o: &Outcome| -> Vec<WithdrawReason> {
        o.events
            .iter()
            .filter_map(|e| match e {
                EventData::OfferWithdrawn { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    };
    for (cancel, why) in [
        (true, WithdrawReason::Cancelled),
        (false, WithdrawReason::Transferred),
    ] {
        let mut w = World::new();
        w.login_ready("a1", at_ms(0));
        let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
        w.accept("a1", at_ms(2));
        w.login_ready("a2", at_ms(3));
        w.run(
            Command::Consult {
                agent: "a1".into(),
                task_id: t,
                to: "a2".into(),
            },
            at_ms(4),
        )
        .reply
        .expect("consult");
        let o = if cancel {
            w.run(
                Command::CancelTask {
                    task_id: t,
                    reason: None,
                    by: crm(),
                },
                at_ms(5),
            )
        } else {
            transfer(&mut w, t, to_queue("vip", None, false), crm(), at_ms(5))
        };
        assert!(o.reply.is_ok(), "{:?}", o.reply);
        assert_eq!(withdrawn(&o), vec![why]);
    }
    // The asking agent taking it back is the consult's own end.
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    w.accept("a1", at_ms(2));
    w.login_ready("a2", at_ms(3));
    w.run(
        Command::Consult {
            agent: "a1".into(),
            task_id: t,
            to: "a2".into(),
        },
        at_ms(4),
    )
    .reply
    .expect("consult");
    let o = w.run(
        Command::CancelConsult {
            agent: "a1".into(),
            task_id: t,
        },
        at_ms(5),
    );
    assert_eq!(withdrawn(&o), vec![WithdrawReason::ConsultEnded]);
}

#[test]
fn a_task_ringing_at_its_overflow_time_overflows_when_the_offer_ends_not_a_period_later() {
    let mut w = World::with(ESCALATING);
    let t = create_levels(&mut w, 0, &[], at_ms(0));
    // Offered at 90 s (its deadline 105 s): still ringing at the overflow time, 100 s.
    w.login_ready("senior", at_ms(90_000));
    assert_eq!(w.offer_of("senior").map(|o| o.1), Some(t));
    w.login_ready("backup", at_ms(95_000));
    w.book.expire_due(at_ms(100_000));
    assert_eq!(
        w.book.task(t).map(|t| t.queue.clone()),
        Some(QueueId::from("support"))
    );
    // The offer expires: the task is back in support, whose only agent just missed it,
    // past its overflow time. It moves at once, to the Ready agent of the overflow queue.
    w.book.expire_due(at_ms(105_000));
    w.book.expire_due(at_ms(105_001));
    assert_eq!(
        w.book.task(t).map(|t| t.queue.clone()),
        Some(QueueId::from("overflow"))
    );
    assert_eq!(w.offer_of("backup").map(|o| o.1), Some(t));
    check_invariants(&w.book);
}

#[test]
fn a_head_of_queue_task_is_first_in_its_own_queue_only() {
    let mut w = World::new();
    let (v, _) = w.create("vip", Channel::Chat, 1000, &[], at_ms(1));
    let (s, _) = w.create("support", Channel::Chat, 0, &[], at_ms(2));
    transfer(&mut w, s, to_queue("support", None, true), crm(), at_ms(3))
        .reply
        .expect("to the head of support");
    // a2 serves both: the vip task's priority wins over a head of another queue.
    w.login_ready("a2", at_ms(4));
    assert_eq!(w.offer_of("a2").map(|o| o.1), Some(v));
    // In its own queue the head is first, priority or not.
    let (high, _) = w.create("support", Channel::Chat, 900, &[], at_ms(5));
    w.login_ready("a1", at_ms(6));
    assert_eq!(w.offer_of("a1").map(|o| o.1), Some(s));
    let _ = high;
    check_invariants(&w.book);
}

#[test]
fn a_transfer_into_its_own_queue_starts_its_escalation_again() {
    let mut w = World::with(ESCALATING);
    let t = create_levels(&mut w, 0, &[], at_ms(0));
    let prio = |w: &World| w.book.task(t).map(|t| t.priority);
    let queue = |w: &World| w.book.task(t).map(|t| t.queue.to_string());
    // At the cap after 30 s: its priority timer arms no more.
    w.book.expire_due(at_ms(30_000));
    assert_eq!(prio(&w), Some(5));
    transfer(
        &mut w,
        t,
        to_queue("support", Some(0), false),
        crm(),
        at_ms(35_000),
    )
    .reply
    .expect("transfer");
    assert_eq!(prio(&w), Some(0));
    // A period after the transfer it rises again.
    w.book.expire_due(at_ms(45_000));
    assert_eq!(prio(&w), Some(2));
    // It overflows 100 s after the transfer, not 100 s after it was created.
    w.book.expire_due(at_ms(100_000));
    assert_eq!(queue(&w).as_deref(), Some("support"));
    w.book.expire_due(at_ms(135_000));
    assert_eq!(queue(&w).as_deref(), Some("overflow"));
}

#[test]
fn transfer_ended_goes_to_the_agent_who_made_the_transfer_only() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Voice, 0, &[], at_ms(1));
    w.accept("a1", at_ms(2));
    w.login_ready("a3", at_ms(3));
    // An integration moves a1's call to a3: a1 is told it went, not how it ended.
    let o = transfer(
        &mut w,
        t,
        TransferTo::Agent(AgentId::from("a3")),
        crm(),
        at_ms(4),
    );
    assert!(o.notices.iter().any(|n| matches!(n,
        Notice::ToAgent { agent_id, notice: AgentNotice::TaskTransferred { .. } } if &*agent_id.0 == "a1")));
    let o = w.decline("a3", at_ms(5));
    assert!(
        !o.notices.iter().any(|n| matches!(
            n,
            Notice::ToAgent {
                notice: AgentNotice::TransferEnded { .. },
                ..
            }
        )),
        "{:?}",
        o.notices
    );
}
