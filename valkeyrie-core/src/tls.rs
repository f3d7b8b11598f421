//! TLS settings shared by every network backend (feature `tls`).
//!
//! Every network backend's config has the same five fields, and so the same URL
//! parameters: `tls`, `ca_file`, `cert_file`, `key_file` and `server_name`. The fields stay
//! flat in each config, so that `?ca_file=/etc/ssl/ca.pem` fills them; a backend gathers
//! them into a [`TlsConfig`], which holds the rules once:
//!
//! * TLS is on when `tls` is set, when any other TLS field is set, or when an endpoint
//!   says `https://` (the Redis URL's `rediss://` and ZooKeeper's `tcp+tls://` too). An endpoint written `http://`
//!   together with TLS settings is [`Error::InvalidConfiguration`]: credentials never
//!   travel in clear because of a typo.
//! * [`TlsConfig::load`] reads the PEM files once, when the handle is built, and reports an
//!   unreadable, empty or malformed file as [`Error::InvalidConfiguration`] naming the field.
//! * Without a `ca_file`, the public web roots (`webpki-roots`) are trusted, on every backend.
//! * [`TlsMaterial::rustls_client_config`] names the ring provider explicitly, so a program
//!   whose graph also enables rustls's aws-lc-rs provider builds it without a panic.
//! * [`is_certificate_failure`] tells a certificate refused by either side from a network
//!   fault, so backends report it as the permanent [`Error::TlsVerification`].
//!
//! ```
//! use valkeyrie_core::tls::TlsConfig;
//!
//! let tls = TlsConfig { ca_file: Some("/etc/ssl/private-ca.pem".into()), ..Default::default() };
//! assert!(tls.is_enabled());
//! assert!(tls.use_tls("etcd", &["http://10.0.0.1:2379".to_owned()]).is_err());
//! assert!(tls.use_tls("etcd", &["10.0.0.1:2379".to_owned()]).unwrap());
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// A backend's TLS fields gathered into one value; see the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The `tls` field: connect over TLS even without any other TLS setting.
    pub enabled: bool,
    /// PEM file of the CA certificates to trust instead of the public web roots.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain, with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// The name to verify the server's certificate against, when it is not the endpoint's host.
    pub server_name: Option<String>,
}

/// What an endpoint's scheme says about TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Plain,
    Tls,
    Unspecified,
}

fn scheme_of(endpoint: &str) -> Scheme {
    match endpoint.split_once("://") {
        Some((scheme, _))
            if ["https", "rediss", "tcp+tls"]
                .iter()
                .any(|tls| scheme.eq_ignore_ascii_case(tls)) =>
        {
            Scheme::Tls
        }
        Some(_) => Scheme::Plain,
        None => Scheme::Unspecified,
    }
}

/// `endpoint` without its `scheme://`, if it has one.
pub fn strip_scheme(endpoint: &str) -> &str {
    endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest)
}

impl TlsConfig {
    /// Whether a TLS field asks for TLS (before looking at the endpoints).
    pub fn is_enabled(&self) -> bool {
        self.enabled
            || self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.server_name.is_some()
    }

    /// Whether connections to `endpoints` use TLS: the TLS fields or an `https://`
    /// (`rediss://`) endpoint turn it on.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] (field `endpoints`) for an endpoint written with a
    /// plain scheme (`http://`) while TLS is on, and for endpoints that mix schemes.
    pub fn use_tls(&self, store: &'static str, endpoints: &[String]) -> Result<bool> {
        let schemes: Vec<Scheme> = endpoints.iter().map(|e| scheme_of(e)).collect();
        let tls_scheme = schemes.contains(&Scheme::Tls);
        let plain_scheme = schemes.contains(&Scheme::Plain);
        if tls_scheme && plain_scheme {
            return Err(Error::config(
                store,
                "endpoints",
                "some endpoints are written with a TLS scheme and some without: use one for all",
            ));
        }
        if plain_scheme && self.is_enabled() {
            return Err(Error::config(
                store,
                "endpoints",
                "an endpoint is written with a plain scheme (http://) while TLS settings are given; \
                 write https:// (or no scheme) so that credentials never travel in clear",
            ));
        }
        Ok(tls_scheme || self.is_enabled())
    }

    /// Checks what needs no file: a certificate and its key go together.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] naming `cert_file` or `key_file`.
    pub fn validate(&self, store: &'static str) -> Result<()> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(Error::config(store, "key_file", "cert_file needs key_file")),
            (None, Some(_)) => Err(Error::config(store, "cert_file", "key_file needs cert_file")),
            _ => Ok(()),
        }
    }

    /// Reads and checks the PEM files, once: the material a client is built with.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] naming the field whose file cannot be read, is
    /// empty, or holds no certificate (or no private key).
    pub fn load(&self, store: &'static str) -> Result<TlsMaterial> {
        self.validate(store)?;
        let ca = match &self.ca_file {
            Some(path) => {
                let pem = read_pem(store, "ca_file", path)?;
                let certs = certificates(store, "ca_file", &pem)?;
                Some(PemCerts { pem, certs })
            }
            None => None,
        };
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read_pem(store, "cert_file", cert_path)?;
                let certs = certificates(store, "cert_file", &cert_pem)?;
                let key_pem = read_pem(store, "key_file", key_path)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    Error::config(
                        store,
                        "key_file",
                        format!("{}: no PEM private key ({e})", key_path.display()),
                    )
                })?;
                Some(Identity {
                    cert_pem,
                    certs,
                    key_pem,
                    key,
                })
            }
            _ => None,
        };
        if let Some(name) = &self.server_name {
            rustls::pki_types::ServerName::try_from(name.as_str()).map_err(|e| {
                Error::config(
                    store,
                    "server_name",
                    format!("{name:?} is not a DNS name or IP address: {e}"),
                )
            })?;
        }
        Ok(TlsMaterial {
            ca,
            identity,
            server_name: self.server_name.clone(),
        })
    }
}

fn read_pem(store: &'static str, field: &str, path: &Path) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::config(store, field, format!("cannot read {}: {e}", path.display())))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::config(store, field, format!("{} is empty", path.display())));
    }
    Ok(bytes)
}

fn certificates(store: &'static str, field: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::config(store, field, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(Error::config(store, field, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// CA certificates as read and as parsed.
#[derive(Clone)]
struct PemCerts {
    pem: Vec<u8>,
    certs: Vec<CertificateDer<'static>>,
}

/// A client certificate chain and its key, as read and as parsed.
struct Identity {
    cert_pem: Vec<u8>,
    certs: Vec<CertificateDer<'static>>,
    key_pem: Vec<u8>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            cert_pem: self.cert_pem.clone(),
            certs: self.certs.clone(),
            key_pem: self.key_pem.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// The TLS files of a config, read and checked by [`TlsConfig::load`]: what a backend
/// builds its client's TLS settings from. Its `Debug` output shows no key material.
#[derive(Clone)]
pub struct TlsMaterial {
    ca: Option<PemCerts>,
    identity: Option<Identity>,
    server_name: Option<String>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_certificates", &self.ca.as_ref().map(|ca| ca.certs.len()))
            .field("client_certificate", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsMaterial {
    /// The CA file's PEM text, or `None` to trust the public web roots.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca.as_ref().map(|ca| ca.pem.as_slice())
    }

    /// The trusted roots as PEM text, for clients that take them only so (zookeeper-client,
    /// the AWS SDK): the CA file's, or the public web roots written out.
    pub fn roots_pem(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.ca {
            Some(ca) => std::borrow::Cow::Borrowed(ca.pem.as_slice()),
            None => std::borrow::Cow::Owned(web_roots_pem().into_bytes()),
        }
    }

    /// The client certificate chain's and its key's PEM text, if one is configured.
    pub fn identity_pem(&self) -> Option<(&[u8], &[u8])> {
        self.identity
            .as_ref()
            .map(|id| (id.cert_pem.as_slice(), id.key_pem.as_slice()))
    }

    /// The name to verify the server's certificate against, if not the endpoint's host.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The trusted roots: the CA file's certificates, or the public web roots.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] (field `ca_file`) for a certificate rustls refuses.
    pub fn root_store(&self, store: &'static str) -> Result<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                for cert in &ca.certs {
                    roots
                        .add(cert.clone())
                        .map_err(|e| Error::config(store, "ca_file", format!("unusable CA certificate: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(roots)
    }

    /// A rustls client config on the ring provider (named explicitly, never the process
    /// default): the trusted roots and, if configured, the client certificate.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] naming `ca_file`, `cert_file` or `key_file` for
    /// material rustls refuses (a key that does not match its certificate, …).
    pub fn rustls_client_config(&self, store: &'static str) -> Result<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(store, "tls", e.to_string()))?
            .with_root_certificates(self.root_store(store)?);
        match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
                .map_err(|e| Error::config(store, "key_file", format!("unusable client certificate or key: {e}"))),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

/// The public web roots (the ones [`TlsMaterial::root_store`] trusts) as PEM certificates.
fn web_roots_pem() -> String {
    use base64::Engine;

    let mut pem = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            // Base64 text is ASCII, so every chunk of it is UTF-8.
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

/// Opens a TLS connection to `address` (`host:port`) with `config` and waits up to `wait`
/// for the server's first word: the certificate error, if either side refused a
/// certificate; `None` if the handshake went through or failed otherwise.
///
/// For a client whose connection failed without saying why. In TLS 1.3 a server checks the
/// client's certificate after the client has finished its handshake, and some clients
/// (tonic) report the alert that follows only as a closed connection. `alpn` is offered as
/// the client offered it (a gRPC server wants `h2`).
///
/// Cancel safe: dropping the future closes the probe's connection.
pub async fn certificate_refusal(
    config: &rustls::ClientConfig,
    address: &str,
    server_name: Option<&str>,
    alpn: &[&[u8]],
    wait: std::time::Duration,
) -> Option<rustls::Error> {
    use tokio::io::AsyncReadExt;

    let host = server_name.unwrap_or_else(|| {
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    });
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).ok()?;
    let mut config = config.clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(address).await.ok()?;
        let mut tls = match connector.connect(name, tcp).await {
            Ok(tls) => tls,
            Err(err) => return rustls_error(&err),
        };
        let mut byte = [0u8; 1];
        match tls.read(&mut byte).await {
            Err(err) => rustls_error(&err),
            Ok(_) => None,
        }
    };
    tokio::time::timeout(wait, probe).await.ok().flatten()
}

/// The certificate error an I/O error of tokio-rustls carries, if it carries one.
fn rustls_error(err: &std::io::Error) -> Option<rustls::Error> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .filter(|tls| is_certificate_error(tls))
        .cloned()
}

/// Whether `err`, or an error it wraps, is a certificate refused by either side of a TLS
/// handshake: the server's certificate not verified (unknown issuer, expired, another
/// name), or the client's refused by the server (missing, unknown or expired).
///
/// It walks the source chain, looking inside `std::io::Error`s (whose `source` skips the
/// error they wrap), for a `rustls::Error`. Clients that keep only an error's text are
/// matched by the texts rustls's `Display` gives those errors: `invalid peer certificate:
/// …`, `peer sent no certificates` and `received fatal alert: <certificate alert>`.
pub fn is_certificate_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    certificate_failure(err).is_some()
}

/// The text of the certificate error [`is_certificate_failure`] finds in `err`'s chain
/// (`invalid peer certificate: UnknownIssuer`, `received fatal alert: BadCertificate`), for
/// a message that says why when the outer error (an HTTP client's) says only that a
/// request failed.
pub fn certificate_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return is_certificate_error(tls).then(|| tls.to_string());
        }
        if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            if let Some(text) = certificate_failure(inner) {
                return Some(text);
            }
        }
        let text = err.to_string();
        if text_is_certificate_failure(&text) {
            return Some(text);
        }
        current = err.source();
    }
    None
}

fn is_certificate_error(err: &rustls::Error) -> bool {
    use rustls::AlertDescription as Alert;
    match err {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::CertificateRequired
        ),
        _ => false,
    }
}

/// Whether `text` is how rustls 0.23 shows one of the certificate errors
/// [`is_certificate_failure`] looks for, by `Display` (`invalid peer certificate: …`, `peer sent no certificates`,
/// `received fatal alert: UnknownCA`) or by `Debug` (`InvalidCertificate(…)`,
/// `NoCertificatesPresented`, `AlertReceived(UnknownCA)`), for clients that keep only an
/// error's text (fred keeps the `Debug` text of an I/O error).
pub fn text_is_certificate_failure(text: &str) -> bool {
    const ALERTS: [&str; 7] = [
        "BadCertificate",
        "UnsupportedCertificate",
        "CertificateRevoked",
        "CertificateExpired",
        "CertificateUnknown",
        "UnknownCA",
        "CertificateRequired",
    ];
    let alert_after = |marker: &str| {
        text.split(marker)
            .skip(1)
            .any(|rest| ALERTS.iter().any(|alert| rest.starts_with(alert)))
    };
    text.contains("invalid peer certificate")
        || text.contains("InvalidCertificate(")
        || text.contains("peer sent no certificates")
        || text.contains("NoCertificatesPresented")
        || alert_after("received fatal alert: ")
        || alert_after("AlertReceived(")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn the_web_roots_as_pem_parse_back_to_the_roots() {
        let material = TlsConfig::default().load("etcd").expect("no files to read");
        let pem = material.roots_pem();
        let parsed = CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .expect("PEM");
        assert_eq!(parsed.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert_eq!(parsed[0].as_ref(), webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref());
        // Clients that take PEM roots add each to a rustls root store (the AWS SDK expects
        // every one to be accepted).
        let mut roots = rustls::RootCertStore::empty();
        for cert in parsed {
            roots.add(cert).expect("a web root rustls accepts");
        }
    }

    #[test]
    fn schemes_turn_tls_on_and_plain_ones_conflict_with_it() {
        let off = TlsConfig::default();
        let endpoints = |list: &[&str]| list.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        assert!(!off.use_tls("etcd", &endpoints(&["h:2379"])).unwrap_or(true));
        assert!(off.use_tls("etcd", &endpoints(&["https://h:2379"])).unwrap_or(false));
        assert!(off.use_tls("redis", &endpoints(&["rediss://h:6379"])).unwrap_or(false));
        let err = off
            .use_tls("etcd", &endpoints(&["https://a:1", "http://b:1"]))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfiguration);
        let on = TlsConfig {
            enabled: true,
            ..Default::default()
        };
        let err = on.use_tls("consul", &endpoints(&["http://h:8500"])).unwrap_err();
        assert!(err.to_string().contains("plain scheme"), "{err}");
        assert!(on.use_tls("consul", &endpoints(&["h:8500"])).unwrap_or(false));
        assert_eq!(strip_scheme("https://h:1"), "h:1");
        assert_eq!(strip_scheme("h:1"), "h:1");
    }

    #[test]
    fn unreadable_empty_or_foreign_files_name_their_field() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = dir.path();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "\n").unwrap_or_else(|e| panic!("{e}"));
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not pem at all").unwrap_or_else(|e| panic!("{e}"));
        for (config, field) in [
            (
                TlsConfig {
                    ca_file: Some(dir.join("missing.pem")),
                    ..Default::default()
                },
                "ca_file",
            ),
            (
                TlsConfig {
                    ca_file: Some(empty.clone()),
                    ..Default::default()
                },
                "ca_file",
            ),
            (
                TlsConfig {
                    ca_file: Some(junk.clone()),
                    ..Default::default()
                },
                "ca_file",
            ),
            (
                TlsConfig {
                    cert_file: Some(junk.clone()),
                    ..Default::default()
                },
                "key_file",
            ),
            (
                TlsConfig {
                    server_name: Some("not a name".into()),
                    ..Default::default()
                },
                "server_name",
            ),
        ] {
            let err = config.load("etcd").unwrap_err();
            assert!(
                matches!(&err, Error::InvalidConfiguration { field: f, .. } if f == field),
                "{field}: {err}"
            );
        }
    }

    #[test]
    fn without_a_ca_file_the_web_roots_are_trusted() {
        let material = TlsConfig {
            enabled: true,
            ..Default::default()
        }
        .load("redis")
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(material.root_store("redis").map(|r| r.len()).unwrap_or(0) > 100);
        assert!(material.rustls_client_config("redis").is_ok());
        assert_eq!(material.ca_pem(), None);
        assert!(format!("{material:?}").contains("client_certificate: false"));
    }

    #[test]
    fn certificate_failures_are_told_from_network_faults() {
        let unknown_issuer = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown_issuer);
        assert!(is_certificate_failure(&wrapped));
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert!(is_certificate_failure(&alert));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert!(!is_certificate_failure(&refused));
        let as_text = std::io::Error::other("TLS error: received fatal alert: UnknownCA");
        assert!(is_certificate_failure(&as_text));
        assert!(!text_is_certificate_failure("received fatal alert: HandshakeFailure"));
        let debug = format!("{:?}", std::io::Error::new(std::io::ErrorKind::InvalidData, alert));
        assert!(text_is_certificate_failure(&debug), "{debug}");
    }
}
