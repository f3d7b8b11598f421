//! The conformance suite against a real Redis Cluster, `VALKEYRIE_REDIS_CLUSTER_URL` (set by
//! `cargo xtask test --backend redis-cluster`): every case on both layouts, under a
//! hash-tagged prefix so that a case's multi-key calls stay in one slot. What only a
//! cluster has (keys across slots) is in `cluster.rs`.

mod support;

// Opened by URL only: link the backend so it registers itself.
use valkeyrie_redis as _;

use support::{url_from, with_raw_values, RedisTarget};

fn url() -> String {
    url_from("VALKEYRIE_REDIS_CLUSTER_URL", "redis-cluster")
}

mod cluster {
    use super::*;

    /// The Go store's JSON envelope.
    mod envelope {
        use super::*;

        valkeyrie_core::conformance_suite!(RedisTarget { url: url() });
    }

    /// Raw values with their index keys beside them.
    mod raw_values {
        use super::*;

        valkeyrie_core::conformance_suite!(RedisTarget {
            url: with_raw_values(&url())
        });
    }
}
