//! The conformance suite against a real Redis: `VALKEYRIE_REDIS_URL` (set by
//! `cargo xtask test`) names it.

mod support;

// Opened by URL only: link the backend so it registers itself.
use valkeyrie_redis as _;

use support::{url_from, with_raw_values, RedisTarget};

fn url() -> String {
    url_from("VALKEYRIE_REDIS_URL", "redis")
}

valkeyrie_core::conformance_suite!(RedisTarget { url: url() });

/// The same suite on the raw layout (`value_encoding=raw`): every call works there too.
mod raw_values {
    use super::*;

    valkeyrie_core::conformance_suite!(RedisTarget {
        url: with_raw_values(&url())
    });
}
