//! Where a webhook goes, and where it may not go (server-side request forgery).
//!
//! An endpoint's URL is `http://` or `https://host[:port]/path` (https: `tls`, the
//! certificate checked for the host). Its host may not be a loopback, private, link-local,
//! shared, unique-local, multicast or unspecified address unless
//! `webhooks.allow_private` is set: otherwise anyone allowed to add an endpoint could
//! make the hub POST into the network it runs in (a cloud metadata service at
//! 169.254.169.254, an admin port on localhost). The rule is checked when an endpoint
//! is made (an address literal, or what the name resolves to then) and again on every
//! connection, against the address actually connected to: a name that resolves to a
//! public address at creation and to a private one later (DNS rebinding) is refused.
//! The same for https: the address is checked before the handshake, whatever the
//! certificate says.

use axum::http::Uri;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A parsed endpoint URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or address literal (without brackets).
    pub host: String,
    /// Port (80, or 443 for https, when absent).
    pub port: u16,
    /// `https://`: the connection is TLS, the certificate checked for `host`.
    pub https: bool,
    /// Path and query, at least `/`.
    pub path: String,
    /// `host[:port]` for the Host header.
    pub authority: String,
}

/// Why a URL or an address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a URL this client can send to.
    #[error("{0}")]
    Url(String),
    /// The address is private, loopback or link-local, and the config does not allow it.
    #[error("{0} is a private, loopback or link-local address (webhooks.allow_private is off)")]
    Private(IpAddr),
}

impl Target {
    /// Parses and checks the form of `url` (not its address).
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let bad = |why: &str| TargetError::Url(why.to_owned());
        if url.len() > 2048 {
            return Err(bad("a webhook URL is at most 2,048 bytes"));
        }
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the URL must start with http:// or https://")),
        };
        let auth = uri.authority().ok_or_else(|| bad("the URL has no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("the URL has no host"));
        }
        // The port as written: `http`'s parser takes any digits (and `port_u16` gives
        // up on what is not a u16), so `:99999` or `:8o80` would fall back to port 80
        // in silence.
        let port = match auth
            .as_str()
            .rsplit_once(']')
            .map_or(auth.as_str(), |(_, r)| r)
            .rsplit_once(':')
        {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some((_, p)) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        Ok(Target {
            host: host.to_owned(),
            port,
            https,
            path,
            authority: auth.as_str().to_owned(),
        })
    }

    /// The addresses the host stands for, each checked; the first refusal when none
    /// is allowed.
    pub async fn resolve(&self, allow_private: bool) -> Result<Vec<SocketAddr>, TargetError> {
        let addrs: Vec<SocketAddr> = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|e| TargetError::Url(format!("cannot resolve {}: {e}", self.host)))?
                .collect(),
        };
        let mut refused = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match check(a.ip(), allow_private) {
                Ok(()) => true,
                Err(e) => {
                    refused.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(TargetError::Url(format!(
                "{} resolves to no address",
                self.host
            ))),
            _ => Ok(allowed),
        }
    }
}

/// Whether the hub may connect to `ip`.
pub fn check(ip: IpAddr, allow_private: bool) -> Result<(), TargetError> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(TargetError::Private(ip))
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        // 0.0.0.0/8 ("this network") and 100.64.0.0/10 (shared, carrier NAT).
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        // 192.0.0.0/24 (protocol assignments), 198.18.0.0/15 (benchmarking),
        // 240.0.0.0/4 (reserved).
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 240)
}

/// The IPv4 address an IPv6 address carries and reaches, for the forms a network may
/// route to it: mapped (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::/96`, `64:ff9b:1::/48`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let o = v6.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..6] == [0; 6] && !(v6.is_loopback() || v6.is_unspecified()) {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || v6 == Ipv6Addr::from([0, 0, 0, 0, 0, 0, 0, 1]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_link_local_addresses_are_refused() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            // An IPv4 address carried in IPv6 that the network routes to it.
            "::127.0.0.1",
            "64:ff9b::a00:5",
            "64:ff9b:1::7f00:1",
            "2002:a00:1::1",
            "2002:c0a8:101::",
            "fec0::1",
            "198.18.0.1",
            "192.0.0.8",
            "240.0.0.1",
        ] {
            let ip: IpAddr = a.parse().expect("address");
            assert_eq!(check(ip, false), Err(TargetError::Private(ip)), "{a}");
            assert_eq!(check(ip, true), Ok(()), "{a}");
        }
        for a in [
            "93.184.216.34",
            "2606:4700::1111",
            "172.32.0.1",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert_eq!(check(a.parse().expect("address"), false), Ok(()), "{a}");
        }
    }

    #[test]
    fn urls_are_parsed_or_refused_with_a_reason() {
        let t = Target::parse("http://[::1]:8080/hook?x=1").expect("parses");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8080, "/hook?x=1")
        );
        let t = Target::parse("http://example.com").expect("parses");
        assert_eq!((t.port, t.path.as_str(), t.https), (80, "/", false));
        let t = Target::parse("https://example.com").expect("parses");
        assert_eq!((t.port, t.path.as_str(), t.https), (443, "/", true));
        let t = Target::parse("https://crm.example.com:8443/h").expect("parses");
        assert_eq!(
            (t.host.as_str(), t.port, t.https),
            ("crm.example.com", 8443, true)
        );
        for bad in [
            "http://example.com:99999/",
            "http://example.com:0/",
            "http://example.com:8o80/",
            "http://[::1]:70000/",
            "ftp://x/",
            "wss://example.com/",
            "/relative",
            "http://u:p@example.com/",
            "nonsense",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_name_is_checked_by_what_it_resolves_to() {
        let t = Target::parse("http://localhost:9/").expect("parses");
        assert!(matches!(
            t.resolve(false).await,
            Err(TargetError::Private(_))
        ));
        assert!(t.resolve(true).await.is_ok());
    }
}
