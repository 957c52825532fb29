//! Signing per the Standard Webhooks specification: the three headers of one attempt.
//!
//! `webhook-id` is the event's id (the same on every retry, so a receiver drops a
//! repeat), `webhook-timestamp` the attempt's time in seconds since the epoch, and
//! `webhook-signature` one `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` per
//! secret in force, separated by spaces (during a rotation the new secret's and the
//! old one's, so a receiver that still holds the old secret keeps verifying).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The specification's prefix of a secret's text form.
pub const PREFIX: &str = "whsec_";

/// A signing secret: the key bytes of a `whsec_<base64>` text, and the HMAC state
/// keyed with them (each message's signature starts from a copy: keying hashes two
/// blocks that every message would otherwise repeat).
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
    keyed: Hmac<Sha256>,
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.key == other.key
    }
}

impl Eq for Secret {}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never in a log.
        f.write_str("Secret(..)")
    }
}

/// Why a secret's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// It does not start with `whsec_`.
    #[error("a secret is \"whsec_\" followed by base64")]
    Prefix,
    /// The part after the prefix is not base64.
    #[error("the part after \"whsec_\" is not base64")]
    Base64,
    /// Fewer than 24 or more than 64 key bytes.
    #[error("a secret holds 24 to 64 bytes")]
    Length,
}

impl Secret {
    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let b64 = text.strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
        let key = STANDARD.decode(b64).map_err(|_| SecretError::Base64)?;
        // The specification recommends 24 to 64 bytes; fewer is guessable.
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length);
        }
        Ok(Secret::from_key(key))
    }

    fn from_key(key: Vec<u8>) -> Secret {
        // HMAC takes a key of any length, so this cannot fail.
        let keyed = match Hmac::<Sha256>::new_from_slice(&key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts any key length"),
        };
        Secret { key, keyed }
    }

    /// A new random secret of 32 bytes (two v4 UUIDs: 244 random bits from the OS's
    /// generator, without another dependency).
    pub fn generate() -> Secret {
        let mut key = Vec::with_capacity(32);
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        Secret::from_key(key)
    }

    /// The `whsec_<base64>` text.
    pub fn text(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut out = String::with_capacity(47);
        self.sign_into(id, &timestamp.to_string(), body, &mut out);
        out
    }

    /// Appends `v1,<base64 signature>` of one message to `out` (`timestamp` already
    /// in its decimal text).
    pub fn sign_into(&self, id: &str, timestamp: &str, body: &[u8], out: &mut String) {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        out.push_str("v1,");
        STANDARD.encode_string(mac.finalize().into_bytes(), out);
    }
}

/// The `webhook-signature` value of one message: one signature per secret in force,
/// separated by spaces.
pub fn signature<'a>(
    id: &str,
    timestamp: &str,
    body: &[u8],
    secrets: impl IntoIterator<Item = &'a Secret>,
) -> String {
    // "v1," and 44 base64 characters, and a space between two.
    let mut out = String::with_capacity(96);
    for s in secrets {
        if !out.is_empty() {
            out.push(' ');
        }
        s.sign_into(id, timestamp, body, &mut out);
    }
    out
}

/// The headers of one attempt, as (name, value) pairs.
pub fn headers<'a>(
    id: &str,
    timestamp: u64,
    body: &[u8],
    secrets: impl IntoIterator<Item = &'a Secret>,
) -> [(&'static str, String); 3] {
    let ts = timestamp.to_string();
    let signature = signature(id, &ts, body, secrets);
    [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts),
        ("webhook-signature", signature),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_map(h: &[(&'static str, String)]) -> axum::http::HeaderMap {
        let mut m = axum::http::HeaderMap::new();
        for (k, v) in h {
            m.insert(*k, v.parse().expect("header value"));
        }
        m
    }

    #[test]
    fn the_reference_verifier_accepts_our_signature() {
        let secret = Secret::generate();
        let body = br#"{"id":"e1-1","type":"task.created"}"#;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let h = headers("e1-1", now, body, [&secret]);
        let wh = standardwebhooks::Webhook::new(&secret.text()).expect("secret parses");
        wh.verify(body, &header_map(&h)).expect("verifies");
        // A changed body does not.
        assert!(wh.verify(b"{}", &header_map(&h)).is_err());
    }

    #[test]
    fn during_a_rotation_either_secret_verifies() {
        let (old, new) = (Secret::generate(), Secret::generate());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let h = headers("e1-2", now, b"{}", [&new, &old]);
        assert_eq!(h[2].1.split(' ').count(), 2);
        for s in [&old, &new] {
            let wh = standardwebhooks::Webhook::new(&s.text()).expect("secret parses");
            wh.verify(b"{}", &header_map(&h)).expect("verifies");
        }
    }

    #[test]
    fn the_specification_example_signs_the_same() {
        // The example of the specification's reference libraries.
        let s = Secret::from_key(
            STANDARD
                .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .expect("base64"),
        );
        assert_eq!(
            s.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn each_message_is_signed_from_the_keyed_state_alone() {
        let s = Secret::from_key(
            STANDARD
                .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .expect("base64"),
        );
        // A message signed before must leave nothing behind in the keyed state.
        let other = s.sign("e1-1", 1, b"{}");
        assert_eq!(
            s.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(s.sign("e1-1", 1, b"{}"), other);
        let two = signature("e1-1", "1", b"{}", [&s, &s]);
        assert_eq!(two, format!("{other} {other}"));
    }

    #[test]
    fn bad_secrets_are_refused_with_a_reason() {
        assert_eq!(Secret::parse("abc"), Err(SecretError::Prefix));
        assert_eq!(Secret::parse("whsec_%%%"), Err(SecretError::Base64));
        assert_eq!(Secret::parse("whsec_YWJj"), Err(SecretError::Length));
        let s = Secret::generate();
        assert_eq!(Secret::parse(&s.text()), Ok(s));
    }
}
