//! The configuration: a TOML file, every value with a default, checked before start.
//!
//! With no file the hub runs the demo setup ([`Config::demo`]): a few queues and
//! agents on loopback. A wrong value stops the start with a message naming its key
//! (`queues[1].offer_timeout_secs: must be more than 0`); an unknown key is an error too,
//! so a typo never silently falls back to a default.

use crate::agent::{REASON_LOGIN, REASON_MISSED_OFFER, REASON_SUPERVISOR};
use crate::ids::{AgentId, Channel, QueueId};
use crate::routing::{Capacity, Escalation, Profile, QueueRules, Rules};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The path.
        path: String,
        /// The parser's message, which names the key and the line.
        message: String,
    },
    /// A value breaks a rule.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, as a path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening and browser rules.
    pub server: ServerConfig,
    /// Token checking.
    pub auth: AuthConfig,
    /// Per-connection limits.
    pub limits: LimitsConfig,
    /// Routing defaults.
    pub routing: RoutingConfig,
    /// The queues.
    pub queues: Vec<QueueConfig>,
    /// The agents.
    pub agents: Vec<AgentConfig>,
    /// Where the state lives.
    pub store: StoreConfig,
    /// How the statistics count.
    pub stats: StatsConfig,
    /// Webhook endpoints and their delivery rules.
    pub webhooks: crate::webhooks::config::WebhooksConfig,
    /// Integration events: the window kept and the stream.
    pub events: EventsConfig,
}

/// `[stats]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// The IANA time zone whose local midnight starts the statistics' day
    /// (`Europe/Rome`), read from the system's zoneinfo. Every node of a cluster must
    /// have the same.
    pub timezone: String,
    /// An abandon after a wait shorter than this, in seconds, is a short abandon:
    /// counted apart and not against the service level.
    pub short_abandon_secs: f64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            timezone: "UTC".into(),
            short_abandon_secs: 5.0,
        }
    }
}

/// `[events]`: the window of integration events and `GET /v1/events`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// At most this many events are kept for readers that resume (unless a webhook
    /// endpoint still needs older ones, up to `max_held`).
    pub retain_count: usize,
    /// Events older than this many seconds are dropped (same exception).
    pub retain_secs: u64,
    /// At most this many MiB of events (their wire text) are kept (same exception).
    /// Each event counts the most its wire text can take, reckoned from its fields
    /// when it is numbered: the text itself is made only when a reader first asks for
    /// it, and is never longer.
    pub retain_mib: usize,
    /// The hard cap on events kept, whatever a webhook endpoint still needs.
    pub max_held: usize,
    /// How often an idle stream gets a comment line, in seconds.
    pub keepalive_secs: u64,
    /// Live events a stream reader may fall behind before it reads on from the window;
    /// and how near the window's oldest end a reader losing ground may come before it
    /// is cut off (it resumes from its position).
    pub stream_buffer: usize,
    /// A stream is written at most once per this many milliseconds: the first event
    /// after a quiet spell goes at once, those that follow within it go in one write
    /// (one wake-up, one system call) at its end. 0: each event at once.
    pub stream_linger_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig {
            retain_count: 100_000,
            retain_secs: 86_400,
            retain_mib: 256,
            max_held: 1_000_000,
            keepalive_secs: 15,
            stream_buffer: 4096,
            stream_linger_ms: 1,
        }
    }
}

/// Which store keeps the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// A command log and snapshots in `data_dir`, on this machine (the default).
    File,
    /// In this process only: everything is lost when it stops (tests, demos).
    Memory,
    /// Shared with other nodes through `redis`.
    Redis,
}

/// `[store]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `file`, `memory` or `redis`. When absent: `redis` if a Redis URL is given,
    /// otherwise `file`. `--in-memory` sets `memory`.
    pub kind: Option<StoreKind>,
    /// The file store's data directory (`--data-dir`, `SWITCHBOARD_DATA_DIR`).
    pub data_dir: std::path::PathBuf,
    /// A Redis URL (`redis://host:port/db`) to share state with other nodes. Also
    /// `--redis` or `SWITCHBOARD_REDIS`.
    pub redis: Option<String>,
    /// A snapshot of the state every this many log entries; the log below it is
    /// removed (with Redis: trimmed below it and below every live node's position).
    pub snapshot_every: u64,
    /// The most one store call may take, from the command handed to the store to its
    /// answer, however the store's connection is doing (connecting, reconnecting, a
    /// Redis that stopped answering, a stuck disk writer): then `store_unavailable`
    /// when the command was certainly not handed over, `outcome_unknown` when it was.
    pub call_timeout_ms: u64,
}

impl StoreConfig {
    /// The store that runs.
    pub fn effective_kind(&self) -> StoreKind {
        match (self.kind, &self.redis) {
            (Some(k), _) => k,
            (None, Some(_)) => StoreKind::Redis,
            (None, None) => StoreKind::File,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: None,
            data_dir: "switchboard-data".into(),
            redis: None,
            snapshot_every: 200_000,
            call_timeout_ms: 3_000,
        }
    }
}

/// `[server]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where to listen (HTTP and websockets on one port).
    pub listen: String,
    /// Browser origins allowed to open a websocket (`Origin` header, exact match);
    /// `"*"` allows any. Clients that send no `Origin` (not browsers) are not checked,
    /// and the hub's own origin (the desktop it serves) is always allowed.
    pub allowed_origins: Vec<String>,
    /// How long a SIGTERM drain waits for connections to finish, in seconds.
    pub drain_secs: f64,
    /// How often supervisors get queue numbers, in milliseconds.
    pub queue_update_ms: u64,
    /// The least time between two `stats` messages to supervisors, in milliseconds
    /// (one is sent only when something changed).
    pub stats_update_ms: u64,
    /// The name this node logs and reports.
    pub node_id: String,
    /// Set by [`Config::demo`], never from a file: on loopback the desktop may then list
    /// the demo agents with ready-made tokens (`GET /v1/demo/agents`).
    #[serde(skip)]
    pub demo: bool,
}

/// `[auth]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The HS256 signing secret. Required to listen beyond loopback. Also read from
    /// `SWITCHBOARD_SECRET`. Without one on loopback, the hub makes a random one and
    /// prints ready-made tokens.
    pub secret: Option<String>,
    /// Let an agent that is not configured log in with the profile its token carries
    /// (`name`, `skills`, `queues` claims). The token is signed, so the claims are trusted.
    pub allow_token_profiles: bool,
    /// How long the printed demo tokens last, in seconds.
    pub demo_token_secs: u64,
}

/// `[limits]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Frames larger than this get a `frame_too_large` error (the connection stays).
    pub max_frame_bytes: usize,
    /// Frames larger than this close the connection (code 1009): the transport's limit.
    pub hard_max_frame_bytes: usize,
    /// HTTP bodies larger than this get `payload_too_large`.
    pub max_body_bytes: usize,
    /// Frames a connection may send per second, sustained.
    pub rate_per_sec: f64,
    /// Frames a connection may send in a burst.
    pub rate_burst: f64,
    /// Frames queued to one connection before it counts as not reading and is closed.
    pub send_queue: usize,
    /// How often the hub pings each connection, in milliseconds.
    pub ping_interval_ms: u64,
    /// How long past a ping the hub waits for any frame before closing, in milliseconds.
    pub ping_timeout_ms: u64,
    /// How many finished tasks are remembered (for `GET /v1/tasks/{id}` and idempotency).
    pub finished_task_retention: usize,
    /// The websocket read buffer per connection, in bytes.
    pub read_buffer_bytes: usize,
    /// How long a connection may take to send a request's line and headers, in
    /// milliseconds, counted from when the hub starts waiting for them: on a new
    /// connection, and on a kept-alive one after each answer (so it is also the
    /// keep-alive idle limit). The connection is closed when it runs out. Each
    /// connection's limit is drawn between three quarters of this and this
    /// (`conn::spread`), so that a flood of connections is not closed all at once.
    pub request_head_timeout_ms: u64,
    /// How long a request's body may take to arrive, in milliseconds, counted from the
    /// end of its headers; then `408 request_timeout` and the connection is closed.
    /// Drawn per request as the head's is.
    pub request_body_timeout_ms: u64,
    /// The longest request target (path and query), in bytes; longer gets `414 uri_too_long`.
    pub max_uri_bytes: usize,
    /// The most bytes of a request's line and headers together; more gets
    /// `431 headers_too_large`. At least 8192.
    pub max_header_bytes: usize,
    /// Open connections (HTTP and websockets together) the hub accepts; past it new
    /// ones get `503 too_many_connections`. Default: the process's open-file limit (the
    /// soft one raised to the hard one at start) less 128 descriptors kept for the
    /// store, logs and the listener.
    pub max_connections: Option<usize>,
    /// Open connections one source address may hold; 0 for no per-address cap.
    pub max_connections_per_ip: usize,
}

/// `[routing]`: defaults for queues and agents.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// How long an offer waits for an accept, in seconds.
    pub offer_timeout_secs: f64,
    /// How long wrap-up lasts after a task, in seconds; 0 for none.
    pub wrap_up_secs: f64,
    /// How long a dropped desktop keeps its offer and tasks, in seconds.
    pub reconnect_grace_secs: f64,
    /// How many times one task may be transferred.
    pub max_transfers: u32,
    /// How long a dropped desktop (its socket closed, its node declared lost) keeps a
    /// pending offer before it is withdrawn and goes to the next agent, in seconds.
    pub away_offer_secs: f64,
    /// How long after an agent declined or missed a task it may be offered that task
    /// again, in seconds; even then only when no other eligible agent is open for it.
    pub reoffer_after_secs: f64,
    /// Not Ready reason codes an agent may choose (the built-ins `login`,
    /// `missed_offer` and `supervisor` are always there).
    pub not_ready_reasons: Vec<String>,
    /// Default per-channel capacity.
    pub capacity: CapacityConfig,
}

/// Per-channel capacity.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityConfig {
    /// Calls: 0 or 1.
    pub voice: u32,
    /// Chats.
    pub chat: u32,
    /// Emails.
    pub email: u32,
}

/// `[[queues]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Its id.
    pub id: String,
    /// Its display name (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// The channels it takes (default: all).
    #[serde(default)]
    pub channels: Option<Vec<Channel>>,
    /// Skills every task in it requires.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Overrides `routing.offer_timeout_secs`.
    #[serde(default)]
    pub offer_timeout_secs: Option<f64>,
    /// Overrides `routing.wrap_up_secs`.
    #[serde(default)]
    pub wrap_up_secs: Option<f64>,
    /// Overrides `routing.reoffer_after_secs`.
    #[serde(default)]
    pub reoffer_after_secs: Option<f64>,
    /// Waits that escalate: priority rising, skill levels relaxing, overflow.
    #[serde(default)]
    pub escalation: Option<EscalationConfig>,
    /// The service-level threshold, in seconds: a task answered within it (wait at
    /// most this) counts as answered in time. Default 20.
    #[serde(default)]
    pub service_level_secs: Option<f64>,
    /// The service-level objective, in percent (1 to 100): the share of tasks the
    /// queue aims to answer within `service_level_secs`. Default 80 (80/20). The
    /// statistics carry it so that a wallboard colours against it.
    #[serde(default)]
    pub service_level_target: Option<f64>,
}

/// `[queues.escalation]`: what happens to a task as it waits. Each part is off unless
/// its time is given.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    /// The priority rises by `priority_step` every this many seconds of waiting.
    #[serde(default)]
    pub priority_every_secs: Option<f64>,
    /// How much it rises each time (default 1).
    #[serde(default = "one_i64")]
    pub priority_step: i64,
    /// It rises no higher than this (default 1000, the highest priority).
    #[serde(default = "max_priority")]
    pub priority_max: i64,
    /// The skill levels the task requires fall by `relax_levels` every this many
    /// seconds of waiting, down to 1.
    #[serde(default)]
    pub relax_every_secs: Option<f64>,
    /// How many levels each time (default 1).
    #[serde(default = "one_u8")]
    pub relax_levels: u8,
    /// After this many seconds of waiting the task moves to `overflow_queue`.
    #[serde(default)]
    pub overflow_after_secs: Option<f64>,
    /// The queue a task overflows to.
    #[serde(default)]
    pub overflow_queue: Option<String>,
}

fn one_i64() -> i64 {
    1
}

fn one_u8() -> u8 {
    1
}

fn max_priority() -> i64 {
    *crate::task::PRIORITY_RANGE.end()
}

/// `[[agents]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Its id (the token's `sub`).
    pub id: String,
    /// Its display name (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// Its team, for the wallboard's filter (optional; routing ignores it).
    #[serde(default)]
    pub team: Option<String>,
    /// Its skills.
    #[serde(default)]
    pub skills: Vec<String>,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// Overrides `routing.capacity`, channel by channel.
    #[serde(default)]
    pub capacity: Option<PartialCapacity>,
    /// Skill levels, 1 to 10 (`{ en = 7 }`): each is also a skill. A plain skill (in
    /// `skills` only) counts as level 10.
    #[serde(default)]
    pub skill_levels: std::collections::BTreeMap<String, u8>,
}

/// A capacity override: unset channels keep the default.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialCapacity {
    /// Calls.
    pub voice: Option<u32>,
    /// Chats.
    pub chat: Option<u32>,
    /// Emails.
    pub email: Option<u32>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            allowed_origins: vec![
                "http://localhost:8080".into(),
                "http://127.0.0.1:8080".into(),
            ],
            drain_secs: 10.0,
            queue_update_ms: 250,
            stats_update_ms: 1000,
            node_id: "node-1".into(),
            demo: false,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secret: None,
            allow_token_profiles: false,
            demo_token_secs: 86_400,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 64 * 1024,
            hard_max_frame_bytes: 1024 * 1024,
            max_body_bytes: 64 * 1024,
            rate_per_sec: 50.0,
            rate_burst: 100.0,
            send_queue: 1024,
            ping_interval_ms: 20_000,
            ping_timeout_ms: 10_000,
            finished_task_retention: 100_000,
            read_buffer_bytes: 4096,
            request_head_timeout_ms: 10_000,
            request_body_timeout_ms: 10_000,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: None,
            max_connections_per_ip: 0,
        }
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            offer_timeout_secs: 15.0,
            wrap_up_secs: 30.0,
            reconnect_grace_secs: 30.0,
            reoffer_after_secs: 30.0,
            away_offer_secs: 3.0,
            max_transfers: 5,
            not_ready_reasons: ["break", "lunch", "meeting", "training", "after_call_work"]
                .into_iter()
                .map(String::from)
                .collect(),
            capacity: CapacityConfig::default(),
        }
    }
}

impl Default for CapacityConfig {
    fn default() -> Self {
        CapacityConfig {
            voice: 1,
            chat: 3,
            email: 2,
        }
    }
}

impl Config {
    /// Overflows routing can carry out: the queue a task overflows to takes every channel
    /// of the queue it leaves (a task of a channel it does not take would never
    /// overflow, in silence), and no chain of overflows comes back to a queue (a task
    /// would go round for ever, gathering each queue's required skills on the way).
    fn check_overflows(&self) -> Result<(), ConfigError> {
        let by_id: HashMap<&str, &QueueConfig> =
            self.queues.iter().map(|q| (q.id.as_str(), q)).collect();
        fn target(q: &QueueConfig) -> Option<&str> {
            q.escalation
                .as_ref()
                .and_then(|e| e.overflow_queue.as_deref())
        }
        let channels =
            |q: &QueueConfig| q.channels.clone().unwrap_or_else(|| Channel::ALL.to_vec());
        for (i, q) in self.queues.iter().enumerate() {
            let Some(to) = target(q).and_then(|t| by_id.get(t)) else {
                continue;
            };
            let key = format!("queues[{i}].escalation.overflow_queue");
            let theirs = channels(to);
            if let Some(c) = channels(q).into_iter().find(|c| !theirs.contains(c)) {
                return Err(invalid(
                    key,
                    format!(
                        "{:?} does not take {} tasks, which {:?} does",
                        to.id,
                        c.as_str(),
                        q.id
                    ),
                ));
            }
            let mut seen = vec![q.id.as_str()];
            let mut at = *to;
            loop {
                if seen.contains(&at.id.as_str()) {
                    seen.push(at.id.as_str());
                    return Err(invalid(
                        key,
                        format!("the overflows go round: {}", seen.join(" -> ")),
                    ));
                }
                seen.push(at.id.as_str());
                match target(at).and_then(|t| by_id.get(t)) {
                    Some(next) => at = next,
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let cfg = Config::read(path)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Reads a TOML file without checking it: for a caller that completes it first (the
    /// command line and `SWITCHBOARD_SECRET` may give what the file leaves out, such as
    /// the secret of a hub that listens beyond loopback), then calls [`Config::check`].
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse_unchecked(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg = Config::parse_unchecked(text)?;
        cfg.check()?;
        Ok(cfg)
    }

    fn parse_unchecked(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "config".into(),
            message: e.to_string(),
        })
    }

    /// The demo setup: three queues, six agents, on loopback.
    pub fn demo() -> Config {
        let q = |id: &str, name: &str, channels: &[Channel], skills: &[&str]| QueueConfig {
            id: id.into(),
            name: Some(name.into()),
            channels: Some(channels.to_vec()),
            skills: skills.iter().map(|s| s.to_string()).collect(),
            offer_timeout_secs: None,
            wrap_up_secs: None,
            reoffer_after_secs: None,
            escalation: None,
            service_level_secs: None,
            service_level_target: None,
        };
        let a = |id: &str, name: &str, skills: &[&str], queues: &[&str]| AgentConfig {
            id: id.into(),
            name: Some(name.into()),
            // Two teams, so that the demo's wallboard has something to filter by.
            team: Some(
                if queues.contains(&"billing") {
                    "Back office"
                } else {
                    "Front office"
                }
                .into(),
            ),
            skills: skills.iter().map(|s| s.to_string()).collect(),
            queues: queues.iter().map(|s| s.to_string()).collect(),
            capacity: None,
            skill_levels: Default::default(),
        };
        use Channel::*;
        Config {
            queues: vec![
                q("sales", "Sales", &[Voice, Chat], &[]),
                q("support", "Support", &[Voice, Chat, Email], &[]),
                q("billing", "Billing", &[Voice, Email], &["billing"]),
            ],
            agents: vec![
                a(
                    "alice",
                    "Alice Moreau",
                    &["en", "fr"],
                    &["sales", "support"],
                ),
                a("joao", "João Araújo", &["pt", "en"], &["support", "sales"]),
                a(
                    "elin",
                    "Elin Öberg",
                    &["sv", "en", "billing"],
                    &["support", "billing"],
                ),
                a("dorde", "Đorđe Đorđević", &["sr", "en"], &["support"]),
                a(
                    "giulia",
                    "Giulia Ricci",
                    &["it", "en", "billing"],
                    &["billing", "sales"],
                ),
                a("sam", "Sam Lee", &["en"], &["sales", "support", "billing"]),
            ],
            server: ServerConfig {
                demo: true,
                ..ServerConfig::default()
            },
            ..Config::default()
        }
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .parse()
            .map_err(|e| invalid("server.listen", format!("not an address:port: {e}")))
    }

    /// Checks every rule that types alone do not.
    pub fn check(&self) -> Result<(), ConfigError> {
        let addr = self.listen_addr()?;
        if let Some(url) = &self.store.redis {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(invalid(
                    "store.redis",
                    "must be a redis:// or rediss:// URL",
                ));
            }
        }
        name("server.node_id", &self.server.node_id)?;
        match self.store.effective_kind() {
            StoreKind::Redis if self.store.redis.is_none() => {
                return Err(invalid("store.kind", "\"redis\" needs store.redis (a URL)"));
            }
            StoreKind::File if self.store.data_dir.as_os_str().is_empty() => {
                return Err(invalid("store.data_dir", "must not be empty"));
            }
            _ => {}
        }
        if self.store.snapshot_every == 0 {
            return Err(invalid("store.snapshot_every", "must be more than 0"));
        }
        if self.store.call_timeout_ms < 10 {
            return Err(invalid("store.call_timeout_ms", "must be at least 10"));
        }
        if !addr.ip().is_loopback() && self.auth.secret.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "auth.secret",
                "required to listen on a non-loopback address (or set SWITCHBOARD_SECRET)",
            ));
        }
        if let Some(s) = &self.auth.secret {
            if s.len() < 16 {
                return Err(invalid("auth.secret", "must be at least 16 bytes"));
            }
        }
        secs("server.drain_secs", self.server.drain_secs, 0.0)?;
        if self.server.queue_update_ms == 0 {
            return Err(invalid("server.queue_update_ms", "must be more than 0"));
        }
        if !(10..=3_600_000).contains(&self.server.stats_update_ms) {
            return Err(invalid(
                "server.stats_update_ms",
                "must be between 10 and 3600000 milliseconds",
            ));
        }
        crate::stats::day::Zone::load(&self.stats.timezone)
            .map_err(|e| invalid("stats.timezone", e))?;
        secs(
            "stats.short_abandon_secs",
            self.stats.short_abandon_secs,
            0.0,
        )?;
        let ev = &self.events;
        for (key, v, min, max) in [
            ("events.retain_count", ev.retain_count, 1, 10_000_000),
            ("events.max_held", ev.max_held, 1, 50_000_000),
            ("events.retain_mib", ev.retain_mib, 1, 65_536),
            ("events.stream_buffer", ev.stream_buffer, 16, 1_000_000),
        ] {
            if !(min..=max).contains(&v) {
                return Err(invalid(key, format!("must be between {min} and {max}")));
            }
        }
        if ev.max_held < ev.retain_count {
            return Err(invalid(
                "events.max_held",
                "must be at least events.retain_count",
            ));
        }
        if !(1..=30 * 86_400).contains(&ev.retain_secs) {
            return Err(invalid(
                "events.retain_secs",
                "must be between 1 and 2592000 seconds",
            ));
        }
        if ev.stream_linger_ms > 1_000 {
            return Err(invalid(
                "events.stream_linger_ms",
                "must be between 0 and 1000 milliseconds",
            ));
        }
        if !(1..=3600).contains(&ev.keepalive_secs) {
            return Err(invalid(
                "events.keepalive_secs",
                "must be between 1 and 3600 seconds",
            ));
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_frame_bytes", l.max_frame_bytes),
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.send_queue", l.send_queue),
            ("limits.finished_task_retention", l.finished_task_retention),
            ("limits.read_buffer_bytes", l.read_buffer_bytes),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be more than 0"));
            }
        }
        // What one frame or body may be is what one command logged may be: the file
        // log's records are at most 64 MiB, and a limit past that would let a command be
        // acknowledged that the next start refuses as corruption.
        for (key, v) in [
            ("limits.max_frame_bytes", l.max_frame_bytes),
            ("limits.hard_max_frame_bytes", l.hard_max_frame_bytes),
            ("limits.max_body_bytes", l.max_body_bytes),
        ] {
            if v > 16 << 20 {
                return Err(invalid(key, "must be at most 16777216 (16 MiB)"));
            }
        }
        // Reserved whole for every websocket as it opens: a typo here would abort the
        // hub on its first connection.
        if l.read_buffer_bytes > 16 << 20 {
            return Err(invalid(
                "limits.read_buffer_bytes",
                "must be at most 16777216 (16 MiB)",
            ));
        }
        if l.hard_max_frame_bytes < l.max_frame_bytes {
            return Err(invalid(
                "limits.hard_max_frame_bytes",
                "must be at least limits.max_frame_bytes",
            ));
        }
        for (key, v) in [
            ("limits.rate_per_sec", l.rate_per_sec),
            ("limits.rate_burst", l.rate_burst),
        ] {
            if !(v.is_finite() && v >= 1.0) {
                return Err(invalid(key, "must be a number of at least 1"));
            }
        }
        for (key, v) in [
            ("limits.request_head_timeout_ms", l.request_head_timeout_ms),
            ("limits.request_body_timeout_ms", l.request_body_timeout_ms),
        ] {
            if !(10..=3_600_000).contains(&v) {
                return Err(invalid(key, "must be between 10 and 3600000 milliseconds"));
            }
        }
        if l.max_uri_bytes < 256 {
            return Err(invalid("limits.max_uri_bytes", "must be at least 256"));
        }
        // hyper refuses a smaller read buffer.
        if l.max_header_bytes < MIN_HEADER_BYTES {
            return Err(invalid(
                "limits.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        if l.max_connections == Some(0) {
            return Err(invalid("limits.max_connections", "must be more than 0"));
        }
        if l.ping_interval_ms < 10 || l.ping_timeout_ms < 10 {
            return Err(invalid(
                "limits.ping_interval_ms",
                "ping_interval_ms and ping_timeout_ms must be at least 10",
            ));
        }
        let r = &self.routing;
        secs("routing.offer_timeout_secs", r.offer_timeout_secs, 0.001)?;
        secs("routing.wrap_up_secs", r.wrap_up_secs, 0.0)?;
        secs("routing.reconnect_grace_secs", r.reconnect_grace_secs, 0.0)?;
        secs("routing.reoffer_after_secs", r.reoffer_after_secs, 0.0)?;
        secs("routing.away_offer_secs", r.away_offer_secs, 0.0)?;
        if r.max_transfers > 1000 {
            return Err(invalid("routing.max_transfers", "must be at most 1000"));
        }
        if r.capacity.voice > 1 {
            return Err(invalid(
                "routing.capacity.voice",
                "must be 0 or 1: one call at a time",
            ));
        }
        for (i, reason) in r.not_ready_reasons.iter().enumerate() {
            name(&format!("routing.not_ready_reasons[{i}]"), reason)?;
            if [REASON_LOGIN, REASON_MISSED_OFFER, REASON_SUPERVISOR].contains(&reason.as_str()) {
                return Err(invalid(
                    format!("routing.not_ready_reasons[{i}]"),
                    format!("{reason:?} is a reason the hub sets itself"),
                ));
            }
        }
        if self.queues.is_empty() {
            return Err(invalid("queues", "at least one [[queues]] entry is needed"));
        }
        let mut queue_ids = HashSet::new();
        for (i, q) in self.queues.iter().enumerate() {
            name(&format!("queues[{i}].id"), &q.id)?;
            if !queue_ids.insert(q.id.as_str()) {
                return Err(invalid(
                    format!("queues[{i}].id"),
                    format!("{:?} appears twice", q.id),
                ));
            }
            if let Some(t) = q.offer_timeout_secs {
                secs(&format!("queues[{i}].offer_timeout_secs"), t, 0.001)?;
            }
            if let Some(t) = q.wrap_up_secs {
                secs(&format!("queues[{i}].wrap_up_secs"), t, 0.0)?;
            }
            if let Some(t) = q.reoffer_after_secs {
                secs(&format!("queues[{i}].reoffer_after_secs"), t, 0.0)?;
            }
            if let Some(t) = q.service_level_secs {
                secs(&format!("queues[{i}].service_level_secs"), t, 0.0)?;
            }
            if let Some(t) = q.service_level_target {
                if !t.is_finite() || !(1.0..=100.0).contains(&t) {
                    return Err(invalid(
                        format!("queues[{i}].service_level_target"),
                        "must be a percentage from 1 to 100",
                    ));
                }
            }
            if q.channels.as_ref().is_some_and(Vec::is_empty) {
                return Err(invalid(
                    format!("queues[{i}].channels"),
                    "must not be empty",
                ));
            }
            for (j, s) in q.skills.iter().enumerate() {
                name(&format!("queues[{i}].skills[{j}]"), s)?;
            }
        }
        for (i, q) in self.queues.iter().enumerate() {
            let Some(e) = &q.escalation else {
                continue;
            };
            let key = |k: &str| format!("queues[{i}].escalation.{k}");
            for (k, v) in [
                ("priority_every_secs", e.priority_every_secs),
                ("relax_every_secs", e.relax_every_secs),
                ("overflow_after_secs", e.overflow_after_secs),
            ] {
                if let Some(v) = v {
                    secs(&key(k), v, 0.001)?;
                }
            }
            if !(1..=1000).contains(&e.priority_step) {
                return Err(invalid(key("priority_step"), "must be between 1 and 1000"));
            }
            if !crate::task::PRIORITY_RANGE.contains(&e.priority_max) {
                return Err(invalid(key("priority_max"), "must be between 0 and 1000"));
            }
            if !(1..=9).contains(&e.relax_levels) {
                return Err(invalid(key("relax_levels"), "must be between 1 and 9"));
            }
            match (&e.overflow_after_secs, &e.overflow_queue) {
                (Some(_), None) => {
                    return Err(invalid(
                        key("overflow_queue"),
                        "needed with overflow_after_secs",
                    ));
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        key("overflow_after_secs"),
                        "needed with overflow_queue",
                    ));
                }
                (Some(_), Some(o)) if o == &q.id || !queue_ids.contains(o.as_str()) => {
                    return Err(invalid(
                        key("overflow_queue"),
                        format!("{o:?} must be another configured queue"),
                    ));
                }
                _ => {}
            }
        }
        self.check_overflows()?;
        let mut agent_ids = HashSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            name(&format!("agents[{i}].id"), &a.id)?;
            if let Some(team) = &a.team {
                name(&format!("agents[{i}].team"), team)?;
            }
            if !agent_ids.insert(a.id.as_str()) {
                return Err(invalid(
                    format!("agents[{i}].id"),
                    format!("{:?} appears twice", a.id),
                ));
            }
            for (j, q) in a.queues.iter().enumerate() {
                if !queue_ids.contains(q.as_str()) {
                    return Err(invalid(
                        format!("agents[{i}].queues[{j}]"),
                        format!("no queue {q:?} is configured"),
                    ));
                }
            }
            for (j, s) in a.skills.iter().enumerate() {
                name(&format!("agents[{i}].skills[{j}]"), s)?;
            }
            for (s, l) in &a.skill_levels {
                name(&format!("agents[{i}].skill_levels"), s)?;
                if !(1..=10).contains(l) {
                    return Err(invalid(
                        format!("agents[{i}].skill_levels.{s}"),
                        "must be a level from 1 to 10",
                    ));
                }
            }
            if a.capacity.and_then(|c| c.voice).is_some_and(|v| v > 1) {
                return Err(invalid(
                    format!("agents[{i}].capacity.voice"),
                    "must be 0 or 1: one call at a time",
                ));
            }
        }
        self.webhooks
            .check()
            .map_err(|(key, message)| invalid(key, message))?;
        Ok(())
    }

    /// The default capacity with an agent's override laid over it.
    pub fn capacity(&self, over: Option<PartialCapacity>) -> Capacity {
        let d = self.routing.capacity;
        let o = over.unwrap_or_default();
        Capacity {
            voice: o.voice.unwrap_or(d.voice).min(1),
            chat: o.chat.unwrap_or(d.chat),
            email: o.email.unwrap_or(d.email),
        }
    }

    /// The routing rules the book needs.
    pub fn rules(&self) -> Rules {
        let r = &self.routing;
        let queues: HashMap<QueueId, QueueRules> = self
            .queues
            .iter()
            .map(|q| {
                (
                    QueueId::from(q.id.as_str()),
                    QueueRules {
                        name: q.name.clone().unwrap_or_else(|| q.id.clone()),
                        channels: q.channels.clone().unwrap_or_else(|| Channel::ALL.to_vec()),
                        skills: q.skills.clone(),
                        offer_timeout: Duration::from_secs_f64(
                            q.offer_timeout_secs.unwrap_or(r.offer_timeout_secs),
                        ),
                        wrap_up: Duration::from_secs_f64(q.wrap_up_secs.unwrap_or(r.wrap_up_secs)),
                        reoffer_after: Duration::from_secs_f64(
                            q.reoffer_after_secs.unwrap_or(r.reoffer_after_secs),
                        ),
                        escalation: q.escalation.as_ref().map(|e| Escalation {
                            priority: e.priority_every_secs.map(|s| {
                                (Duration::from_secs_f64(s), e.priority_step, e.priority_max)
                            }),
                            relax: e
                                .relax_every_secs
                                .map(|s| (Duration::from_secs_f64(s), e.relax_levels)),
                            overflow: e.overflow_after_secs.zip(e.overflow_queue.as_ref()).map(
                                |(s, q)| (Duration::from_secs_f64(s), QueueId::from(q.as_str())),
                            ),
                        }),
                    },
                )
            })
            .collect();
        let agents = self
            .agents
            .iter()
            .map(|a| {
                Arc::new(Profile {
                    id: AgentId::from(a.id.as_str()),
                    name: a.name.clone().unwrap_or_else(|| a.id.clone()),
                    team: a.team.clone(),
                    skills: a
                        .skills
                        .iter()
                        .chain(a.skill_levels.keys())
                        .cloned()
                        .collect(),
                    levels: a.skill_levels.clone(),
                    queues: a.queues.iter().map(|q| QueueId::from(q.as_str())).collect(),
                    capacity: self.capacity(a.capacity),
                })
            })
            .collect();
        // What an agent may choose: the configured reasons only. The hub's own (`login`,
        // `missed_offer`, `supervisor`) say what happened, and a supervisor's
        // `supervisor` is allowed where it is set.
        let reasons: BTreeSet<String> = r.not_ready_reasons.iter().cloned().collect();
        let zone = crate::stats::day::Zone::load(&self.stats.timezone).unwrap_or_else(|e| {
            // `check` loaded it already; only a file removed since then lands here.
            tracing::error!(error = %e, "statistics time zone unavailable: using UTC");
            crate::stats::day::Zone::utc()
        });
        let stats = crate::stats::StatsRules {
            zone,
            short_abandon_us: (self.stats.short_abandon_secs * 1e6).round() as u64,
            thresholds: self
                .queues
                .iter()
                .map(|q| {
                    let secs = q.service_level_secs.unwrap_or(20.0);
                    (QueueId::from(q.id.as_str()), (secs * 1e6).round() as u64)
                })
                .collect(),
            targets: self
                .queues
                .iter()
                .filter_map(|q| {
                    let pct = q.service_level_target?;
                    Some((QueueId::from(q.id.as_str()), pct / 100.0))
                })
                .collect(),
        };
        Rules {
            stats: Arc::new(stats),
            queues,
            agents,
            reasons,
            grace: Duration::from_secs_f64(r.reconnect_grace_secs),
            away_offer: Duration::from_secs_f64(r.away_offer_secs),
            finished_retention: self.limits.finished_task_retention,
            max_transfers: r.max_transfers,
            events: crate::events::Retention {
                count: self.events.retain_count,
                age: Duration::from_secs(self.events.retain_secs),
                bytes: self.events.retain_mib << 20,
                max_held: self.events.max_held,
            },
        }
    }
}

/// The smallest `limits.max_header_bytes`: hyper's smallest read buffer.
pub const MIN_HEADER_BYTES: usize = 8192;

fn secs(key: &str, v: f64, min: f64) -> Result<(), ConfigError> {
    if !v.is_finite() || v < min || v > 86_400.0 {
        return Err(invalid(
            key,
            if min > 0.0 {
                "must be more than 0 seconds and at most 86400".to_owned()
            } else {
                "must be between 0 and 86400 seconds".to_owned()
            },
        ));
    }
    Ok(())
}

fn name(key: &str, v: &str) -> Result<(), ConfigError> {
    if v.trim().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    if v.chars().count() > crate::task::MAX_NAME_CHARS {
        return Err(invalid(
            key,
            format!("at most {} characters", crate::task::MAX_NAME_CHARS),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[[queues]]
id = "support"
"#;

    #[test]
    fn the_readme_example_is_valid() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("```toml\n[server]")
            .expect("README has the configuration example");
        let body = &readme[start + "```toml\n".len()..];
        let end = body.find("```").expect("the example ends");
        let cfg = Config::parse(&body[..end]).expect("the README example parses");
        let rules = cfg.rules();
        let e = rules.queues[&QueueId::from("support")]
            .escalation
            .clone()
            .expect("support escalates");
        assert_eq!(e.overflow.map(|o| o.1), Some(QueueId::from("billing")));
    }

    #[test]
    fn demo_is_valid() {
        Config::demo().check().expect("demo config is valid");
    }

    #[test]
    fn minimal_file_takes_defaults() {
        let c = Config::parse(MIN).expect("parse");
        let r = c.rules();
        let q = &r.queues[&QueueId::from("support")];
        assert_eq!(q.offer_timeout, Duration::from_secs(15));
        assert_eq!(q.channels, Channel::ALL.to_vec());
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        // Seconds become microseconds rounded, not cut: 4.1 s is not 4.099999 s.
        let c = Config::parse(&format!("[stats]\nshort_abandon_secs = 4.1\n{MIN}")).expect("parse");
        assert_eq!(c.rules().stats.short_abandon_us, 4_100_000);
    }

    #[test]
    fn wrong_values_name_their_key() {
        let cases = [
            (
                "[[queues]]\nid = \"a\"\noffer_timeout_secs = 0\n",
                "queues[0].offer_timeout_secs",
            ),
            (
                "[server]\nlisten = \"0.0.0.0:80\"\n[[queues]]\nid = \"a\"\n",
                "auth.secret",
            ),
            (
                "[[queues]]\nid = \"a\"\n[[agents]]\nid = \"x\"\nqueues = [\"b\"]\n",
                "agents[0].queues[0]",
            ),
            (
                "[routing]\ncapacity = { voice = 2 }\n[[queues]]\nid = \"a\"\n",
                "routing.capacity.voice",
            ),
            (
                "[limits]\nrate_per_sec = 0\n[[queues]]\nid = \"a\"\n",
                "limits.rate_per_sec",
            ),
            (
                "[limits]\nread_buffer_bytes = 100000000000\n[[queues]]\nid = \"a\"\n",
                "limits.read_buffer_bytes",
            ),
            (
                "[limits]\nmax_body_bytes = 100000000\n[[queues]]\nid = \"a\"\n",
                "limits.max_body_bytes",
            ),
            (
                "[limits]\nhard_max_frame_bytes = 100000000\n[[queues]]\nid = \"a\"\n",
                "limits.hard_max_frame_bytes",
            ),
            (
                "[routing]\naway_offer_secs = nan\n[[queues]]\nid = \"a\"\n",
                "routing.away_offer_secs",
            ),
            (
                "[[queues]]\nid = \"a\"\nescalation = { overflow_after_secs = 60, overflow_queue = \"b\" }\n",
                "queues[0].escalation.overflow_queue",
            ),
            (
                "[[queues]]\nid = \"a\"\nescalation = { relax_every_secs = 60, relax_levels = 0 }\n",
                "queues[0].escalation.relax_levels",
            ),
            (
                "[[queues]]\nid = \"a\"\nescalation = { overflow_after_secs = 60, overflow_queue = \"b\" }\n[[queues]]\nid = \"b\"\nescalation = { overflow_after_secs = 60, overflow_queue = \"a\" }\n",
                "queues[0].escalation.overflow_queue",
            ),
            (
                "[[queues]]\nid = \"a\"\nescalation = { overflow_after_secs = 60, overflow_queue = \"b\" }\n[[queues]]\nid = \"b\"\nescalation = { overflow_after_secs = 60, overflow_queue = \"c\" }\n[[queues]]\nid = \"c\"\nescalation = { overflow_after_secs = 60, overflow_queue = \"b\" }\n",
                "queues[0].escalation.overflow_queue",
            ),
            (
                "[[queues]]\nid = \"a\"\nchannels = [\"voice\", \"chat\"]\nescalation = { overflow_after_secs = 60, overflow_queue = \"b\" }\n[[queues]]\nid = \"b\"\nchannels = [\"email\", \"chat\"]\n",
                "queues[0].escalation.overflow_queue",
            ),
            (
                "[[queues]]\nid = \"a\"\nescalation = { priority_every_secs = 0 }\n",
                "queues[0].escalation.priority_every_secs",
            ),
            (
                "[[queues]]\nid = \"a\"\n[[agents]]\nid = \"x\"\nqueues = [\"a\"]\nskill_levels = { en = 11 }\n",
                "agents[0].skill_levels.en",
            ),
            (
                "[[queues]]\nid = \"a\"\n[[agents]]\nid = \"x\"\nqueues = [\"a\"]\nteam = \" \"\n",
                "agents[0].team",
            ),
            (
                "[routing]\nreoffer_after_secs = -1\n[[queues]]\nid = \"a\"\n",
                "routing.reoffer_after_secs",
            ),
            (
                "[[queues]]\nid = \"a\"\nreoffer_after_secs = 1e9\n",
                "queues[0].reoffer_after_secs",
            ),
            (
                "[limits]\nrequest_head_timeout_ms = 0\n[[queues]]\nid = \"a\"\n",
                "limits.request_head_timeout_ms",
            ),
            (
                "[limits]\nrequest_body_timeout_ms = 5\n[[queues]]\nid = \"a\"\n",
                "limits.request_body_timeout_ms",
            ),
            (
                "[store]\ncall_timeout_ms = 5\n[[queues]]\nid = \"a\"\n",
                "store.call_timeout_ms",
            ),
            (
                "[limits]\nmax_header_bytes = 4096\n[[queues]]\nid = \"a\"\n",
                "limits.max_header_bytes",
            ),
            (
                "[limits]\nmax_uri_bytes = 10\n[[queues]]\nid = \"a\"\n",
                "limits.max_uri_bytes",
            ),
            (
                "[limits]\nmax_connections = 0\n[[queues]]\nid = \"a\"\n",
                "limits.max_connections",
            ),
            (
                "[events]\nretain_count = 0\n[[queues]]\nid = \"a\"\n",
                "events.retain_count",
            ),
            (
                "[events]\nretain_secs = 0\n[[queues]]\nid = \"a\"\n",
                "events.retain_secs",
            ),
            (
                "[events]\nretain_count = 2000\nmax_held = 1000\n[[queues]]\nid = \"a\"\n",
                "events.max_held",
            ),
            (
                "[events]\nkeepalive_secs = 0\n[[queues]]\nid = \"a\"\n",
                "events.keepalive_secs",
            ),
            (
                "[events]\nstream_linger_ms = 1001\n[[queues]]\nid = \"a\"\n",
                "events.stream_linger_ms",
            ),
            (
                "[routing]\nnot_ready_reasons = [\"break\", \"missed_offer\"]\n[[queues]]\nid = \"a\"\n",
                "routing.not_ready_reasons[1]",
            ),
            (
                "[webhooks]\nlinger_ms = 1001\n[[queues]]\nid = \"a\"\n",
                "webhooks.linger_ms",
            ),
            (
                "[events]\nstream_buffer = 1\n[[queues]]\nid = \"a\"\n",
                "events.stream_buffer",
            ),
            ("", "queues"),
        ];
        for (text, key) in cases {
            match Config::parse(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected an error naming {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_and_mistyped_keys_are_refused_with_their_name() {
        for (text, needle) in [
            ("[server]\nlisten_addr = \"x\"\n", "listen_addr"),
            (
                "[limits]\nsend_queue = \"big\"\n[[queues]]\nid = \"a\"\n",
                "send_queue",
            ),
        ] {
            match Config::parse(text) {
                Err(ConfigError::Parse { message, .. }) => {
                    assert!(message.contains(needle), "{message}")
                }
                other => panic!("expected a parse error, got {other:?}"),
            }
        }
    }
}
