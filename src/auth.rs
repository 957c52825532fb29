//! Tokens: JWT with HS256, carrying who the caller is and its role.
//!
//! Only HS256 is accepted; a token naming any other `alg` (`none` included) is refused
//! before its signature is looked at. `exp` is required.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What the caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An agent desktop: its own state, offers and tasks.
    Agent,
    /// A supervisor console: watches everything, may set agents Not Ready or log them out.
    Supervisor,
    /// A system feeding tasks in over HTTP.
    Integration,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Integration => "integration",
        }
    }
}

/// The claims the hub reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The caller's id (an agent id for agents).
    pub sub: String,
    /// Its role.
    pub role: Role,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// An agent profile's display name (see `auth.allow_token_profiles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An agent profile's skills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skills: Option<Vec<String>>,
    /// An agent profile's queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("no token: send Authorization: Bearer <token> or ?access_token=<token>")]
    Missing,
    /// The token is malformed, not HS256, or its signature is wrong.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// The token has expired.
    #[error("token expired")]
    Expired,
}

/// Signs and checks tokens with one secret.
#[derive(Clone)]
pub struct Keys {
    /// HMAC-SHA256 keyed with the secret once: every token's check clones it instead
    /// of hashing the key's inner and outer blocks again (a check per HTTP request).
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

impl Keys {
    /// Keys from a shared secret.
    pub fn new(secret: &[u8]) -> Keys {
        // HMAC takes a key of any length, so this cannot fail.
        let keyed = match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        Keys { keyed }
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }

    /// A signed token.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(HEADER);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Checks a token at `now` (seconds since the epoch) and returns its claims.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Invalid("not three dot-separated parts"));
        };
        let header = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| AuthError::Invalid("header is not base64url"))?;
        #[derive(Deserialize)]
        struct Header {
            alg: String,
        }
        let header: Header = serde_json::from_slice(&header)
            .map_err(|_| AuthError::Invalid("header is not JSON"))?;
        if header.alg != "HS256" {
            return Err(AuthError::Invalid("only HS256 is accepted"));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| AuthError::Invalid("signature is not base64url"))?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&sig)
            .map_err(|_| AuthError::Invalid("bad signature"))?;
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| AuthError::Invalid("payload is not base64url"))?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|_| AuthError::Invalid("payload lacks sub, role or exp"))?;
        if claims.exp <= now_secs {
            return Err(AuthError::Expired);
        }
        if claims.sub.trim().is_empty() || claims.sub.chars().count() > crate::task::MAX_NAME_CHARS
        {
            return Err(AuthError::Invalid("sub must be 1 to 100 characters"));
        }
        Ok(claims)
    }
}

/// Seconds since the epoch, by the wall clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            role: Role::Agent,
            exp,
            name: None,
            skills: None,
            queues: None,
        }
    }

    #[test]
    fn round_trip() {
        let k = Keys::new(b"0123456789abcdef");
        let t = k.sign(&claims(2000));
        assert_eq!(k.verify(&t, 1000), Ok(claims(2000)));
    }

    #[test]
    fn expired_wrong_key_and_tampered_are_refused() {
        let k = Keys::new(b"0123456789abcdef");
        let t = k.sign(&claims(2000));
        assert_eq!(k.verify(&t, 2000), Err(AuthError::Expired));
        let other = Keys::new(b"fedcba9876543210");
        assert!(matches!(other.verify(&t, 1000), Err(AuthError::Invalid(_))));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"alice","role":"supervisor","exp":2000}"#);
        parts[1] = &forged;
        assert!(matches!(
            k.verify(&parts.join("."), 1000),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn alg_none_is_refused() {
        let k = Keys::new(b"0123456789abcdef");
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let p = URL_SAFE_NO_PAD.encode(r#"{"sub":"alice","role":"agent","exp":9999999999}"#);
        assert_eq!(
            k.verify(&format!("{h}.{p}."), 1000),
            Err(AuthError::Invalid("only HS256 is accepted"))
        );
        assert!(k.verify("garbage", 1000).is_err());
    }
}
