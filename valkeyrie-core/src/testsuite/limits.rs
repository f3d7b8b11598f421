//! Input at and beyond its limits. Without a server, every backend's unit tests drive
//! their config's duration fields through the URL path (`StoreUrl` parameters, then
//! [`StoreConfig::resolve`], then the backend's own validation) with the helpers here; the
//! conformance case [`ttls_and_indexes_at_their_limits`] drives TTLs and indexes through
//! every backend's `Store`.

use std::time::Duration;

use bytes::Bytes;

use super::support::{fails, get, put, Case};
use super::TestTarget;

use crate::config::{BackendConfig, StoreConfig, StoreUrl, MAX_CONFIG_DURATION};
use crate::error::{Error, ErrorKind, Result};
use crate::kv::{KvPair, LockOptions, ReadOptions, WriteOptions, MAX_TTL};

/// Duration texts at and beyond the limits: zero, the largest accepted and one nanosecond
/// more, `u64::MAX` and `i64::MAX` milliseconds and seconds, `Duration::MAX`, numbers
/// humantime cannot hold (`584000000000y`), and text that is no duration at all.
pub fn duration_texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "0s",
        "1ns",
        "5s",
        "1y",
        "8766h",
        "8766h 1ns",
        "2y",
        "584000000y",
        "584000000000y",
        "9223372036854775807ms",
        "18446744073709551615ms",
        "9223372036854775807s",
        "18446744073709551615s",
        "18446744073709551616s",
        "18446744073709551615s 999999999ns",
        "18446744073709551615s 1000000000ns",
        "-1s",
        "1.5s",
        "",
        "forever",
    ]
    .iter()
    .map(|text| (*text).to_owned())
    .collect();
    for duration in [
        MAX_CONFIG_DURATION,
        MAX_CONFIG_DURATION + Duration::from_nanos(1),
        Duration::MAX,
    ] {
        texts.push(humantime::format_duration(duration).to_string());
    }
    texts
}

/// Checks one duration parameter of config `C` given as `field=text` in a URL: the text
/// fills the field with what [`duration::parse`](crate::config::duration::parse) reads
/// (humantime's reading), or the config is `InvalidConfiguration`
/// naming the field; then `validate` accepts the value, or (zero where `zero_allowed` is
/// false, anything over [`MAX_CONFIG_DURATION`]) refuses it with `InvalidConfiguration`
/// naming the field. `read` gets the field out of the config. Says what differs, if anything.
///
/// # Errors
/// A description of the first expectation that does not hold.
pub fn check_duration_param<C: BackendConfig>(
    field: &str,
    text: &str,
    zero_allowed: bool,
    read: impl Fn(&C) -> Duration,
    validate: impl Fn(&C) -> Result<()>,
) -> Result<(), String> {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair(field, text)
        .finish();
    let url = StoreUrl::parse(&format!("{}://h:1/?{query}", C::STORE)).map_err(|e| format!("{query}: {e}"))?;
    let resolved = StoreConfig::Params(url.params).resolve::<C>();
    let config = match (crate::config::duration::parse(text), resolved) {
        (Ok(expected), Ok(config)) if read(&config) == expected => config,
        (Err(_), Err(err)) => return names_field(&err, field),
        (expected, got) => {
            let got = got.map(|config| read(&config));
            return Err(format!(
                "{field}={text:?}: humantime reads {expected:?}, the config {got:?}"
            ));
        }
    };
    let value = read(&config);
    let refused = (value.is_zero() && !zero_allowed) || value > MAX_CONFIG_DURATION;
    match validate(&config) {
        Ok(()) if !refused => Ok(()),
        Err(err) if refused => names_field(&err, field),
        outcome => Err(format!("{field}={text:?} ({value:?}): validation gave {outcome:?}")),
    }
}

/// A duration field of config `C`: its name, whether zero is a valid value, and how to
/// read it out of a config.
pub type DurationField<C> = (&'static str, bool, fn(&C) -> Duration);

/// The shape of the random duration texts: up to 22 digits and any humantime unit.
pub const DURATION_TEXT: &str = "[0-9]{1,22} ?(ns|us|ms|s|m|h|d|w|M|y)";

/// Checks every field of `fields` with [`check_duration_param`] at each of
/// [`duration_texts`] and at 256 random texts of the shape [`DURATION_TEXT`] (a property
/// test), `validate` being the check opening the store makes.
///
/// # Panics
/// With the first expectation that does not hold, and the text that broke it.
pub fn check_duration_fields<C: BackendConfig>(fields: &[DurationField<C>], validate: impl Fn(&C) -> Result<()>) {
    let check = |text: &str| {
        fields.iter().try_for_each(|(field, zero_allowed, read)| {
            check_duration_param::<C>(field, text, *zero_allowed, read, &validate)
        })
    };
    for text in duration_texts() {
        check(&text).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&DURATION_TEXT, |text| {
            check(&text).map_err(proptest::test_runner::TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `Ok` when `err` is `InvalidConfiguration` naming `field`.
fn names_field(err: &Error, field: &str) -> Result<(), String> {
    match err {
        Error::InvalidConfiguration { field: named, .. } if named == field => Ok(()),
        _ if err.kind() == ErrorKind::InvalidConfiguration => Err(format!("{err} names another field than {field}")),
        _ => Err(format!("{err:?} is not InvalidConfiguration")),
    }
}

/// TTLs past the longest the backend honours ([`MAX_TTL`], or a shorter
/// [`Capabilities::max_ttl`](crate::Capabilities::max_ttl)), up to `u64::MAX` milliseconds
/// and `Duration::MAX`, are `InvalidConfiguration` naming `ttl` and the key on `put`,
/// `atomic_put`, a transaction's put and `new_lock`, with nothing written. Indexes at the
/// ends of their range (`i64::MAX`, `u64::MAX`) are indexes no key has: atomic calls on
/// them fail as `KeyModified`, and a watch from them starts (or is not supported).
pub async fn ttls_and_indexes_at_their_limits(target: &dyn TestTarget) {
    let case = Case::start(target, "ttls_and_indexes_at_their_limits").await;
    let store = case.store.as_ref();
    let caps = store.capabilities();
    let max = caps.max_ttl.map_or(MAX_TTL, |max| max.min(MAX_TTL));
    let key = case.key("k");
    let refused = |err: Error, call: &str| {
        assert_eq!(err.kind(), ErrorKind::InvalidConfiguration, "{call}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("\"ttl\"") && text.contains(&key),
            "{call}: {text} names neither ttl nor {key}"
        );
    };
    for ttl in [
        max + Duration::from_nanos(1),
        Duration::from_millis(u64::MAX),
        Duration::MAX,
    ] {
        if caps.ttl {
            let opts = WriteOptions::with_ttl(ttl);
            let put = store.put(&key, Bytes::from_static(b"v"), &opts).await;
            refused(put.expect_err("put with a TTL over the maximum"), "put");
            let atomic = store.atomic_put(&key, Bytes::from_static(b"v"), None, &opts).await;
            refused(
                atomic.expect_err("atomic_put with a TTL over the maximum"),
                "atomic_put",
            );
            if caps.transactions {
                let txn = crate::txn::Transaction::new().put_with(&key, Bytes::from_static(b"v"), opts);
                refused(
                    store.commit(txn).await.expect_err("commit with a TTL over the maximum"),
                    "commit",
                );
            }
            fails(
                store.get(&key, &ReadOptions::default()).await,
                ErrorKind::KeyNotFound,
                "nothing was written",
            );
        }
        if caps.lock {
            let opts = LockOptions {
                ttl: Some(ttl),
                ..LockOptions::default()
            };
            let lock = store.new_lock(&key, opts).await;
            refused(lock.err().expect("new_lock with a TTL over the maximum"), "new_lock");
        }
    }
    put(store, &key, "v").await;
    for index in [i64::MAX.unsigned_abs(), u64::MAX] {
        let previous = KvPair::new(key.clone(), "v", index);
        let atomic = store
            .atomic_put(
                &key,
                Bytes::from_static(b"w"),
                Some(&previous),
                &WriteOptions::default(),
            )
            .await;
        fails(atomic, ErrorKind::KeyModified, "atomic_put on an index no key has");
        let delete = store.atomic_delete(&key, &previous).await;
        fails(delete, ErrorKind::KeyModified, "atomic_delete on an index no key has");
        if caps.watch {
            match store.watch_from(&key, index, &ReadOptions::default()).await {
                Ok(stream) => drop(stream),
                Err(err) => assert_eq!(err.kind(), ErrorKind::CallNotSupported, "watch_from {index}: {err}"),
            }
        }
    }
    assert_eq!(get(store, &key).await.value, "v", "the value is untouched");
    case.finish().await;
}
