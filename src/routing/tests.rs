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
fn an_expired_task_keeps_its_place_and_never_returns_to_the_agent_who_missed_it() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (first, _) = w.create("support", Channel::Chat, 0, &[], at_ms(1));
    let (second, _) = w.create("support", Channel::Voice, 0, &[], at_ms(2));
    let o = w.book.expire_due(at_ms(1 + 15_000));
    assert!(offers_in(&o).is_empty(), "no other agent");
    // a1 comes back: it gets the second task, not the one it missed.
    w.run(Command::SetReady { agent: "a1".into() }, at_ms(20_000));
    assert_eq!(w.offer_of("a1").map(|o| o.1), Some(second));
    // A new agent gets the first task, which is still ahead of later arrivals.
    let (_third, _) = w.create("support", Channel::Chat, 0, &[], at_ms(20_001));
    w.login_ready("a2", at_ms(20_002));
    assert_eq!(w.offer_of("a2").map(|o| o.1), Some(first));
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
    for step in 1..2000u64 {
        let now = at_ms(step * 100);
        let o = match rnd(6) {
            0 | 1 => {
                let ch = Channel::ALL[rnd(3) as usize];
                let q = if rnd(2) == 0 { "support" } else { "vip" };
                Some(
                    w.create(q, ch, rnd(3) as i64, skills[rnd(3) as usize], now)
                        .1,
                )
            }
            2 => {
                let a = agents[rnd(3) as usize];
                if w.offer_of(a).is_some() {
                    w.accept(a, now);
                    accepts += 1;
                }
                None
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
        offers > 50 && accepts > 100 && completes > 100 && expiries > 0,
        "the walk did too little: {offers} offers, {accepts} accepts, {completes} completes, {expiries} expiries"
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
            assert!(matches!(
                b.tasks[&o.task_id].state,
                TaskState::Offered { .. }
            ));
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
