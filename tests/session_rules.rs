//! What ends an open session besides the client: its token's expiry (unless refreshed
//! over the socket in time), and frames that break RFC 6455.

mod common;

use common::*;
use serde_json::json;
use switchboard::auth::{Claims, Role, unix_now};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::MaybeTlsStream;

async fn hub() -> TestHub {
    TestHub::start(QUEUES_AND_AGENTS).await
}

fn token(hub: &TestHub, sub: &str, role: Role, exp: u64) -> String {
    hub.keys.sign(&Claims {
        sub: sub.into(),
        role,
        exp,
        name: None,
        skills: None,
        queues: None,
    })
}

#[tokio::test]
async fn an_expiring_token_ends_the_session_unless_refreshed_in_time() {
    let hub = hub().await;
    // JWT expiry is in whole seconds: two ahead is at least one second away.
    let exp = unix_now() + 2;
    let mut kept = Client::connect(&hub.ws_url(&token(&hub, "ana", Role::Agent, exp)))
        .await
        .expect("connects");
    kept.expect("welcome").await;
    let mut lapsing = Client::connect(&hub.ws_url(&token(&hub, "bo", Role::Agent, exp)))
        .await
        .expect("connects");
    lapsing.expect("welcome").await;
    let mut sup = Client::connect(&hub.ws_url(&token(&hub, "sup", Role::Supervisor, exp)))
        .await
        .expect("connects");
    sup.expect("snapshot").await;

    let fresh = token(&hub, "ana", Role::Agent, unix_now() + 3600);
    kept.ok(json!({"type": "refresh_token", "token": fresh}))
        .await;

    // The two that were not refreshed end at the old expiry, with the documented goodbye.
    assert_eq!(
        lapsing.expect_closed().await,
        (Some("token_expired".to_owned()), Some(4005))
    );
    assert_eq!(
        sup.expect_closed().await,
        (Some("token_expired".to_owned()), Some(4005))
    );
    // The old expiry has passed (the others saw it): the refreshed one still answers.
    kept.ok(json!({"type": "ping"})).await;
    assert_eq!(
        kept.ok(json!({"type": "get_state"})).await["agent"]["agent_id"],
        "ana"
    );
    assert_eq!(
        metric(&hub, "switchboard_sessions_token_expired_total").await,
        2
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_bad_refresh_gets_a_typed_error_and_the_session_stays() {
    let hub = hub().await;
    let exp = unix_now() + 600;
    let mut c = Client::connect(&hub.ws_url(&token(&hub, "ana", Role::Agent, exp)))
        .await
        .expect("connects");
    c.expect("welcome").await;
    let other_key = switchboard::auth::Keys::new(b"another-secret-0123456789");
    let forged = other_key.sign(&Claims {
        sub: "ana".into(),
        role: Role::Agent,
        exp: exp + 600,
        name: None,
        skills: None,
        queues: None,
    });
    let cases = [
        (forged, "unauthorized"),
        ("not.a.token".to_owned(), "unauthorized"),
        (
            token(&hub, "ana", Role::Agent, unix_now() - 1),
            "token_expired",
        ),
        (token(&hub, "bo", Role::Agent, exp + 600), "forbidden"),
        (token(&hub, "ana", Role::Supervisor, exp + 600), "forbidden"),
        (token(&hub, "ana", Role::Agent, exp), "invalid_field"),
    ];
    for (t, code) in cases {
        let e = c
            .err(json!({"type": "refresh_token", "token": t}), code)
            .await;
        assert_eq!(e["code"], code, "{e}");
        c.ok(json!({"type": "ping"})).await;
    }
    let e = c
        .err(json!({"type": "refresh_token"}), "invalid_message")
        .await;
    assert_eq!(e["code"], "invalid_message");
    c.ok(json!({"type": "ping"})).await;
    hub.shutdown().await;
}

/// Writes raw bytes under the client, as a frame the client library would never send.
async fn write_raw(c: &mut Client, bytes: &[u8]) {
    match c.ws.get_mut() {
        MaybeTlsStream::Plain(s) => s.write_all(bytes).await.expect("raw write"),
        _ => panic!("plain TCP expected"),
    }
}

/// A masked client frame with the given first byte (FIN, RSV bits, opcode).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut f = vec![first, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test]
async fn frames_that_break_rfc_6455_close_with_its_codes_after_a_goodbye() {
    let hub = hub().await;
    let ping = br#"{"type":"ping"}"#;
    let unmasked = {
        let mut f = vec![0x81u8, ping.len() as u8];
        f.extend_from_slice(ping);
        f
    };
    let cases: [(&str, Vec<u8>, &str, u16); 5] = [
        (
            "invalid UTF-8 in a text frame",
            frame(0x81, &[b'"', 0xff, 0xfe, b'"']),
            "invalid_utf8",
            1007,
        ),
        (
            "a reserved bit",
            frame(0x81 | 0x40, ping),
            "protocol_error",
            1002,
        ),
        (
            "a reserved data opcode",
            frame(0x83, ping),
            "protocol_error",
            1002,
        ),
        (
            "a reserved control opcode",
            frame(0x8b, b""),
            "protocol_error",
            1002,
        ),
        ("an unmasked client frame", unmasked, "protocol_error", 1002),
    ];
    for (what, bytes, reason, code) in cases {
        // Agents and supervisors read frames the same way; take both in turn.
        let mut c = if code == 1007 {
            hub.agent("ana").await
        } else {
            hub.supervisor().await.0
        };
        c.ok(json!({"type": "ping"})).await;
        write_raw(&mut c, &bytes).await;
        assert_eq!(
            c.expect_closed().await,
            (Some(reason.to_owned()), Some(code)),
            "{what}"
        );
    }
    // The hub is unharmed.
    let mut c = hub.agent("ana").await;
    c.ok(json!({"type": "ping"})).await;
    assert_eq!(
        metric(&hub, "switchboard_ws_protocol_errors_total").await,
        5
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_token_with_any_far_expiry_opens_a_working_session() {
    let hub = hub().await;
    for exp in [u64::MAX, i64::MAX as u64, unix_now() + 100 * 365 * 86_400] {
        let mut c = Client::connect(&hub.ws_url(&token(&hub, "ana", Role::Agent, exp)))
            .await
            .expect("connects");
        c.expect("welcome").await;
        c.ok(json!({"type": "ping"})).await;
        let mut s = Client::connect(&hub.ws_url(&token(&hub, "sup", Role::Supervisor, exp)))
            .await
            .expect("connects");
        s.expect("snapshot").await;
        s.ok(json!({"type": "ping"})).await;
    }
    hub.shutdown().await;
}
