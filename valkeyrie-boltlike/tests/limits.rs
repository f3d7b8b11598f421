//! TTLs at and beyond their limits on the embedded store, through the public API: up to
//! `MAX_TTL` a key is written and a lock is taken and renewed; past it (`u64::MAX`
//! milliseconds, `Duration::MAX`) the call is `InvalidConfiguration` naming `ttl` and the
//! key, and nothing is written. Config parameters at their limits parse or fail typed.

use std::time::Duration;

use valkeyrie_boltlike::BoltlikeConfig;
use valkeyrie_core::raw::StoreUrl;
use valkeyrie_core::{Bytes, Error, ErrorKind, LockOptions, ReadOptions, Store, StoreConfig, WriteOptions, MAX_TTL};

fn names_ttl_and_key(err: &Error, key: &str) -> bool {
    matches!(err, Error::InvalidConfiguration { field, reason, .. } if field == "ttl" && reason.contains(key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_up_to_the_maximum_work_and_past_it_are_refused() {
    let store = BoltlikeConfig::temporary().open().await.unwrap();
    let value = Bytes::from_static(b"v");
    store
        .put("limits/max", value.clone(), &WriteOptions::with_ttl(MAX_TTL))
        .await
        .unwrap();
    assert_eq!(
        store.get("limits/max", &ReadOptions::default()).await.unwrap().value,
        value
    );
    let locker = store
        .new_lock("limits/lock", LockOptions::default().ttl(MAX_TTL))
        .await
        .unwrap();
    let guard = locker.try_lock().await.unwrap().expect("a free lock is taken");
    guard.unlock().await.unwrap();

    for ttl in [
        MAX_TTL + Duration::from_nanos(1),
        Duration::from_millis(u64::MAX),
        Duration::MAX,
    ] {
        for opts in [WriteOptions::with_ttl(ttl), WriteOptions::keep_alive(ttl)] {
            let err = store.put("limits/over", value.clone(), &opts).await.unwrap_err();
            assert!(names_ttl_and_key(&err, "limits/over"), "{err:?}");
        }
        let opts = LockOptions::default().ttl(ttl);
        let err = store.new_lock("limits/lock", opts).await.err().expect("refused");
        assert!(names_ttl_and_key(&err, "limits/lock"), "{err:?}");
    }
    let err = store.get("limits/over", &ReadOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyNotFound);
    store.close().await.unwrap();
}

#[test]
fn numeric_parameters_at_their_limits_parse_or_name_the_field() {
    for (param, value) in [
        ("cache_capacity", "18446744073709551615"),
        ("cache_capacity", "18446744073709551616"),
        ("max_value_size", "18446744073709551615"),
        ("max_value_size", "-1"),
    ] {
        let url = StoreUrl::parse(&format!("boltlike:///tmp/kv.db?{param}={value}")).unwrap();
        match StoreConfig::Params(url.params).resolve::<BoltlikeConfig>() {
            Ok(config) => assert_eq!(value.parse::<u64>().ok(), Some(u64::MAX), "{param}={value}: {config:?}"),
            Err(err) => {
                assert!(
                    matches!(&err, Error::InvalidConfiguration { field, .. } if field == param),
                    "{err:?}"
                );
                assert!(value.parse::<u64>().is_err(), "{param}={value}: {err}");
            }
        }
    }
}
