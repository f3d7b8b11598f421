//! # valkeyrie-providers
//!
//! A program whose dependency graph enables both of rustls's crypto providers (ring and
//! aws-lc-rs) cannot let rustls pick one: `ClientConfig::builder()` panics there unless
//! the program installed a process-wide provider. Every valkeyrie backend names ring
//! explicitly instead, except ZooKeeper, whose client builds its config with the
//! process-wide provider: its backend installs ring when none is installed, and only when
//! a ZooKeeper TLS handle is built.
//!
//! The tests connect to every secured server of the harness from such a graph, once with
//! no provider installed and once with the program's own (aws-lc-rs) installed first:
//! `cargo xtask test --backend providers`.
