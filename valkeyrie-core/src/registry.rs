//! The constructor registry: open a store by name or URL.
//!
//! Each backend crate registers itself with [`inventory::submit!`] and a [`Registration`];
//! no global mutable map and no `init` order. A backend crate that the program does not link
//! is not registered, so opening its name fails with [`Error::UnknownStore`] listing what is
//! registered and how to link it.
//!
//! ```
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use valkeyrie_core::{constructors, open};
//!
//! assert!(constructors().contains(&"memory"));
//! let kv = open("memory://").await?;
//! kv.put("greeting", "hello").await?;
//! assert_eq!(kv.get("greeting").await?.map(|pair| pair.value), Some("hello".into()));
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{StoreConfig, StoreUrl};
use crate::error::{Error, Result};
use crate::handle::Kv;
use crate::store::Store;

/// The future a constructor returns.
pub type OpenFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn Store>>> + Send>>;

/// What a constructor receives: endpoints, the URL path if any, and the configuration.
#[derive(Debug, Default)]
pub struct StoreSpec {
    /// Server addresses such as `127.0.0.1:2379`; empty for embedded stores.
    pub endpoints: Vec<String>,
    /// The configuration: typed, URL parameters (the URL path included, see
    /// [`BackendConfig::URL_PATH_FIELD`](crate::raw::BackendConfig::URL_PATH_FIELD)), or defaults.
    pub config: StoreConfig,
}

/// One backend's entry in the registry; submit it with `inventory::submit!`.
///
/// ```ignore
/// inventory::submit! { valkeyrie_core::Registration::new("etcd", None, |spec| Box::pin(open(spec))) }
/// ```
#[derive(Debug)]
pub struct Registration {
    /// The store name, which is also its URL scheme.
    pub name: &'static str,
    /// The URL parameter that the URL path becomes (`None`: the backend takes no path).
    pub url_path_field: Option<&'static str>,
    /// Builds a store.
    pub open: fn(StoreSpec) -> OpenFuture,
}

impl Registration {
    /// A registration for `name`.
    pub const fn new(
        name: &'static str,
        url_path_field: Option<&'static str>,
        open: fn(StoreSpec) -> OpenFuture,
    ) -> Self {
        Registration {
            name,
            url_path_field,
            open,
        }
    }
}

inventory::collect!(Registration);

fn find(name: &str) -> Result<&'static Registration> {
    inventory::iter::<Registration>
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| Error::UnknownStore {
            name: name.to_owned(),
            registered: constructors().into_iter().map(str::to_owned).collect(),
        })
}

/// The names of the registered stores, sorted.
pub fn constructors() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = inventory::iter::<Registration>.into_iter().map(|r| r.name).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Opens the store registered as `name` with `endpoints` and `config` (a typed config such
/// as `BoltlikeConfig`, or `StoreConfig::Default`), and returns a handle on it.
///
/// Cancel safety: dropping it abandons the connection being opened; opening writes nothing
/// to the store.
///
/// # Errors
/// [`Error::UnknownStore`] when no linked crate registers `name`;
/// [`Error::InvalidConfiguration`] for a config of another store or a bad field; whatever
/// the backend's constructor returns.
pub async fn new_store<I, E>(name: &str, endpoints: I, config: impl Into<StoreConfig>) -> Result<Kv>
where
    I: IntoIterator<Item = E>,
    E: Into<String>,
{
    let registration = find(name)?;
    let spec = StoreSpec {
        endpoints: endpoints.into_iter().map(Into::into).collect(),
        config: config.into(),
    };
    (registration.open)(spec).await.map(Kv::from)
}

/// Opens a store from a URL: `etcd://h1:2379,h2:2379/?connect_timeout=5s`,
/// `boltlike:///var/lib/app/kv.db?sync_writes=true`, `memory://`. The scheme is the store
/// name, the hosts are the endpoints, the path and the query parameters fill the store's
/// typed config exactly as the same fields set in code would. Returns a handle on it.
///
/// Cancel-safe, as [`new_store`].
///
/// # Errors
/// As [`new_store`], plus [`Error::InvalidConfiguration`] for a malformed URL or a path given
/// to a store that takes none.
pub async fn open(url: &str) -> Result<Kv> {
    let url = StoreUrl::parse(url)?;
    let registration = find(&url.scheme)?;
    let mut params = url.params;
    if let Some(path) = url.path {
        let field = registration.url_path_field.ok_or_else(|| {
            Error::config(
                registration.name,
                "url",
                format!("this store takes no path in its URL, found {path:?}"),
            )
        })?;
        params.push((field.to_owned(), path));
    }
    let spec = StoreSpec {
        endpoints: url.endpoints,
        config: StoreConfig::Params(params),
    };
    (registration.open)(spec).await.map(Kv::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[tokio::test]
    async fn unknown_names_list_the_registered_stores() {
        let err = new_store("etcdv2", Vec::<String>::new(), StoreConfig::Default)
            .await
            .err();
        let err = err.unwrap_or_else(|| panic!("etcdv2 is not registered"));
        assert_eq!(err.kind(), ErrorKind::UnknownStore);
        assert!(err.to_string().contains("memory"), "{err}");
        let err = open("nope://x")
            .await
            .err()
            .unwrap_or_else(|| panic!("nope is not registered"));
        assert_eq!(err.kind(), ErrorKind::UnknownStore);
    }

    #[test]
    fn constructors_are_sorted_and_include_memory() {
        let names = constructors();
        assert!(names.contains(&"memory"));
        assert!(names.windows(2).all(|w| w[0] < w[1]));
    }
}
