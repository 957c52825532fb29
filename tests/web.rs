//! The desktop and the wallboard the hub serves: the pages and their assets with their headers, the
//! same-origin websocket from that page, the desktop settings, and the demo agents that
//! only the loopback demo lists. (The desktop itself is tested in a browser: web/tests.)

mod common;

use common::{Client, TestHub, check_schema, http};
use switchboard::auth::Role;
use switchboard::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw GET: status line and headers (lowercased names), and the body.
async fn get(addr: std::net::SocketAddr, path: &str, extra: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_lowercase(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

const CSP_EXPECTED: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[tokio::test]
async fn the_pages_and_their_assets_are_served_with_a_strict_csp_and_etags() {
    let hub = TestHub::start(common::QUEUES_AND_AGENTS).await;
    let (head, body) = get(hub.addr, "/wallboard", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains("/assets/wallboard.js"), "{body}");
    assert_eq!(
        header(&head, "content-security-policy"),
        Some(CSP_EXPECTED),
        "the wallboard has the desktop's CSP"
    );
    let (head, body) = get(hub.addr, "/", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = header(&head, "content-security-policy").expect("a CSP");
    for rule in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(rule), "{csp} has {rule}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(csp, CSP_EXPECTED);
    assert!(body.contains("/assets/desktop.js"), "{body}");
    for (path, ty) in [
        ("/assets/desktop.js", "text/javascript; charset=utf-8"),
        ("/assets/desktop.css", "text/css; charset=utf-8"),
        ("/assets/wallboard.js", "text/javascript; charset=utf-8"),
        ("/assets/wallboard.css", "text/css; charset=utf-8"),
    ] {
        let (head, body) = get(hub.addr, path, "").await;
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert_eq!(header(&head, "content-type"), Some(ty), "{path}");
        assert!(!body.is_empty());
        let etag = header(&head, "etag").expect("an etag").to_owned();
        let (again, body) = get(hub.addr, path, &format!("if-none-match: {etag}\r\n")).await;
        assert!(again.starts_with("http/1.1 304"), "{path}: {again}");
        assert!(body.is_empty());
        let (other, _) = get(hub.addr, path, "if-none-match: \"nope\"\r\n").await;
        assert!(other.starts_with("http/1.1 200"), "{path}: {other}");
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn the_page_opens_its_websocket_from_the_hubs_own_origin() {
    // The test config allows only http://desk.example; the hub's own origin works too.
    let hub = TestHub::start(common::QUEUES_AND_AGENTS).await;
    let url = hub.ws_url(&hub.token("ana", Role::Agent));
    let own = format!("http://{}", hub.addr);
    let mut c = Client::connect_with(&url, &[("origin", own.as_str())])
        .await
        .expect("same origin is allowed");
    c.expect("welcome").await;
    // Another port of the same host is another origin.
    let other = format!("http://{}:1", hub.addr.ip());
    let refused = Client::connect_with(&url, &[("origin", other.as_str())]).await;
    assert!(refused.is_err(), "{other} is refused");
    let refused = Client::connect_with(&url, &[("origin", "null")]).await;
    assert!(refused.is_err(), "an opaque origin is refused");
    hub.shutdown().await;
}

#[tokio::test]
async fn the_desktop_settings_list_the_configured_reasons_and_queue_names() {
    let hub = TestHub::start(&format!(
        "not_ready_reasons = [\"break\", \"coaching\"]\n{}",
        common::QUEUES_AND_AGENTS
    ))
    .await;
    let agent = hub.token("ana", Role::Agent);
    let (status, v) = hub
        .http("GET", "/v1/desktop/config", Some(&agent), None)
        .await;
    assert_eq!(status, 200, "{v}");
    check_schema("DesktopConfig", &v);
    assert_eq!(
        v["not_ready_reasons"],
        serde_json::json!(["break", "coaching"])
    );
    assert_eq!(
        v["queues"][0],
        serde_json::json!({"queue_id": "support", "name": "support"})
    );
    let (status, v) = hub.http("GET", "/v1/desktop/config", None, None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let crm = hub.token("crm", Role::Integration);
    let (status, v) = hub
        .http("GET", "/v1/desktop/config", Some(&crm), None)
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    // A configured hub is not the demo: no agents to pick.
    let (status, v) = hub.http("GET", "/v1/demo/agents", None, None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    hub.shutdown().await;
}

/// `GET /v1/demo/agents` with `host`: the whole answer.
async fn demo_agents_as(addr: std::net::SocketAddr, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /v1/demo/agents HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("read");
    answer
}

#[tokio::test]
async fn only_the_loopback_demo_lists_its_agents_with_working_tokens() {
    let mut cfg = Config::demo();
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.auth.secret = Some(common::SECRET.into());
    let hub = TestHub::start_with(cfg).await;
    let (status, v) = hub.http("GET", "/v1/demo/agents", None, None).await;
    assert_eq!(status, 200, "{v}");
    check_schema("DemoAgents", &v);
    let agents = v["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 6);
    assert_eq!(agents[1]["name"], "João Araújo");
    let tok = agents[1]["token"].as_str().expect("a token");
    let mut c = Client::connect(&hub.ws_url(tok)).await.expect("connects");
    let w = c.expect("welcome").await;
    assert_eq!(w["agent"]["agent_id"], "joao");
    // Asked by another name (a page whose name was rebound to 127.0.0.1): nobody.
    for host in [
        "evil.example:8080",
        "evil.example",
        "127.0.0.1.evil.example",
    ] {
        let answer = demo_agents_as(hub.addr, host).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{host}: {answer}");
        assert!(!answer.contains("token"), "{host}: {answer}");
    }
    for host in ["localhost:8080", "LOCALHOST", "127.0.0.1", "[::1]:8080"] {
        let answer = demo_agents_as(hub.addr, host).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
    hub.shutdown().await;

    // The demo setup listening beyond loopback (it needs a secret then) lists nobody.
    let mut cfg = Config::demo();
    cfg.server.listen = "0.0.0.0:0".into();
    cfg.auth.secret = Some(common::SECRET.into());
    let hub = TestHub::start_with(cfg).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], hub.addr.port()));
    let (status, v) = http(addr, "GET", "/v1/demo/agents", None, None, &[]).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn the_wallboards_feed_names_each_agents_team_and_its_tasks_with_their_accept_time() {
    let hub = TestHub::start(
        r#"
[[queues]]
id = "support"

[[agents]]
id = "ana"
name = "Ana Araújo"
team = "Blue"
queues = ["support"]

[[agents]]
id = "bo"
queues = ["support"]
"#,
    )
    .await;
    let (mut sup, snap) = hub.supervisor().await;
    let line = |snap: &serde_json::Value, id: &str| {
        snap["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["agent_id"] == id).cloned())
            .expect("the agent's line")
    };
    assert_eq!(line(&snap, "ana")["team"], "Blue");
    assert!(line(&snap, "bo").get("team").is_none(), "no team: absent");
    assert_eq!(line(&snap, "ana")["tasks"], serde_json::json!([]));

    let mut ana = hub.ready_agent("ana").await;
    let task = hub.create(common::chat()).await;
    let accepted = ana.accept_next().await;
    let changed = loop {
        let f = sup.expect("agent_changed").await;
        if f["agent"]["agent_id"] == "ana" && f["agent"]["in_progress"] == 1 {
            break f;
        }
    };
    let tasks = changed["agent"]["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["task_id"], task["task_id"]);
    assert_eq!(tasks[0]["channel"], "chat");
    assert_eq!(tasks[0]["since"], accepted["accepted_at"]);
    assert_eq!(changed["agent"]["team"], "Blue");
    hub.shutdown().await;
}
