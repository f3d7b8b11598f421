//! # valkeyrie-security
//!
//! The security suite: each network backend against its secured server, which `cargo xtask
//! test` starts beside the plain one (`cargo xtask servers start --secure` by hand). The
//! servers use TLS with a private CA generated at run time, require client certificates,
//! and check credentials and per-user permissions: an admin user allowed everything and an
//! app user allowed only the keys under [`app_prefix`]. Their passwords hold `/ ? # @ :`,
//! characters a URL must encode, so the suite also proves that such passwords parse.
//! Consul has tokens rather than users: the admin's is the master token (that same
//! password), the app's a UUID, written as the URL's password (`consul://:TOKEN@…`).
//!
//! The same cases run on every store ([`security_suite!`]); a store's test file adds what
//! only it has (etcd's token expiry). A case that cannot reach its server fails, naming
//! the variable it read: it never passes by skipping.
//!
//! ```no_run
//! # async fn demo() {
//! use valkeyrie_security::{Connection, Secured};
//!
//! let kv = Secured::Etcd.open(&Connection::app(Secured::Etcd)).await.expect("the secured etcd");
//! kv.put("app/x", "1").await.expect("a permitted write");
//! # }
//! ```

pub mod cases;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use valkeyrie::{Error, Kv};

/// A secured server of the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secured {
    /// etcd with TLS, client certificates, users and roles, 3-second tokens.
    Etcd,
    /// Redis with `tls-port`, `tls-auth-clients yes` and ACL users.
    Redis,
    /// Consul on HTTPS with `verify_incoming`, ACLs denying by default, and tokens.
    Consul,
    /// ZooKeeper on its TLS port, client certificates required, digest authentication
    /// enforced; every node is its creator's alone.
    ZooKeeper,
    /// DynamoDB Local behind a TLS proxy with the private CA's server certificate: TLS
    /// only (DynamoDB Local checks no credentials, and the SDK presents no client
    /// certificate).
    DynamoDb,
}

/// Reads a variable `cargo xtask test` exports, or fails naming it.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the security suite with `cargo xtask test --backend security`")
    })
}

/// The keys the app user may touch (`app/`).
pub fn app_prefix() -> String {
    env("VALKEYRIE_SECURE_APP_PREFIX")
}

/// The passwords and tokens of the secured servers: what must never show in any output.
/// Consul's tokens count when the run exports them.
pub fn secrets() -> Vec<String> {
    let tokens = [
        "VALKEYRIE_SECURE_CONSUL_APP_TOKEN",
        "VALKEYRIE_SECURE_CONSUL_READ_TOKEN",
    ];
    [
        env("VALKEYRIE_SECURE_ADMIN_PASSWORD"),
        env("VALKEYRIE_SECURE_APP_PASSWORD"),
    ]
    .into_iter()
    .chain(tokens.into_iter().filter_map(|name| std::env::var(name).ok()))
    .collect()
}

/// Which CA a connection trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The private CA that signed the servers' certificates.
    PrivateCa,
    /// Another CA: the server's certificate cannot be verified.
    OtherCa,
}

/// Which client certificate a connection presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCert {
    /// One the servers accept.
    Valid,
    /// None.
    Missing,
    /// One signed by the private CA whose validity ended in the past.
    Expired,
    /// One signed by a CA the servers do not trust.
    OtherCa,
}

/// Who connects, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The CA the client trusts.
    pub trust: Trust,
    /// The certificate it presents.
    pub cert: ClientCert,
    /// User name and password, `None` for an anonymous connection.
    pub account: Option<(String, String)>,
}

impl Connection {
    /// The app user of `store` (Consul: the app token), with the private CA and a valid
    /// client certificate (DynamoDB: neither user nor certificate).
    pub fn app(store: Secured) -> Self {
        let account = match store {
            Secured::DynamoDb => None,
            Secured::Consul => Some((String::new(), env("VALKEYRIE_SECURE_CONSUL_APP_TOKEN"))),
            Secured::Etcd | Secured::Redis | Secured::ZooKeeper => {
                Some((env("VALKEYRIE_SECURE_APP_USER"), env("VALKEYRIE_SECURE_APP_PASSWORD")))
            }
        };
        let cert = match store {
            Secured::DynamoDb => ClientCert::Missing,
            _ => ClientCert::Valid,
        };
        Connection {
            trust: Trust::PrivateCa,
            cert,
            account,
        }
    }

    /// The admin user of `store` (Consul: the master token), with the private CA and a
    /// valid client certificate.
    pub fn admin(store: Secured) -> Self {
        let user = match store {
            Secured::Etcd => env("VALKEYRIE_SECURE_ETCD_ADMIN_USER"),
            Secured::Redis => env("VALKEYRIE_SECURE_REDIS_ADMIN_USER"),
            Secured::Consul => String::new(),
            Secured::ZooKeeper => env("VALKEYRIE_SECURE_ZOOKEEPER_ADMIN_USER"),
            Secured::DynamoDb => return Connection::app(store),
        };
        Connection {
            account: Some((user, env("VALKEYRIE_SECURE_ADMIN_PASSWORD"))),
            ..Connection::app(store)
        }
    }
}

impl Secured {
    /// The store's registered name.
    pub fn name(self) -> &'static str {
        match self {
            Secured::Etcd => "etcd",
            Secured::Redis => "redis",
            Secured::Consul => "consul",
            Secured::ZooKeeper => "zookeeper",
            Secured::DynamoDb => "dynamodb",
        }
    }

    /// The URL of `connection`, its password percent-encoded.
    pub fn url(self, connection: &Connection) -> String {
        let userinfo = connection
            .account
            .as_ref()
            .map(|(user, password)| format!("{user}:{}@", utf8_percent_encode(password, NON_ALPHANUMERIC)))
            .unwrap_or_default();
        self.url_with_userinfo(&userinfo, connection)
    }

    /// The URL of `connection` with the user info written as given (`user:password@`).
    pub fn url_with_userinfo(self, userinfo: &str, connection: &Connection) -> String {
        let (scheme, address) = match self {
            Secured::DynamoDb => {
                return self.dynamodb_url(&env("VALKEYRIE_SECURE_DYNAMODB_ENDPOINT"), connection.trust)
            }
            Secured::Etcd => ("etcd", env("VALKEYRIE_SECURE_ETCD_ENDPOINTS")),
            Secured::Redis => ("rediss", env("VALKEYRIE_SECURE_REDIS_ADDRESS")),
            Secured::Consul => ("consul", env("VALKEYRIE_SECURE_CONSUL_ADDRESS")),
            Secured::ZooKeeper => ("zookeeper", env("VALKEYRIE_SECURE_ZOOKEEPER_ENDPOINTS")),
        };
        let ca = match connection.trust {
            Trust::PrivateCa => env("VALKEYRIE_TLS_CA_FILE"),
            Trust::OtherCa => env("VALKEYRIE_TLS_OTHER_CA_FILE"),
        };
        let cert = match connection.cert {
            ClientCert::Valid => Some(("VALKEYRIE_TLS_CLIENT_CERT", "VALKEYRIE_TLS_CLIENT_KEY")),
            ClientCert::Missing => None,
            ClientCert::Expired => Some(("VALKEYRIE_TLS_EXPIRED_CLIENT_CERT", "VALKEYRIE_TLS_EXPIRED_CLIENT_KEY")),
            ClientCert::OtherCa => Some(("VALKEYRIE_TLS_OTHER_CLIENT_CERT", "VALKEYRIE_TLS_OTHER_CLIENT_KEY")),
        };
        let cert = cert
            .map(|(cert, key)| format!("&cert_file={}&key_file={}", env(cert), env(key)))
            .unwrap_or_default();
        format!("{scheme}://{userinfo}{address}?ca_file={ca}{cert}&connect_timeout=5s&request_timeout=5s")
    }

    /// The URL of the secured DynamoDB's table through the proxy at `endpoint`, trusting
    /// `trust`'s CA: DynamoDB Local takes any static credentials.
    pub fn dynamodb_url(self, endpoint: &str, trust: Trust) -> String {
        let ca = match trust {
            Trust::PrivateCa => env("VALKEYRIE_TLS_CA_FILE"),
            Trust::OtherCa => env("VALKEYRIE_TLS_OTHER_CA_FILE"),
        };
        let endpoint = utf8_percent_encode(endpoint, NON_ALPHANUMERIC);
        format!(
            "dynamodb://valkeyrie-secure?endpoint={endpoint}&ca_file={ca}&region=us-east-1&create_table=true\
             &access_key_id=valkeyrie&secret_access_key=valkeyrie&max_attempts=1&connect_timeout=5s&request_timeout=10s"
        )
    }

    /// Opens the store as `connection` says.
    ///
    /// # Errors
    /// What opening the store returns: the refusals the suite checks.
    pub async fn open(self, connection: &Connection) -> valkeyrie::Result<Kv> {
        valkeyrie::open(&self.url(connection)).await
    }

    /// A store as `connection`, or a panic naming what failed.
    pub async fn connect(self, connection: &Connection) -> Kv {
        match self.open(connection).await {
            Ok(store) => store,
            Err(err) => panic!(
                "{}: opening the secured server as {connection:?} failed: {err}",
                self.name()
            ),
        }
    }
}

/// A key of its own under the app prefix for `case`.
pub fn app_key(case: &str) -> String {
    format!("{}{case}-{}", app_prefix(), std::process::id())
}

/// Panics if `text` holds any 4-character piece of a password.
pub fn assert_no_secret(what: &str, text: &str) {
    for secret in secrets() {
        let chars: Vec<char> = secret.chars().collect();
        for window in chars.windows(4) {
            let piece: String = window.iter().collect();
            assert!(
                !text.contains(&piece),
                "{what} shows a piece of a password ({} characters of it): {text}",
                piece.len()
            );
        }
    }
}

/// Panics if the error's `Display`, `Debug` or any source in its chain shows a password.
pub fn assert_error_keeps_secrets(err: &Error) {
    assert_no_secret("the error's Display", &err.to_string());
    assert_no_secret("the error's Debug", &format!("{err:?}"));
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        assert_no_secret("a source error", &format!("{cause} {cause:?}"));
        source = cause.source();
    }
}
