//! The connection to the "server".
//!
//! A real backend builds its client crate's connection here (endpoints, TLS, credentials,
//! timeouts) and keeps nothing else. The template's server is a named in-memory store of
//! this process: every client made with the same endpoint name sees the same data, the way
//! clients of one real server do.

use std::sync::Arc;

use valkeyrie_core::{Error, MemoryConfig, MemoryStore, Result, Store};

use crate::config::TemplateConfig;
use crate::error::map_error;
use crate::TEMPLATE;

/// A connection to one template server.
#[derive(Debug)]
pub struct TemplateClient {
    /// The stand-in server connection.
    server: Arc<MemoryStore>,
}

impl TemplateClient {
    /// Connects to the server named by the single endpoint.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] unless there is exactly one endpoint.
    pub fn connect(endpoints: &[String], config: &TemplateConfig) -> Result<Self> {
        let [name] = endpoints else {
            return Err(Error::config(
                TEMPLATE,
                "endpoints",
                format!("exactly one server name, got {}", endpoints.len()),
            ));
        };
        let server = MemoryStore::with_config(MemoryConfig {
            name: Some(name.clone()),
            max_value_size: config.max_value_size,
        })
        .map_err(|err| map_error("", err))?;
        Ok(TemplateClient {
            server: Arc::new(server),
        })
    }

    /// The server connection, for administration (tests use it to revoke locks).
    pub fn server(&self) -> &MemoryStore {
        &self.server
    }

    /// The requests the server answers.
    pub(crate) fn requests(&self) -> &dyn Store {
        &*self.server
    }

    /// The same, shared, for the requests whose answer outlives the call (a paged listing).
    pub(crate) fn shared_requests(&self) -> Arc<dyn Store> {
        Arc::clone(&self.server) as Arc<dyn Store>
    }
}
