//! # valkeyrie-template
//!
//! A complete backend to copy when adding a store. It registers itself as `template` and
//! passes the whole conformance suite; its "server" is valkeyrie-core's in-memory engine,
//! reached through [`client::TemplateClient`] the way a real backend reaches its server
//! through a client crate. Every backend crate has the same files:
//!
//! | file | job |
//! |---|---|
//! | `lib.rs` | crate docs, the store name constant, re-exports |
//! | `config.rs` | the serde config with defaults, secrets hidden from `Debug`, URL mapping test |
//! | `client.rs` | the connection: building the client from the config |
//! | `error.rs` | ONE function mapping the client's errors to [`valkeyrie_core::Error`] |
//! | `store.rs` | the [`Backend`](valkeyrie_core::raw::Backend) implementation and the registration |
//! | `watch.rs` | the server's change feed as a [`Feed`](valkeyrie_core::raw::feed::Feed) that core's feed driver turns into a [`WatchStream`](valkeyrie_core::WatchStream) |
//! | `lock.rs` | locks: acquisition, then a [`Hold`](valkeyrie_core::raw::Hold) (the renewal step) for the handle's lock-holding driver, release (the stand-in server holds its locks itself: the guard mirrors them) |
//! | `txn.rs` | a [`Txn`](valkeyrie_core::raw::Txn) as the server's own transaction request |
//!
//! README.md says step by step how to copy it into a new backend.
//!
//! ## Example
//!
//! ```
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use valkeyrie_core::Kv;
//! use valkeyrie_template::TemplateConfig;
//!
//! let kv = Kv::new(TemplateConfig::default().connect(["example-server"]).await?);
//! kv.put("hello", "world").await?;
//! assert_eq!(kv.get("hello").await?.map(|pair| pair.value), Some("world".into()));
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

pub mod client;
mod config;
mod error;
mod lock;
mod store;
mod txn;
mod watch;

pub use config::TemplateConfig;
pub use store::TemplateStore;

/// The registered name of this store, also its URL scheme.
pub const TEMPLATE: &str = "template";
