//! `protocol/openapi.yaml` against the hub: the drift test.
//!
//! - The routes the hub serves (`switchboard::http::all_routes`, the table the router
//!   is built from) are exactly the document's operations: a route added to the hub
//!   without documenting it, or documented and not served, fails here.
//! - Each status's error body names exactly the codes the Errors table of
//!   `protocol/README.md` gives that status, and every error response of an operation
//!   uses the body of its own status.
//! - A real hub answers every operation, with every role's token, without one, with
//!   methods the route does not take, and with the valid and invalid requests below;
//!   every answer's status must be documented for that operation and its content type,
//!   headers and body must fit the document.
//!
//! The document is YAML and `$ref`s `./v1/schema.json` for bodies; here the references
//! are pointed into one JSON document holding both, so one validator resolves them all.

mod common;

use common::{QUEUES_AND_AGENTS, TestHub, WAIT};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::OnceLock;
use switchboard::auth::{Claims, Role, unix_now};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use yaml_rust2::{Yaml, YamlLoader};

const SCHEMA_REF: &str = "./v1/schema.json#/$defs/";
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn read(path: &str) -> String {
    let p = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(r) => json!(r.parse::<f64>().expect("a YAML number")),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("a key that is not text: {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::BadValue => panic!("openapi.yaml: no aliases, please: {y:?}"),
    }
}

/// Points `./v1/schema.json#/$defs/X` at `#/$defs/X` of the combined document.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(SCHEMA_REF) {
                    *r = format!("#/$defs/{name}");
                } else {
                    assert!(
                        r.starts_with("#/"),
                        "a $ref neither local nor into schema.json: {r}"
                    );
                }
            }
            m.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// The document as JSON, with schema.json's `$defs` beside it and every reference
/// local.
fn doc() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let docs = YamlLoader::load_from_str(&read("protocol/openapi.yaml"))
            .unwrap_or_else(|e| panic!("protocol/openapi.yaml is YAML: {e}"));
        assert_eq!(docs.len(), 1, "one YAML document");
        let mut d = to_json(&docs[0]);
        assert_eq!(d["openapi"], "3.1.0");
        rewrite_refs(&mut d);
        let schema: Value =
            serde_json::from_str(&read("protocol/v1/schema.json")).expect("schema.json is JSON");
        d["$defs"] = schema["$defs"].clone();
        d
    })
}

/// Follows a local `$ref` (repeatedly).
fn deref(v: &Value) -> &Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) if r.starts_with("#/") => {
            let target = doc()
                .pointer(&r[1..].replace("~1", "/"))
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
            deref(target)
        }
        _ => v,
    }
}

/// Validates `value` against a schema found in the document.
fn validate(schema: &Value, value: &Value, what: &str) {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": doc()["$defs"],
        "components": {"schemas": doc()["components"]["schemas"]},
        "allOf": [schema],
    });
    let v = jsonschema::validator_for(&root)
        .unwrap_or_else(|e| panic!("{what}: the document's schema compiles: {e}"));
    let errors: Vec<String> = v
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the answer does not fit the document:\n{value:#}\n{errors:#?}"
    );
}

/// Every `(method, path)` the document describes.
fn documented() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc()["paths"].as_object().expect("paths") {
        for m in item.as_object().expect("a path item").keys() {
            if METHODS.contains(&m.as_str()) || m == "head" || m == "options" {
                out.insert((m.clone(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn the_routes_are_the_documented_operations() {
    let served: BTreeSet<(String, String)> = switchboard::http::all_routes()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    let documented = documented();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "protocol/openapi.yaml and the hub's routes (ROUTES in src/http.rs, src/web.rs) differ.\n\
         routed but not documented: {undocumented:?}\ndocumented but not routed: {unserved:?}"
    );
}

/// Code -> status, from the Errors table of protocol/README.md (which
/// `src/protocol/tests.rs` compares with the code).
fn readme_statuses() -> BTreeMap<u16, BTreeSet<String>> {
    let text = read("protocol/README.md");
    let table = text
        .split("\n## Errors\n")
        .nth(1)
        .and_then(|t| t.split("\n## ").next())
        .expect("an Errors section");
    let mut out: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for line in table.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() > 3 && cells[1].starts_with('`') {
            if let Ok(status) = cells[2].parse::<u16>() {
                out.entry(status)
                    .or_default()
                    .insert(cells[1].trim_matches('`').to_owned());
            }
        }
    }
    assert!(out.len() > 5, "the Errors table was read: {out:?}");
    out
}

fn error_codes(schema_name: &str) -> BTreeSet<String> {
    let s = &doc()["components"]["schemas"][schema_name];
    let all_of = s["allOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{schema_name}: allOf"));
    assert_eq!(all_of[0]["$ref"], "#/$defs/HttpError", "{schema_name}");
    all_of[1]["properties"]["error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{schema_name}: a code enum"))
        .iter()
        .map(|c| c.as_str().expect("a code").to_owned())
        .collect()
}

#[test]
fn each_status_names_the_codes_of_the_errors_table() {
    let readme = readme_statuses();
    for (status, codes) in &readme {
        let name = format!("Error{status}");
        assert_eq!(
            &error_codes(&name),
            codes,
            "components/schemas/{name} and the Errors table of protocol/README.md"
        );
    }
    // Every error response of every operation is the body of its own status.
    for (path, item) in doc()["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            for (status, response) in op["responses"].as_object().expect("responses") {
                let Ok(s) = status.parse::<u16>() else {
                    continue;
                };
                if s < 400 {
                    continue;
                }
                let r = deref(response);
                let schema = &r["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    schema,
                    &json!(format!("#/components/schemas/Error{s}")),
                    "{method} {path} {s}"
                );
                assert!(readme.contains_key(&s), "{method} {path}: {s} has no codes");
            }
        }
    }
}

/// One answer, as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends `head` (without its final blank line) and `body`; reads one answer: the head,
/// then `content-length` bytes (nothing after a 101 or a 304: a websocket stays open).
async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = head.as_bytes().to_vec();
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    // The hub may answer (413, 415) and close before it read all of a large body.
    let _ = s.write_all(&req).await;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&buf[..end]).into_owned();
                let mut lines = text.split("\r\n");
                let status: u16 = lines
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|s| s.parse().ok())
                    .expect("a status line");
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let header = |name: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.to_ascii_lowercase())
                };
                let streaming =
                    header("content-type").is_some_and(|t| t.starts_with("text/event-stream"));
                // No body, and (RFC 9110) no content-length, after 101, 204 and 304;
                // an event stream does not end: the head is the answer.
                let len = if status == 101
                    || status == 204
                    || status == 304
                    || streaming
                    || head.starts_with("HEAD ")
                {
                    0
                } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
                    // Read to the last chunk, then unchunk.
                    while !buf[end + 4..].ends_with(b"0\r\n\r\n") {
                        let n = s.read(&mut chunk).await.expect("read");
                        assert!(n > 0, "closed before the last chunk");
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let mut rest = &buf[end + 4..];
                    let mut body = Vec::new();
                    loop {
                        let line = rest
                            .windows(2)
                            .position(|w| w == b"\r\n")
                            .expect("a chunk size");
                        let size = usize::from_str_radix(
                            String::from_utf8_lossy(&rest[..line])
                                .split(';')
                                .next()
                                .unwrap_or("")
                                .trim(),
                            16,
                        )
                        .expect("a hex chunk size");
                        if size == 0 {
                            break;
                        }
                        body.extend_from_slice(&rest[line + 2..line + 2 + size]);
                        rest = &rest[line + 2 + size + 2..];
                    }
                    return Answer {
                        status,
                        headers,
                        body,
                    };
                } else {
                    header("content-length")
                        .and_then(|v| v.parse().ok())
                        .expect("a content-length, chunks or an event stream")
                };
                while buf.len() < end + 4 + len {
                    let n = s.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "closed before the body ended");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = buf[end + 4..end + 4 + len].to_vec();
                return Answer {
                    status,
                    headers,
                    body,
                };
            }
            let n = s.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "closed without an answer: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("an answer in time")
}

/// A request to send.
#[derive(Clone, Default)]
struct Req {
    method: &'static str,
    target: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Req {
    fn new(method: &'static str, target: impl Into<String>) -> Req {
        Req {
            method,
            target: target.into(),
            ..Req::default()
        }
    }
    fn token(mut self, t: &str) -> Req {
        self.token = Some(t.to_owned());
        self
    }
    fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
    fn json(mut self, v: Value) -> Req {
        self.body = Some(v.to_string().into_bytes());
        self
    }
    fn raw(mut self, b: &[u8]) -> Req {
        self.body = Some(b.to_vec());
        self
    }
    fn upgrade(self) -> Req {
        self.header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-protocol", "switchboard.v1")
    }

    async fn send(&self, addr: SocketAddr) -> Answer {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {addr}\r\n",
            self.method.to_ascii_uppercase(),
            self.target
        );
        if !self.headers.iter().any(|(k, _)| k == "connection") {
            head.push_str("connection: close\r\n");
        }
        if let Some(t) = &self.token {
            head.push_str(&format!("authorization: Bearer {t}\r\n"));
        }
        let mut has_type = false;
        for (k, v) in &self.headers {
            has_type |= k.eq_ignore_ascii_case("content-type");
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = self.body.clone().unwrap_or_default();
        if self.body.is_some() {
            if !has_type {
                head.push_str("content-type: application/json\r\n");
            }
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        exchange(addr, &head, &body).await
    }
}

/// The documented operation a target falls on: (path template, method, operation).
fn operation(method: &str, target: &str) -> Option<(&'static str, &'static Value)> {
    let path = target.split('?').next().unwrap_or(target);
    let segments: Vec<&str> = path.split('/').collect();
    doc()["paths"]
        .as_object()?
        .iter()
        .find_map(|(template, item)| {
            let t: Vec<&str> = template.split('/').collect();
            let fits = t.len() == segments.len()
                && t.iter()
                    .zip(&segments)
                    .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s);
            (fits && item.get(method).is_some()).then(|| (template.as_str(), &item[method]))
        })
}

/// Checks an answer against the response the document gives for its status.
fn conforms(what: &str, response: &Value, a: &Answer) {
    let response = deref(response);
    for (name, h) in response["headers"].as_object().into_iter().flatten() {
        let h = deref(h);
        if let Some(v) = a.header(name) {
            validate(&h["schema"], &json!(v), &format!("{what}: header {name}"));
        } else {
            assert!(h["required"] != true, "{what}: no {name} header");
        }
    }
    let Some(content) = response["content"].as_object() else {
        assert!(a.body.is_empty(), "{what}: a body where none is documented");
        return;
    };
    let ty = a.header("content-type").unwrap_or("");
    let essence = ty.split(';').next().unwrap_or("").trim();
    let media = content
        .get(essence)
        .unwrap_or_else(|| panic!("{what}: content-type {ty:?} is not documented"));
    if essence == "text/event-stream" {
        // An open stream: its events are the stream's own tests' business.
        return;
    }
    let body = if essence == "application/json" {
        serde_json::from_slice(&a.body)
            .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e})"))
    } else {
        Value::String(String::from_utf8_lossy(&a.body).into_owned())
    };
    validate(&media["schema"], &body, what);
}

/// The roles an operation takes, or `None` for one that needs no token.
fn roles(op: &Value) -> Option<BTreeSet<String>> {
    let security = op.get("security").or(doc().get("security"))?.as_array()?;
    if security.is_empty() {
        return None;
    }
    let mut out = BTreeSet::new();
    for requirement in security {
        for roles in requirement.as_object().expect("a requirement").values() {
            for r in roles.as_array().expect("roles") {
                out.insert(r.as_str().expect("a role").to_owned());
            }
        }
    }
    Some(out)
}

/// What the test saw, to check at the end that every operation was exercised.
#[derive(Default)]
struct Seen {
    statuses: BTreeMap<(String, String), BTreeSet<u16>>,
}

impl Seen {
    /// Sends `req` and checks its answer against the document; returns the answer.
    async fn call(&mut self, addr: SocketAddr, req: &Req) -> Answer {
        let a = req.send(addr).await;
        let what = format!("{} {} -> {}", req.method, short(&req.target), a.status);
        match operation(req.method, &req.target) {
            Some((template, op)) => {
                let response = op["responses"]
                    .get(a.status.to_string())
                    .unwrap_or_else(|| {
                        panic!(
                            "{what}: status not documented for {} {template}: {:?}",
                            req.method,
                            a.json()
                        )
                    });
                conforms(&what, response, &a);
                // What the hub took, the document must take too.
                let body = req
                    .body
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<Value>(b).ok());
                if let (true, Some(body)) = (a.status < 300, body) {
                    let schema =
                        &deref(&op["requestBody"])["content"]["application/json"]["schema"];
                    assert!(
                        !schema.is_null(),
                        "{what}: a body the document does not mention"
                    );
                    validate(schema, &body, &format!("{what}: the request"));
                }
                self.statuses
                    .entry((req.method.to_owned(), template.to_owned()))
                    .or_default()
                    .insert(a.status);
            }
            None => {
                // No operation: the hub's answers to any route (description of the
                // document): 404, 405, and the connection-level ones.
                let name = match a.status {
                    404 => "NotFound",
                    405 => "MethodNotAllowed",
                    414 => "UriTooLong",
                    431 => "HeadersTooLarge",
                    503 => "Unavailable",
                    _ => panic!("{what}: no operation, and not an answer any route may give"),
                };
                conforms(&what, &doc()["components"]["responses"][name], &a);
            }
        }
        a
    }

    /// Sends `req`, which must answer `status` (and, for an error, `code`).
    async fn expect(
        &mut self,
        addr: SocketAddr,
        req: Req,
        status: u16,
        code: Option<&str>,
    ) -> Value {
        let a = self.call(addr, &req).await;
        let body = a.json();
        assert_eq!(
            a.status,
            status,
            "{} {}: {body}",
            req.method,
            short(&req.target)
        );
        if let Some(code) = code {
            assert_eq!(
                body["error"]["code"],
                code,
                "{} {}",
                req.method,
                short(&req.target)
            );
        }
        body
    }
}

fn short(s: &str) -> String {
    if s.len() > 80 {
        format!("{}...", &s[..80])
    } else {
        s.to_owned()
    }
}

fn token(hub: &TestHub, sub: &str, role: Role) -> String {
    hub.token(sub, role)
}

/// A sample value for a path parameter.
fn fill(template: &str) -> String {
    template.replace("{id}", &uuid::Uuid::new_v4().to_string())
}

/// Every operation with every role, without a token, and every path with the methods
/// it does not take: the generic part, which covers a route as soon as it is
/// documented.
async fn sweep(hub: &TestHub, seen: &mut Seen) {
    let addr = hub.addr;
    let tokens = [
        ("agent", token(hub, "ana", Role::Agent)),
        ("supervisor", token(hub, "sup", Role::Supervisor)),
        ("integration", token(hub, "crm", Role::Integration)),
    ];
    for (path, item) in doc()["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Some(&method) = METHODS.iter().find(|m| **m == method.as_str()) else {
                continue;
            };
            let mut base = Req::new(method, fill(path));
            if path == "/v1/ws" {
                base = base.upgrade();
            }
            if op.get("requestBody").is_some() {
                base = base.json(json!({}));
            }
            // Every route refuses an over-long target (limits.max_uri_bytes).
            let mut long = base.clone();
            long.target = format!("{}?pad={}", long.target, "x".repeat(9000));
            let a = seen.call(addr, &long).await;
            assert_eq!(a.status, 414, "{method} {path} with a long target");
            // ... and a body that is not JSON, whatever the method.
            let text = Req::new(method, fill(path))
                .raw(b"hello")
                .header("content-type", "text/plain");
            let a = seen.call(addr, &text).await;
            assert_eq!(a.status, 415, "{method} {path} with a text body");
            // Each `get` also answers HEAD: the same status, no body (not an upgrade).
            if method == "get" && path != "/v1/ws" {
                let g = base.send(addr).await;
                let mut h = base.clone();
                h.method = "head";
                let h = h.send(addr).await;
                assert_eq!(h.status, g.status, "HEAD {path} and GET {path}");
                assert!(h.body.is_empty(), "HEAD {path} has no body");
            }
            match roles(op) {
                None => {
                    let a = seen.call(addr, &base).await;
                    assert!(
                        a.status < 500,
                        "{method} {path} without a token: {}",
                        a.status
                    );
                }
                Some(allowed) => {
                    let a = seen.call(addr, &base).await;
                    assert_eq!(a.status, 401, "{method} {path} without a token");
                    assert_eq!(a.json()["error"]["code"], "unauthorized");
                    for (role, t) in &tokens {
                        let a = seen.call(addr, &base.clone().token(t)).await;
                        let forbidden = a.status == 403 && a.json()["error"]["code"] == "forbidden";
                        assert_eq!(
                            forbidden,
                            !allowed.contains(*role),
                            "{method} {path} with a {role} token answered {} {:?}; documented roles {allowed:?}",
                            a.status,
                            a.json()
                        );
                        assert_ne!(a.status, 401, "{method} {path} with a {role} token");
                    }
                }
            }
        }
        let taken: Vec<&str> = METHODS
            .iter()
            .copied()
            .filter(|m| item.get(*m).is_some())
            .collect();
        for method in METHODS.iter().copied().filter(|m| !taken.contains(m)) {
            let a = seen.call(addr, &Req::new(method, fill(path))).await;
            assert_eq!(a.status, 405, "{method} {path} is not documented");
            assert_eq!(a.json()["error"]["code"], "method_not_allowed");
            let allow = a.header("allow").unwrap_or("").to_ascii_lowercase();
            for m in &taken {
                assert!(
                    allow.contains(m),
                    "{method} {path}: Allow {allow:?} lacks {m}"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_operation_answers_as_documented() {
    let extra = format!("[limits]\nrequest_body_timeout_ms = 300\n{QUEUES_AND_AGENTS}");
    let hub = TestHub::start(&extra).await;
    let addr = hub.addr;
    let mut seen = Seen::default();
    sweep(&hub, &mut seen).await;

    let crm = token(&hub, "crm", Role::Integration);
    let sup = token(&hub, "sup", Role::Supervisor);
    let ana = token(&hub, "ana", Role::Agent);
    let post = |target: &str| Req::new("post", target).token(&crm);
    let get = |target: &str| Req::new("get", target).token(&crm);
    let nobody = uuid::Uuid::new_v4();

    // Tasks.
    let chat =
        json!({"channel": "chat", "queue": "support", "customer": {"email": "ana@example.com"}});
    let task = seen
        .expect(addr, post("/v1/tasks").json(chat.clone()), 201, None)
        .await;
    let id = task["task_id"].as_str().expect("task_id").to_owned();
    let keyed = post("/v1/tasks")
        .json(chat.clone())
        .header("idempotency-key", "k-1");
    seen.expect(addr, keyed.clone(), 201, None).await;
    seen.expect(addr, keyed, 200, None).await;
    let mismatched = post("/v1/tasks")
        .json(json!({"channel": "chat", "queue": "support", "idempotency_key": "a"}))
        .header("idempotency-key", "b");
    seen.expect(addr, mismatched, 400, Some("invalid_field"))
        .await;
    seen.expect(addr, post("/v1/tasks").raw(b"{"), 400, Some("bad_json"))
        .await;
    let missing = post("/v1/tasks").json(json!({"channel": "chat"}));
    seen.expect(addr, missing, 400, Some("invalid_message"))
        .await;
    let long = post("/v1/tasks").json(
        json!({"channel": "chat", "queue": "support", "customer": {"name": "x".repeat(2001)}}),
    );
    seen.expect(addr, long, 400, Some("field_too_long")).await;
    let unknown = post("/v1/tasks").json(json!({"channel": "chat", "queue": "nowhere"}));
    seen.expect(addr, unknown, 404, Some("unknown_queue")).await;
    let text = post("/v1/tasks")
        .raw(b"hello")
        .header("content-type", "text/plain");
    seen.expect(addr, text, 415, Some("unsupported_media_type"))
        .await;
    let big = post("/v1/tasks").raw(&vec![b' '; 70_000]);
    seen.expect(addr, big, 413, Some("payload_too_large")).await;
    // A body announced and never sent: 408 once request_body_timeout_ms has passed.
    let slow = post("/v1/tasks").header("content-length", "10");
    seen.expect(addr, slow, 408, Some("request_timeout")).await;

    seen.expect(addr, get(&format!("/v1/tasks/{id}")), 200, None)
        .await;
    seen.expect(
        addr,
        Req::new("get", format!("/v1/tasks/{id}")).token(&sup),
        200,
        None,
    )
    .await;
    seen.expect(
        addr,
        get(&format!("/v1/tasks/{nobody}")),
        404,
        Some("task_not_found"),
    )
    .await;
    seen.expect(
        addr,
        get("/v1/tasks/not-a-uuid"),
        404,
        Some("task_not_found"),
    )
    .await;
    seen.expect(addr, get("/v1/tasks/%ff%fe"), 400, Some("bad_request"))
        .await;
    let expired = hub.keys.sign(&Claims {
        sub: "crm".into(),
        role: Role::Integration,
        exp: unix_now() - 10,
        name: None,
        skills: None,
        queues: None,
    });
    let old = Req::new("get", format!("/v1/tasks/{id}")).token(&expired);
    seen.expect(addr, old, 401, Some("token_expired")).await;
    let by_query = Req::new("get", format!("/v1/tasks/{id}?access_token={crm}"));
    seen.expect(addr, by_query, 200, None).await;

    let transfer = |body: Value| post(&format!("/v1/tasks/{id}/transfer")).json(body);
    seen.expect(
        addr,
        transfer(json!({"to_queue": "vip", "head": true})),
        200,
        None,
    )
    .await;
    let both = transfer(json!({"to_queue": "vip", "to_agent": "ana"}));
    seen.expect(addr, both, 400, Some("invalid_field")).await;
    let elsewhere = transfer(json!({"to_queue": "nowhere"}));
    seen.expect(addr, elsewhere, 404, Some("unknown_queue"))
        .await;
    let ghost = post(&format!("/v1/tasks/{nobody}/transfer")).json(json!({"to_queue": "vip"}));
    seen.expect(addr, ghost, 404, Some("task_not_found")).await;

    let cancel = post(&format!("/v1/tasks/{id}/cancel")).json(json!({"reason": "hung up"}));
    let t = seen.expect(addr, cancel.clone(), 200, None).await;
    assert_eq!(t["state"], "cancelled");
    seen.expect(addr, cancel, 409, Some("task_finished")).await;
    seen.expect(
        addr,
        transfer(json!({"to_queue": "vip"})),
        409,
        Some("task_finished"),
    )
    .await;
    let stray = post(&format!("/v1/tasks/{id}/cancel")).json(json!({"why": "?"}));
    seen.expect(addr, stray, 400, Some("invalid_message")).await;

    // Views.
    seen.expect(addr, get("/v1/snapshot"), 200, None).await;
    seen.expect(addr, Req::new("get", "/v1/snapshot").token(&sup), 200, None)
        .await;
    let long_target = format!("/v1/snapshot?pad={}", "x".repeat(9000));
    seen.expect(addr, get(&long_target), 414, Some("uri_too_long"))
        .await;
    let fat = get("/v1/snapshot").header("x-pad", &"y".repeat(20_000));
    seen.expect(addr, fat, 431, Some("headers_too_large")).await;

    // Customers.
    let fields = json!({"name": "João Gonçalves", "emails": ["joao@example.com"]});
    let created = seen
        .expect(addr, post("/v1/customers").json(fields), 201, None)
        .await;
    let cid = created["customer"]["customer_id"]
        .as_str()
        .expect("customer_id")
        .to_owned();
    seen.expect(
        addr,
        post("/v1/customers").json(json!({})),
        400,
        Some("invalid_message"),
    )
    .await;
    seen.expect(
        addr,
        post("/v1/customers").raw(b""),
        400,
        Some("invalid_message"),
    )
    .await;
    let nameless = post("/v1/customers").json(json!({"name": " "}));
    seen.expect(addr, nameless, 400, Some("invalid_field"))
        .await;
    let found = seen
        .expect(addr, get("/v1/customers?q=joao&limit=5"), 200, None)
        .await;
    assert_eq!(found["customers"][0]["customer_id"], cid.as_str());
    // The event stream: its head only (an open stream is tests/events.rs's business).
    seen.expect(addr, get("/v1/events?types=task.*"), 200, None)
        .await;
    seen.expect(
        addr,
        get("/v1/events?epoch=another"),
        410,
        Some("events_gone"),
    )
    .await;
    seen.expect(
        addr,
        get("/v1/events?types=task.nope"),
        400,
        Some("invalid_field"),
    )
    .await;
    seen.expect(
        addr,
        get("/v1/events?since=ten"),
        400,
        Some("invalid_field"),
    )
    .await;
    let typo = get("/v1/customers?q=joao&limit=ten");
    seen.expect(addr, typo, 400, Some("invalid_field")).await;
    let journey_typo = get(&format!("/v1/customers/{cid}/journey?limit=-1"));
    seen.expect(addr, journey_typo, 400, Some("invalid_field"))
        .await;
    let q = format!("/v1/customers?q={}", "a".repeat(2001));
    seen.expect(addr, get(&q), 400, Some("field_too_long"))
        .await;
    seen.expect(addr, get(&format!("/v1/customers/{cid}")), 200, None)
        .await;
    let missing = get(&format!("/v1/customers/{nobody}"));
    seen.expect(addr, missing, 404, Some("customer_not_found"))
        .await;
    let patch = |v: u64| {
        Req::new("patch", format!("/v1/customers/{cid}"))
            .token(&crm)
            .json(json!({"base_version": v, "changes": {"name": "João P. Gonçalves"}}))
    };
    seen.expect(addr, patch(1), 200, None).await;
    let conflict = seen
        .expect(addr, patch(1), 409, Some("version_conflict"))
        .await;
    assert_eq!(conflict["error"]["version"], 2);
    let journey = seen
        .expect(
            addr,
            get(&format!("/v1/customers/{cid}/journey?limit=10")),
            200,
            None,
        )
        .await;
    assert!(!journey["journey"].as_array().expect("journey").is_empty());
    let unknown_request = get(&format!("/v1/customers/{cid}/journey?request_id=x"));
    seen.expect(addr, unknown_request, 404, Some("request_not_found"))
        .await;

    // The websocket upgrade and its refusals.
    let ws = |t: &str| Req::new("get", "/v1/ws").token(t).upgrade();
    let a = seen.call(addr, &ws(&ana)).await;
    assert_eq!(a.status, 101);
    assert_eq!(a.header("sec-websocket-protocol"), Some("switchboard.v1"));
    seen.expect(addr, ws(&sup), 101, None).await;
    seen.expect(
        addr,
        Req::new("get", "/v1/ws").token(&ana),
        400,
        Some("invalid_message"),
    )
    .await;
    seen.expect(addr, ws(&crm), 403, Some("forbidden")).await;
    let foreign = ws(&ana).header("origin", "https://evil.example");
    seen.expect(addr, foreign, 403, Some("origin_not_allowed"))
        .await;
    let zed = token(&hub, "zed", Role::Agent);
    seen.expect(addr, ws(&zed), 404, Some("unknown_agent"))
        .await;
    seen.expect(addr, ws("not-a-token"), 401, Some("unauthorized"))
        .await;

    // Operations.
    seen.expect(addr, Req::new("get", "/healthz"), 200, None)
        .await;
    seen.expect(addr, Req::new("get", "/readyz"), 200, None)
        .await;
    let m = seen.call(addr, &Req::new("get", "/metrics")).await;
    assert!(
        String::from_utf8_lossy(&m.body).contains("switchboard_"),
        "metrics"
    );

    // The desktop.
    for path in [
        "/",
        "/assets/desktop.js",
        "/assets/desktop.css",
        "/assets/icon.svg",
    ] {
        let a = seen.call(addr, &Req::new("get", path)).await;
        assert_eq!(a.status, 200, "{path}");
        let etag = a.header("etag").expect("an etag").to_owned();
        let again = Req::new("get", path).header("if-none-match", &etag);
        seen.expect(addr, again, 304, None).await;
    }
    let cfg = seen
        .expect(
            addr,
            Req::new("get", "/v1/desktop/config").token(&ana),
            200,
            None,
        )
        .await;
    assert_eq!(cfg["queues"][0]["queue_id"], "support");
    seen.expect(
        addr,
        Req::new("get", "/v1/desktop/config").token(&sup),
        200,
        None,
    )
    .await;
    // Not the demo setup: as if the route did not exist.
    seen.expect(
        addr,
        Req::new("get", "/v1/demo/agents"),
        404,
        Some("not_found"),
    )
    .await;

    // Webhooks (a documentation address: allowed, and nothing answers there).
    let hook = json!({"id": "crm", "url": "http://192.0.2.1/hooks", "types": ["task.*"]});
    let made = seen
        .expect(addr, post("/v1/webhooks").json(hook.clone()), 201, None)
        .await;
    assert!(
        made["secret"]
            .as_str()
            .expect("secret")
            .starts_with("whsec_")
    );
    seen.expect(
        addr,
        post("/v1/webhooks").json(hook),
        400,
        Some("invalid_field"),
    )
    .await;
    let private = json!({"url": "http://127.0.0.1:9/"});
    seen.expect(
        addr,
        post("/v1/webhooks").json(private),
        400,
        Some("invalid_field"),
    )
    .await;
    seen.expect(addr, get("/v1/webhooks"), 200, None).await;
    seen.expect(addr, get("/v1/webhooks/crm"), 200, None).await;
    seen.expect(addr, post("/v1/webhooks/crm/rotate"), 200, None)
        .await;
    seen.expect(addr, post("/v1/webhooks/crm/disable"), 200, None)
        .await;
    seen.expect(addr, post("/v1/webhooks/crm/enable"), 200, None)
        .await;
    seen.expect(addr, get("/v1/webhooks/crm/attempts"), 200, None)
        .await;
    let replay = post("/v1/webhooks/crm/replay").json(json!({"since": 0}));
    seen.expect(addr, replay, 200, None).await;
    let replay = post("/v1/webhooks/crm/replay").json(json!({"since": -1}));
    seen.expect(addr, replay, 400, Some("invalid_message"))
        .await;
    seen.expect(
        addr,
        Req::new("delete", "/v1/webhooks/crm").token(&crm),
        204,
        None,
    )
    .await;
    seen.expect(addr, get("/v1/webhooks/crm"), 404, Some("not_found"))
        .await;

    // Any route.
    seen.expect(addr, Req::new("get", "/v1/nothing"), 404, Some("not_found"))
        .await;
    hub.shutdown().await;

    // The demo setup on loopback lists its agents with tokens.
    let mut demo = switchboard::config::Config::demo();
    demo.server.listen = "127.0.0.1:0".into();
    let demo = TestHub::start_with(demo).await;
    let agents = seen
        .expect(demo.addr, Req::new("get", "/v1/demo/agents"), 200, None)
        .await;
    let t = agents["agents"][0]["token"].as_str().expect("a token");
    seen.expect(
        demo.addr,
        Req::new("get", "/v1/desktop/config").token(t),
        200,
        None,
    )
    .await;
    demo.shutdown().await;

    // A connection past the cap, on any route.
    let capped = TestHub::start(&format!(
        "[limits]\nmax_connections_per_ip = 1\n{QUEUES_AND_AGENTS}"
    ))
    .await;
    let held = TcpStream::connect(capped.addr).await.expect("connect");
    let refused = seen.call(capped.addr, &Req::new("get", "/healthz")).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"]["code"], "too_many_connections");
    drop(held);
    capped.shutdown().await;

    // Every operation was seen succeeding and failing, and every documented status was
    // answered somewhere, but those a healthy hub does not give (a fault, a store that
    // does not answer: tests/store_faults.rs).
    let not_here: BTreeSet<u16> = [500, 504].into();
    let mut answered = BTreeSet::new();
    for (method, path) in documented() {
        let statuses = seen
            .statuses
            .get(&(method.clone(), path.clone()))
            .unwrap_or_else(|| panic!("{method} {path} was never called"));
        assert!(
            statuses.iter().any(|s| *s < 400),
            "{method} {path} never succeeded: {statuses:?} (add a case to this test with a valid request)"
        );
        assert!(
            statuses.iter().any(|s| *s >= 400),
            "{method} {path} never failed: {statuses:?}"
        );
        answered.extend(statuses.iter().copied());
    }
    answered.insert(503); // too_many_connections, above
    let mut documented_statuses = BTreeSet::new();
    for item in doc()["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("path item").values() {
            for s in op["responses"].as_object().expect("responses").keys() {
                documented_statuses.insert(s.parse::<u16>().expect("a numeric status"));
            }
        }
    }
    let never: Vec<_> = documented_statuses
        .difference(&answered)
        .filter(|s| !not_here.contains(s))
        .collect();
    assert!(
        never.is_empty(),
        "documented, never answered here: {never:?} (add a case to this test that gets it)"
    );
}
