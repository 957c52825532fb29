//! The fold on scripted events, with exact expected figures. The books' own events
//! through real decisions are tested in `state::tests` and over the wire in
//! `tests/stats.rs`.

use super::report::{StatsQuery, StatsReport, Window};
use super::*;
use crate::config::Config;
use crate::events::{EventData, TaskPhase, WithdrawReason};
use crate::routing::Book;

const CONFIG: &str = r#"
[stats]
timezone = "Europe/Rome"
short_abandon_secs = 5

[[queues]]
id = "support"
service_level_secs = 20

[[queues]]
id = "sales"
service_level_secs = 30
service_level_target = 90

[[agents]]
id = "a1"
name = "Ana"
queues = ["support", "sales"]
"#;

/// 2026-11-26T10:00:00Z (11:00 in Rome).
const T0: u64 = 1_795_687_200_000_000;

fn at(rfc: &str) -> Ts {
    let t = chrono::DateTime::parse_from_rfc3339(rfc).expect("a time");
    Ts(t.timestamp_micros() as u64)
}

fn secs(s: f64) -> u64 {
    (s * 1e6).round() as u64
}

fn setup() -> (Statistics, Book) {
    let cfg = Config::parse(CONFIG).expect("valid");
    let rules = Arc::new(cfg.rules());
    (
        Statistics::new(rules.stats.clone()),
        Book::new(rules, Ts(T0)),
    )
}

fn q(s: &str) -> QueueId {
    QueueId::from(s)
}

fn a(s: &str) -> AgentId {
    AgentId::from(s)
}

fn task(n: u128) -> TaskId {
    TaskId(uuid::Uuid::from_u128(n))
}

fn offer(n: u128) -> OfferId {
    OfferId(uuid::Uuid::from_u128(n))
}

fn queued(n: u128, queue: &str, enqueued_at: Ts, requeued: bool) -> EventData {
    EventData::TaskQueued {
        task_id: task(n),
        queue: q(queue),
        channel: Channel::Voice,
        priority: 0,
        enqueued_at,
        requeued,
    }
}

fn offered(n: u128, o: u128, queue: &str) -> EventData {
    EventData::TaskOffered {
        task_id: task(n),
        offer_id: offer(o),
        agent_id: a("a1"),
        queue: q(queue),
        channel: Channel::Voice,
        deadline: Ts(0),
    }
}

fn assigned(n: u128, queue: &str, enqueued_at: Ts) -> EventData {
    EventData::TaskAssigned {
        task_id: task(n),
        agent_id: a("a1"),
        queue: q(queue),
        channel: Channel::Voice,
        enqueued_at,
        activity_id: None,
        customer_id: None,
        request_id: None,
    }
}

fn cancelled(n: u128, queue: &str, phase: TaskPhase, enqueued_at: Ts) -> EventData {
    EventData::TaskCancelled {
        task_id: task(n),
        queue: q(queue),
        channel: Channel::Voice,
        phase,
        enqueued_at,
        reason: None,
    }
}

fn report(s: &Statistics, b: &Book, now: Ts) -> StatsReport {
    s.report(b, &StatsQuery::default(), now).expect("a report")
}

fn queue<'a>(r: &'a StatsReport, id: &str) -> &'a report::QueueReport {
    r.queues
        .iter()
        .find(|x| x.queue_id.0.as_ref() == id)
        .expect("the queue is reported")
}

/// One answered task: queued at `t`, answered `wait` later.
fn answer(s: &mut Statistics, n: u128, queue: &str, t: Ts, wait: u64) {
    s.apply(&queued(n, queue, t, false), t);
    s.apply(&assigned(n, queue, t), Ts(t.0 + wait));
}

#[test]
fn answered_at_19_999_s_is_within_a_20_s_threshold_and_at_20_001_s_is_not() {
    let (mut s, b) = setup();
    let t = Ts(T0);
    answer(&mut s, 1, "support", t, secs(19.999));
    answer(&mut s, 2, "support", t, secs(20.001));
    let r = report(&s, &b, Ts(T0 + secs(30.0)));
    let w = &queue(&r, "support").today;
    assert_eq!(w.offered, 2);
    assert_eq!(w.answered, 2);
    assert_eq!(w.answered_within_threshold, 1);
    assert_eq!(w.service_level, Some(0.5));
    assert_eq!(w.service_level_threshold_ms, 20_000);
    assert_eq!(w.avg_speed_of_answer_ms, Some(20_000));
    assert_eq!(w.max_speed_of_answer_ms, Some(20_001));
    // Exactly at the threshold counts as within.
    answer(&mut s, 3, "support", t, secs(20.0));
    let r = report(&s, &b, Ts(T0 + secs(30.0)));
    assert_eq!(queue(&r, "support").today.answered_within_threshold, 2);
    // The other queue's threshold is its own: 20.001 s is within 30 s.
    answer(&mut s, 4, "sales", t, secs(20.001));
    let r = report(&s, &b, Ts(T0 + secs(30.0)));
    let w = &queue(&r, "sales").today;
    assert_eq!(
        (w.answered_within_threshold, w.service_level),
        (1, Some(1.0))
    );
    assert_eq!(w.service_level_threshold_ms, 30_000);
    // Each queue carries its objective: configured 90 %, else the default 80 %.
    assert_eq!(queue(&r, "sales").service_level_target, 0.9);
    assert_eq!(queue(&r, "support").service_level_target, 0.8);
}

/// A supervisor moving a waiting task within its own line (a new priority, the head) is
/// no new arrival: one offer, its wait counted from when it came. Before, it was offered
/// twice and answered "in time" 5 s after the move.
#[test]
fn a_waiting_task_moved_within_its_queue_is_one_offer_and_keeps_its_wait() {
    let (mut s, b) = setup();
    let t = Ts(T0);
    s.apply(&queued(1, "support", t, false), t);
    s.apply(
        &EventData::TaskTransferred {
            task_id: task(1),
            from_agent: None,
            from_queue: q("support"),
            to_agent: None,
            to_queue: q("support"),
        },
        Ts(T0 + secs(60.0)),
    );
    s.apply(&queued(1, "support", t, true), Ts(T0 + secs(60.0)));
    s.apply(&assigned(1, "support", t), Ts(T0 + secs(65.0)));
    let r = report(&s, &b, Ts(T0 + secs(66.0)));
    let w = &queue(&r, "support").today;
    assert_eq!((w.offered, w.answered, w.requeued), (1, 1, 0));
    assert_eq!(w.max_speed_of_answer_ms, Some(65_000));
    assert_eq!(w.service_level, Some(0.0));
    assert_eq!((w.transfers_in, w.transfers_out), (1, 1));
}

/// A Not Ready reason set during a wrap-up (forced by a supervisor, or the agent's own)
/// changes the agent's status line, not the wrap-up: one wrap-up, whole.
#[test]
fn a_reason_set_during_a_wrap_up_leaves_one_wrap_up_whole() {
    let (mut s, b) = setup();
    answer(&mut s, 1, "support", Ts(T0), secs(1.0));
    s.apply(
        &EventData::TaskCompleted {
            task_id: task(1),
            agent_id: a("a1"),
            queue: q("support"),
            channel: Channel::Voice,
            accepted_at: Ts(T0 + secs(1.0)),
            wrap_up_code: None,
        },
        Ts(T0 + secs(60.0)),
    );
    let change = |previous_reason: Option<&str>, reason: Option<&str>, status, since: f64| {
        EventData::AgentStateChanged {
            agent_id: a("a1"),
            status,
            reason: reason.map(str::to_owned),
            previous: Status::WrapUp,
            previous_reason: previous_reason.map(str::to_owned),
            previous_since: Ts(T0 + secs(since)),
        }
    };
    s.apply(
        &change(None, Some("supervisor"), Status::WrapUp, 60.0),
        Ts(T0 + secs(63.0)),
    );
    s.apply(
        &change(
            Some("supervisor"),
            Some("supervisor"),
            Status::NotReady,
            63.0,
        ),
        Ts(T0 + secs(70.0)),
    );
    let r = report(&s, &b, Ts(T0 + secs(71.0)));
    let w = &queue(&r, "support").today;
    assert_eq!(w.avg_wrap_up_ms, Some(10_000));
    let f = s.queue_fold(&q("support")).expect("folded");
    assert_eq!(f.totals.counts.wrap_ups, 1);
}

/// A task cancelled in the agent's hands sends the agent to a wrap-up: it counts in that
/// task's queue. Before, it counted in the queue of the agent's task before (or nowhere).
#[test]
fn the_wrap_up_after_a_cancel_in_hand_counts_in_the_cancelled_tasks_queue() {
    let (mut s, b) = setup();
    let wrap_ended = |s: &mut Statistics, since: f64, at: f64| {
        s.apply(
            &EventData::AgentStateChanged {
                agent_id: a("a1"),
                status: Status::Ready,
                reason: None,
                previous: Status::WrapUp,
                previous_reason: None,
                previous_since: Ts(T0 + secs(since)),
            },
            Ts(T0 + secs(at)),
        );
    };
    answer(&mut s, 1, "sales", Ts(T0), secs(1.0));
    s.apply(
        &EventData::TaskCompleted {
            task_id: task(1),
            agent_id: a("a1"),
            queue: q("sales"),
            channel: Channel::Voice,
            accepted_at: Ts(T0 + secs(1.0)),
            wrap_up_code: None,
        },
        Ts(T0 + secs(10.0)),
    );
    wrap_ended(&mut s, 10.0, 20.0);
    answer(&mut s, 2, "support", Ts(T0 + secs(30.0)), secs(1.0));
    s.apply(
        &cancelled(2, "support", TaskPhase::Assigned, Ts(T0 + secs(30.0))),
        Ts(T0 + secs(40.0)),
    );
    wrap_ended(&mut s, 40.0, 70.0);
    let r = report(&s, &b, Ts(T0 + secs(71.0)));
    assert_eq!(queue(&r, "support").today.avg_wrap_up_ms, Some(30_000));
    assert_eq!(queue(&r, "sales").today.avg_wrap_up_ms, Some(10_000));
}

#[test]
fn a_waiting_task_sent_to_an_agent_is_answered_when_that_agent_takes_it() {
    let (mut s, b) = setup();
    let t = Ts(T0);
    s.apply(&queued(1, "support", t, false), t);
    // A supervisor sends it from the line to one agent, who accepts 5 s after.
    s.apply(
        &EventData::TaskTransferred {
            task_id: task(1),
            from_agent: None,
            from_queue: q("support"),
            to_agent: Some(a("a1")),
            to_queue: q("support"),
        },
        Ts(T0 + secs(10.0)),
    );
    s.apply(&assigned(1, "support", t), Ts(T0 + secs(15.0)));
    let r = report(&s, &b, Ts(T0 + secs(16.0)));
    let w = &queue(&r, "support").today;
    assert_eq!((w.offered, w.answered), (1, 1));
    assert_eq!(
        w.max_speed_of_answer_ms,
        Some(15_000),
        "waited since it was queued"
    );
}

#[test]
fn a_short_abandon_is_counted_apart_and_not_against_the_service_level() {
    let (mut s, b) = setup();
    let t = Ts(T0);
    answer(&mut s, 1, "support", t, secs(10.0));
    // Under the 5 s short threshold: 4.999 s.
    s.apply(&queued(2, "support", t, false), t);
    s.apply(
        &cancelled(2, "support", TaskPhase::Queued, t),
        Ts(T0 + secs(4.999)),
    );
    // At 5 s it is no longer short; cancelled while ringing is an abandon too.
    s.apply(&queued(3, "support", t, false), t);
    s.apply(&offered(3, 30, "support"), Ts(T0 + secs(1.0)));
    s.apply(
        &cancelled(3, "support", TaskPhase::Offered, t),
        Ts(T0 + secs(5.0)),
    );
    // Cancelled in an agent's hands: no abandon.
    answer(&mut s, 4, "support", t, secs(1.0));
    s.apply(
        &cancelled(4, "support", TaskPhase::Assigned, t),
        Ts(T0 + secs(60.0)),
    );
    let r = report(&s, &b, Ts(T0 + secs(61.0)));
    let w = &queue(&r, "support").today;
    assert_eq!(w.offered, 4);
    assert_eq!(w.answered, 2);
    assert_eq!(w.abandoned, 2);
    assert_eq!(w.abandoned_short, 1);
    assert_eq!(w.answered_within_threshold, 2);
    // 2 within / (2 answered + 2 abandoned - 1 short) = 2/3.
    assert_eq!(w.service_level, Some(2.0 / 3.0));
}

#[test]
fn handle_wrap_up_offers_requeues_and_transfers_are_counted_where_they_belong() {
    let (mut s, b) = setup();
    let t = Ts(T0);
    s.apply(&queued(1, "support", t, false), t);
    s.apply(&offered(1, 10, "support"), t);
    s.apply(
        &EventData::OfferDeclined {
            task_id: task(1),
            offer_id: offer(10),
            agent_id: a("a1"),
            reason: None,
        },
        Ts(T0 + secs(1.0)),
    );
    s.apply(&queued(1, "support", t, true), Ts(T0 + secs(1.0)));
    s.apply(&offered(1, 11, "support"), Ts(T0 + secs(1.0)));
    s.apply(
        &EventData::OfferExpired {
            task_id: task(1),
            offer_id: offer(11),
            agent_id: a("a1"),
        },
        Ts(T0 + secs(16.0)),
    );
    s.apply(&queued(1, "support", t, true), Ts(T0 + secs(16.0)));
    s.apply(&offered(1, 12, "support"), Ts(T0 + secs(17.0)));
    s.apply(
        &EventData::OfferWithdrawn {
            task_id: task(1),
            offer_id: offer(12),
            agent_id: a("a1"),
            reason: WithdrawReason::AgentOffline,
        },
        Ts(T0 + secs(18.0)),
    );
    s.apply(&queued(1, "support", t, true), Ts(T0 + secs(18.0)));
    s.apply(&offered(1, 13, "support"), Ts(T0 + secs(19.0)));
    s.apply(
        &EventData::OfferAccepted {
            task_id: task(1),
            offer_id: offer(13),
            agent_id: a("a1"),
        },
        Ts(T0 + secs(21.0)),
    );
    s.apply(&assigned(1, "support", t), Ts(T0 + secs(21.0)));
    // The agent transfers it to sales: out of support, into (and offered to) sales.
    s.apply(
        &EventData::TaskTransferred {
            task_id: task(1),
            from_agent: Some(a("a1")),
            from_queue: q("support"),
            to_agent: None,
            to_queue: q("sales"),
        },
        Ts(T0 + secs(81.0)),
    );
    s.apply(
        &queued(1, "sales", Ts(T0 + secs(81.0)), true),
        Ts(T0 + secs(81.0)),
    );
    // Its wrap-up after the transfer counts for support: 30 s.
    s.apply(
        &EventData::AgentStateChanged {
            agent_id: a("a1"),
            status: Status::Ready,
            reason: None,
            previous: Status::WrapUp,
            previous_reason: None,
            previous_since: Ts(T0 + secs(81.0)),
        },
        Ts(T0 + secs(111.0)),
    );
    // Answered in sales 9 s after the transfer, completed 120 s later.
    s.apply(
        &assigned(1, "sales", Ts(T0 + secs(81.0))),
        Ts(T0 + secs(90.0)),
    );
    s.apply(
        &EventData::TaskCompleted {
            task_id: task(1),
            agent_id: a("a1"),
            queue: q("sales"),
            channel: Channel::Chat,
            accepted_at: Ts(T0 + secs(90.0)),
            wrap_up_code: None,
        },
        Ts(T0 + secs(210.0)),
    );
    let r = report(&s, &b, Ts(T0 + secs(211.0)));
    let sup = &queue(&r, "support").today;
    assert_eq!(sup.offered, 1);
    assert_eq!(sup.requeued, 3);
    assert_eq!(
        (sup.offers_accepted, sup.offers_declined, sup.offers_expired),
        (1, 1, 1)
    );
    assert_eq!(
        (sup.answered, sup.avg_speed_of_answer_ms),
        (1, Some(21_000))
    );
    assert_eq!((sup.transfers_in, sup.transfers_out), (0, 1));
    assert_eq!(sup.avg_wrap_up_ms, Some(30_000));
    assert_eq!(sup.avg_handle_ms, None);
    let sales = &queue(&r, "sales").today;
    assert_eq!(
        sales.offered, 1,
        "the transfer in is an offer, its queued no requeue"
    );
    assert_eq!(sales.requeued, 0);
    assert_eq!((sales.transfers_in, sales.transfers_out), (1, 0));
    assert_eq!(
        (sales.answered, sales.avg_speed_of_answer_ms),
        (1, Some(9_000))
    );
    assert_eq!(sales.avg_handle_ms, Some(120_000));
    let agent = &r.agents[0].today;
    assert_eq!((agent.offers_declined, agent.offers_missed), (1, 1));
    assert_eq!(
        (agent.handled.voice, agent.handled.chat, agent.handled.email),
        (0, 1, 0)
    );
    assert_eq!(agent.avg_handle_ms, Some(120_000));
    // The all-time totals feed the histograms.
    let f = s.queue_fold(&q("sales")).expect("sales folded");
    assert_eq!(
        f.totals.soa_hist[SOA_BUCKETS.iter().position(|b| *b == 10.0).unwrap()],
        1
    );
    assert_eq!(
        f.totals.handle_hist[HANDLE_BUCKETS.iter().position(|b| *b == 120.0).unwrap()],
        1
    );
}

#[test]
fn a_hand_over_of_a_task_in_someones_hands_is_not_a_second_answer() {
    let (mut s, b) = setup();
    let t = Ts(T0);
    answer(&mut s, 1, "support", t, secs(3.0));
    // A consult lands: transferred from one agent to another, then assigned.
    s.apply(
        &EventData::TaskTransferred {
            task_id: task(1),
            from_agent: Some(a("a1")),
            from_queue: q("support"),
            to_agent: Some(a("a2")),
            to_queue: q("support"),
        },
        Ts(T0 + secs(50.0)),
    );
    s.apply(&assigned(1, "support", t), Ts(T0 + secs(50.0)));
    // Assigned again without a transfer (an agent's work moved back): no answer either.
    s.apply(&assigned(1, "support", t), Ts(T0 + secs(55.0)));
    // Back in the line after its agent was lost, then cancelled: no abandon, it was
    // answered.
    s.apply(&queued(1, "support", t, true), Ts(T0 + secs(56.0)));
    s.apply(
        &cancelled(1, "support", TaskPhase::Queued, t),
        Ts(T0 + secs(57.0)),
    );
    let r = report(&s, &b, Ts(T0 + secs(60.0)));
    let w = &queue(&r, "support").today;
    assert_eq!((w.offered, w.answered, w.abandoned), (1, 1, 0));
    assert_eq!((w.transfers_in, w.transfers_out), (1, 1));
    assert_eq!(w.max_speed_of_answer_ms, Some(3_000));
}

#[test]
fn the_day_starts_at_local_midnight_and_agent_time_is_cut_there() {
    let (mut s, b) = setup();
    // Rome is UTC+1 in November: midnight of the 27th is 2026-11-26T23:00:00Z.
    let before = at("2026-11-26T22:59:59.999Z");
    let midnight = at("2026-11-26T23:00:00Z");
    answer(&mut s, 1, "support", Ts(before.0 - secs(5.0)), secs(5.0));
    // The agent went Not Ready (break) at 22:00Z and comes back at 23:30Z: 30
    // minutes of it were today.
    s.apply(
        &EventData::AgentStateChanged {
            agent_id: a("a1"),
            status: Status::Ready,
            reason: None,
            previous: Status::NotReady,
            previous_reason: Some("break".into()),
            previous_since: at("2026-11-26T22:00:00Z"),
        },
        at("2026-11-26T23:30:00Z"),
    );
    let r = report(&s, &b, at("2026-11-26T23:30:00Z"));
    assert_eq!(r.day_start, midnight);
    assert_eq!(r.day_end, at("2026-11-27T23:00:00Z"));
    assert_eq!(r.timezone, "Europe/Rome");
    assert_eq!(queue(&r, "support").today.answered, 0, "answered yesterday");
    assert_eq!(queue(&r, "support").last_30m.answered, 0, "31 minutes ago");
    let r20 = report(&s, &b, at("2026-11-26T23:20:00Z"));
    assert_eq!(
        queue(&r20, "support").last_30m.answered,
        1,
        "the windows span midnight"
    );
    let today = &r.agents[0].today;
    assert_eq!(today.status_ms.not_ready, 30 * 60 * 1000);
    assert_eq!(today.not_ready_ms.get("break"), Some(&(30 * 60 * 1000)));
    // The book's agent is Offline since T0-ish (the book's start): counted from
    // midnight to now only.
    assert_eq!(today.status_ms.offline, 30 * 60 * 1000);
    // One answer just after midnight counts today.
    answer(&mut s, 2, "support", midnight, 0);
    let r = report(&s, &b, at("2026-11-26T23:31:00Z"));
    assert_eq!(queue(&r, "support").today.answered, 1);
    // With no event since the next midnight, a report of that day shows nothing yet.
    let r = report(&s, &b, at("2026-11-27T23:00:00Z"));
    assert_eq!(r.day_start, at("2026-11-27T23:00:00Z"));
    assert_eq!(queue(&r, "support").today.answered, 0);
}

#[test]
fn a_dst_day_rolls_over_at_its_own_midnight() {
    let (mut s, b) = setup();
    // 29 March 2026 in Rome: 23 hours, 2026-03-28T23:00Z to 2026-03-29T22:00Z.
    answer(&mut s, 1, "support", at("2026-03-29T21:59:00Z"), secs(59.0));
    let r = report(&s, &b, at("2026-03-29T21:59:59Z"));
    assert_eq!(r.day_start, at("2026-03-28T23:00:00Z"));
    assert_eq!(queue(&r, "support").today.answered, 1);
    // 92 buckets of 15 minutes in a 23-hour day; the last one is 21:45Z.
    let series = &queue(&r, "support").series;
    assert_eq!(series.len(), 92);
    assert_eq!(series[91].start, at("2026-03-29T21:45:00Z"));
    assert_eq!((series[91].offered, series[91].answered), (1, 1));
    answer(&mut s, 2, "support", at("2026-03-29T22:00:00Z"), 0);
    let r = report(&s, &b, at("2026-03-29T22:00:01Z"));
    assert_eq!(r.day_start, at("2026-03-29T22:00:00Z"));
    assert_eq!(queue(&r, "support").today.answered, 1);
}

#[test]
fn the_rolling_windows_hold_the_current_minute_and_the_whole_minutes_before_it() {
    let (mut s, b) = setup();
    // Now is 10:30:20Z. last_15m starts at 10:16:00Z, last_30m at 10:01:00Z.
    let now = at("2026-11-26T10:30:20Z");
    for (n, t) in [
        (1, "2026-11-26T10:00:59.999Z"), // in neither
        (2, "2026-11-26T10:01:00Z"),     // first instant of last_30m
        (3, "2026-11-26T10:15:59.999Z"), // last_30m only
        (4, "2026-11-26T10:16:00Z"),     // first instant of last_15m
        (5, "2026-11-26T10:30:20Z"),     // now
    ] {
        answer(&mut s, n, "support", at(t), 0);
    }
    let r = report(&s, &b, now);
    let sq = queue(&r, "support");
    assert_eq!(sq.last_15m.window_start, at("2026-11-26T10:16:00Z"));
    assert_eq!(sq.last_30m.window_start, at("2026-11-26T10:01:00Z"));
    assert_eq!(sq.last_15m.answered, 2);
    assert_eq!(sq.last_30m.answered, 4);
    assert_eq!(sq.today.answered, 5);
    // A minute later the 10:01 minute has left the 30-minute window.
    let r = report(&s, &b, at("2026-11-26T10:31:00Z"));
    assert_eq!(queue(&r, "support").last_30m.answered, 3);
    assert_eq!(queue(&r, "support").last_15m.answered, 1);
}

#[test]
fn the_series_has_15_minute_buckets_with_the_peak_waiting() {
    let (mut s, b) = setup();
    let day_start = at("2026-11-25T23:00:00Z");
    s.waiting(&q("support"), 3, at("2026-11-26T10:01:00Z"));
    s.waiting(&q("support"), 5, at("2026-11-26T10:02:00Z"));
    s.waiting(&q("support"), 1, at("2026-11-26T10:16:00Z"));
    answer(&mut s, 1, "support", at("2026-11-26T10:20:00Z"), secs(25.0));
    let r = report(&s, &b, at("2026-11-26T10:40:00Z"));
    let series = &queue(&r, "support").series;
    // From 23:00Z to 10:30Z: 46 buckets up to and including the current one.
    assert_eq!(series.len(), 47);
    assert_eq!(series[0].start, day_start);
    assert_eq!(series[44].start, at("2026-11-26T10:00:00Z"));
    assert_eq!(series[44].waiting, 5);
    assert_eq!(series[45].waiting, 5, "5 waited when its bucket began");
    assert_eq!(
        (
            series[45].offered,
            series[45].answered,
            series[45].service_level
        ),
        (1, 1, Some(0.0))
    );
    assert_eq!(
        series[46].waiting, 1,
        "carried into a bucket with no change"
    );
    assert_eq!(series[46].service_level, None);
    assert_eq!(series[43].waiting, 0);
}

#[test]
fn a_window_with_nothing_has_no_averages() {
    let w = Window::of(&Counts::default(), Ts(0), 20_000_000);
    assert_eq!(w.service_level, None);
    assert_eq!(w.avg_speed_of_answer_ms, None);
    assert_eq!(w.max_speed_of_answer_ms, None);
    assert_eq!(w.avg_handle_ms, None);
    assert_eq!(w.avg_wrap_up_ms, None);
}

#[test]
fn filters_name_known_queues_and_agents() {
    let (s, b) = setup();
    let one = StatsQuery {
        queues: Some([q("sales")].into_iter().collect()),
        agents: Some([a("a1")].into_iter().collect()),
    };
    let r = s.report(&b, &one, Ts(T0)).expect("a report");
    assert_eq!(r.queues.len(), 1);
    assert_eq!(r.agents.len(), 1);
    let bad = StatsQuery {
        queues: Some([q("nope")].into_iter().collect()),
        agents: None,
    };
    assert!(matches!(
        s.report(&b, &bad, Ts(T0)),
        Err(crate::error::HubError::UnknownQueue(_))
    ));
    let bad = StatsQuery {
        queues: None,
        agents: Some([a("zed")].into_iter().collect()),
    };
    assert!(matches!(
        s.report(&b, &bad, Ts(T0)),
        Err(crate::error::HubError::UnknownAgent(_))
    ));
}

#[test]
fn the_statistics_survive_a_snapshot_and_an_old_snapshot_starts_them_empty() {
    use crate::state::State;
    let cfg = Config::parse(CONFIG).expect("valid");
    let rules = Arc::new(cfg.rules());
    let mut st = State::new(rules.clone(), Ts(T0));
    answer(&mut st.stats, 1, "support", Ts(T0), secs(2.0));
    let bytes = st.snapshot_bytes().expect("encodes");
    let back = State::from_snapshot(rules.clone(), &bytes).expect("decodes");
    let now = Ts(T0 + secs(3.0));
    let a = serde_json::to_value(report(&st.stats, &st.book, now)).expect("json");
    let b = serde_json::to_value(report(&back.stats, &back.book, now)).expect("json");
    assert_eq!(a, b);
    assert_eq!(a["queues"][1]["today"]["answered"], 1);
    assert_eq!(back.stats.rules().zone.name(), "Europe/Rome");
    // A snapshot written before the statistics existed: two parts.
    let old = rmp_serde::to_vec_named(&(st.book.snapshot_state(), &st.context)).expect("encodes");
    let back = State::from_snapshot(rules, &old).expect("an old snapshot decodes");
    let r = report(&back.stats, &back.book, now);
    assert_eq!(queue(&r, "support").today.answered, 0);
}

/// Decisions through the real books (`State::execute`, `State::expire_due`): the
/// events they emit, folded by `State::after`.
mod through_the_books {
    use super::*;
    use crate::context::record::Actor;
    use crate::ids::ConnId;
    use crate::routing::{Command, TransferTo};
    use crate::state::State;
    use crate::task::{CustomerIdentity, NewTask};

    const BOOKS: &str = r#"
[routing]
wrap_up_secs = 10
offer_timeout_secs = 60

[stats]
timezone = "Europe/Rome"

[[queues]]
id = "support"

[[queues]]
id = "sales"

[[agents]]
id = "a1"
queues = ["support"]

[[agents]]
id = "a2"
queues = ["support"]
"#;

    fn at(ms: u64) -> Ts {
        Ts(T0 + ms * 1000)
    }

    fn create(st: &mut State, ms: u64) -> TaskId {
        let o = st.execute(
            Command::CreateTask(Box::new(NewTask {
                channel: Channel::Voice,
                queue: "support".into(),
                priority: 0,
                skills: vec![],
                skill_levels: Default::default(),
                customer: CustomerIdentity::default(),
                attributes: Default::default(),
                idempotency_key: None,
            })),
            at(ms),
        );
        match o.reply {
            Ok(crate::state::Reply::Created { task, .. }) => task.task_id,
            other => panic!("{other:?}"),
        }
    }

    fn accept(st: &mut State, agent: &str, ms: u64) -> TaskId {
        let offer = st
            .book
            .agent_view(&a(agent))
            .and_then(|v| v.offer)
            .expect("an offer rings");
        let o = st.execute(
            Command::Accept {
                agent: a(agent),
                offer_id: offer.offer_id,
            },
            at(ms),
        );
        assert!(o.reply.is_ok(), "{:?}", o.reply);
        offer.task.task_id
    }

    fn cancel(st: &mut State, task_id: TaskId, ms: u64) {
        let o = st.execute(
            Command::CancelTask {
                task_id,
                reason: None,
                by: Actor {
                    id: "crm".into(),
                    role: crate::auth::Role::Integration,
                },
            },
            at(ms),
        );
        assert!(o.reply.is_ok(), "{:?}", o.reply);
    }

    #[test]
    fn every_figure_of_a_scripted_day() {
        let cfg = Config::parse(BOOKS).expect("valid");
        let rules = Arc::new(cfg.rules());
        let mut st = State::new(rules.clone(), Ts(T0));
        for id in ["a1", "a2"] {
            let profile = rules
                .agents
                .iter()
                .find(|p| p.id == a(id))
                .expect("configured")
                .clone();
            st.execute(
                Command::Connect {
                    profile,
                    conn: ConnId::new(),
                    node: "n1".into(),
                },
                at(0),
            );
        }
        st.execute(Command::SetReady { agent: a("a1") }, at(0));
        // Answered after 19.999 s and after 20.001 s.
        create(&mut st, 1_000);
        let t1 = accept(&mut st, "a1", 20_999);
        st.execute(Command::SetReady { agent: a("a2") }, at(21_000));
        create(&mut st, 21_000);
        let t2 = accept(&mut st, "a2", 41_001);
        // Both busy on a call: two tasks wait and are cancelled, after 4.999 s and 5 s.
        let t3 = create(&mut st, 50_000);
        cancel(&mut st, t3, 54_999);
        let t4 = create(&mut st, 60_000);
        cancel(&mut st, t4, 65_000);
        // a1 completes after 100 s; its 10 s wrap-up ends by the timer.
        st.execute(
            Command::Complete {
                agent: a("a1"),
                task_id: t1,
                wrap_up_code: None,
            },
            at(120_999),
        );
        st.expire_due(at(130_999));
        // a2 passes its call on to sales.
        let o = st.execute(
            Command::Transfer {
                task_id: t2,
                to: TransferTo::Queue {
                    queue: q("sales"),
                    priority: None,
                    skills: None,
                    head: false,
                },
                by: Actor::agent(&a("a2")),
            },
            at(141_001),
        );
        assert!(o.reply.is_ok(), "{:?}", o.reply);

        let now = at(150_000);
        let r = st
            .stats
            .report(&st.book, &StatsQuery::default(), now)
            .expect("a report");
        let sup = &queue(&r, "support").today;
        assert_eq!(sup.offered, 4);
        assert_eq!(sup.answered, 2);
        assert_eq!(sup.answered_within_threshold, 1);
        assert_eq!((sup.abandoned, sup.abandoned_short), (2, 1));
        // 1 within / (2 answered + 2 abandoned - 1 short).
        assert_eq!(sup.service_level, Some(1.0 / 3.0));
        assert_eq!(sup.avg_speed_of_answer_ms, Some(20_000));
        assert_eq!(sup.max_speed_of_answer_ms, Some(20_001));
        assert_eq!(sup.avg_handle_ms, Some(100_000));
        assert_eq!(sup.avg_wrap_up_ms, Some(10_000));
        assert_eq!(
            (sup.offers_accepted, sup.offers_declined, sup.offers_expired),
            (2, 0, 0)
        );
        assert_eq!((sup.transfers_in, sup.transfers_out), (0, 1));
        let sales = &queue(&r, "sales");
        assert_eq!((sales.today.offered, sales.today.transfers_in), (1, 1));
        assert_eq!(sales.now.waiting, 1);
        assert_eq!(sales.now.waiting_by_channel.voice, 1);
        assert_eq!(sales.now.oldest_enqueued_at, Some(at(21_000)));
        let sq = queue(&r, "support");
        assert_eq!(sq.now.waiting, 0);
        assert_eq!(sq.now.agents.ready, 1, "a1 after its wrap-up");
        assert_eq!(sq.now.agents.wrap_up, 1, "a2 after its transfer");
        assert_eq!(sq.now.eligible_ready, 1);
        // The peak of waiting tasks in the 10:00 bucket: one at a time.
        let bucket = sq
            .series
            .iter()
            .find(|b| b.start == at(0))
            .expect("the 10:00 bucket");
        assert_eq!((bucket.waiting, bucket.offered, bucket.answered), (1, 4, 2));
        let a1 = &r
            .agents
            .iter()
            .find(|x| x.agent_id == a("a1"))
            .expect("a1")
            .today;
        assert_eq!(a1.handled.voice, 1);
        assert_eq!(a1.avg_handle_ms, Some(100_000));
        assert_eq!(a1.status_ms.reserved, 19_999);
        assert_eq!(a1.status_ms.busy, 100_000);
        assert_eq!(a1.status_ms.wrap_up, 10_000);
        // Ready 0-1 s, then from the end of its wrap-up to now.
        assert_eq!(a1.status_ms.ready, 1_000 + 150_000 - 130_999);
        // The figures survive a snapshot.
        let back =
            State::from_snapshot(rules, &st.snapshot_bytes().expect("encodes")).expect("decodes");
        let again = back
            .stats
            .report(&back.book, &StatsQuery::default(), now)
            .expect("a report");
        assert_eq!(
            serde_json::to_value(&r).expect("json"),
            serde_json::to_value(&again).expect("json")
        );
    }
}

#[test]
fn the_configuration_is_checked() {
    let base = "[[queues]]\nid = \"support\"\n";
    let err = |extra: &str| {
        Config::parse(&format!("{extra}\n{base}"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(err("[stats]\ntimezone = \"Mars/Olympus\"").starts_with("stats.timezone:"));
    assert!(err("[stats]\ntimezone = \"../../etc/passwd\"").starts_with("stats.timezone:"));
    assert!(err("[stats]\nshort_abandon_secs = -1").starts_with("stats.short_abandon_secs:"));
    assert!(err("[server]\nstats_update_ms = 0").starts_with("server.stats_update_ms:"));
    assert!(
        err("[stats]\nzone = \"UTC\"").contains("zone"),
        "unknown key"
    );
    let bad_sl = Config::parse("[[queues]]\nid = \"q\"\nservice_level_secs = -2\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        bad_sl.starts_with("queues[0].service_level_secs:"),
        "{bad_sl}"
    );
    for bad in ["0", "100.5", "-80", "nan"] {
        let e = err(&format!(
            "[[queues]]\nid = \"q\"\nservice_level_target = {bad}"
        ));
        assert_eq!(
            e, "queues[0].service_level_target: must be a percentage from 1 to 100",
            "{bad}"
        );
    }
    let e = err("[[queues]]\nid = \"q\"\nservice_level_target = \"80%\"");
    assert!(e.contains("service_level_target"), "{e}");
    let ok = Config::parse(
        "[stats]\ntimezone = \"America/Havana\"\n[[queues]]\nid = \"q\"\nservice_level_secs = 30\n",
    )
    .expect("valid");
    let rules = ok.rules();
    assert_eq!(rules.stats.zone.name(), "America/Havana");
    assert_eq!(rules.stats.threshold_us(&q("q")), 30_000_000);
    assert_eq!(rules.stats.target(&q("q")), 0.8);
    let edges = Config::parse(
        "[[queues]]\nid = \"one\"\nservice_level_target = 1\n[[queues]]\nid = \"all\"\nservice_level_target = 100\n[[queues]]\nid = \"half\"\nservice_level_target = 92.5\n",
    )
    .expect("valid")
    .rules();
    assert_eq!(edges.stats.target(&q("one")), 0.01);
    assert_eq!(edges.stats.target(&q("all")), 1.0);
    assert_eq!(edges.stats.target(&q("half")), 0.925);
    assert_eq!(ok.server.stats_update_ms, 1000);
    assert_eq!(
        Config::parse(base)
            .expect("valid")
            .rules()
            .stats
            .short_abandon_us,
        5_000_000
    );
}
