//! [`ZookeeperConfig`]: session, timeouts, chroot, digest credentials and limits.

use std::time::Duration;

use serde::Deserialize;
use valkeyrie_core::{BackendConfig, Error, Result, Secret};

use crate::ZOOKEEPER;

/// Settings of the ZooKeeper store. The URL form sets the same fields:
/// `zookeeper://user:password@h1:2181,h2:2181/app/chroot?session_timeout=10s`.
///
/// ```
/// use valkeyrie_zookeeper::ZookeeperConfig;
///
/// let config = ZookeeperConfig { password: Some("s3cret".into()), ..Default::default() };
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZookeeperConfig {
    /// The node under which every key lives (ZooKeeper's chroot), such as `/app`. From the
    /// URL: its path. Default: the root.
    pub chroot: Option<String>,
    /// Session timeout asked of the server (which clamps it to 2–20 ticks). Ephemeral nodes
    /// (keep-alive keys, lock contenders) outlive a dead handle by about this long.
    /// Default 10 s.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How long connecting may take. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline of each request. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// User for digest authentication, with `password`.
    pub username: Option<String>,
    /// Password of `username`.
    pub password: Option<Secret>,
    /// The server's `jute.maxbuffer` (default 1 MiB): values that cannot fit a request are
    /// `ValueTooLarge` before sending (4 KiB are kept for the path and framing).
    pub max_request_bytes: usize,
    /// Requests `list` and `delete_tree` keep in flight at once. Default 16.
    pub concurrency: usize,
}

impl Default for ZookeeperConfig {
    fn default() -> Self {
        ZookeeperConfig {
            chroot: None,
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            username: None,
            password: None,
            max_request_bytes: 1024 * 1024,
            concurrency: 16,
        }
    }
}

impl BackendConfig for ZookeeperConfig {
    const STORE: &'static str = ZOOKEEPER;
    const URL_PATH_FIELD: Option<&'static str> = Some("chroot");
}

/// Room kept in a request for the path and the framing.
const REQUEST_OVERHEAD: usize = 4096;

impl ZookeeperConfig {
    /// The largest value a request can carry.
    pub(crate) fn max_value_size(&self) -> usize {
        self.max_request_bytes.saturating_sub(REQUEST_OVERHEAD)
    }

    /// The chroot with exactly one leading `/` and none trailing, or `None` for the root.
    pub(crate) fn chroot_path(&self) -> Option<String> {
        let chroot = self.chroot.as_deref()?.trim_matches('/');
        (!chroot.is_empty()).then(|| format!("/{chroot}"))
    }

    /// Checks what needs no server.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |field: &str, reason: &str| Err(Error::config(ZOOKEEPER, field, reason));
        if self.username.is_some() != self.password.is_some() {
            return invalid("password", "username and password go together");
        }
        if self.session_timeout < Duration::from_millis(100) {
            return invalid("session_timeout", "must be at least 100 ms");
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return invalid("request_timeout", "timeouts must be longer than zero");
        }
        if self.max_request_bytes <= REQUEST_OVERHEAD {
            return invalid("max_request_bytes", "must be larger than 4 KiB");
        }
        if self.concurrency == 0 {
            return invalid("concurrency", "must be at least 1");
        }
        if let Some(chroot) = self.chroot_path() {
            if chroot.split('/').skip(1).any(|s| s.is_empty() || s == "." || s == "..") {
                return invalid("chroot", "must be a plain path such as /app/config");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use valkeyrie_core::{StoreConfig, StoreUrl};

    use super::*;

    #[test]
    fn url_and_typed_config_agree() {
        let url = StoreUrl::parse("zookeeper://app:pw@h1:2181,h2:2181/apps/one?session_timeout=4s").unwrap();
        assert_eq!(url.endpoints, ["h1:2181", "h2:2181"]);
        let mut params = url.params;
        params.push(("chroot".into(), url.path.unwrap()));
        let from_url: ZookeeperConfig = StoreConfig::Params(params).resolve().unwrap();
        let typed = ZookeeperConfig {
            chroot: Some("apps/one".into()),
            session_timeout: Duration::from_secs(4),
            username: Some("app".into()),
            password: Some(Secret::new("pw")),
            ..Default::default()
        };
        assert_eq!(from_url, typed);
        assert_eq!(typed.chroot_path().as_deref(), Some("/apps/one"));
        assert!(!format!("{typed:?}").contains("\"pw\""));
    }
}
