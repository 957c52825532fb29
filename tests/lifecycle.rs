//! The binary's life: it starts from a config file, refuses a bad one, and drains on
//! SIGTERM (tell clients, finish, exit 0).

mod common;

use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use switchboard::auth::Role;

fn write_config(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("switchboard-test-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn a_wrong_config_value_stops_the_start_naming_the_key() {
    let path = write_config("[[queues]]\nid = \"a\"\noffer_timeout_secs = -3\n");
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(&path)
        .arg("--in-memory")
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("queues[0].offer_timeout_secs"), "{err}");
}

#[tokio::test]
async fn sigterm_drains_tells_clients_and_exits_zero() {
    let path = write_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_secs = 3\n[auth]\nsecret = \"{SECRET}\"\n{QUEUES_AND_AGENTS}"
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(&path)
        .arg("--in-memory")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).expect("a first line");
    let addr: std::net::SocketAddr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("address in {first:?}"));
    let keys = switchboard::auth::Keys::new(SECRET.as_bytes());
    let token = keys.sign(&switchboard::auth::Claims {
        sub: "ana".into(),
        role: Role::Agent,
        exp: switchboard::auth::unix_now() + 60,
        name: None,
        skills: None,
        queues: None,
    });
    let mut ana = Client::connect(&format!("ws://{addr}/v1/ws?access_token={token}"))
        .await
        .expect("connect");
    ana.expect("welcome").await;
    ana.ok(json!({"type": "set_state", "state": "ready"})).await;
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let (reason, code) = ana.expect_closed().await;
    assert_eq!(reason.as_deref(), Some("shutting_down"));
    assert_eq!(code, Some(1012));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the hub did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = std::fs::remove_file(&path);
    assert_eq!(exit.code(), Some(0));
    // After the drain nothing listens.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A config file that leaves the secret to `SWITCHBOARD_SECRET` (as `deploy/node.toml`
/// advises for a hub that listens beyond loopback) starts: the file is checked with what
/// the environment adds. Before, it was checked alone first, and refused for the secret
/// it does not hold.
#[test]
fn a_config_completed_by_the_environment_starts() {
    let path = write_config(&format!(
        "[server]\nlisten = \"0.0.0.0:0\"\n{QUEUES_AND_AGENTS}"
    ));
    let run = |secret: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.arg("--config")
            .arg(&path)
            .arg("--in-memory")
            .env("RUST_LOG", "warn")
            .env_remove("SWITCHBOARD_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(s) = secret {
            cmd.env("SWITCHBOARD_SECRET", s);
        }
        cmd.spawn().expect("spawn")
    };
    // Without it, refused, naming what is missing.
    let out = run(None).wait_with_output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SWITCHBOARD_SECRET"), "{err}");
    // With it, the hub starts and says where it listens.
    let mut child = run(Some(SECRET));
    let stdout = child.stdout.take().expect("stdout");
    let first = BufReader::new(stdout).lines().next().and_then(Result::ok);
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let _ = std::fs::remove_file(&path);
    let first = first.unwrap_or_else(|| {
        panic!(
            "the hub did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(first.contains("http://"), "{first}");
}
