//! The integration events of the customer context, in the order things happened.

use super::*;

fn types(fx: &ContextEffects) -> Vec<&'static str> {
    fx.events.iter().map(|e| e.type_name()).collect()
}

#[test]
fn customers_requests_and_activities_tell_what_happened() {
    let mut b = ContextBook::new();
    let (r, fx) = run(
        &mut b,
        ContextCommand::CreateCustomer {
            by: integration(),
            fields: CustomerFields {
                name: Some("João".into()),
                phones: Some(vec!["+351 912 345 678".into()]),
                ..Default::default()
            },
            activity_id: None,
        },
        T0,
    );
    let c = match r {
        Ok(ContextReply::Customer(v)) => v.customer.customer_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(types(&fx), ["customer.created"]);
    assert!(matches!(
        fx.events[0],
        EventData::CustomerCreated { customer_id, version: 1 } if customer_id == c
    ));

    // An accept of a known caller: a request opened for it, then the activity on it.
    let (a, fx) = accept(&mut b, &task(Some("351912345678"), None), "ana", at(1));
    assert_eq!(types(&fx), ["request.opened", "activity.created"]);
    let r1 = a.request_id.expect("request");
    match &fx.events[1] {
        EventData::ActivityCreated {
            activity_id,
            request_id,
            customer_id,
            task_id,
        } => {
            assert_eq!(*activity_id, a.activity_id);
            assert_eq!(*request_id, Some(r1));
            assert_eq!(*customer_id, Some(c));
            assert_eq!(*task_id, Some(a.task_id));
        }
        other => panic!("{other:?}"),
    }

    let (_, fx) = run(
        &mut b,
        ContextCommand::UpdateCustomer {
            by: integration(),
            customer_id: c,
            base_version: 1,
            changes: CustomerFields {
                name: Some("João G.".into()),
                ..Default::default()
            },
        },
        at(2),
    );
    assert!(matches!(
        fx.events[..],
        [EventData::CustomerUpdated { version: 2, .. }]
    ));

    let state = |s| ContextCommand::UpdateRequest {
        by: integration(),
        request_id: r1,
        base_version: if s == RequestState::Closed { 1 } else { 2 },
        title: None,
        description: None,
        state: Some(s),
    };
    let (_, fx) = run(&mut b, state(RequestState::Closed), at(3));
    assert_eq!(types(&fx), ["request.closed"]);
    let (_, fx) = run(&mut b, state(RequestState::Open), at(4));
    assert_eq!(types(&fx), ["request.reopened"]);

    let (_, fx) = run(
        &mut b,
        ContextCommand::CloseInteraction {
            agent: agent("ana"),
            activity_id: a.activity_id,
            choice: None,
        },
        at(5),
    );
    assert_eq!(types(&fx), ["activity.closed"]);
    // A title change is no event of the catalog.
    let (_, fx) = run(
        &mut b,
        ContextCommand::UpdateRequest {
            by: integration(),
            request_id: r1,
            base_version: 3,
            title: Some("Invoice".into()),
            description: None,
            state: None,
        },
        at(6),
    );
    assert!(fx.events.is_empty());
}

#[test]
fn an_unknown_caller_saved_at_close_creates_the_customer_then_its_request() {
    let mut b = ContextBook::new();
    let (a, fx) = accept(&mut b, &task(None, None), "bo", at(1));
    assert_eq!(types(&fx), ["activity.created"]);
    let (_, fx) = run(
        &mut b,
        ContextCommand::CloseInteraction {
            agent: agent("bo"),
            activity_id: a.activity_id,
            choice: Some(CloseChoice::Create {
                customer: CustomerFields {
                    name: Some("Åsa".into()),
                    ..Default::default()
                },
            }),
        },
        at(2),
    );
    assert_eq!(
        types(&fx),
        ["customer.created", "request.opened", "activity.closed"]
    );
}
