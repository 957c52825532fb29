//! The parser, and the wire names checked against the contract: every list here is
//! read from the enum itself (through serde, or an exhaustive match), never from a list
//! the code under test also uses, and compared with `protocol/v1/schema.json` and
//! `protocol/README.md` in both directions.

use super::*;
use serde::de::value::{MapDeserializer, StrDeserializer};
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn parse_sorts_bad_frames_by_kind() {
    assert_eq!(
        parse_client("nope").err().map(|e| e.code),
        Some(ErrorCode::BadJson)
    );
    assert_eq!(
        parse_client("[1]").err().map(|e| e.code),
        Some(ErrorCode::InvalidMessage)
    );
    let e = parse_client(r#"{"id":"r1","type":"fly"}"#).err();
    assert_eq!(e.as_ref().map(|e| e.code), Some(ErrorCode::UnknownType));
    assert_eq!(e.and_then(|e| e.re).as_deref(), Some("r1"));
    let e = parse_client(r#"{"id":"r2","type":"accept"}"#).err();
    assert_eq!(e.as_ref().map(|e| e.code), Some(ErrorCode::InvalidMessage));
    let e = parse_client(r#"{"id":"r3","type":"accept","offer_id":"x"}"#).err();
    assert_eq!(e.as_ref().map(|e| e.code), Some(ErrorCode::InvalidMessage));
    let e = parse_client(r#"{"type":"ping","extra":1}"#).err();
    assert_eq!(e.as_ref().map(|e| e.code), Some(ErrorCode::InvalidMessage));
}

#[test]
fn parse_reads_id_and_request() {
    let (re, m) =
        parse_client(r#"{"id":"r1","type":"set_state","state":"not_ready","reason":"lunch"}"#)
            .expect("parse");
    assert_eq!(re.as_deref(), Some("r1"));
    assert!(matches!(
        m,
        ClientMessage::SetState {
            state: RequestedState::NotReady,
            reason: Some(_)
        }
    ));
}

/// A deserializer error that keeps the list of variant names serde's derive passes to
/// `unknown_variant`: the names of an enum exactly as the derive spells them on the
/// wire, with no hand-written list in between.
#[derive(Debug)]
struct Variants(Option<&'static [&'static str]>);

impl std::fmt::Display for Variants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "variants: {:?}", self.0)
    }
}

impl std::error::Error for Variants {}

impl serde::de::Error for Variants {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Variants(None)
    }
    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Variants(Some(expected))
    }
}

/// No variant is called this.
const NO_SUCH_VARIANT: &str = "\u{0}no such variant";

fn names(r: Result<impl std::fmt::Debug, Variants>) -> BTreeSet<&'static str> {
    match r {
        Err(Variants(Some(v))) => {
            let set: BTreeSet<_> = v.iter().copied().collect();
            assert_eq!(set.len(), v.len(), "a wire name is used twice: {v:?}");
            set
        }
        other => panic!("serde did not name the variants: {other:?}"),
    }
}

/// The `type` of every `ClientMessage` variant, from its derived `Deserialize`.
fn client_types_of_the_enum() -> BTreeSet<&'static str> {
    names(ClientMessage::deserialize(
        MapDeserializer::<_, Variants>::new(std::iter::once(("type", NO_SUCH_VARIANT))),
    ))
}

/// The wire name of every `ErrorCode` variant, from its (test-only) derived `Deserialize`.
fn error_codes_of_the_enum() -> BTreeSet<&'static str> {
    names(ErrorCode::deserialize(StrDeserializer::<Variants>::new(
        NO_SUCH_VARIANT,
    )))
}

/// `ServerMessage` is only serialized and borrows its fields, so serde cannot list its
/// variants; this macro writes the list and an exhaustive match from one invocation, so
/// a variant added to the enum and not here is a compile error. The wire names follow
/// the enum's `rename_all = "snake_case"`.
macro_rules! server_variants {
    ($($v:ident),* $(,)?) => {{
        #[allow(dead_code)]
        fn exhaustive(m: &ServerMessage<'_>) {
            match m {
                $(ServerMessage::$v { .. } => {})*
            }
        }
        vec![$(stringify!($v)),*]
    }};
}

fn snake_case(ident: &str) -> String {
    let mut s = String::new();
    for (i, c) in ident.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            s.push('_');
        }
        s.push(c.to_ascii_lowercase());
    }
    s
}

fn server_types_of_the_enum() -> BTreeSet<String> {
    server_variants![
        Welcome,
        Reply,
        Error,
        Offer,
        OfferEnded,
        TaskCancelled,
        State,
        TaskTransferred,
        TransferEnded,
        Snapshot,
        Stats,
        AgentChanged,
        QueueChanged,
        RecordChanged,
        Goodbye,
    ]
    .into_iter()
    .map(snake_case)
    .collect()
}

fn read(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn schema() -> Value {
    serde_json::from_str(&read("protocol/v1/schema.json")).expect("schema.json is JSON")
}

/// The `type` consts of the messages a `oneOf` frame definition (ClientFrame,
/// ServerFrame) lists.
fn schema_frame_types(schema: &Value, frame: &str) -> BTreeSet<String> {
    let defs = &schema["$defs"];
    let refs = defs[frame]["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{frame} has a oneOf"));
    let types: Vec<String> = refs
        .iter()
        .map(|r| {
            let name = r["$ref"]
                .as_str()
                .and_then(|s| s.strip_prefix("#/$defs/"))
                .unwrap_or_else(|| panic!("{frame}: {r} is a $defs reference"));
            defs[name]["properties"]["type"]["const"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has a const type"))
                .to_owned()
        })
        .collect();
    let set: BTreeSet<String> = types.iter().cloned().collect();
    assert_eq!(set.len(), types.len(), "{frame} lists a type twice");
    // Every message defined beside it (ClientPing, ServerWelcome...) is one it lists.
    let prefix = frame.trim_end_matches("Frame");
    let listed: BTreeSet<String> = refs
        .iter()
        .filter_map(|r| r["$ref"].as_str())
        .map(|r| r.trim_start_matches("#/$defs/").to_owned())
        .collect();
    let defined: BTreeSet<String> = defs
        .as_object()
        .expect("$defs is an object")
        .keys()
        .filter(|k| k.starts_with(prefix) && *k != frame)
        .cloned()
        .collect();
    assert_same(frame, "its oneOf", &listed, "$defs", &defined);
    set
}

/// Fails with what is missing on each side.
fn assert_same(what: &str, a_name: &str, a: &BTreeSet<String>, b_name: &str, b: &BTreeSet<String>) {
    let only_a: Vec<_> = a.difference(b).collect();
    let only_b: Vec<_> = b.difference(a).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{what}: only in {a_name}: {only_a:?}; only in {b_name}: {only_b:?}"
    );
}

fn owned(s: &BTreeSet<&str>) -> BTreeSet<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn client_types_agree_between_the_enum_the_parser_and_the_schema() {
    let of_enum = owned(&client_types_of_the_enum());
    let parser: BTreeSet<String> = CLIENT_TYPES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        parser.len(),
        CLIENT_TYPES.len(),
        "CLIENT_TYPES repeats a type"
    );
    assert_same(
        "client types",
        "ClientMessage",
        &of_enum,
        "CLIENT_TYPES",
        &parser,
    );
    let schema = schema_frame_types(&schema(), "ClientFrame");
    assert_same(
        "client types",
        "ClientMessage",
        &of_enum,
        "schema ClientFrame",
        &schema,
    );
    // And the parser takes each one to the message, not to unknown_type.
    for t in &of_enum {
        let r = parse_client(&format!(r#"{{"type":"{t}"}}"#));
        assert!(
            !matches!(&r, Err(e) if e.code == ErrorCode::UnknownType),
            "{t} is a message but the parser calls it unknown"
        );
    }
}

#[test]
fn server_types_agree_between_the_enum_and_the_schema() {
    assert_same(
        "server types",
        "ServerMessage",
        &server_types_of_the_enum(),
        "schema ServerFrame",
        &schema_frame_types(&schema(), "ServerFrame"),
    );
}

/// Code -> HTTP status from the Errors table of `protocol/README.md`.
fn readme_error_table() -> BTreeMap<String, u16> {
    let text = read("protocol/README.md");
    let section = text
        .split("\n## Errors\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("protocol/README.md has an Errors section");
    let mut table = BTreeMap::new();
    for line in section.lines() {
        let Some(row) = line.strip_prefix("| `") else {
            continue;
        };
        let (code, rest) = row
            .split_once("` | ")
            .unwrap_or_else(|| panic!("Errors row {line:?}"));
        let status: u16 = rest
            .split(" |")
            .next()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("Errors row {line:?} has no HTTP status"));
        assert!(
            table.insert(code.to_owned(), status).is_none(),
            "{code} is in the Errors table twice"
        );
    }
    table
}

#[test]
fn every_error_code_and_status_agrees_with_the_schema_and_the_readme() {
    let names = error_codes_of_the_enum();
    let mut from_code = BTreeMap::new();
    for name in &names {
        let code = ErrorCode::deserialize(StrDeserializer::<serde::de::value::Error>::new(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // error.rs's own table against the derive's names, each way.
        assert_eq!(code.as_str(), *name, "as_str of {code:?}");
        assert_eq!(
            serde_json::to_value(code).ok(),
            Some(Value::String((*name).into()))
        );
        from_code.insert(code.as_str().to_owned(), code.http_status());
    }
    assert_eq!(
        from_code.len(),
        names.len(),
        "as_str gives two codes one name"
    );
    let schema = schema();
    let listed: Vec<String> = schema["$defs"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .map(|v| v.as_str().expect("codes are strings").to_owned())
        .collect();
    let in_schema: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        in_schema.len(),
        listed.len(),
        "the schema lists a code twice"
    );
    assert_same(
        "error codes",
        "ErrorCode",
        &owned(&names),
        "schema ErrorCode",
        &in_schema,
    );
    let readme = readme_error_table();
    assert_same(
        "error codes",
        "ErrorCode",
        &owned(&names),
        "protocol/README.md Errors",
        &readme.keys().cloned().collect(),
    );
    let wrong: Vec<String> = from_code
        .iter()
        .filter(|(c, s)| readme.get(*c) != Some(s))
        .map(|(c, s)| format!("{c}: error.rs {s}, README {:?}", readme.get(c)))
        .collect();
    assert!(wrong.is_empty(), "HTTP status differs: {wrong:#?}");
}
