//! Everything from outside can be wrong: each gets a typed error, and the connection
//! and the hub survive.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use switchboard::auth::{Claims, Role, unix_now};
use tokio_tungstenite::tungstenite::Message;

async fn hub(extra: &str) -> TestHub {
    TestHub::start(&format!("{extra}\n{QUEUES_AND_AGENTS}")).await
}

/// The connection still answers after the bad input.
async fn still_alive(c: &mut Client) {
    c.ok(json!({"type": "ping"})).await;
}

#[tokio::test]
async fn malformed_frames_get_typed_errors_and_the_connection_survives() {
    let hub = hub("").await;
    let mut c = hub.agent("ana").await;
    let cases: &[(&str, &str)] = &[
        ("this is not json", "bad_json"),
        ("[1,2,3]", "invalid_message"),
        (r#"{"id":"a","type":"teleport"}"#, "unknown_type"),
        (r#"{"id":"b"}"#, "invalid_message"),
        (r#"{"id":"c","type":"accept"}"#, "invalid_message"),
        (
            r#"{"id":"d","type":"accept","offer_id":42}"#,
            "invalid_message",
        ),
        (
            r#"{"id":"e","type":"accept","offer_id":"not-a-uuid"}"#,
            "invalid_message",
        ),
        (
            r#"{"id":"f","type":"set_state","state":"sleeping"}"#,
            "invalid_message",
        ),
        (
            r#"{"id":"g","type":"ping","surprise":true}"#,
            "invalid_message",
        ),
        (r#"{"id":7,"type":"ping"}"#, "invalid_message"),
    ];
    for (frame, code) in cases {
        c.send_raw(Message::text(*frame)).await;
        let e = c.expect("error").await;
        assert_eq!(e["code"], *code, "{frame} -> {e}");
        still_alive(&mut c).await;
    }
    // The request id is echoed when it could be read.
    c.send_raw(Message::text(r#"{"id":"z9","type":"teleport"}"#))
        .await;
    assert_eq!(c.expect("error").await["re"], "z9");
    c.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(c.expect("error").await["code"], "binary_not_supported");
    still_alive(&mut c).await;
    hub.shutdown().await;
}

#[tokio::test]
async fn transitions_that_are_not_allowed_are_typed_errors() {
    let hub = hub("offer_timeout_secs = 0.2").await;
    let mut ana = hub.ready_agent("ana").await;
    let mut bo = hub.ready_agent("bo").await;
    let unknown = "6f1c1b7e-3a55-4f7e-9d2c-0a1b2c3d4e5f";
    ana.err(
        json!({"type": "accept", "offer_id": unknown}),
        "offer_not_found",
    )
    .await;
    ana.err(
        json!({"type": "complete", "task_id": unknown}),
        "task_not_in_progress",
    )
    .await;
    hub.create(chat()).await;
    let offer = ana.expect("offer").await;
    // Someone else's offer.
    bo.err(
        json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}),
        "not_your_offer",
    )
    .await;
    // An expired offer.
    ana.expect("offer_ended").await;
    ana.err(
        json!({"type": "accept", "offer_id": offer["offer"]["offer_id"]}),
        "offer_expired",
    )
    .await;
    still_alive(&mut ana).await;
    hub.shutdown().await;
}

#[tokio::test]
async fn oversized_frames_and_floods_are_refused() {
    let hub = hub("[limits]\nmax_frame_bytes = 1024\nrate_per_sec = 5\nrate_burst = 10").await;
    let mut c = hub.agent("ana").await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(2000));
    c.send_raw(Message::text(big)).await;
    assert_eq!(c.expect("error").await["code"], "frame_too_large");
    still_alive(&mut c).await;
    // A flood: past the burst, frames are refused with rate_limited.
    for _ in 0..15 {
        c.send_raw(Message::text(r#"{"type":"ping"}"#)).await;
    }
    let mut limited = 0;
    for _ in 0..15 {
        let f = c.next_frame().await.expect("frame");
        if f["type"] == "error" && f["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited >= 4, "only {limited} refused");
    // Keeping on flooding closes the connection with a reason.
    for _ in 0..40 {
        if c.ws
            .send(Message::text(r#"{"type":"ping"}"#))
            .await
            .is_err()
        {
            break;
        }
    }
    let (reason, code) = c.expect_closed().await;
    assert_eq!(reason.as_deref(), Some("rate_limited"));
    assert_eq!(code, Some(1008));
    // The hub is fine.
    let mut again = hub.agent("bo").await;
    still_alive(&mut again).await;
    hub.shutdown().await;
}

use futures_util::SinkExt;

#[tokio::test]
async fn a_frame_over_the_hard_limit_closes_with_1009() {
    let hub = hub("[limits]\nmax_frame_bytes = 1024\nhard_max_frame_bytes = 2048").await;
    let mut c = hub.agent("ana").await;
    c.send_raw(Message::text(format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(4000)
    )))
    .await;
    let (reason, code) = c.expect_closed().await;
    assert_eq!(
        (reason.as_deref(), code),
        (Some("frame_too_large"), Some(1009))
    );
    let mut again = hub.agent("ana").await;
    still_alive(&mut again).await;
    hub.shutdown().await;
}

#[tokio::test]
async fn upgrades_without_valid_credentials_or_from_foreign_origins_are_refused() {
    let hub = hub("").await;
    let url = format!("ws://{}/v1/ws", hub.addr);
    let status = |r: Result<Client, tokio_tungstenite::tungstenite::Error>| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the upgrade should have been refused"),
    };
    assert_eq!(status(Client::connect(&url).await), 401);
    assert_eq!(
        status(Client::connect(&format!("{url}?access_token=garbage")).await),
        401
    );
    let expired = hub.keys.sign(&Claims {
        sub: "ana".into(),
        role: Role::Agent,
        exp: unix_now() - 10,
        name: None,
        skills: None,
        queues: None,
    });
    assert_eq!(status(Client::connect(&hub.ws_url(&expired)).await), 401);
    let other = switchboard::auth::Keys::new(b"another-secret-entirely");
    let forged = other.sign(&Claims {
        sub: "ana".into(),
        role: Role::Agent,
        exp: unix_now() + 60,
        name: None,
        skills: None,
        queues: None,
    });
    assert_eq!(status(Client::connect(&hub.ws_url(&forged)).await), 401);
    assert_eq!(
        status(Client::connect(&hub.ws_url(&hub.token("nobody", Role::Agent))).await),
        404
    );
    assert_eq!(
        status(Client::connect(&hub.ws_url(&hub.token("crm", Role::Integration))).await),
        403
    );
    // Cross-site websocket hijacking: a browser page from elsewhere.
    let tok = hub.token("ana", Role::Agent);
    assert_eq!(
        status(
            Client::connect_with(&hub.ws_url(&tok), &[("origin", "https://evil.example")]).await
        ),
        403
    );
    let mut ok = Client::connect_with(&hub.ws_url(&tok), &[("origin", "http://desk.example")])
        .await
        .expect("allowed origin");
    ok.expect("welcome").await;
    // The header form works as well as the query form.
    let mut h = Client::connect_with(
        &url,
        &[(
            "authorization",
            &format!("Bearer {}", hub.token("bo", Role::Agent)),
        )],
    )
    .await
    .expect("bearer header");
    h.expect("welcome").await;
    // Nothing changed for the refused agent: still offline.
    let (_, snap) = hub.supervisor().await;
    let dj = snap["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["agent_id"] == "dj").cloned())
        .expect("dj");
    assert_eq!(dj["status"], "offline");
    hub.shutdown().await;
}

#[tokio::test]
async fn http_errors_are_json_with_the_same_codes() {
    let hub = hub("[limits]\nmax_body_bytes = 8192").await;
    let integ = hub.token("crm", Role::Integration);
    let agent = hub.token("ana", Role::Agent);
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (
            None,
            r#"{"channel":"chat","queue":"support"}"#.into(),
            401,
            "unauthorized",
        ),
        (
            Some(&agent),
            r#"{"channel":"chat","queue":"support"}"#.into(),
            403,
            "forbidden",
        ),
        (
            Some(&integ),
            r#"{"channel":"chat","#.into(),
            400,
            "bad_json",
        ),
        (
            Some(&integ),
            r#"{"channel":"fax","queue":"support"}"#.into(),
            400,
            "invalid_message",
        ),
        (
            Some(&integ),
            r#"{"channel":"chat"}"#.into(),
            400,
            "invalid_message",
        ),
        (
            Some(&integ),
            r#"{"channel":"chat","queue":"support","colour":"red"}"#.into(),
            400,
            "invalid_message",
        ),
        (
            Some(&integ),
            r#"{"channel":"chat","queue":"nowhere"}"#.into(),
            404,
            "unknown_queue",
        ),
        (
            Some(&integ),
            r#"{"channel":"chat","queue":"support","priority":-1}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Some(&integ),
            r#"{"channel":"chat","queue":"support","skills":[""]}"#.into(),
            400,
            "invalid_field",
        ),
        // A blank way to reach the caller would be a lookup key every blank caller
        // shares: the next one would be attached to whoever claimed it first.
        (
            Some(&integ),
            r#"{"channel":"chat","queue":"support","customer":{"email":""}}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Some(&integ),
            r#"{"channel":"voice","queue":"support","customer":{"phone":"  "}}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Some(&integ),
            r#"{"channel":"chat","queue":"support","customer":{"chat_handle":"\t"}}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Some(&integ),
            format!(
                r#"{{"channel":"chat","queue":"support","customer":{{"name":"{}"}}}}"#,
                "Ž".repeat(2001)
            ),
            400,
            "field_too_long",
        ),
        (
            Some(&integ),
            format!(
                r#"{{"channel":"chat","queue":"support","attributes":{{"x":"{}"}}}}"#,
                "a".repeat(9000)
            ),
            413,
            "payload_too_large",
        ),
    ];
    for (tok, body, status, code) in cases {
        let (s, v) = hub.http("POST", "/v1/tasks", tok, Some(&body)).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body:.80}: {v}"
        );
    }
    // The limit names the field and counts characters: 2,000 Cyrillic letters are fine.
    let (s, v) = hub
        .http(
            "POST",
            "/v1/tasks",
            Some(&integ),
            Some(&format!(
                r#"{{"channel":"chat","queue":"support","customer":{{"name":"{}"}}}}"#,
                "Ж".repeat(2000)
            )),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = hub
        .http(
            "POST",
            "/v1/tasks",
            Some(&integ),
            Some(&format!(
                r#"{{"channel":"chat","queue":"support","customer":{{"name":"{}"}}}}"#,
                "😀".repeat(2001)
            )),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["field"], "customer.name");
    assert_eq!(v["error"]["limit"], 2000);
    let (s, v) = hub
        .http("GET", "/v1/tasks/not-a-uuid", Some(&integ), None)
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("task_not_found"))
    );
    let (s, v) = hub.http("GET", "/v1/nothing", None, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, v) = hub.http("DELETE", "/v1/tasks", Some(&integ), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{v}"
    );
    // A plain GET where a websocket upgrade belongs.
    let (s, v) = hub.http("GET", "/v1/ws", None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_message")),
        "{v}"
    );
    // The body's idempotency key and the header's must agree.
    let (s, v) = http(
        hub.addr,
        "POST",
        "/v1/tasks",
        Some(&integ),
        Some(r#"{"channel":"chat","queue":"support","idempotency_key":"a"}"#),
        &[("idempotency-key", "b")],
    )
    .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("idempotency_key")),
        "{v}"
    );
    // A retry is checked like a first try.
    let ok = r#"{"channel":"chat","queue":"support","idempotency_key":"k"}"#;
    let (s, _) = hub.http("POST", "/v1/tasks", Some(&integ), Some(ok)).await;
    assert_eq!(s, 201);
    let bad = r#"{"channel":"chat","queue":"support","idempotency_key":"k","priority":5000}"#;
    let (s, v) = hub.http("POST", "/v1/tasks", Some(&integ), Some(bad)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_field")),
        "{v}"
    );
    // Customers need a name or a way to reach them.
    for body in ["", "{}", r#"{"name":"  "}"#] {
        let (s, v) = hub
            .http("POST", "/v1/customers", Some(&integ), Some(body))
            .await;
        assert_eq!(s, 400, "{body:?}: {v}");
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_stops_answering_pings_is_dropped() {
    // A ping every 100 ms, answered within 2 s: the peer counts as gone ~2.1 s after it
    // went quiet, and is recorded so at once (not after the goodbye's close, which on a
    // dead peer waits as long again).
    let hub =
        hub("reconnect_grace_secs = 30\n[limits]\nping_interval_ms = 100\nping_timeout_ms = 2000")
            .await;
    let mut c = hub.ready_agent("bo").await;
    let (mut sup, _) = hub.supervisor().await;
    let quiet = std::time::Instant::now();
    // `c` stops reading (the client library answers pings only while it reads); the
    // supervisor keeps reading, so only `c` goes quiet.
    loop {
        let f = sup.expect("agent_changed").await;
        if f["agent"]["agent_id"] == "bo" && f["agent"]["connected"] == false {
            // Still logged in (the grace period runs), but known to be gone.
            assert_eq!(f["agent"]["status"], "ready");
            let took = quiet.elapsed();
            assert!(
                took < Duration::from_millis(3_600),
                "known gone {took:?} after it went quiet (ping timeout 2 s)"
            );
            break;
        }
    }
    // The socket is closed (with a goodbye "idle" if the client could still read it).
    let (reason, _) = c.expect_closed().await;
    assert!(
        matches!(reason.as_deref(), None | Some("idle")),
        "{reason:?}"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_without_slowing_anyone_else() {
    let hub = hub("[limits]\nping_timeout_ms = 300\nrate_per_sec = 100000\nrate_burst = 100000\nsend_queue = 8").await;
    let mut slow = hub.ready_agent("ana").await;
    // Give the slow agent big tasks so that its answers are large.
    let big = "ç".repeat(1990);
    for _ in 0..3 {
        hub.create(json!({"channel": "chat", "queue": "vip", "attributes": {"a": big, "b": big, "c": big, "d": big, "e": big}}))
            .await;
        slow.accept_next().await;
    }
    // Ask for the state over and over and never read the answers.
    for _ in 0..400 {
        if slow
            .ws
            .send(Message::text(r#"{"type":"get_state"}"#))
            .await
            .is_err()
        {
            break;
        }
    }
    // Meanwhile another agent works normally.
    let mut bo = hub.ready_agent("bo").await;
    let t = hub.create(chat()).await;
    assert_eq!(
        bo.expect("offer").await["offer"]["task"]["task_id"],
        t["task_id"]
    );
    // And the slow one is cut off.
    let (mut sup, _) = hub.supervisor().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let snap = sup.ok(json!({"type": "get_snapshot"})).await;
        let ana = snap["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["agent_id"] == "ana").cloned())
            .expect("ana");
        if ana["connected"] == false {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow client was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    hub.shutdown().await;
}
