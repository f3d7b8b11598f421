//! [`BoltlikeStore`]: opening a handle, and the registration.

use std::sync::Arc;

use valkeyrie_core::raw::local::LocalStore;
use valkeyrie_core::raw::{Registration, StoreSpec};
use valkeyrie_core::{Error, Result, Store};

use crate::client::{engine, SledStorage};
use crate::config::BoltlikeConfig;
use crate::BOLTLIKE;

/// A handle on an embedded database; the local engine implements every call over
/// [`SledStorage`]. Open one with [`BoltlikeConfig::open`].
pub type BoltlikeStore = LocalStore<SledStorage>;

impl BoltlikeConfig {
    /// Opens (or creates) the database and returns a handle on it. Opening a path that this
    /// process already has open shares that database.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a missing path or bad bucket; a backend error
    /// when the directory cannot be created, or another process has the database open.
    pub async fn open(self) -> Result<BoltlikeStore> {
        self.validate()?;
        let sync_writes = self.sync_writes;
        let opened = tokio::task::spawn_blocking(move || engine(&self))
            .await
            .map_err(|e| Error::backend(BOLTLIKE, "", false, e))
            .and_then(|opened| opened);
        let engine = opened.map_err(|e| e.in_call("open", ""))?;
        Ok(LocalStore::from_engine(engine, sync_writes))
    }
}

async fn open(spec: StoreSpec) -> Result<Arc<dyn Store>> {
    if !spec.endpoints.is_empty() {
        return Err(Error::config(
            BOLTLIKE,
            "endpoints",
            "an embedded store takes a path, not hosts: boltlike:///path/to/db",
        ));
    }
    let config: BoltlikeConfig = spec.config.resolve()?;
    Ok(Arc::new(config.open().await?))
}

inventory::submit! { Registration::new(BOLTLIKE, Some("path"), |spec| Box::pin(open(spec))) }
