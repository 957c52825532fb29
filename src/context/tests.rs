//! The customer-context rules, on the pure book with explicit time.

use super::search::{Plan, with_plan};
use super::*;
use crate::ids::{Channel, QueueId, TaskId};
use crate::task::{CustomerIdentity, TaskState};

const T0: Ts = Ts(1_700_000_000_000_000);

fn at(ms: u64) -> Ts {
    Ts(T0.0 + ms * 1000)
}

fn task(phone: Option<&str>, email: Option<&str>) -> Task {
    Task {
        task_id: TaskId::new(),
        channel: Channel::Voice,
        queue: QueueId::from("support"),
        priority: 0,
        skills: vec!["pt".into()],
        customer: CustomerIdentity {
            phone: phone.map(str::to_owned),
            email: email.map(str::to_owned),
            chat_handle: None,
            name: None,
        },
        attributes: serde_json::json!({"survey": {"motivo": "fatura"}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        created_at: T0,
        state: TaskState::Queued,
        offers: 1,
        idempotency_key: None,
        seq: 1,
        excluded: vec![],
        passed: vec![],
        skill_levels: Default::default(),
        transfers: 0,
        head: false,
        handoff: None,
        epoch: 0,
    }
}

fn agent(id: &str) -> AgentId {
    AgentId::from(id)
}

fn integration() -> Actor {
    Actor {
        id: "crm".into(),
        role: Role::Integration,
    }
}

fn accept(b: &mut ContextBook, t: &Task, who: &str, now: Ts) -> (Activity, ContextEffects) {
    let mut fx = ContextEffects::default();
    let a = b
        .task_event(
            TaskEvent::Assigned {
                task: Arc::new(t.clone()),
                agent: agent(who),
            },
            now,
            &mut fx,
        )
        .expect("an activity");
    (a, fx)
}

fn run(
    b: &mut ContextBook,
    cmd: ContextCommand,
    now: Ts,
) -> (Result<ContextReply, HubError>, ContextEffects) {
    let mut fx = ContextEffects::default();
    let r = b.execute(cmd, now, &mut fx);
    (r, fx)
}

/// A customer created by an integration with `fields`: its id and version, when made.
fn created(b: &mut ContextBook, fields: CustomerFields, now: Ts) -> Option<(CustomerId, u64)> {
    let (r, _) = run(
        b,
        ContextCommand::CreateCustomer {
            by: integration(),
            fields,
            activity_id: None,
        },
        now,
    );
    match r {
        Ok(ContextReply::Customer(v)) => Some((v.customer.customer_id, v.customer.stamp.version)),
        _ => None,
    }
}

/// Customer `c` at version `v` changed by an integration: its new version, when saved.
fn updated(
    b: &mut ContextBook,
    c: CustomerId,
    v: u64,
    changes: CustomerFields,
    now: Ts,
) -> Option<u64> {
    let (r, _) = run(
        b,
        ContextCommand::UpdateCustomer {
            by: integration(),
            customer_id: c,
            base_version: v,
            changes,
        },
        now,
    );
    match r {
        Ok(ContextReply::Customer(view)) => Some(view.customer.stamp.version),
        _ => None,
    }
}

fn customer(b: &mut ContextBook, name: &str, phone: &str, email: &str) -> CustomerId {
    let (r, _) = run(
        b,
        ContextCommand::CreateCustomer {
            by: integration(),
            fields: CustomerFields {
                name: Some(name.into()),
                phones: Some(vec![phone.into()]),
                emails: Some(vec![email.into()]),
                ..Default::default()
            },
            activity_id: None,
        },
        T0,
    );
    match r {
        Ok(ContextReply::Customer(v)) => v.customer.customer_id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_shared_phone_names_its_first_customer_until_they_let_it_go_then_the_next() {
    let mut b = ContextBook::new();
    let phone = "+55 11 5555-0101";
    let x = customer(&mut b, "Xavier", phone, "x@example.com");
    let (y, v) = created(
        &mut b,
        CustomerFields {
            name: Some("Yara".into()),
            phones: Some(vec!["+55 (11) 5555 0101".into()]),
            ..Default::default()
        },
        at(10),
    )
    .expect("created");
    let caller = |b: &mut ContextBook, now: Ts| accept(b, &task(Some(phone), None), "ana", now).0;
    assert_eq!(
        caller(&mut b, at(20)).customer_id,
        Some(x),
        "the first to have it"
    );
    // Yara's name changes: the phone still names Xavier.
    let v = updated(
        &mut b,
        y,
        v,
        CustomerFields {
            name: Some("Yara Lima".into()),
            ..Default::default()
        },
        at(30),
    )
    .expect("saved");
    assert_eq!(caller(&mut b, at(40)).customer_id, Some(x));
    // Yara lets it go: still Xavier's.
    let v = updated(
        &mut b,
        y,
        v,
        CustomerFields {
            phones: Some(vec![]),
            ..Default::default()
        },
        at(50),
    )
    .expect("saved");
    assert_eq!(caller(&mut b, at(60)).customer_id, Some(x));
    // Yara takes it again, then Xavier lets it go: now it names Yara. The same after a
    // reload (who else holds a phone is not stored: rebuilt from the customers).
    updated(
        &mut b,
        y,
        v,
        CustomerFields {
            phones: Some(vec![phone.into()]),
            ..Default::default()
        },
        at(70),
    )
    .expect("saved");
    let bytes = rmp_serde::to_vec_named(&b).expect("encode");
    let mut reloaded: ContextBook = rmp_serde::from_slice(&bytes).expect("decode");
    reloaded.rebuild_identity_holders();
    for b in [&mut b, &mut reloaded] {
        updated(
            b,
            x,
            1,
            CustomerFields {
                phones: Some(vec![]),
                ..Default::default()
            },
            at(80),
        )
        .expect("saved");
        assert_eq!(caller(b, at(90)).customer_id, Some(y), "the next in line");
    }
}

#[test]
fn accept_attaches_to_the_most_recent_open_request_or_opens_one() {
    let mut b = ContextBook::new();
    let c = customer(
        &mut b,
        "João Gonçalves",
        "+351 912 345 678",
        "joao@example.pt",
    );
    // No request yet: a new one is opened.
    let (a1, _) = accept(&mut b, &task(Some("351912345678"), None), "ana", at(1));
    assert_eq!(a1.customer_id, Some(c));
    let r1 = a1.request_id.expect("a request");
    assert_eq!(a1.summary.wait_ms, 1);
    assert_eq!(a1.summary.attributes["survey"]["motivo"], "fatura");
    // The same customer by email: the open request is reused.
    let (a2, _) = accept(&mut b, &task(None, Some("JOAO@example.pt")), "bo", at(2));
    assert_eq!(a2.request_id, Some(r1));
    // Close it; a later one opens a new request.
    let (r, _) = run(
        &mut b,
        ContextCommand::UpdateRequest {
            by: integration(),
            request_id: r1,
            base_version: 1,
            title: None,
            description: None,
            state: Some(RequestState::Closed),
        },
        at(3),
    );
    match r {
        Ok(ContextReply::Request(req)) => {
            assert_eq!(req.state, RequestState::Closed);
            assert_eq!(req.closed_at, Some(at(3)));
        }
        other => panic!("{other:?}"),
    }
    let (a3, _) = accept(&mut b, &task(Some("+351 912 345 678"), None), "ana", at(4));
    assert_ne!(a3.request_id, Some(r1));
    assert!(a3.request_id.is_some());
}

#[test]
fn an_unknown_caller_needs_a_choice_to_close() {
    let mut b = ContextBook::new();
    let (a, _) = accept(&mut b, &task(Some("+46 70 123 45 67"), None), "bo", at(1));
    assert_eq!(a.customer_id, None);
    assert_eq!(b.lists(&agent("bo")).open.len(), 1);
    let close = |choice| ContextCommand::CloseInteraction {
        agent: agent("bo"),
        activity_id: a.activity_id,
        choice,
    };
    let (r, _) = run(&mut b, close(None), at(2));
    assert_eq!(r.err(), Some(HubError::CustomerChoiceRequired));
    // Create: the identity from intake starts the record.
    let (r, _) = run(
        &mut b,
        close(Some(CloseChoice::Create {
            customer: CustomerFields {
                name: Some("Åsa Öberg".into()),
                ..Default::default()
            },
        })),
        at(3),
    );
    let a = match r {
        Ok(ContextReply::Activity(a)) => a,
        other => panic!("{other:?}"),
    };
    let c = a.customer_id.expect("linked");
    assert!(a.ended_at.is_some());
    let found = b.search("asa oberg", 10);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].customer_id, c);
    assert_eq!(found[0].phones, vec!["+46 70 123 45 67".to_owned()]);
    // Now in Recent, not Open.
    let l = b.lists(&agent("bo"));
    assert!(l.open.is_empty());
    assert_eq!(l.recent[0].customer_id, c);
}

#[test]
fn discard_closes_without_a_customer_and_link_attaches_to_an_existing_one() {
    let mut b = ContextBook::new();
    let (a, _) = accept(&mut b, &task(None, None), "bo", at(1));
    let (r, _) = run(
        &mut b,
        ContextCommand::CloseInteraction {
            agent: agent("bo"),
            activity_id: a.activity_id,
            choice: Some(CloseChoice::Discard {}),
        },
        at(2),
    );
    assert!(r.is_ok());
    assert!(b.lists(&agent("bo")).recent.is_empty());
    // Link.
    let c = customer(
        &mut b,
        "Đorđe Đorđević",
        "+381 64 111 2222",
        "dj@example.rs",
    );
    // Not the discarded one: it is closed.
    let discarded = a.activity_id;
    let (r, _) = run(
        &mut b,
        ContextCommand::LinkActivity {
            by: Actor::agent(&agent("bo")),
            activity_id: discarded,
            customer_id: c,
        },
        at(2),
    );
    assert_eq!(r.err(), Some(HubError::InteractionClosed));
    let (a, _) = accept(&mut b, &task(None, None), "bo", at(3));
    let (r, _) = run(
        &mut b,
        ContextCommand::LinkActivity {
            by: Actor::agent(&agent("bo")),
            activity_id: a.activity_id,
            customer_id: c,
        },
        at(4),
    );
    match r {
        Ok(ContextReply::Activity(a)) => {
            assert_eq!(a.customer_id, Some(c));
            assert!(a.request_id.is_some());
            assert_eq!(a.stamp.version, 2);
        }
        other => panic!("{other:?}"),
    }
    // Someone else's interaction cannot be linked.
    let (a2, _) = accept(&mut b, &task(None, None), "ana", at(5));
    let (r, _) = run(
        &mut b,
        ContextCommand::LinkActivity {
            by: Actor::agent(&agent("bo")),
            activity_id: a2.activity_id,
            customer_id: c,
        },
        at(6),
    );
    assert_eq!(r.err(), Some(HubError::RecordNotOpen));
}

#[test]
fn a_stale_update_conflicts_with_the_current_record_and_who_changed_it() {
    let mut b = ContextBook::new();
    let c = customer(
        &mut b,
        "Giulia Ricci",
        "+39 333 1234567",
        "giulia@example.it",
    );
    accept(&mut b, &task(Some("+39 333 1234567"), None), "ana", at(1));
    accept(&mut b, &task(Some("+39 333 1234567"), None), "bo", at(2));
    let upd = |who: &str, base, name: &str| ContextCommand::UpdateCustomer {
        by: Actor::agent(&agent(who)),
        customer_id: c,
        base_version: base,
        changes: CustomerFields {
            name: Some(name.into()),
            ..Default::default()
        },
    };
    let (r, fx) = run(&mut b, upd("ana", 1, "Giulia Ricci Bianchi"), at(3));
    assert!(r.is_ok());
    // bo watches the customer and is told; ana, the author, is not.
    assert_eq!(fx.changes.len(), 1);
    assert_eq!(fx.changes[0].1, vec![agent("bo")]);
    assert_eq!(fx.changes[0].0.version, 2);
    let (r, _) = run(&mut b, upd("bo", 1, "Giulia R."), at(4));
    match r {
        Err(HubError::VersionConflict {
            expected,
            version,
            current,
            changed_by,
            changed_at,
        }) => {
            assert_eq!((expected, version), (1, 2));
            assert_eq!(current["name"], "Giulia Ricci Bianchi");
            assert_eq!(changed_by.id, "ana");
            assert_eq!(changed_at, at(3));
        }
        other => panic!("{other:?}"),
    }
    // Re-applied on the current version, it goes through.
    let (r, _) = run(&mut b, upd("bo", 2, "Giulia R."), at(5));
    assert!(r.is_ok());
}

#[test]
fn agents_edit_only_what_they_have_open_and_can_reopen_from_recent() {
    let mut b = ContextBook::new();
    let c = customer(&mut b, "Niccolò Bruno", "+39 06 1234", "nb@example.it");
    let upd = |base| ContextCommand::UpdateCustomer {
        by: Actor::agent(&agent("ana")),
        customer_id: c,
        base_version: base,
        changes: CustomerFields {
            fields: Some(
                serde_json::json!({"piano": "gold"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
            ..Default::default()
        },
    };
    let (r, _) = run(&mut b, upd(1), at(1));
    assert_eq!(r.err(), Some(HubError::RecordNotOpen));
    let (r, _) = run(
        &mut b,
        ContextCommand::ReopenCustomer {
            agent: agent("ana"),
            customer_id: c,
        },
        at(2),
    );
    assert!(r.is_ok());
    let (r, _) = run(&mut b, upd(1), at(3));
    assert!(r.is_ok(), "{r:?}");
    let (r, _) = run(
        &mut b,
        ContextCommand::CloseCustomer {
            agent: agent("ana"),
            customer_id: c,
        },
        at(4),
    );
    assert!(r.is_ok());
    assert_eq!(b.lists(&agent("ana")).recent[0].customer_id, c);
    let (r, _) = run(&mut b, upd(2), at(5));
    assert_eq!(r.err(), Some(HubError::RecordNotOpen));
}

#[test]
fn a_save_that_changes_nothing_keeps_the_version_and_tells_no_one() {
    let mut b = ContextBook::new();
    let c = customer(&mut b, "João Silva", "+351 912 345 678", "joao@example.pt");
    // Bo has the customer open (an accepted call from that number), so changes reach Bo.
    let (a, _) = accept(&mut b, &task(Some("+351 912 345 678"), None), "bo", at(1));
    let r1 = a.request_id.expect("a request");
    // The customer saved with what it already holds.
    let (r, fx) = run(
        &mut b,
        ContextCommand::UpdateCustomer {
            by: integration(),
            customer_id: c,
            base_version: 1,
            changes: CustomerFields {
                name: Some("João Silva".into()),
                ..Default::default()
            },
        },
        at(2),
    );
    match r {
        Ok(ContextReply::Customer(v)) => assert_eq!(v.customer.stamp.version, 1),
        other => panic!("{other:?}"),
    }
    assert!(
        fx.changes.is_empty() && fx.events.is_empty(),
        "nobody is told"
    );
    // So a save based on version 1 is no conflict.
    assert_eq!(
        updated(
            &mut b,
            c,
            1,
            CustomerFields {
                name: Some("João da Silva".into()),
                ..Default::default()
            },
            at(3)
        ),
        Some(2)
    );
    // A request closed twice, an activity given the notes it has.
    let close = |base| ContextCommand::UpdateRequest {
        by: integration(),
        request_id: r1,
        base_version: base,
        title: None,
        description: None,
        state: Some(RequestState::Closed),
    };
    let (r, _) = run(&mut b, close(1), at(4));
    assert!(
        matches!(r, Ok(ContextReply::Request(ref q)) if q.stamp.version == 2),
        "{r:?}"
    );
    let (r, fx) = run(&mut b, close(2), at(5));
    assert!(
        matches!(r, Ok(ContextReply::Request(ref q)) if q.stamp.version == 2),
        "{r:?}"
    );
    assert!(fx.changes.is_empty() && fx.events.is_empty());
    let notes = |base| ContextCommand::UpdateActivity {
        by: Actor::agent(&agent("bo")),
        activity_id: a.activity_id,
        base_version: base,
        notes: Some("ligou sobre a fatura".into()),
        tags: None,
    };
    let (r, _) = run(&mut b, notes(a.stamp.version), at(6));
    let v = match r {
        Ok(ContextReply::Activity(x)) => x.stamp.version,
        other => panic!("{other:?}"),
    };
    let (r, fx) = run(&mut b, notes(v), at(7));
    assert!(
        matches!(r, Ok(ContextReply::Activity(ref x)) if x.stamp.version == v),
        "{r:?}"
    );
    assert!(fx.changes.is_empty() && fx.events.is_empty());
}

#[test]
fn tags_are_unique_per_activity_and_limits_are_in_characters() {
    let mut b = ContextBook::new();
    let (a, _) = accept(&mut b, &task(None, None), "bo", at(1));
    let upd =
        |base, notes: Option<String>, tags: Option<Vec<String>>| ContextCommand::UpdateActivity {
            by: Actor::agent(&agent("bo")),
            activity_id: a.activity_id,
            base_version: base,
            notes,
            tags,
        };
    let (r, _) = run(
        &mut b,
        upd(1, None, Some(vec!["Faktura".into(), "faktura ".into()])),
        at(2),
    );
    assert!(matches!(r, Err(HubError::DuplicateTag { .. })));
    let (r, _) = run(&mut b, upd(1, Some("č".repeat(2001)), None), at(2));
    assert!(matches!(r, Err(HubError::TooLong { limit: 2000, .. })));
    let (r, _) = run(
        &mut b,
        upd(
            1,
            Some("č".repeat(2000)),
            Some(vec![" återbetalning ".into(), "🙂".repeat(50)]),
        ),
        at(3),
    );
    match r {
        Ok(ContextReply::Activity(a)) => {
            assert_eq!(a.tags[0], "återbetalning");
            assert_eq!(a.stamp.version, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_journey_is_time_ordered_and_can_be_narrowed_to_a_request() {
    let mut b = ContextBook::new();
    let c = customer(&mut b, "Ana Lima", "+55 11 99999 0000", "ana@example.br");
    let (a, _) = accept(&mut b, &task(Some("+55 11 99999 0000"), None), "ana", at(1));
    let r1 = a.request_id.expect("request");
    let (r, _) = run(
        &mut b,
        ContextCommand::CreateRequest {
            by: Actor::agent(&agent("ana")),
            customer_id: c,
            title: "Troca de endereço".into(),
            description: String::new(),
        },
        at(2),
    );
    let r2 = match r {
        Ok(ContextReply::Request(r)) => r.request_id,
        other => panic!("{other:?}"),
    };
    run(
        &mut b,
        ContextCommand::AddNote {
            by: Actor::agent(&agent("ana")),
            customer_id: c,
            request_id: Some(r1),
            text: "Cliente pediu retorno amanhã".into(),
        },
        at(3),
    )
    .0
    .expect("note");
    let (r, _) = run(
        &mut b,
        ContextCommand::Journey {
            customer_id: c,
            request_id: None,
            limit: 100,
        },
        at(4),
    );
    let all = match r {
        Ok(ContextReply::Journey(j)) => j,
        other => panic!("{other:?}"),
    };
    let kinds: Vec<JourneyKind> = all.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            JourneyKind::CustomerCreated,
            JourneyKind::RequestOpened,
            JourneyKind::ActivityStarted,
            JourneyKind::RequestOpened,
            JourneyKind::Note,
        ]
    );
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
    let (r, _) = run(
        &mut b,
        ContextCommand::Journey {
            customer_id: c,
            request_id: Some(r2),
            limit: 100,
        },
        at(5),
    );
    match r {
        Ok(ContextReply::Journey(j)) => {
            assert_eq!(j.len(), 1);
            assert_eq!(j[0].kind, JourneyKind::RequestOpened);
        }
        other => panic!("{other:?}"),
    }
    // Search by request title, without accents.
    assert_eq!(b.search("endereco", 5).len(), 1);
}

#[test]
fn a_task_taken_over_by_another_agent_moves_its_activity() {
    let mut b = ContextBook::new();
    let t = task(None, None);
    let (a, _) = accept(&mut b, &t, "ana", at(1));
    let (moved, _) = accept(&mut b, &t, "bo", at(2));
    assert_eq!(moved.activity_id, a.activity_id);
    assert_eq!(moved.agent_id, agent("bo"));
    assert!(b.lists(&agent("ana")).open.is_empty());
    assert_eq!(b.lists(&agent("bo")).open.len(), 1);
}

/// The first agent of a task taken over stops watching it: the new agent's changes go
/// to the new agent only. Before, the first agent went on getting them, and an unknown
/// caller's topic, which only the first agent watched, outlived the interaction.
#[test]
fn the_first_agent_of_a_task_taken_over_stops_watching_it() {
    let mut b = ContextBook::new();
    let c = customer(
        &mut b,
        "Giulia Bianchi",
        "+39 333 123 4567",
        "giulia@example.it",
    );
    let t = task(Some("+39 333 123 4567"), None);
    accept(&mut b, &t, "ana", at(1));
    accept(&mut b, &t, "bo", at(2));
    let (r, fx) = run(
        &mut b,
        ContextCommand::UpdateCustomer {
            by: integration(),
            customer_id: c,
            base_version: 1,
            changes: CustomerFields {
                name: Some("Giulia Rossi".into()),
                ..Default::default()
            },
        },
        at(3),
    );
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(fx.changes.len(), 1);
    assert_eq!(fx.changes[0].1, vec![agent("bo")]);

    // An unknown caller: the activity's topic goes with the activity.
    let mut b = ContextBook::new();
    let t = task(None, None);
    let (a, _) = accept(&mut b, &t, "ana", at(1));
    let (_, fx) = accept(&mut b, &t, "bo", at(2));
    assert!(fx.changes.iter().all(|(_, to)| !to.contains(&agent("ana"))));
    let (r, _) = run(
        &mut b,
        ContextCommand::CloseInteraction {
            agent: agent("bo"),
            activity_id: a.activity_id,
            choice: Some(CloseChoice::Discard {}),
        },
        at(3),
    );
    assert!(r.is_ok(), "{r:?}");
    assert!(b.watchers.is_empty(), "left watching: {:?}", b.watchers);
}

/// An agent gone offline stops watching the customers it only loaded; what it has open
/// it keeps (its next desktop shows it).
#[test]
fn an_agent_gone_offline_stops_watching_what_it_only_loaded() {
    let mut b = ContextBook::new();
    let loaded = customer(&mut b, "Lars Berg", "+46 70 111 22 33", "lars@example.se");
    let open = customer(
        &mut b,
        "Jovana Ilić",
        "+381 64 555 666",
        "jovana@example.rs",
    );
    let (r, _) = run(
        &mut b,
        ContextCommand::GetCustomer {
            by: Actor::agent(&agent("ana")),
            customer_id: loaded,
        },
        at(1),
    );
    assert!(r.is_ok(), "{r:?}");
    accept(&mut b, &task(Some("+381 64 555 666"), None), "ana", at(2));
    let mut fx = ContextEffects::default();
    b.task_event(
        TaskEvent::AgentOffline {
            agent: agent("ana"),
        },
        at(3),
        &mut fx,
    );
    let save = |b: &mut ContextBook, c, now| {
        run(
            b,
            ContextCommand::UpdateCustomer {
                by: integration(),
                customer_id: c,
                base_version: 1,
                changes: CustomerFields {
                    name: Some("Called back".into()),
                    ..Default::default()
                },
            },
            now,
        )
        .1
    };
    let fx = save(&mut b, loaded, at(4));
    assert!(
        fx.changes.iter().all(|(_, to)| to.is_empty()),
        "{:?}",
        fx.changes
    );
    let fx = save(&mut b, open, at(5));
    assert_eq!(fx.changes[0].1, vec![agent("ana")]);
}

/// A small deterministic generator (no dependency for one property test).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
    /// A word from a small alphabet with accents, Cyrillic and digits, so that random
    /// queries often hit.
    fn word(&mut self, len: usize) -> String {
        const ALPHA: &[&str] = &[
            "a", "á", "A", "o", "Ö", "đ", "Đ", "ж", "Ђ", "e", "é", "n", "ñ", "s", "ß", "1", "2",
            "3", " ",
        ];
        (0..len).map(|_| self.pick(ALPHA)).collect()
    }
    /// A word of `min` to `min + spread - 1` characters.
    fn word_of(&mut self, min: usize, spread: usize) -> String {
        let len = min + self.below(spread);
        self.word(len)
    }
    fn phone(&mut self) -> String {
        let digits: String = (0..6)
            .map(|_| char::from(b'0' + self.below(4) as u8))
            .collect();
        format!("+3{} {}", self.below(10), digits)
    }
}

#[test]
fn the_search_index_answers_exactly_what_the_old_scan_did_on_random_data() {
    for seed in 1..=6u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut b = ContextBook::new();
        let mut customers: Vec<(CustomerId, u64)> = Vec::new();
        let mut requests: Vec<(RequestId, u64)> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        for step in 0..400 {
            let n = at(step);
            match rng.below(10) {
                // New customers, most often.
                0..=4 => {
                    let name = rng.word_of(3, 8);
                    let phone = rng.phone();
                    let email = format!("{}@ex.{}", rng.word(4).replace(' ', ""), rng.word(2));
                    texts.extend([name.clone(), phone.clone(), email.clone()]);
                    let fields = CustomerFields {
                        name: Some(name),
                        phones: Some(vec![phone]),
                        emails: Some(vec![email]),
                        ..Default::default()
                    };
                    customers.extend(created(&mut b, fields, n));
                }
                // A renamed customer: the index drops the old terms.
                5 | 6 if !customers.is_empty() => {
                    let i = rng.below(customers.len());
                    let (c, v) = customers[i];
                    let name = rng.word_of(3, 8);
                    texts.push(name.clone());
                    let changes = CustomerFields {
                        name: Some(name),
                        phones: Some(vec![rng.phone()]),
                        ..Default::default()
                    };
                    if let Some(version) = updated(&mut b, c, v, changes, n) {
                        customers[i].1 = version;
                    }
                }
                // Requests and retitled requests: titles are searched too.
                7 | 8 if !customers.is_empty() => {
                    let (c, _) = customers[rng.below(customers.len())];
                    let title = rng.word_of(5, 10);
                    texts.push(title.clone());
                    let (r, _) = run(
                        &mut b,
                        ContextCommand::CreateRequest {
                            by: integration(),
                            customer_id: c,
                            title,
                            description: String::new(),
                        },
                        n,
                    );
                    if let Ok(ContextReply::Request(r)) = r {
                        requests.push((r.request_id, r.stamp.version));
                    }
                }
                _ if !requests.is_empty() => {
                    let i = rng.below(requests.len());
                    let (r, v) = requests[i];
                    let title = rng.word_of(4, 6);
                    texts.push(title.clone());
                    let (res, _) = run(
                        &mut b,
                        ContextCommand::UpdateRequest {
                            by: integration(),
                            request_id: r,
                            base_version: v,
                            title: Some(title),
                            description: None,
                            state: None,
                        },
                        n,
                    );
                    if let Ok(ContextReply::Request(req)) = res {
                        requests[i].1 = req.stamp.version;
                    }
                }
                _ => {}
            }
        }
        assert!(customers.len() > 100);
        // Queries: pieces of what was written (any length: one n-gram's list, or the
        // lists of several trigrams), random words, digit runs, blanks.
        let mut queries: Vec<String> = vec![String::new(), "  ".into(), "a".into(), "A".into()];
        for _ in 0..300 {
            let t: Vec<char> = texts[rng.below(texts.len())].chars().collect();
            let from = rng.below(t.len().max(1));
            let len = 1 + rng.below(6);
            queries.push(t.iter().skip(from).take(len).collect());
            queries.push(rng.word_of(1, 4));
            let d: String = (0..3 + rng.below(3))
                .map(|_| char::from(b'0' + rng.below(4) as u8))
                .collect();
            queries.push(d);
        }
        let bytes = rmp_serde::to_vec_named(&b).expect("encode");
        // A reloaded copy: its index is built at once (labels spread evenly, lists
        // appended) rather than one change at a time.
        let mut loaded: ContextBook = rmp_serde::from_slice(&bytes).expect("decode");
        loaded.rebuild_search();
        // As in production (a join, then the lists read through if it gives up), and
        // each way alone: a join to the end, the lists read through.
        for plan in [None, Some(Plan::Join), Some(Plan::ReadThrough)] {
            with_plan(plan, || {
                for q in &queries {
                    for limit in [1, 7, 50] {
                        // The whole result lines, not only the ids: the index holds them.
                        let want = b.search_by_scan(q, limit);
                        assert_eq!(
                            b.search(q, limit),
                            want,
                            "seed {seed} query {q:?} limit {limit} plan {plan:?}"
                        );
                        assert_eq!(
                            loaded.search(q, limit),
                            want,
                            "after a reload: seed {seed} query {q:?} limit {limit} plan {plan:?}"
                        );
                    }
                }
            });
        }
    }
}

/// A name for the name-order property test: many customers share a few names (equal
/// names are ordered by id), and numbered names come in ascending and descending runs,
/// each placed right after (or before) the last one, so that the gaps between labels
/// run out and neighbours are relabelled.
fn crowded_name(rng: &mut Rng, up: &mut u32, down: &mut u32) -> String {
    match rng.below(6) {
        0 | 1 => rng
            .pick(&[
                "Ana Silva",
                "ana silva",
                "Ána Silva",
                "Ana",
                "Zoë Ana",
                "Ђорђе Ана",
            ])
            .to_owned(),
        2 => {
            *up += 1;
            format!("Cust {:05}", *up)
        }
        3 => {
            *down -= 1;
            format!("Cust {:05}", *down)
        }
        4 => format!("Ana {}", rng.word_of(1, 3)),
        _ => rng.word_of(2, 5),
    }
}

/// The index's pages against a brute-force scan over customers whose names bunch,
/// repeat and move: after every batch of creates, renames (which move a customer in
/// name order, possibly into a run of equal names), phone changes and new requests,
/// and across a reload (a built index, then changed one customer at a time again).
/// Each page must be the scan's: the same customers, in the same order, for every
/// limit.
#[test]
fn search_pages_are_in_name_order_through_renames_equal_names_and_reloads() {
    let queries = [
        "a",
        "an",
        "ana",
        "ana silva",
        "silva",
        "cust",
        "cust 0",
        "cust 9",
        "1",
        "00",
        "ан",
        "dord",
        "zo",
        "+38",
        "381",
        "3814",
        "t",
        "ticket",
        "e",
    ];
    for seed in 1..=3u64 {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ seed);
        let mut b = ContextBook::new();
        let mut customers: Vec<(CustomerId, u64)> = Vec::new();
        let (mut up, mut down) = (10_000u32, 10_000u32);
        for step in 0..2_400u64 {
            if step == 1_200 {
                let bytes = rmp_serde::to_vec_named(&b).expect("encode");
                b = rmp_serde::from_slice(&bytes).expect("decode");
                b.rebuild_search();
            }
            let n = at(step);
            match rng.below(10) {
                0..=5 => {
                    let name = crowded_name(&mut rng, &mut up, &mut down);
                    let phone = format!("+381 {}", rng.below(1000));
                    let fields = CustomerFields {
                        name: Some(name),
                        phones: Some(vec![phone]),
                        ..Default::default()
                    };
                    customers.extend(created(&mut b, fields, n));
                }
                6..=8 if !customers.is_empty() => {
                    let i = rng.below(customers.len());
                    let (c, v) = customers[i];
                    let changes = if rng.below(3) == 0 {
                        CustomerFields {
                            phones: Some(vec![format!("+381 {}", rng.below(1000))]),
                            ..Default::default()
                        }
                    } else {
                        CustomerFields {
                            name: Some(crowded_name(&mut rng, &mut up, &mut down)),
                            ..Default::default()
                        }
                    };
                    if let Some(version) = updated(&mut b, c, v, changes, n) {
                        customers[i].1 = version;
                    }
                }
                _ if !customers.is_empty() => {
                    let (c, _) = customers[rng.below(customers.len())];
                    let _ = run(
                        &mut b,
                        ContextCommand::CreateRequest {
                            by: integration(),
                            customer_id: c,
                            title: format!("Ticket {}", rng.word_of(1, 3)),
                            description: String::new(),
                        },
                        n,
                    );
                }
                _ => {}
            }
            if step % 200 == 199 {
                // The lists' copies of the labels are what a search follows.
                b.searcher().0.check();
                for plan in [None, Some(Plan::Join), Some(Plan::ReadThrough)] {
                    with_plan(plan, || {
                        for q in queries {
                            for limit in [1, 3, 20, 50] {
                                assert_eq!(
                                    b.search(q, limit),
                                    b.search_by_scan(q, limit),
                                    "seed {seed} step {step} query {q:?} limit {limit} plan {plan:?}"
                                );
                            }
                        }
                    });
                }
            }
        }
        assert!(customers.len() > 1_000);
    }
}

/// A search is answered from the index's handle, without the book: a change made
/// while a search holds the index waits for the next search, which sees it.
#[test]
fn a_change_made_while_a_search_reads_the_index_is_seen_by_the_next_search() {
    let mut b = ContextBook::new();
    let create = |b: &mut ContextBook, name: &str| {
        let (r, _) = run(
            b,
            ContextCommand::CreateCustomer {
                by: integration(),
                fields: CustomerFields {
                    name: Some(name.into()),
                    ..Default::default()
                },
                activity_id: None,
            },
            at(1),
        );
        assert!(r.is_ok(), "{r:?}");
    };
    create(&mut b, "Åsa Öberg");
    let searcher = b.searcher();
    let held = searcher.0.hold();
    // The book does not wait for the reader: the change waits instead.
    create(&mut b, "Asa Lindqvist");
    drop(held);
    let names: Vec<String> = searcher
        .search("asa", 10)
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["Asa Lindqvist", "Åsa Öberg"]);
}

/// A search put off with the index held (its thread is in `SCHED_IDLE`) leaves a backlog:
/// the next change brings in only a few of it under the state's lock, and the next
/// search brings in the rest before it reads, so it still sees every change.
#[test]
fn a_backlog_left_by_a_held_search_is_brought_in_a_few_at_a_time_and_searched_whole() {
    let mut b = ContextBook::new();
    let create = |b: &mut ContextBook, name: String| {
        let (r, _) = run(
            b,
            ContextCommand::CreateCustomer {
                by: integration(),
                fields: CustomerFields {
                    name: Some(name),
                    ..Default::default()
                },
                activity_id: None,
            },
            at(1),
        );
        assert!(r.is_ok(), "{r:?}");
    };
    create(&mut b, "Åsa Öberg".into());
    let searcher = b.searcher();
    let held = searcher.0.hold();
    for i in 0..20 {
        create(&mut b, format!("Asa {i:02}"));
    }
    drop(held);
    assert_eq!(searcher.0.pending(), 20);
    create(&mut b, "Asa Sist".into());
    assert_eq!(searcher.0.pending(), 21 - super::search::INLINE_CATCH_UP);
    let found = searcher.search("asa", 50);
    assert_eq!(found.len(), 22);
    assert_eq!(found[0].name, "Asa 00");
    assert_eq!(found[21].name, "Åsa Öberg");
    assert_eq!(searcher.0.pending(), 0);
}

mod events;
