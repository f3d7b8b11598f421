//! The fault suite's support: the harness's fault hooks ([`server`]), a loopback TCP
//! proxy that cuts or stalls one client's links ([`Proxy`]), the store under test
//! ([`Target`]), and the cases ([`cases`]), run on every backend by `tests/faults.rs`.
//!
//! The suite needs the servers and clusters `cargo xtask test` starts, and stops,
//! restarts and kills them itself, so it runs only through `cargo xtask test --backend
//! faults`, alone on its servers: cases on one server (or cluster) run one at a time. Each
//! case stops by itself.
//!
//! ```no_run
//! # async fn demo() {
//! use valkeyrie_faults::{cases, Backend, Target};
//!
//! let target = Target::new(Backend::Etcd).await;
//! cases::calls_while_down(&target).await;
//! # }
//! ```
#![allow(clippy::print_stdout)] // Each case reports what it measured, for the closing table.

pub mod cases;
pub mod proxy;
pub mod server;
pub mod target;

pub use proxy::Proxy;
pub use target::{Backend, Target};
