//! The connection: endpoints, timeouts, TLS and credentials, and one way to run a request
//! with its deadline and error mapping.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use valkeyrie_core::{Error, Result};

use crate::config::EtcdConfig;
use crate::error::map_error;
use crate::ETCD;

/// A connection to an etcd cluster. Cheap to clone: clones share the channel.
#[derive(Clone)]
pub(crate) struct EtcdClient {
    client: Client,
    request_timeout: Duration,
}

fn read_pem(field: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::config(ETCD, field, format!("cannot read {}: {e}", path.display())))
}

fn tls_options(config: &EtcdConfig) -> Result<TlsOptions> {
    let mut tls = TlsOptions::new();
    if let Some(ca) = &config.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read_pem("ca_file", ca)?));
    }
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        tls = tls.identity(Identity::from_pem(
            read_pem("cert_file", cert)?,
            read_pem("key_file", key)?,
        ));
    }
    if let Some(domain) = &config.domain_name {
        tls = tls.domain_name(domain.clone());
    }
    Ok(tls)
}

impl EtcdClient {
    /// Connects and proves the connection with one request, within `connect_timeout`.
    pub(crate) async fn connect(endpoints: &[String], config: &EtcdConfig) -> Result<Self> {
        let scheme = if config.uses_tls() { "https" } else { "http" };
        let endpoints: Vec<String> = if endpoints.is_empty() {
            vec![format!("{scheme}://127.0.0.1:2379")]
        } else {
            endpoints
                .iter()
                .map(|e| {
                    if e.contains("://") {
                        e.clone()
                    } else {
                        format!("{scheme}://{e}")
                    }
                })
                .collect()
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            options = options.with_user(user.clone(), password.expose().to_owned());
        }
        if config.uses_tls() {
            options = options.with_tls(tls_options(config)?);
        }
        let connecting = async {
            let mut client = Client::connect(&endpoints, Some(options)).await?;
            client.status().await?;
            Ok::<_, etcd_client::Error>(client)
        };
        let client = match tokio::time::timeout(config.connect_timeout, connecting).await {
            Ok(result) => result.map_err(|e| map_error("connect", "", e))?,
            Err(_) => {
                let reason = format!(
                    "no answer from {} within {:?}",
                    endpoints.join(", "),
                    config.connect_timeout
                );
                return Err(Error::NotReachable {
                    store: ETCD,
                    call: "connect",
                    key: String::new(),
                    source: reason.into(),
                });
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

    /// Runs one request within the request timeout, mapping its error.
    pub(crate) async fn request<T, F>(&self, call: &'static str, key: &str, request: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(result) => result.map_err(|e| map_error(call, key, e)),
            Err(_) => Err(Error::Timeout {
                store: ETCD,
                call,
                key: key.to_owned(),
                after: self.request_timeout,
            }),
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
pub(crate) fn lease_seconds(ttl: Duration) -> i64 {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(seconds.max(1)).unwrap_or(i64::MAX)
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
        assert_eq!(lease_seconds(Duration::from_secs(20)), 20);
    }
}
