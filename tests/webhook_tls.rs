//! https webhook endpoints against a real TLS receiver (a certificate made by a CA of the
//! test's own, trusted through `webhooks.ca_file`): events arrive signed (checked with
//! the `standardwebhooks` crate), through a config endpoint and one made with the API; a
//! certificate that is not trusted, or not for the URL's host, fails every attempt with
//! the TLS reason and delivers nothing, and once the receiver's certificate is fixed
//! delivery resumes from the endpoint's position with nothing skipped; a `ca_file` that
//! cannot be used stops the config with the key and the file named.

mod common;

use common::receiver::{Received, Receiver};
use common::tls::TestCa;
use common::{QUEUES_AND_AGENTS, SECRET, TestHub, config};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchboard::auth::Role;
use switchboard::config::Config;
use switchboard::webhooks::config::EndpointConfig;
use switchboard::webhooks::signing::Secret;

struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp() -> Temp {
    let p = std::env::temp_dir().join(format!("sb-webhook-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&p).expect("temp dir");
    Temp(p)
}

fn verify(secret: &str, r: &Received) {
    let wh = standardwebhooks::Webhook::new(secret).expect("secret");
    wh.verify(&r.body, &r.headers)
        .unwrap_or_else(|e| panic!("signature of {} does not verify: {e:?}", r.id()));
}

/// A hub with loopback allowed, quick retries, `ca_file` when given, and these
/// (id, url, secret) endpoints for `task.*`.
async fn hub(ca_file: Option<&Path>, endpoints: &[(&str, String, &str)]) -> TestHub {
    let mut c = config(QUEUES_AND_AGENTS);
    c.webhooks.allow_private = true;
    c.webhooks.ca_file = ca_file.map(Path::to_path_buf);
    c.webhooks.position_every_ms = 50;
    c.webhooks.retry_jitter = 0.0;
    c.webhooks.retry_schedule_ms = vec![0, 100, 200, 400, 400, 400, 400, 400, 400, 400, 400, 400];
    for (id, url, secret) in endpoints {
        c.webhooks.endpoints.push(EndpointConfig {
            id: (*id).into(),
            url: url.clone(),
            secret: (*secret).into(),
            types: vec!["task.*".into()],
        });
    }
    // The config's own check, as at start: the ca_file is read.
    c.check().expect("the config is valid");
    TestHub::start_with(c).await
}

/// The (task id, type) of each event received, first deliveries only, in arrival order.
fn events(got: &[Received]) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    got.iter()
        .filter(|r| r.status / 100 == 2 && seen.insert(r.id()))
        .map(|r| {
            let b = r.json();
            let task = b["data"]["task_id"]
                .as_str()
                .or_else(|| b["data"]["task"]["task_id"].as_str());
            (
                task.unwrap_or("").to_owned(),
                b["type"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Each task's event types, in arrival order.
fn by_task(got: &[Received]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (task, ty) in events(got) {
        out.entry(task).or_default().push(ty);
    }
    out
}

/// Waits until an attempt of endpoint `id` failed with an error containing `what`
/// and was retried (its number past 1); returns that attempt.
async fn await_failed_attempt(hub: &TestHub, id: &str, what: &str) -> Value {
    let tok = hub.token("crm", Role::Integration);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = hub
            .http(
                "GET",
                &format!("/v1/webhooks/{id}/attempts"),
                Some(&tok),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let found = v["attempts"].as_array().and_then(|a| {
            a.iter()
                .find(|a| {
                    a["outcome"] == "failed"
                        && a["attempt"].as_u64().unwrap_or(0) >= 2
                        && a["error"].as_str().is_some_and(|e| e.contains(what))
                })
                .cloned()
        });
        if let Some(a) = found {
            return a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retried attempt of {id} failed with {what:?}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn https_events_reach_a_receiver_trusted_through_the_ca_file_signed() {
    let dir = temp();
    let ca = TestCa::new("switchboard test CA");
    let ca_file = ca.write_pem(&dir.0, "ca.pem");
    let rx = Receiver::start_tls(ca.acceptor(&["localhost"])).await;
    let api_rx = Receiver::start_tls(ca.acceptor(&["localhost"])).await;
    assert!(rx.url().starts_with("https://localhost:"), "{}", rx.url());
    let secret = Secret::generate().text();
    let hub = hub(Some(&ca_file), &[("crm", rx.url(), &secret)]).await;
    // An https endpoint through the API is accepted too.
    let tok = hub.token("crm", Role::Integration);
    let (s, v) = hub
        .http(
            "POST",
            "/v1/webhooks",
            Some(&tok),
            Some(&json!({"id": "wfm", "url": api_rx.url(), "types": ["task.*"]}).to_string()),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let api_secret = v["secret"]
        .as_str()
        .expect("the secret, shown once")
        .to_owned();
    // The API endpoint starts after the newest event at its creation: wait until its
    // delivery runs, then make the tasks.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = hub.http("GET", "/v1/webhooks/wfm", Some(&tok), None).await;
        if v["delivering_node"].is_string() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wfm never delivers: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t1 = hub.create(common::chat()).await;
    let t2 = hub.create(common::chat()).await;
    let want: Vec<String> = [&t1, &t2]
        .iter()
        .map(|t| t["task_id"].as_str().expect("task_id").to_owned())
        .collect();
    let done = |g: &[Received]| {
        let m = by_task(g);
        want.iter().all(|t| m.get(t).is_some_and(|e| e.len() >= 2))
    };
    let got = rx
        .wait_for(
            Duration::from_secs(10),
            "both tasks' events over https",
            done,
        )
        .await;
    let api_got = api_rx
        .wait_for(
            Duration::from_secs(10),
            "both tasks' events, API endpoint",
            done,
        )
        .await;
    for (got, secret) in [(&got, &secret), (&api_got, &api_secret)] {
        for r in got.iter() {
            verify(secret, r);
        }
        let m = by_task(got);
        for t in &want {
            assert_eq!(m[t][..2], ["task.created", "task.queued"], "{m:?}");
        }
    }
    // No attempt failed.
    let (s, v) = hub
        .http("GET", "/v1/webhooks/crm/attempts", Some(&tok), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let attempts = v["attempts"].as_array().expect("attempts");
    assert!(!attempts.is_empty(), "{v}");
    assert!(attempts.iter().all(|a| a["outcome"] == "delivered"), "{v}");
    hub.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_or_misnamed_certificate_fails_with_the_reason_then_delivery_resumes() {
    let dir = temp();
    let trusted = TestCa::new("switchboard test CA");
    let ca_file = trusted.write_pem(&dir.0, "ca.pem");
    let stranger = TestCa::new("nobody trusts this CA");
    // One receiver's certificate is for localhost from a CA the hub does not trust;
    // the other's is from the trusted CA, for another name.
    let untrusted = Receiver::start_tls(stranger.acceptor(&["localhost"])).await;
    let misnamed = Receiver::start_tls(trusted.acceptor(&["crm.example.com"])).await;
    let secret = Secret::generate().text();
    let hub = hub(
        Some(&ca_file),
        &[
            ("untrusted", untrusted.url(), &secret),
            ("misnamed", misnamed.url(), &secret),
        ],
    )
    .await;
    let mut want = Vec::new();
    for _ in 0..3 {
        let t = hub.create(common::chat()).await;
        want.push(t["task_id"].as_str().expect("task_id").to_owned());
    }
    let a = await_failed_attempt(&hub, "untrusted", "tls: certificate not trusted").await;
    assert!(a["next_retry_ms"].is_u64(), "retried on the schedule: {a}");
    eprintln!("untrusted: {}", a["error"]);
    let a = await_failed_attempt(&hub, "misnamed", "tls: ").await;
    let why = a["error"].as_str().unwrap_or("");
    eprintln!("misnamed: {why}");
    assert!(
        why.contains("not valid for name") && why.contains("localhost"),
        "{a}"
    );
    assert!(untrusted.received().is_empty(), "nothing reached it");
    assert!(misnamed.received().is_empty(), "nothing reached it");
    // The receivers get proper certificates: everything from the endpoints' positions
    // arrives, in order, nothing skipped.
    untrusted.set_tls(trusted.acceptor(&["localhost"]));
    misnamed.set_tls(trusted.acceptor(&["localhost", "crm.example.com"]));
    let t = hub.create(common::chat()).await;
    want.push(t["task_id"].as_str().expect("task_id").to_owned());
    for rx in [&untrusted, &misnamed] {
        let got = rx
            .wait_for(Duration::from_secs(15), "every task's events", |g| {
                let m = by_task(g);
                want.iter().all(|t| m.get(t).is_some_and(|e| e.len() >= 2))
            })
            .await;
        let m = by_task(&got);
        for t in &want {
            assert_eq!(m[t][..2], ["task.created", "task.queued"], "{m:?}");
        }
        for r in &got {
            verify(&secret, r);
        }
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn without_a_ca_file_a_private_ca_is_not_trusted() {
    let ca = TestCa::new("switchboard test CA");
    let rx = Receiver::start_tls(ca.acceptor(&["localhost"])).await;
    let secret = Secret::generate().text();
    let hub = hub(None, &[("crm", rx.url(), &secret)]).await;
    hub.create(common::chat()).await;
    let a = await_failed_attempt(&hub, "crm", "tls: certificate not trusted").await;
    assert!(a["error"].as_str().unwrap_or("").contains("Mozilla"), "{a}");
    assert!(rx.received().is_empty(), "nothing reached it");
    hub.shutdown().await;
}

#[tokio::test]
async fn an_https_name_resolving_to_loopback_is_refused_at_connection_unless_allowed() {
    let dir = temp();
    let ca = TestCa::new("switchboard test CA");
    let rx = Receiver::start_tls(ca.acceptor(&["localhost"])).await;
    let mut c = config(QUEUES_AND_AGENTS);
    c.webhooks.ca_file = Some(ca.write_pem(&dir.0, "ca.pem"));
    c.webhooks.retry_jitter = 0.0;
    c.webhooks.retry_schedule_ms = vec![0, 100, 200, 400, 400, 400, 400, 400];
    // A name passes the config's check; what it resolves to is judged at connection.
    c.webhooks.endpoints.push(EndpointConfig {
        id: "crm".into(),
        url: rx.url(),
        secret: Secret::generate().text(),
        types: vec!["task.*".into()],
    });
    let hub = TestHub::start_with(c).await;
    hub.create(common::chat()).await;
    let a = await_failed_attempt(&hub, "crm", "private, loopback or link-local").await;
    assert!(!a["error"].as_str().unwrap_or("").contains("tls"), "{a}");
    assert!(rx.received().is_empty(), "nothing reached it");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_handshake_that_never_finishes_fails_within_the_attempts_timeout() {
    // Accepts connections and never answers the TLS client hello.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut socks = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            socks.push(s);
        }
    });
    let mut c = config(QUEUES_AND_AGENTS);
    c.webhooks.allow_private = true;
    c.webhooks.timeout_ms = 300;
    c.webhooks.retry_jitter = 0.0;
    c.webhooks.retry_schedule_ms = vec![0, 100, 100, 100, 100, 100, 100, 100];
    c.webhooks.endpoints.push(EndpointConfig {
        id: "crm".into(),
        url: format!("https://localhost:{port}/hooks"),
        secret: Secret::generate().text(),
        types: vec!["task.*".into()],
    });
    let hub = TestHub::start_with(c).await;
    hub.create(common::chat()).await;
    let a = await_failed_attempt(&hub, "crm", "no answer within 300ms").await;
    let took = a["duration_ms"].as_u64().expect("duration_ms");
    assert!((300..2_000).contains(&took), "{a}");
    hub.shutdown().await;
    held.abort();
}

#[test]
fn a_ca_file_that_cannot_be_used_stops_the_config_naming_the_key_and_the_file() {
    let dir = temp();
    let parse = |path: &Path| {
        Config::parse(&format!(
            "[auth]\nsecret = \"{SECRET}\"\n[[queues]]\nid = \"support\"\n[webhooks]\nca_file = \"{}\"\n",
            path.display()
        ))
    };
    let missing = dir.0.join("missing.pem");
    let not_pem = dir.0.join("not-pem.pem");
    std::fs::write(&not_pem, "hello\n").expect("write");
    let not_a_cert = dir.0.join("not-a-cert.pem");
    std::fs::write(
        &not_a_cert,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    for (path, why) in [
        (&missing, "cannot read"),
        (&not_pem, "no certificate"),
        (&not_a_cert, "not usable as a root"),
    ] {
        let e = parse(path).expect_err("refused").to_string();
        assert!(e.starts_with("webhooks.ca_file: "), "{e}");
        assert!(
            e.contains(&path.display().to_string()) && e.contains(why),
            "{e}"
        );
    }
    // A good one parses.
    let good = TestCa::new("switchboard test CA").write_pem(&dir.0, "good.pem");
    parse(&good).expect("a CA's PEM is accepted");
}
