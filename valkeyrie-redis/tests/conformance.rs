//! The conformance suite against a real Redis: `VALKEYRIE_REDIS_URL` (set by
//! `cargo xtask test`) names it.

use std::sync::Arc;

use async_trait::async_trait;
use fred::prelude::{Client, ClientLike, Config, KeysInterface};
use valkeyrie_core::raw::LockRevocation;
use valkeyrie_core::testsuite::TestTarget;
use valkeyrie_core::Store;
// Opened by URL only: link the backend so it registers itself.
use valkeyrie_redis as _;

const URL: &str = "VALKEYRIE_REDIS_URL";

fn url() -> String {
    std::env::var(URL).unwrap_or_else(|_| {
        panic!(
            "{URL} is not set: run `cargo xtask test --backend redis`, or point it at your Redis (redis://host:port)"
        )
    })
}

/// Opens stores at `url`.
struct RedisTarget {
    url: String,
}

#[async_trait]
impl TestTarget for RedisTarget {
    async fn open(&self) -> Arc<dyn Store> {
        valkeyrie_core::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
            .into()
    }

    async fn revoke_lock(&self, key: &str, how: LockRevocation) {
        let client = Client::new(Config::from_url(&url()).expect("a redis URL"), None, None, None);
        client.init().await.expect("a raw redis client");
        match how {
            LockRevocation::DeleteRecord => client.del::<i64, _>(key).await.expect("delete the lock key"),
            LockRevocation::Expire => client
                .pexpire::<i64, _>(key, 1, None)
                .await
                .expect("expire the lock key"),
        };
        client.quit().await.expect("quit");
    }
}

valkeyrie_core::conformance_suite!(RedisTarget { url: url() });

/// The same suite on the raw layout (`value_encoding=raw`): every call works there too.
mod raw_values {
    use super::*;

    fn raw_url() -> String {
        let url = url();
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}value_encoding=raw")
    }

    valkeyrie_core::conformance_suite!(RedisTarget { url: raw_url() });
}
