//! The connection: endpoints, timeouts, TLS and credentials, and one way to run a request
//! with its deadline and error mapping.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use valkeyrie_core::raw::deadline;
use valkeyrie_core::tls::{self, strip_scheme, TlsMaterial};
use valkeyrie_core::{Error, Result};

use crate::config::EtcdConfig;
use crate::error::{map_connect_error, map_error};
use crate::ETCD;

/// A connection to an etcd cluster. Cheap to clone: clones share the channel.
#[derive(Clone)]
pub(crate) struct EtcdClient {
    client: Client,
    request_timeout: Duration,
}

/// etcd-client's TLS options from the config's TLS files (read once, here). tonic builds
/// its rustls config on the process's default provider when one is installed, and on ring
/// (this crate's only provider) otherwise.
fn tls_options(material: &TlsMaterial) -> TlsOptions {
    let mut tls = TlsOptions::new();
    tls = match material.ca_pem() {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
        None => tls.with_webpki_roots(),
    };
    if let Some((cert, key)) = material.identity_pem() {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    if let Some(name) = material.server_name() {
        tls = tls.domain_name(name);
    }
    tls
}

/// Why a TLS connection to `endpoint` failed, when a certificate was refused: in TLS 1.3
/// etcd refuses a client certificate after the handshake, which tonic reports only as a
/// closed connection.
async fn certificate_refusal(material: &TlsMaterial, endpoint: &str, within: Duration) -> Option<rustls::Error> {
    let config = material.rustls_client_config(ETCD).ok()?;
    let address = strip_scheme(endpoint);
    tls::certificate_refusal(&config, address, material.server_name(), &[b"h2"], within).await
}

impl EtcdClient {
    /// Connects and proves the connection with one request, within `connect_timeout`. Its
    /// errors name no call: [`EtcdConfig::connect`] stamps them.
    pub(crate) async fn connect(endpoints: &[String], config: &EtcdConfig) -> Result<Self> {
        let tls_config = config.tls_config();
        let use_tls = tls_config.use_tls(ETCD, endpoints)?;
        let scheme = if use_tls { "https" } else { "http" };
        let endpoints: Vec<String> = if endpoints.is_empty() {
            vec![format!("{scheme}://127.0.0.1:2379")]
        } else {
            endpoints
                .iter()
                .map(|e| format!("{scheme}://{}", strip_scheme(e)))
                .collect()
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            // A token expires (`--auth-token-ttl` of idleness, a member restart): log in
            // again and retry whenever the server calls the token invalid, watches and
            // lease calls included.
            options = options
                .with_user(user.clone(), password.expose().to_owned())
                .with_auto_token_refresh(true);
        }
        let material = if use_tls {
            let material = tls_config.load(ETCD)?;
            options = options.with_tls(tls_options(&material));
            Some(material)
        } else {
            None
        };
        let connecting = async {
            let mut client = Client::connect(&endpoints, Some(options)).await?;
            client.status().await?;
            Ok::<_, etcd_client::Error>(client)
        };
        let client = match tokio::time::timeout(config.connect_timeout, connecting).await {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => {
                let err = map_connect_error(err);
                if let (Some(material), true) = (&material, err.is_temporary()) {
                    if let Some(refusal) = certificate_refusal(material, &endpoints[0], config.connect_timeout).await {
                        return Err(Error::tls_verification(ETCD, "", refusal));
                    }
                }
                return Err(err);
            }
            Err(_) => {
                let reason = format!(
                    "no answer from {} within {:?}",
                    endpoints.join(", "),
                    config.connect_timeout
                );
                return Err(Error::not_reachable(ETCD, "", reason));
            }
        };
        Ok(EtcdClient {
            client,
            request_timeout: config.request_timeout,
        })
    }

    /// A client to make one request with.
    pub(crate) fn raw(&self) -> Client {
        self.client.clone()
    }

    /// Runs one request on `key` (empty when it concerns none) within the request timeout,
    /// mapping its error.
    pub(crate) async fn request<T, F>(&self, key: &str, request: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let started = tokio::time::Instant::now();
        let request = async { request.await.map_err(|e| map_error(key, started.elapsed(), e)) };
        deadline::within(self.request_timeout, ETCD, key, request).await
    }

    /// Revokes `leases` one after the other, errors on `call_key`: whatever is bound to them
    /// goes. A failure is only logged, since an unrenewed lease expires after its TTL.
    pub(crate) async fn revoke(&self, call_key: &str, leases: impl IntoIterator<Item = i64>) {
        let mut raw = self.raw();
        for lease in leases {
            if let Err(err) = self.request(call_key, raw.lease_revoke(lease)).await {
                tracing::debug!(error = %err, lease, "revoking a lease failed; it expires by itself");
            }
        }
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes: the range runs to the end of the keyspace.
    vec![0]
}

/// Whole seconds for a lease, rounded up, at least one (the server raises it to its minimum).
/// Clamped at `i64::MAX` seconds, which the server refuses as too large (`Store` refuses TTLs
/// over `MAX_TTL` before they get here).
pub(crate) fn lease_seconds(ttl: Duration) -> i64 {
    let seconds = ttl.as_secs().saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(seconds.max(1)).unwrap_or(i64::MAX)
}

/// A lease kept alive through one keep-alive stream, opened at the first renewal and again
/// after it breaks.
pub(crate) struct KeptLease {
    id: i64,
    keeper: tokio::sync::Mutex<Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>>,
}

impl KeptLease {
    /// The lease `id`, with no stream open yet.
    pub(crate) fn new(id: i64) -> Self {
        KeptLease {
            id,
            keeper: tokio::sync::Mutex::new(None),
        }
    }

    /// The lease's ID.
    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    /// One keep-alive round trip, with errors on `name` (empty when it concerns no key):
    /// `Ok(false)` when the lease is gone. Cancel-safe: a round trip dropped halfway opens a
    /// new stream next time.
    pub(crate) async fn renew(&self, client: &EtcdClient, name: &str) -> Result<bool> {
        let mut keeper = self.keeper.lock().await;
        // Taken out while in use: a round trip dropped halfway leaves no stream behind.
        let (mut sender, mut responses) = match keeper.take() {
            Some(open) => open,
            None => match client.request(name, client.raw().lease_keep_alive(self.id)).await {
                Ok(opened) => opened,
                Err(err) if err.to_string().contains("lease not found") => return Ok(false),
                Err(err) => return Err(err),
            },
        };
        let round_trip = async {
            sender.keep_alive().await?;
            responses.message().await
        };
        match client.request(name, round_trip).await? {
            Some(response) => {
                *keeper = Some((sender, responses));
                Ok(response.ttl() > 0)
            }
            None => Err(Error::backend(ETCD, name, true, "keep-alive stream closed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_and_lease_seconds() {
        assert_eq!(prefix_end(b"dir/"), b"dir0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(lease_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(lease_seconds(Duration::from_millis(10)), 1);
        assert_eq!(lease_seconds(valkeyrie_core::MAX_TTL), 3_153_600_000);
        assert_eq!(lease_seconds(Duration::from_millis(u64::MAX)), 18_446_744_073_709_552);
        assert_eq!(lease_seconds(Duration::MAX), i64::MAX);
        assert_eq!(lease_seconds(Duration::from_secs(20)), 20);
    }
}
