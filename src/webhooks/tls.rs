//! TLS for `https://` endpoints: rustls with the ring provider (no cmake, no C++ build),
//! the server's certificate checked against Mozilla's roots (`webpki-roots`, compiled
//! in: no dependency on the system's store) and, when the operator sets
//! `webhooks.ca_file`, the certificates of that PEM file too (a private CA). The name
//! checked is the URL's host (also sent as SNI); there is no switch to skip the check.
//! Only the handshake is here: the connection under it is the one `client` made to an
//! address `target::check` allowed.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The roots an https endpoint's certificate is checked against; cheap to clone.
#[derive(Clone)]
pub struct Tls(Result<TlsConnector, Arc<str>>);

impl Tls {
    /// Mozilla's roots alone (built once).
    pub fn mozilla() -> Tls {
        static MOZILLA: OnceLock<Tls> = OnceLock::new();
        MOZILLA.get_or_init(|| Tls::load(None)).clone()
    }

    /// Mozilla's roots and those of `ca_file`. A file that cannot be used (checked at
    /// start by `WebhooksConfig::check`, but it may have changed since) makes every
    /// https attempt fail with the reason rather than trust less or more than asked.
    pub fn load(ca_file: Option<&Path>) -> Tls {
        Tls(client_config(ca_file)
            .map(TlsConnector::from)
            .map_err(Arc::from))
    }

    /// The TLS handshake with `host` over `tcp`; the error says why in a line.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let connector = self.0.as_ref().map_err(|e| e.to_string())?;
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("{host:?} is not a name a certificate can be checked for"))?;
        connector.connect(name, tcp).await.map_err(|e| describe(&e))
    }
}

/// The client's TLS configuration: TLS 1.3 and 1.2 (ring's safe defaults), ALPN
/// `http/1.1` (the only protocol the client speaks).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots.add(cert).map_err(|e| {
                format!(
                    "{}: a certificate is not usable as a root: {e}",
                    path.display()
                )
            })?;
        }
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file: at least one, every block well formed.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown} is not a valid PEM file: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown} holds no certificate (a PEM file of one or more CERTIFICATE blocks)"
        ));
    }
    Ok(certs)
}

/// A handshake's error in a line, with rustls' reason when it has one.
fn describe(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "certificate not trusted: its issuer is in neither Mozilla's roots nor webhooks.ca_file"
                .into()
        }
        // "certificate not valid for name ...", "certificate expired: ..."; the variants
        // without context print their name.
        Some(rustls::Error::InvalidCertificate(c)) => match c.to_string() {
            s if s.starts_with("certificate") => s,
            s => format!("certificate: {s}"),
        },
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_cannot_be_used_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("sb-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let missing = dir.join("missing.pem");
        let why = client_config(Some(&missing)).expect_err("missing");
        assert!(
            why.contains("cannot read") && why.contains("missing.pem"),
            "{why}"
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here\n").expect("write");
        let why = client_config(Some(&empty)).expect_err("empty");
        assert!(
            why.contains("no certificate") && why.contains("empty.pem"),
            "{why}"
        );
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let why = client_config(Some(&broken)).expect_err("broken");
        assert!(why.contains("broken.pem"), "{why}");
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let why = client_config(Some(&garbage)).expect_err("not a certificate");
        assert!(why.contains("garbage.pem") && why.contains("root"), "{why}");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(client_config(None).is_ok());
    }
}
