//! The integration events each routing decision emits, in the order things happened.

use super::*;
use crate::events::EventData;

/// One line per event: its type and what tells it apart in these scenarios.
fn lines(o: &Outcome) -> Vec<String> {
    o.events.iter().map(line).collect()
}

fn status(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn line(e: &EventData) -> String {
    let t = e.type_name();
    match e {
        EventData::AgentStateChanged {
            agent_id,
            status: s,
            reason,
            previous,
            previous_reason,
            ..
        } => {
            let r = |r: &Option<String>| r.as_ref().map(|r| format!("({r})")).unwrap_or_default();
            format!(
                "{t} {agent_id} {}{}->{}{}",
                status(*previous),
                r(previous_reason),
                status(*s),
                r(reason)
            )
        }
        EventData::OfferWithdrawn {
            agent_id, reason, ..
        } => format!("{t} {agent_id} {reason:?}"),
        EventData::AgentLoggedOut {
            agent_id,
            by_supervisor,
        } => format!("{t} {agent_id} by_supervisor={by_supervisor}"),
        EventData::TaskQueued {
            queue, requeued, ..
        } => format!("{t} {queue} requeued={requeued}"),
        EventData::TaskTransferred {
            from_agent,
            from_queue,
            to_agent,
            to_queue,
            ..
        } => format!("{t} {from_agent:?}@{from_queue} -> {to_agent:?}@{to_queue}"),
        EventData::TaskCancelled { phase, .. } => format!("{t} {phase:?}"),
        _ => match e.agent_id() {
            Some(a) => format!("{t} {a}"),
            None => t.to_owned(),
        },
    }
}

fn connect(w: &mut World, id: &str, now: Ts) -> Outcome {
    let conn = ConnId::new();
    w.conns.insert(AgentId::from(id), conn);
    let profile = w.profile(id);
    w.run(
        Command::Connect {
            profile,
            conn,
            node: "n1".into(),
        },
        now,
    )
}

#[test]
fn a_task_from_creation_to_completion() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, o) = w.create("support", Channel::Chat, 0, &[], at_ms(10));
    assert_eq!(
        lines(&o),
        [
            "task.created",
            "task.queued support requeued=false",
            "task.offered a1",
            "agent.state_changed a1 ready->reserved",
        ]
    );
    match &o.events[2] {
        EventData::TaskOffered {
            task_id, deadline, ..
        } => {
            assert_eq!(*task_id, t);
            assert_eq!(*deadline, at_ms(10).plus(Duration::from_secs(15)));
        }
        other => panic!("{other:?}"),
    }
    let (offer_id, _) = w.offer_of("a1").expect("offer");
    let o = w.run(
        Command::Accept {
            agent: "a1".into(),
            offer_id,
        },
        at_ms(20),
    );
    assert_eq!(
        lines(&o),
        [
            "offer.accepted a1",
            "task.assigned a1",
            "agent.state_changed a1 reserved->busy",
        ]
    );
    let o = w.run(
        Command::Complete {
            agent: "a1".into(),
            task_id: t,
            wrap_up_code: Some("sold".into()),
        },
        at_ms(90),
    );
    assert_eq!(
        lines(&o),
        ["task.completed a1", "agent.state_changed a1 busy->ready"]
    );
    match &o.events[0] {
        EventData::TaskCompleted {
            accepted_at,
            wrap_up_code,
            ..
        } => {
            assert_eq!(*accepted_at, at_ms(20));
            assert_eq!(wrap_up_code.as_deref(), Some("sold"));
        }
        other => panic!("{other:?}"),
    }
    match &o.events[1] {
        EventData::AgentStateChanged { previous_since, .. } => {
            assert_eq!(*previous_since, at_ms(20), "busy since the accept")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_decline_sends_the_task_on() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    w.login_ready("a2", at_ms(1));
    w.create("support", Channel::Chat, 0, &[], at_ms(10));
    let o = w.decline("a1", at_ms(20));
    assert_eq!(
        lines(&o),
        [
            "offer.declined a1",
            "task.queued support requeued=true",
            "agent.state_changed a1 reserved->ready",
            "task.offered a2",
            "agent.state_changed a2 ready->reserved",
        ]
    );
}

#[test]
fn a_decline_by_choosing_not_ready_gives_the_reason() {
    let mut w = World::with(&CONFIG.replace(
        "wrap_up_secs = 0",
        "wrap_up_secs = 0\nnot_ready_reasons = [\"break\"]",
    ));
    w.login_ready("a1", at_ms(0));
    w.create("support", Channel::Chat, 0, &[], at_ms(10));
    let o = w.run(
        Command::SetNotReady {
            agent: "a1".into(),
            reason: "break".into(),
        },
        at_ms(20),
    );
    assert_eq!(
        lines(&o),
        [
            "offer.declined a1",
            "task.queued support requeued=true",
            "agent.state_changed a1 reserved->not_ready(break)",
        ]
    );
    match &o.events[0] {
        EventData::OfferDeclined { reason, .. } => assert_eq!(reason.as_deref(), Some("break")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_expired_offer_goes_to_the_next_agent() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    w.login_ready("a2", at_ms(1));
    w.create("support", Channel::Chat, 0, &[], at_ms(10));
    let o = w.book.expire_due(at_ms(10).plus(Duration::from_secs(15)));
    assert_eq!(
        lines(&o),
        [
            "offer.expired a1",
            "task.queued support requeued=true",
            &format!("agent.state_changed a1 reserved->not_ready({REASON_MISSED_OFFER})"),
            "task.offered a2",
            "agent.state_changed a2 ready->reserved",
        ]
    );
}

fn cancel(w: &mut World, t: TaskId, now: Ts) -> Outcome {
    w.run(
        Command::CancelTask {
            task_id: t,
            reason: Some("hung up".into()),
            by: crm(),
        },
        now,
    )
}

#[test]
fn a_cancel_while_queued_offered_or_assigned() {
    let mut w = World::new();
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(0));
    let o = cancel(&mut w, t, at_ms(5));
    assert_eq!(lines(&o), ["task.cancelled Queued"]);
    match &o.events[0] {
        EventData::TaskCancelled {
            enqueued_at,
            reason,
            ..
        } => {
            assert_eq!(*enqueued_at, at_ms(0));
            assert_eq!(reason.as_deref(), Some("hung up"));
        }
        other => panic!("{other:?}"),
    }

    w.login_ready("a1", at_ms(10));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(20));
    let o = cancel(&mut w, t, at_ms(30));
    assert_eq!(
        lines(&o),
        [
            "task.cancelled Offered",
            "offer.withdrawn a1 Cancelled",
            "agent.state_changed a1 reserved->ready",
        ]
    );

    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(40));
    w.accept("a1", at_ms(50));
    let o = cancel(&mut w, t, at_ms(60));
    assert_eq!(
        lines(&o),
        [
            "task.cancelled Assigned",
            "agent.state_changed a1 busy->ready"
        ]
    );
}

#[test]
fn a_transfer_to_another_queue() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(10));
    w.accept("a1", at_ms(20));
    w.login_ready("a2", at_ms(25));
    let o = transfer(
        &mut w,
        t,
        TransferTo::Queue {
            queue: "vip".into(),
            priority: None,
            skills: None,
            head: false,
        },
        Actor::agent(&AgentId::from("a1")),
        at_ms(30),
    );
    assert_eq!(
        lines(&o),
        [
            "task.transferred Some(AgentId(\"a1\"))@support -> None@vip",
            "agent.state_changed a1 busy->ready",
            "task.queued vip requeued=true",
            "task.offered a2",
            "agent.state_changed a2 ready->reserved",
        ]
    );
}

#[test]
fn a_consult_lands_when_the_target_accepts() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(10));
    w.accept("a1", at_ms(20));
    w.login_ready("a2", at_ms(25));
    let o = w.run(
        Command::Consult {
            agent: "a1".into(),
            task_id: t,
            to: "a2".into(),
        },
        at_ms(30),
    );
    assert_eq!(
        lines(&o),
        ["task.offered a2", "agent.state_changed a2 ready->reserved"]
    );
    let o = w.run(
        Command::Accept {
            agent: "a2".into(),
            offer_id: w.offer_of("a2").expect("offer").0,
        },
        at_ms(40),
    );
    assert_eq!(
        lines(&o),
        [
            "offer.accepted a2",
            "task.transferred Some(AgentId(\"a1\"))@support -> Some(AgentId(\"a2\"))@support",
            "agent.state_changed a1 busy->ready",
            "task.assigned a2",
            "agent.state_changed a2 reserved->busy",
        ]
    );
}

#[test]
fn login_logout_connection_lost_and_a_reconnect_within_grace() {
    let mut w = World::new();
    let o = connect(&mut w, "a1", at_ms(0));
    assert_eq!(
        lines(&o),
        [
            "agent.logged_in a1",
            "agent.state_changed a1 offline->not_ready(login)"
        ]
    );
    let o = w.run(Command::SetReady { agent: "a1".into() }, at_ms(10));
    assert_eq!(
        lines(&o),
        ["agent.state_changed a1 not_ready(login)->ready"]
    );
    let conn = w.conns[&AgentId::from("a1")];
    let o = w.run(
        Command::Disconnect {
            agent: "a1".into(),
            conn,
        },
        at_ms(20),
    );
    assert_eq!(lines(&o), ["agent.connection_lost a1"]);
    match &o.events[0] {
        EventData::AgentConnectionLost { grace_until, .. } => {
            assert_eq!(*grace_until, at_ms(20).plus(Duration::from_secs(30)))
        }
        other => panic!("{other:?}"),
    }
    // Back within the grace period: nothing to tell, the agent never left.
    let o = connect(&mut w, "a1", at_ms(30));
    assert!(o.events.is_empty(), "{:?}", lines(&o));
    let o = w.run(Command::Logout { agent: "a1".into() }, at_ms(40));
    assert_eq!(
        lines(&o),
        [
            "agent.state_changed a1 ready->offline",
            "agent.logged_out a1 by_supervisor=false",
        ]
    );
    connect(&mut w, "a1", at_ms(50));
    let o = w.run(Command::ForceLogout { agent: "a1".into() }, at_ms(60));
    assert_eq!(
        lines(&o),
        [
            "agent.state_changed a1 not_ready(login)->offline",
            "agent.logged_out a1 by_supervisor=true",
        ]
    );
}

#[test]
fn a_grace_that_runs_out_logs_out_and_requeues_the_work() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let (_t, _) = w.create("support", Channel::Chat, 0, &[], at_ms(10));
    w.accept("a1", at_ms(20));
    let conn = w.conns[&AgentId::from("a1")];
    w.run(
        Command::Disconnect {
            agent: "a1".into(),
            conn,
        },
        at_ms(30),
    );
    let o = w.book.expire_due(at_ms(30).plus(Duration::from_secs(30)));
    assert_eq!(
        lines(&o),
        [
            "task.queued support requeued=true",
            "agent.state_changed a1 busy->offline",
            "agent.logged_out a1 by_supervisor=false",
        ]
    );
}

#[test]
fn a_lost_node_is_told_once_with_its_agents_connections() {
    let mut w = World::new();
    w.login_ready("a1", at_ms(0));
    let o = w.run(Command::NodeLost { node: "n1".into() }, at_ms(10));
    assert_eq!(lines(&o), ["node.lost", "agent.connection_lost a1"]);
    // A second declaration finds nobody there: no news.
    let o = w.run(Command::NodeLost { node: "n1".into() }, at_ms(11));
    assert!(o.events.is_empty());
}
