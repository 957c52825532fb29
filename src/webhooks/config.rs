//! `[webhooks]`: the delivery rules, and `[[webhooks.endpoints]]`, the endpoints the
//! config declares (more can be made through the API).

use super::signing::Secret;
use super::target::Target;
use serde::Deserialize;

/// `[webhooks]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Endpoints on loopback, private, link-local (and other non-public) addresses are
    /// refused unless this is set (server-side request forgery).
    pub allow_private: bool,
    /// A PEM file of CA certificates that https endpoints' certificates may also chain
    /// to (a private CA), besides Mozilla's roots; read at start.
    pub ca_file: Option<std::path::PathBuf>,
    /// The wait before each retry, in milliseconds: the Standard Webhooks schedule
    /// (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h). After the last one
    /// fails the endpoint is disabled, at its position (nothing is skipped).
    pub retry_schedule_ms: Vec<u64>,
    /// Each wait is varied by up to this fraction, up or down, so that retries of
    /// many events do not arrive together.
    pub retry_jitter: f64,
    /// One attempt's limit, connect to answer.
    pub timeout_ms: u64,
    /// Events of one endpoint in flight at once (events of one task or one agent are
    /// always one at a time, in order). An endpoint takes at most this many events per
    /// round trip: 64 at a 30 ms round trip is about 2,100 a second, a center at 2,000
    /// tasks a second with its offers and assignments; 16, the first default, fell
    /// behind by half a second whenever the receiver's answers slowed to a few
    /// milliseconds (BENCHMARKS, nineteenth pass).
    pub max_in_flight: usize,
    /// Requests written on one connection before their answers (HTTP/1.1
    /// pipelining, unrelated events only); 1: one exchange at a time.
    pub pipeline_depth: usize,
    /// With nothing in flight, a new event goes at once. While deliveries are in
    /// flight, new events are taken when an answer comes back (all that came
    /// meanwhile, together: one write instead of one wake-up and one system call
    /// each), or after this many milliseconds if the answers are slow. 0: each event
    /// as it comes.
    pub linger_ms: u64,
    /// Events one endpoint has read and not yet finished (waiting for their turn, in
    /// flight, or waiting for a retry). Those delivered behind an unfinished one are
    /// not counted: one event stuck in its retries holds the position, not the other
    /// tasks' events, until the window spans 64 times this many (each event behind it
    /// keeps a small slot until it is done).
    pub window: usize,
    /// How long a node's lease on an endpoint lasts unless renewed (renewed every
    /// third of it): another node takes over about this long after the holder dies.
    pub lease_ms: u64,
    /// The position is written (a log entry) at most this often...
    pub position_every_ms: u64,
    /// ...or after this many events.
    pub position_every_events: u64,
    /// After a rotation the previous secret also signs for this long.
    pub rotation_overlap_secs: u64,
    /// Recent attempts kept per endpoint (this node's) for `GET .../attempts`.
    pub attempts_kept: usize,
    /// Endpoints the API may make, at most (each costs a runner, its lease's log
    /// entries every `lease_ms / 3` and its metrics on every node).
    pub max_endpoints: usize,
    /// The endpoints.
    pub endpoints: Vec<EndpointConfig>,
}

/// `[[webhooks.endpoints]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Its id (letters, digits, `-`, `_`; at most 64).
    pub id: String,
    /// `http://` or `https://host[:port]/path`.
    pub url: String,
    /// `whsec_<base64>` (24 to 64 bytes).
    pub secret: String,
    /// Type patterns: `task.offered`, `task.*`, `*` (the default: everything).
    #[serde(default = "every_type")]
    pub types: Vec<String>,
}

fn every_type() -> Vec<String> {
    vec!["*".into()]
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow_private: false,
            ca_file: None,
            retry_schedule_ms: vec![
                0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
            ],
            retry_jitter: 0.1,
            timeout_ms: 15_000,
            max_in_flight: 64,
            pipeline_depth: 16,
            linger_ms: 1,
            window: 1024,
            lease_ms: 6_000,
            position_every_ms: 1_000,
            position_every_events: 1_000,
            rotation_overlap_secs: 86_400,
            attempts_kept: 200,
            max_endpoints: 100,
            endpoints: Vec::new(),
        }
    }
}

/// Checks an endpoint id.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("1 to 64 letters, digits, '-' or '_'".into());
    }
    Ok(())
}

/// Checks type patterns: a known type, `prefix.*` of a known type, or `*`.
pub fn check_types(types: &[String]) -> Result<(), String> {
    if types.is_empty() || types.len() > 64 {
        return Err("1 to 64 type patterns".into());
    }
    for t in types {
        let known = t == "*"
            || crate::events::EventData::TYPES.iter().any(|k| {
                k == t
                    || t.strip_suffix(".*")
                        .is_some_and(|p| k.split('.').next() == Some(p))
            });
        if !known {
            return Err(format!("{t:?} matches no event type"));
        }
    }
    Ok(())
}

/// Whether an event type matches a pattern list.
pub fn matches(types: &[String], ty: &str) -> bool {
    types.iter().any(|p| {
        p == "*"
            || p == ty
            || p.strip_suffix(".*")
                .is_some_and(|pre| ty.split('.').next() == Some(pre))
    })
}

impl WebhooksConfig {
    /// The rules types do not check, as (key, message).
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("webhooks.{k}"), m.to_owned()));
        if self.retry_schedule_ms.is_empty() || self.retry_schedule_ms.len() > 32 {
            return bad("retry_schedule_ms", "1 to 32 waits");
        }
        if !(0.0..=1.0).contains(&self.retry_jitter) {
            return bad("retry_jitter", "must be from 0 to 1");
        }
        if self.timeout_ms < 10 {
            return bad("timeout_ms", "must be at least 10");
        }
        if self.max_in_flight == 0 || self.max_in_flight > 1024 {
            return bad("max_in_flight", "must be 1 to 1024");
        }
        if self.pipeline_depth == 0 || self.pipeline_depth > 128 {
            return bad("pipeline_depth", "must be 1 to 128");
        }
        if self.linger_ms > 1_000 {
            return bad("linger_ms", "must be 0 to 1000 milliseconds");
        }
        if self.window < self.max_in_flight || self.window > 1_000_000 {
            return bad(
                "window",
                "must be at least max_in_flight, at most 1,000,000",
            );
        }
        if self.max_endpoints == 0 || self.max_endpoints > 10_000 {
            return bad("max_endpoints", "must be 1 to 10000");
        }
        if self.lease_ms < 300 {
            return bad("lease_ms", "must be at least 300");
        }
        if self.position_every_ms < 10 || self.position_every_events == 0 {
            return bad(
                "position_every_ms",
                "position_every_ms must be at least 10 and position_every_events at least 1",
            );
        }
        if let Some(path) = &self.ca_file {
            super::tls::client_config(Some(path))
                .map_err(|m| ("webhooks.ca_file".to_owned(), m))?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let key = |f: &str| format!("webhooks.endpoints[{i}].{f}");
            check_id(&e.id).map_err(|m| (key("id"), m))?;
            if !seen.insert(e.id.as_str()) {
                return Err((key("id"), format!("{:?} twice", e.id)));
            }
            let target = Target::parse(&e.url).map_err(|m| (key("url"), m.to_string()))?;
            // An address literal is judged now; a name when it is connected to.
            if let Ok(ip) = target.host.parse::<std::net::IpAddr>() {
                super::target::check(ip, self.allow_private)
                    .map_err(|m| (key("url"), m.to_string()))?;
            }
            Secret::parse(&e.secret).map_err(|m| (key("secret"), m.to_string()))?;
            check_types(&e.types).map_err(|m| (key("types"), m))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_patterns() {
        let t = vec!["task.*".to_owned(), "agent.logged_in".to_owned()];
        assert!(matches(&t, "task.offered"));
        assert!(matches(&t, "agent.logged_in"));
        assert!(!matches(&t, "agent.logged_out"));
        assert!(!matches(&t, "taskx.y"));
        assert!(check_types(&t).is_ok());
        assert!(check_types(&["tasks.*".to_owned()]).is_err());
        assert!(check_types(&[]).is_err());
    }

    #[test]
    fn a_config_endpoint_on_a_private_address_needs_allow_private() {
        let mut c = WebhooksConfig::default();
        c.endpoints.push(EndpointConfig {
            id: "crm".into(),
            url: "http://10.1.2.3/hooks".into(),
            secret: Secret::generate().text(),
            types: vec!["*".into()],
        });
        let (key, why) = c.check().expect_err("refused");
        assert_eq!(key, "webhooks.endpoints[0].url");
        assert!(why.contains("private"), "{why}");
        c.allow_private = true;
        assert_eq!(c.check(), Ok(()));
    }
}
