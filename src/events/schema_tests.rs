//! `protocol/v1/events.schema.json` against the code: the same types, and real events
//! (one of each type, from a scenario through the books) valid against it.

use super::EventData;
use crate::clock::Ts;
use crate::config::Config;
use crate::context::ContextCommand;
use crate::context::record::{Actor, CustomerFields, RequestState};
use crate::ids::{AgentId, Channel, ConnId, TaskId};
use crate::routing::{Command, TransferTo};
use crate::state::{Outcome, Reply, State};
use crate::task::{CustomerIdentity, NewTask};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

fn read(name: &str) -> Value {
    let path = format!("{}/protocol/v1/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn validator() -> jsonschema::Validator {
    let events = read("events.schema.json");
    let base = events["$id"].as_str().expect("an $id").to_owned();
    let shared = base.replace("events.schema.json", "schema.json");
    jsonschema::options()
        .with_resource(
            shared,
            jsonschema::Resource::from_contents(read("schema.json")).expect("a resource"),
        )
        .build(&events)
        .expect("events.schema.json compiles")
}

#[test]
fn the_schema_names_exactly_the_catalogs_types_each_with_its_data() {
    let doc = read("events.schema.json");
    let listed: Vec<&str> = doc["$defs"]["EventType"]["enum"]
        .as_array()
        .expect("an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed, EventData::TYPES);
    let branches: Vec<&str> = doc["$defs"]["Envelope"]["allOf"]
        .as_array()
        .expect("allOf")
        .iter()
        .filter_map(|b| b["if"]["properties"]["type"]["const"].as_str())
        .collect();
    assert_eq!(branches, EventData::TYPES, "one if/then per type");
}

const T0: Ts = Ts(1_700_000_000_000_000);

fn at(ms: u64) -> Ts {
    Ts(T0.0 + ms * 1000)
}

struct Run {
    st: State,
    seen: Vec<Value>,
}

impl Run {
    fn keep(&mut self, o: Outcome) -> Outcome {
        for e in &o.envelopes {
            self.seen
                .push(serde_json::from_str(e.json()).expect("an envelope is JSON"));
        }
        o
    }
    fn cmd(&mut self, c: Command, now: Ts) -> Outcome {
        let o = self.st.execute(c, now);
        self.keep(o)
    }
    fn ctx(&mut self, c: ContextCommand, now: Ts) -> Outcome {
        let o = self.st.context(c, now);
        self.keep(o)
    }
    fn connect(&mut self, id: &str, now: Ts) -> ConnId {
        let conn = ConnId::new();
        let profile = self
            .st
            .book
            .rules()
            .agents
            .iter()
            .find(|p| &*p.id.0 == id)
            .cloned()
            .expect("agent");
        self.cmd(
            Command::Connect {
                profile,
                conn,
                node: "n1/boot".into(),
            },
            now,
        );
        self.cmd(Command::SetReady { agent: id.into() }, now);
        conn
    }
    fn create(&mut self, phone: Option<&str>, now: Ts) -> TaskId {
        let o = self.cmd(
            Command::CreateTask(Box::new(NewTask {
                channel: Channel::Chat,
                queue: "support".into(),
                priority: 0,
                skills: vec![],
                skill_levels: Default::default(),
                customer: CustomerIdentity {
                    phone: phone.map(str::to_owned),
                    ..Default::default()
                },
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
    fn offer_of(&self, id: &str) -> crate::ids::OfferId {
        self.st
            .book
            .agent_view(&AgentId::from(id))
            .and_then(|v| v.offer)
            .map(|o| o.offer_id)
            .expect("an offer")
    }
}

#[test]
fn one_event_of_every_type_from_the_books_matches_the_schema() {
    let cfg = Config::parse(
        "[routing]\nwrap_up_secs = 0\n[[queues]]\nid = \"support\"\n[[queues]]\nid = \"vip\"\n[[agents]]\nid = \"a1\"\nqueues = [\"support\", \"vip\"]\n[[agents]]\nid = \"a2\"\nqueues = [\"support\"]\n",
    )
    .expect("config");
    let mut r = Run {
        st: State::new(Arc::new(cfg.rules()), T0),
        seen: Vec::new(),
    };
    let crm = Actor {
        id: "crm".into(),
        role: crate::auth::Role::Integration,
    };
    let o = r.ctx(
        ContextCommand::CreateCustomer {
            by: crm.clone(),
            fields: CustomerFields {
                name: Some("Ana".into()),
                phones: Some(vec!["+351 912 345 678".into()]),
                ..Default::default()
            },
            activity_id: None,
        },
        at(0),
    );
    let customer = match o.reply {
        Ok(Reply::Context(crate::context::ContextReply::Customer(v))) => v.customer.customer_id,
        other => panic!("{other:?}"),
    };
    r.ctx(
        ContextCommand::UpdateCustomer {
            by: crm.clone(),
            customer_id: customer,
            base_version: 1,
            changes: CustomerFields {
                name: Some("Ana A.".into()),
                ..Default::default()
            },
        },
        at(1),
    );
    r.connect("a1", at(2));
    let a2 = r.connect("a2", at(3));
    // Offered to a1, declined, offered to a2, expired, back to a1, accepted.
    let t = r.create(Some("351912345678"), at(4));
    let offer = r.offer_of("a1");
    r.cmd(
        Command::Decline {
            agent: "a1".into(),
            offer_id: offer,
        },
        at(5),
    );
    // a2's offer expires; when the re-offer times pass the task goes to one of them.
    let o =
        r.st.expire_due(at(5).plus(std::time::Duration::from_secs(15)));
    r.keep(o);
    r.cmd(Command::SetReady { agent: "a2".into() }, at(16_000));
    let o = r.st.expire_due(at(40_000));
    r.keep(o);
    let who = if r
        .st
        .book
        .agent_view(&AgentId::from("a1"))
        .is_some_and(|v| v.offer.is_some())
    {
        "a1"
    } else {
        "a2"
    };
    let offer = r.offer_of(who);
    let o = r.cmd(
        Command::Accept {
            agent: who.into(),
            offer_id: offer,
        },
        at(40_001),
    );
    let (activity, request) = match o.reply {
        Ok(Reply::Accepted { activity, .. }) => {
            let a = activity.expect("an activity");
            (a.activity_id, a.request_id.expect("a request"))
        }
        other => panic!("{other:?}"),
    };
    for (s, v) in [(RequestState::Closed, 1), (RequestState::Open, 2)] {
        r.ctx(
            ContextCommand::UpdateRequest {
                by: crm.clone(),
                request_id: request,
                base_version: v,
                title: None,
                description: None,
                state: Some(s),
            },
            at(40_002),
        );
    }
    r.cmd(
        Command::Complete {
            agent: who.into(),
            task_id: t,
            wrap_up_code: None,
        },
        at(40_003),
    );
    r.ctx(
        ContextCommand::CloseInteraction {
            agent: who.into(),
            activity_id: activity,
            choice: None,
        },
        at(40_004),
    );
    // Transferred, then cancelled while offered (withdrawn).
    r.cmd(Command::SetReady { agent: "a1".into() }, at(40_005));
    let t2 = r.create(None, at(40_006));
    r.cmd(
        Command::Transfer {
            task_id: t2,
            to: TransferTo::Queue {
                queue: "vip".into(),
                priority: None,
                skills: None,
                head: false,
            },
            by: crm.clone(),
        },
        at(40_007),
    );
    r.cmd(
        Command::CancelTask {
            task_id: t2,
            reason: None,
            by: crm,
        },
        at(40_008),
    );
    r.cmd(
        Command::Disconnect {
            agent: "a2".into(),
            conn: a2,
        },
        at(40_009),
    );
    r.cmd(Command::NodeLost { node: "n1".into() }, at(40_010));
    r.cmd(Command::Logout { agent: "a1".into() }, at(40_011));

    let v = validator();
    let mut types = BTreeSet::new();
    for (i, e) in r.seen.iter().enumerate() {
        let errors: Vec<String> = v
            .iter_errors(e)
            .map(|x| format!("{x} at {}", x.instance_path))
            .collect();
        assert!(errors.is_empty(), "{e}\n{errors:#?}");
        assert_eq!(e["seq"], i as u64 + 1, "dense from 1");
        types.insert(e["type"].as_str().unwrap_or_default().to_owned());
    }
    let all: BTreeSet<String> = EventData::TYPES.iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = all.difference(&types).collect();
    assert!(missing.is_empty(), "no event of {missing:?}");
}
