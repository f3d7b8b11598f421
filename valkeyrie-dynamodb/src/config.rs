//! [`DynamoDbConfig`]: table, region, endpoint, credentials, timeouts and retries.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use valkeyrie_core::config::check_duration;
use valkeyrie_core::raw::BackendConfig;
use valkeyrie_core::tls::TlsConfig;
use valkeyrie_core::{Error, Result, Secret};

use crate::DYNAMODB;

/// Settings of the DynamoDB store. The URL form sets the same fields as query parameters,
/// with the table as the URL's host: `dynamodb://valkeyrie?region=eu-west-1`, or against DynamoDB
/// Local `dynamodb://valkeyrie?endpoint=http://127.0.0.1:8000&region=us-east-1&create_table=true`.
///
/// Every duration is at most a year
/// ([`MAX_CONFIG_DURATION`](valkeyrie_core::config::MAX_CONFIG_DURATION)); a longer one is
/// `InvalidConfiguration` naming the field when the store is opened.
///
/// TLS takes the parameters every network backend shares (see [`valkeyrie_core::tls`]):
/// `ca_file` for a private CA (an endpoint behind a TLS proxy, a VPC endpoint with its own
/// certificate), `server_name` for a certificate naming another host. Without a `ca_file`
/// the public web roots are trusted. The AWS SDK's HTTP client cannot present a client
/// certificate, so `cert_file` and `key_file` are refused. An `http://` endpoint with TLS
/// settings is refused too.
///
/// Credentials come from the standard AWS chain (environment, profile, web identity, ECS,
/// EC2 instance metadata) unless `access_key_id` and `secret_access_key` are set.
///
/// ```
/// use valkeyrie_dynamodb::DynamoDbConfig;
///
/// let config = DynamoDbConfig {
///     table: "valkeyrie".into(),
///     access_key_id: Some("AKIDEXAMPLE".into()),
///     secret_access_key: Some("s3cret".into()),
///     ..Default::default()
/// };
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamoDbConfig {
    /// The table (hash key `id`, a string). Required.
    pub table: String,
    /// AWS region; from the standard chain (`AWS_REGION`, profile) when unset.
    pub region: Option<String>,
    /// Endpoint override, such as `http://127.0.0.1:8000` for DynamoDB Local.
    pub endpoint: Option<String>,
    /// Endpoint override of DynamoDB Streams (watches); the `endpoint` override when unset,
    /// which is right for DynamoDB Local. On AWS with an `endpoint` such as a VPC endpoint,
    /// set this to the region's Streams endpoint.
    pub streams_endpoint: Option<String>,
    /// Static access key id, with `secret_access_key`.
    pub access_key_id: Option<String>,
    /// Static secret access key.
    pub secret_access_key: Option<Secret>,
    /// Session token of temporary static credentials.
    pub session_token: Option<Secret>,
    /// Create the table when it does not exist (on-demand billing, TTL on
    /// `expiration_time`), and wait until it is active. Default `false`.
    pub create_table: bool,
    /// How long connecting may take. Default 5 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub connect_timeout: Duration,
    /// Deadline of each call, retries included. Default 10 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub request_timeout: Duration,
    /// Attempts per request for throttling and transient errors (the SDK's standard retry
    /// mode, exponential backoff with jitter). Default 5.
    pub max_attempts: u32,
    /// How often an idle watch asks the table's stream for new records. Default 250 ms
    /// (DynamoDB Streams allows five reads per second per shard).
    #[serde(with = "valkeyrie_core::config::duration")]
    pub watch_poll_interval: Duration,
    /// How long a watch keeps retrying failed stream reads before it ends with an error
    /// item. Default 60 s.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub watch_retry_for: Duration,
    /// How often a waiting `lock()` looks at the lock record again. Default 100 ms.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub lock_poll_interval: Duration,
    /// Insist on TLS: an `endpoint` must then be `https://`. Default `false` (the scheme of
    /// the endpoint decides; AWS's own endpoints are `https://`).
    pub tls: bool,
    /// PEM file of the CA certificates to trust instead of the public web roots.
    pub ca_file: Option<PathBuf>,
    /// Not supported: the AWS SDK's HTTP client cannot present a client certificate.
    /// Setting it is `InvalidConfiguration`; it is a field so that the URL parameters are
    /// the same on every backend.
    pub cert_file: Option<PathBuf>,
    /// Not supported, as `cert_file`.
    pub key_file: Option<PathBuf>,
    /// A name the endpoint's certificate may carry instead of the endpoint's host.
    pub server_name: Option<String>,
}

impl Default for DynamoDbConfig {
    fn default() -> Self {
        DynamoDbConfig {
            table: String::new(),
            region: None,
            endpoint: None,
            streams_endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            create_table: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_attempts: 5,
            watch_poll_interval: Duration::from_millis(250),
            watch_retry_for: valkeyrie_core::raw::feed::DEFAULT_RETRY_FOR,
            lock_poll_interval: Duration::from_millis(100),
            tls: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
        }
    }
}

impl BackendConfig for DynamoDbConfig {
    const STORE: &'static str = DYNAMODB;
}

impl DynamoDbConfig {
    /// The TLS fields, gathered.
    pub(crate) fn tls_config(&self) -> TlsConfig {
        TlsConfig {
            enabled: self.tls,
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            server_name: self.server_name.clone(),
        }
    }

    /// The endpoint overrides, for the TLS scheme rules.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.endpoint.iter().chain(&self.streams_endpoint).cloned().collect()
    }

    /// Checks what needs no server.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |field: &str, reason: &str| Err(Error::config(DYNAMODB, field, reason));
        if self.cert_file.is_some() || self.key_file.is_some() {
            return invalid(
                "cert_file",
                "the AWS SDK's HTTP client cannot present a client certificate",
            );
        }
        self.tls_config().use_tls(DYNAMODB, &self.endpoints())?;
        let valid_name = (3..=255).contains(&self.table.len())
            && self
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_name {
            return invalid(
                "table",
                "a table name is 3 to 255 characters among letters, digits, `_`, `-` and `.`",
            );
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return invalid("secret_access_key", "access_key_id and secret_access_key go together");
        }
        if self.session_token.is_some() && self.access_key_id.is_none() {
            return invalid("session_token", "needs access_key_id and secret_access_key");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be longer than zero");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be longer than zero");
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1");
        }
        if self.watch_poll_interval.is_zero() {
            return invalid("watch_poll_interval", "must be longer than zero");
        }
        if self.lock_poll_interval.is_zero() {
            return invalid("lock_poll_interval", "must be longer than zero");
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("watch_poll_interval", self.watch_poll_interval),
            ("watch_retry_for", self.watch_retry_for),
            ("lock_poll_interval", self.lock_poll_interval),
        ] {
            check_duration(DYNAMODB, field, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use valkeyrie_core::raw::StoreUrl;
    use valkeyrie_core::StoreConfig;

    use super::*;

    #[test]
    fn url_and_typed_config_agree() {
        let url = StoreUrl::parse(
            "dynamodb://valkeyrie?region=eu-west-1&endpoint=http%3A%2F%2F127.0.0.1%3A8000&create_table=true&request_timeout=2s&access_key_id=AKID&secret_access_key=s%40c",
        )
        .unwrap();
        assert_eq!(url.endpoints, ["valkeyrie"]);
        let mut params = url.params;
        params.push(("table".into(), url.endpoints[0].clone()));
        let from_url: DynamoDbConfig = StoreConfig::Params(params).resolve().unwrap();
        let typed = DynamoDbConfig {
            table: "valkeyrie".into(),
            region: Some("eu-west-1".into()),
            endpoint: Some("http://127.0.0.1:8000".into()),
            create_table: true,
            request_timeout: Duration::from_secs(2),
            access_key_id: Some("AKID".into()),
            secret_access_key: Some(Secret::new("s@c")),
            ..Default::default()
        };
        assert_eq!(from_url, typed);
        assert!(!format!("{typed:?}").contains("s@c"));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let table = |table: &str| DynamoDbConfig {
            table: table.into(),
            ..Default::default()
        };
        assert!(table("").validate().unwrap_err().to_string().contains("table"));
        assert!(table("kv/x").validate().is_err());
        assert!(table("kv").validate().is_err(), "too short");
        table("valkeyrie-kv").validate().unwrap();
        let half = DynamoDbConfig {
            access_key_id: Some("AKID".into()),
            ..table("valkeyrie-kv")
        };
        assert!(half.validate().unwrap_err().to_string().contains("secret_access_key"));
    }

    /// Durations at and past their limits, through the URL: filled as humantime reads them
    /// or refused, then accepted up to a year or refused naming the field.
    #[test]
    fn durations_at_and_past_their_limits() {
        use valkeyrie_core::testsuite::limits::check_duration_fields;

        check_duration_fields::<DynamoDbConfig>(
            &[
                ("connect_timeout", false, |config: &DynamoDbConfig| {
                    config.connect_timeout
                }),
                ("request_timeout", false, |config: &DynamoDbConfig| {
                    config.request_timeout
                }),
                ("watch_poll_interval", false, |config: &DynamoDbConfig| {
                    config.watch_poll_interval
                }),
                ("watch_retry_for", true, |config: &DynamoDbConfig| {
                    config.watch_retry_for
                }),
                ("lock_poll_interval", false, |config: &DynamoDbConfig| {
                    config.lock_poll_interval
                }),
            ],
            |config: &DynamoDbConfig| {
                DynamoDbConfig {
                    table: "valkeyrie".into(),
                    ..config.clone()
                }
                .validate()
            },
        );
    }
}
