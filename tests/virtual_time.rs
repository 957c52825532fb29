//! Timer logic on virtual time: the hub's timer loop over the in-memory store, with
//! tokio's clock paused, so 15 seconds pass in no time and exactly.

use std::sync::Arc;
use std::time::Duration;
use switchboard::clock::Clock;
use switchboard::config::Config;
use switchboard::hub::Hub;
use switchboard::ids::{AgentId, Channel, ConnId};
use switchboard::routing::Command;
use switchboard::state::Reply;
use switchboard::store::memory::MemoryStore;
use switchboard::task::{CustomerIdentity, NewTask};

const CFG: &str = r#"
[[queues]]
id = "support"

[[agents]]
id = "a1"
queues = ["support"]

[[agents]]
id = "a2"
queues = ["support"]
"#;

fn hub() -> Arc<Hub> {
    let cfg = Arc::new(Config::parse(CFG).expect("config"));
    let clock = Clock::new();
    let (sink, binding) = switchboard::store::sink::sink();
    let store = Arc::new(MemoryStore::new(Arc::new(cfg.rules()), clock.now(), sink));
    Hub::new(
        cfg,
        switchboard::auth::Keys::new(b"0123456789abcdef"),
        store,
        binding,
        clock,
    )
}

async fn login_ready(hub: &Hub, id: &str) {
    let profile = hub.profile(&AgentId::from(id)).expect("profile");
    hub.execute(Command::Connect {
        profile,
        conn: ConnId::new(),
        node: "n1".into(),
    })
    .await
    .expect("connect");
    hub.execute(Command::SetReady { agent: id.into() })
        .await
        .expect("ready");
}

async fn status(hub: &Hub, id: &str) -> (String, Option<String>, Option<String>) {
    let v = hub
        .store()
        .agent_view(&AgentId::from(id))
        .await
        .expect("store")
        .expect("agent");
    let j = serde_json::to_value(&v).expect("json");
    (
        j["status"].as_str().unwrap_or_default().to_owned(),
        j["reason"].as_str().map(str::to_owned),
        j["offer"]["task"]["task_id"].as_str().map(str::to_owned),
    )
}

#[tokio::test(start_paused = true)]
async fn the_default_offer_timeout_is_15_seconds_then_the_next_agent_gets_the_task() {
    let hub = hub();
    tokio::spawn(hub.clone().run_timers(None));
    login_ready(&hub, "a1").await;
    let created = hub
        .execute(Command::CreateTask(Box::new(NewTask {
            channel: Channel::Voice,
            queue: "support".into(),
            priority: 0,
            skills: vec![],
            skill_levels: Default::default(),
            customer: CustomerIdentity::default(),
            attributes: Default::default(),
            idempotency_key: None,
        })))
        .await
        .expect("create");
    let Reply::Created { task, .. } = created else {
        panic!("created")
    };
    let task_id = task.task_id.to_string();
    assert_eq!(
        status(&hub, "a1").await.2.as_deref(),
        Some(task_id.as_str())
    );
    login_ready(&hub, "a2").await;

    tokio::time::sleep(Duration::from_millis(14_999)).await;
    assert_eq!(
        status(&hub, "a1").await.0,
        "reserved",
        "not yet at 14.999 s"
    );

    tokio::time::sleep(Duration::from_millis(2)).await;
    let (st, reason, _) = status(&hub, "a1").await;
    assert_eq!(
        (st.as_str(), reason.as_deref()),
        ("not_ready", Some("missed_offer"))
    );
    let (st, _, offered) = status(&hub, "a2").await;
    assert_eq!(st, "reserved");
    assert_eq!(offered.as_deref(), Some(task_id.as_str()));
}

#[tokio::test(start_paused = true)]
async fn grace_and_wrap_up_timers_fire_on_time() {
    let hub = hub();
    tokio::spawn(hub.clone().run_timers(None));
    let profile = hub.profile(&AgentId::from("a1")).expect("profile");
    let conn = ConnId::new();
    hub.execute(Command::Connect {
        profile,
        conn,
        node: "n1".into(),
    })
    .await
    .expect("connect");
    hub.execute(Command::SetReady { agent: "a1".into() })
        .await
        .expect("ready");
    hub.execute(Command::Disconnect {
        agent: "a1".into(),
        conn,
    })
    .await
    .expect("drop");
    // Default grace: 30 s.
    tokio::time::sleep(Duration::from_millis(29_990)).await;
    assert_eq!(status(&hub, "a1").await.0, "ready");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(status(&hub, "a1").await.0, "offline");
}
