//! The numbering of events in `State::after`, and the window in a snapshot.

use super::*;
use crate::config::Config;
use crate::events::EventData;
use crate::ids::{AgentId, Channel, ConnId};
use crate::task::{CustomerIdentity, NewTask};

const T0: Ts = Ts(1_700_000_000_000_000);

fn state() -> State {
    let cfg = Config::parse(
        "[routing]\nwrap_up_secs = 0\n[[queues]]\nid = \"support\"\n[[agents]]\nid = \"a1\"\nqueues = [\"support\"]\n",
    )
    .expect("config");
    State::new(Arc::new(cfg.rules()), T0)
}

fn at(ms: u64) -> Ts {
    Ts(T0.0 + ms * 1000)
}

#[test]
fn events_are_numbered_densely_with_the_entry_time_and_the_assignment_names_its_activity() {
    let mut st = state();
    st.events.begin(99);
    let profile = st.book.rules().agents[0].clone();
    let o = st.execute(
        Command::Connect {
            profile,
            conn: ConnId::new(),
            node: "n1".into(),
        },
        at(0),
    );
    assert_eq!(
        o.envelopes.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2]
    );
    st.execute(Command::SetReady { agent: "a1".into() }, at(1));
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
        at(2),
    );
    assert_eq!(
        o.envelopes.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    assert!(o.envelopes.iter().all(|e| e.time == at(2)));
    let offer_id = st
        .book
        .agent_view(&AgentId::from("a1"))
        .and_then(|v| v.offer)
        .map(|o| o.offer_id)
        .expect("offered");
    let o = st.execute(
        Command::Accept {
            agent: "a1".into(),
            offer_id,
        },
        at(3),
    );
    let types: Vec<_> = o.envelopes.iter().map(|e| e.type_name()).collect();
    assert_eq!(
        types,
        [
            "offer.accepted",
            "task.assigned",
            "agent.state_changed",
            "activity.created"
        ]
    );
    let activity = match &o.reply {
        Ok(Reply::Accepted { activity, .. }) => activity.as_ref().expect("activity").activity_id,
        other => panic!("{other:?}"),
    };
    match &o.envelopes[1].data {
        EventData::TaskAssigned { activity_id, .. } => assert_eq!(*activity_id, Some(activity)),
        other => panic!("{other:?}"),
    }
    let v: serde_json::Value = serde_json::from_str(o.envelopes[1].json()).expect("json");
    assert_eq!(v["data"]["activity_id"], activity.to_string());
    assert_eq!(v["seq"], 9);

    // A snapshot holds the window and the numbering goes on after a load.
    let bytes = st.snapshot_bytes().expect("encodes");
    let mut back = State::from_snapshot(st.book.rules().clone(), &bytes).expect("decodes");
    assert_eq!(back.events.epoch(), st.events.epoch());
    let a: Vec<_> = st
        .events
        .after(0)
        .expect("held")
        .iter()
        .map(|e| e.json().to_owned())
        .collect();
    let b: Vec<_> = back
        .events
        .after(0)
        .expect("held")
        .iter()
        .map(|e| e.json().to_owned())
        .collect();
    assert_eq!(a, b);
    let o = back.execute(Command::Logout { agent: "a1".into() }, at(4));
    assert_eq!(o.envelopes[0].seq, 12);
}

#[test]
fn a_snapshot_from_before_events_still_loads() {
    let st = state();
    let old = rmp_serde::to_vec_named(&(st.book.snapshot_state(), &st.context)).expect("encodes");
    let back = State::from_snapshot(st.book.rules().clone(), &old).expect("decodes");
    assert_eq!(back.events.last_seq(), 0);
    assert!(back.events.epoch().is_none());
}

/// A logout reaches the customer context: the customers the agent only loaded stop
/// sending it changes (its next desktop never loaded them).
#[test]
fn a_logout_ends_the_watches_of_what_the_agent_only_loaded() {
    use crate::auth::Role;
    use crate::context::record::{Actor, CustomerFields};
    use crate::context::{ContextCommand, ContextReply};
    let mut st = state();
    let profile = st.book.rules().agents[0].clone();
    st.execute(
        Command::Connect {
            profile,
            conn: ConnId::new(),
            node: "n1".into(),
        },
        at(0),
    );
    let crm = Actor {
        id: "crm".into(),
        role: Role::Integration,
    };
    let customer_id = match st
        .context(
            ContextCommand::CreateCustomer {
                by: crm.clone(),
                fields: CustomerFields {
                    name: Some("Marta Sousa".into()),
                    ..Default::default()
                },
                activity_id: None,
            },
            at(1),
        )
        .reply
    {
        Ok(Reply::Context(ContextReply::Customer(v))) => v.customer.customer_id,
        other => panic!("{other:?}"),
    };
    let a1 = AgentId::from("a1");
    st.context(
        ContextCommand::GetCustomer {
            by: Actor::agent(&a1),
            customer_id,
        },
        at(2),
    )
    .reply
    .expect("loaded");
    let told = |o: &Outcome| {
        o.notices
            .iter()
            .any(|n| matches!(n, Notice::RecordChanged { to, .. } if to.contains(&a1)))
    };
    let save = |st: &mut State, version, name: &str, now| {
        st.context(
            ContextCommand::UpdateCustomer {
                by: crm.clone(),
                customer_id,
                base_version: version,
                changes: CustomerFields {
                    name: Some(name.into()),
                    ..Default::default()
                },
            },
            now,
        )
    };
    assert!(told(&save(&mut st, 1, "Marta S. Sousa", at(3))));
    st.execute(Command::Logout { agent: a1.clone() }, at(4));
    assert!(!told(&save(&mut st, 2, "Marta Sousa Lima", at(5))));
}
