//! [`BoltlikeConfig`]: where the database lives and how it writes.

use std::path::PathBuf;

use serde::Deserialize;
use valkeyrie_core::raw::BackendConfig;
use valkeyrie_core::{Error, Result};

use crate::BOLTLIKE;

/// Settings of the embedded store; the URL form is
/// `boltlike:///var/lib/app/kv.db?bucket=app&sync_writes=true`.
///
/// ```
/// use valkeyrie_core::raw::StoreUrl;
/// use valkeyrie_boltlike::BoltlikeConfig;
///
/// let config = BoltlikeConfig { path: Some("/var/lib/app/kv.db".into()), sync_writes: true, ..Default::default() };
/// assert_eq!(config.bucket, "valkeyrie");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoltlikeConfig {
    /// The database directory (sled keeps several files in it). Required unless
    /// `temporary` is set. From the URL: its path.
    pub path: Option<PathBuf>,
    /// The sled tree that holds the keys, so several applications can share one database
    /// (the Go BoltDB store's `Bucket`). Default `"valkeyrie"`.
    pub bucket: String,
    /// Flush every write to disk before the call returns (slower, survives power loss).
    /// Default `false`: sled flushes in the background every 500 ms.
    pub sync_writes: bool,
    /// A fresh database in a temporary directory, deleted when the last handle goes; for
    /// tests and examples. Cannot be combined with `path`. Default `false`.
    pub temporary: bool,
    /// Largest value accepted, in bytes; `None` (the default) leaves it to memory.
    pub max_value_size: Option<usize>,
    /// Size of sled's page cache in bytes; `None` keeps sled's default (1 GiB).
    pub cache_capacity: Option<u64>,
}

impl Default for BoltlikeConfig {
    fn default() -> Self {
        BoltlikeConfig {
            path: None,
            bucket: "valkeyrie".to_owned(),
            sync_writes: false,
            temporary: false,
            max_value_size: None,
            cache_capacity: None,
        }
    }
}

impl BackendConfig for BoltlikeConfig {
    const STORE: &'static str = BOLTLIKE;
    const URL_PATH_FIELD: Option<&'static str> = Some("path");
}

impl BoltlikeConfig {
    /// A config for a temporary database.
    pub fn temporary() -> Self {
        BoltlikeConfig {
            temporary: true,
            ..Default::default()
        }
    }

    /// A config for the database at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        BoltlikeConfig {
            path: Some(path.into()),
            ..Default::default()
        }
    }

    /// Checks the settings that do not need the disk.
    pub(crate) fn validate(&self) -> Result<()> {
        match (&self.path, self.temporary) {
            (None, false) => {
                return Err(Error::config(
                    BOLTLIKE,
                    "path",
                    "a database path is required (or set temporary=true)",
                ));
            }
            // sled deletes a temporary database's directory when it closes: never a user's path.
            (Some(_), true) => {
                let reason = "a temporary database takes no path (its directory is deleted on close)";
                return Err(Error::config(BOLTLIKE, "temporary", reason));
            }
            _ => {}
        }
        if self.bucket.is_empty() || self.bucket.contains(".__") {
            return Err(Error::config(
                BOLTLIKE,
                "bucket",
                "must be non-empty and must not contain `.__` (reserved)",
            ));
        }
        if self.max_value_size == Some(0) {
            return Err(Error::config(BOLTLIKE, "max_value_size", "must be at least 1 byte"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use valkeyrie_core::raw::StoreUrl;
    use valkeyrie_core::{ErrorKind, StoreConfig};

    use super::*;

    #[test]
    fn url_and_typed_config_agree() {
        let url =
            StoreUrl::parse("boltlike:///var/lib/app/kv.db?bucket=app&sync_writes=true&max_value_size=1024").unwrap();
        let mut params = url.params;
        params.push(("path".into(), url.path.unwrap()));
        let from_url: BoltlikeConfig = StoreConfig::Params(params).resolve().unwrap();
        let typed = BoltlikeConfig {
            path: Some("/var/lib/app/kv.db".into()),
            bucket: "app".into(),
            sync_writes: true,
            max_value_size: Some(1024),
            ..Default::default()
        };
        assert_eq!(from_url, typed);
    }

    #[test]
    fn a_path_is_required_unless_temporary() {
        let err = BoltlikeConfig::default().validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfiguration);
        assert!(err.to_string().contains("path"), "{err}");
        assert!(BoltlikeConfig::temporary().validate().is_ok());
        let both = BoltlikeConfig {
            temporary: true,
            ..BoltlikeConfig::at("/var/lib/app/kv.db")
        };
        let err = both.validate().unwrap_err();
        assert!(
            err.to_string().contains("temporary"),
            "a temporary database never takes a real path: {err}"
        );
    }
}
