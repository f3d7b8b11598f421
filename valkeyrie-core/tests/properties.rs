//! Property tests on bad input: every key either normalizes by the documented rules or is
//! `InvalidKey` naming the store and the key as given; every URL either parses or is
//! `InvalidConfiguration` naming `url`; every parameter list either fills a typed config or
//! is `InvalidConfiguration` naming a parameter. Nothing panics, and no password reaches an
//! error or `Debug` output. TTLs, indexes and config durations at and beyond their limits
//! (`u64::MAX` milliseconds, `Duration::MAX`, `i64::MAX` indexes) are accepted exactly up to
//! the documented bound and are `InvalidConfiguration` naming the field past it.

use std::time::Duration;

use proptest::prelude::*;
use serde::Deserialize;
use valkeyrie_core::config::{check_duration, duration, from_params, BackendConfig, Secret, MAX_CONFIG_DURATION};
use valkeyrie_core::raw::{Key, StoreUrl};
use valkeyrie_core::{
    Bytes, Error, ErrorKind, KvPair, LockOptions, MemoryStore, ReadOptions, Store, StoreConfig, WriteOptions, MAX_TTL,
};

const STORE: &str = "prop";

/// Strings built from the characters the key rules care about, plus arbitrary ones.
fn key_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("//".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\n".to_owned()),
        Just("\u{85}".to_owned()),
        "[a-z0-9_-]{1,4}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

/// What the rules say about `raw`, computed independently of `Key::parse`.
fn expected_key(raw: &str) -> Option<String> {
    let trimmed = raw.strip_prefix('/').unwrap_or(raw);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let valid = !trimmed.is_empty()
        && !trimmed.chars().any(char::is_control)
        && trimmed.split('/').all(|s| !matches!(s, "" | "." | ".."));
    valid.then(|| trimmed.to_owned())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn keys_normalize_or_fail_typed(raw in key_like()) {
        match (Key::parse(STORE, &raw), expected_key(&raw)) {
            (Ok(key), Some(expected)) => {
                prop_assert_eq!(key.as_str(), expected.as_str());
                // Normalizing is idempotent and the parts agree with the whole.
                prop_assert_eq!(Key::parse(STORE, key.as_str()).ok(), Some(key.clone()));
                prop_assert_eq!(key.segments().collect::<Vec<_>>().join("/"), key.as_str());
                if let Some(parent) = key.parent() {
                    prop_assert!(parent.contains(key.as_str()));
                    prop_assert!(!key.contains(parent.as_str()));
                }
                prop_assert!(!key.contains(key.as_str()));
            }
            (Err(err), None) => {
                prop_assert_eq!(err.kind(), ErrorKind::InvalidKey);
                prop_assert_eq!(err.store(), STORE);
                prop_assert_eq!(err.key(), Some(raw.as_str()));
            }
            (got, expected) => prop_assert!(false, "{raw:?}: got {got:?}, the rules say {expected:?}"),
        }
    }

    #[test]
    fn join_is_parse_of_the_concatenation(parent in key_like(), child in key_like()) {
        if let Ok(parent) = Key::parse(STORE, &parent) {
            let joined = parent.join(STORE, &child);
            match Key::parse(STORE, &child) {
                Ok(child) => {
                    let joined = joined.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(joined.as_str(), format!("{}/{}", parent.as_str(), child.as_str()));
                    prop_assert!(parent.contains(joined.as_str()));
                }
                Err(_) => prop_assert_eq!(joined.map_err(|e| e.kind()).err(), Some(ErrorKind::InvalidKey)),
            }
        }
    }

    #[test]
    fn any_text_parses_as_a_url_or_fails_typed(url in any::<String>()) {
        match StoreUrl::parse(&url) {
            Ok(parsed) => {
                prop_assert!(!parsed.scheme.is_empty());
                let prefix = format!("{}://", parsed.scheme);
                prop_assert!(url.starts_with(&prefix), "{} does not start with {}", url, prefix);
                prop_assert!(parsed.endpoints.iter().all(|e| !e.is_empty()));
            }
            Err(err) => {
                prop_assert_eq!(err.kind(), ErrorKind::InvalidConfiguration);
                let names_url = matches!(&err, Error::InvalidConfiguration { field, .. } if field == "url");
                prop_assert!(names_url, "{:?} does not name the url", err);
            }
        }
    }

    #[test]
    fn built_urls_parse_back_to_their_parts(
        scheme in "[a-z][a-z0-9_-]{0,8}",
        hosts in prop::collection::vec("[a-z0-9.-]{1,10}(:[0-9]{1,5})?", 0..4),
        path in prop::option::of("[a-zA-Z0-9_./-]{1,20}"),
        params in prop::collection::vec(("[a-z_]{1,8}", any::<String>()), 0..4),
        user in prop::option::of(("[a-z]{1,6}", "\\PC{0,12}")),
    ) {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let userinfo = user.as_ref().map_or(String::new(), |(name, password)| {
            let password = percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC);
            format!("{name}:{password}@")
        });
        let path_part = path.as_ref().map_or(String::new(), |p| format!("/{p}"));
        let url = format!("{scheme}://{userinfo}{}{path_part}?{query}", hosts.join(","));
        let parsed = StoreUrl::parse(&url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        prop_assert_eq!(&parsed.scheme, &scheme);
        prop_assert_eq!(&parsed.endpoints, &hosts);
        let expected_path = path.as_deref().map(|p| {
            if hosts.is_empty() && userinfo.is_empty() { format!("/{p}") } else { p.to_owned() }
        });
        prop_assert_eq!(parsed.path, expected_path);
        let mut expected_params = params.clone();
        if let Some((name, password)) = &user {
            expected_params.push(("username".to_owned(), name.clone()));
            expected_params.push(("password".to_owned(), password.clone()));
        }
        prop_assert_eq!(&parsed.params, &expected_params);
    }

    #[test]
    fn passwords_never_reach_debug_output(password in "[a-zA-Z0-9]{12,24}") {
        let url = format!("redis://app:{password}@h1:6379/0?token={password}");
        let parsed = StoreUrl::parse(&url).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let debug = format!("{parsed:?} {:?}", StoreConfig::Params(parsed.params.clone()));
        prop_assert!(!debug.contains(&password), "{}", debug);
        let params: Vec<_> = parsed.params.into_iter().filter(|(name, _)| name != "token" && name != "username").collect();
        let config: Demo = from_params(STORE, &params).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(config.password.as_ref().map(Secret::expose), Some(password.as_str()));
        let debug = format!("{config:?}");
        prop_assert!(!debug.contains(&password), "{}", debug);
    }

    #[test]
    fn params_fill_the_config_or_name_the_parameter(
        mut params in prop::collection::vec((
            prop_oneof![
                Just("timeout".to_owned()), Just("size".to_owned()), Just("tls".to_owned()),
                Just("hosts".to_owned()), "[a-z]{1,6}",
            ],
            prop_oneof![
                "[0-9]{1,4}(ms|s)?", Just("true".to_owned()), Just("-1".to_owned()), any::<String>(),
            ],
        ), 0..6),
        password in prop::option::of(("[A-Za-z0-9]{16}", any::<prop::sample::Index>())),
    ) {
        if let Some((secret, at)) = &password {
            params.insert(at.index(params.len() + 1), ("password".to_owned(), secret.clone()));
        }
        let secret = password.map(|(secret, _)| secret);
        match from_params::<Demo>(STORE, &params) {
            Ok(config) => {
                prop_assert_eq!(config.password.as_ref().map(Secret::expose), secret.as_deref());
                let debug = format!("{config:?}");
                prop_assert!(secret.as_ref().is_none_or(|s| !debug.contains(s.as_str())), "{}", debug);
            }
            Err(err) => {
                prop_assert_eq!(err.kind(), ErrorKind::InvalidConfiguration);
                let Error::InvalidConfiguration { field, .. } = &err else {
                    return Err(TestCaseError::fail(format!("{err:?}")));
                };
                prop_assert!(
                    params.iter().any(|(name, _)| name == field),
                    "{} names no parameter of {:?}", err, params
                );
                let message = format!("{err} {err:?}");
                prop_assert!(secret.as_ref().is_none_or(|s| !message.contains(s.as_str())), "{}", message);
            }
        }
    }
}

/// Durations around `limit`: at it, a nanosecond either side, and anywhere up to
/// `Duration::MAX`, with `u64::MAX` milliseconds among them.
fn durations_around(limit: Duration) -> impl Strategy<Value = Duration> {
    let one = Duration::from_nanos(1);
    prop_oneof![
        Just(limit),
        Just(limit - one),
        Just(limit + one),
        Just(Duration::from_millis(u64::MAX)),
        Just(Duration::MAX),
        (0..=limit.as_secs() * 2, 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// Runs `future` to its end on a fresh runtime (proptest bodies are synchronous).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("a runtime: {e}"))
        .block_on(future)
}

/// Whether `err` is `InvalidConfiguration` naming `ttl`, with the key in its message.
fn names_ttl_and_key(err: &Error, key: &str) -> bool {
    matches!(err, Error::InvalidConfiguration { field, reason, .. } if field == "ttl" && reason.contains(key))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// A TTL up to `MAX_TTL` is written and read back; a longer one is refused naming `ttl`
    /// and the key, and nothing is written, on `put`, `atomic_put` and `new_lock`.
    #[test]
    fn ttls_are_honoured_up_to_the_maximum_and_refused_past_it(ttl in durations_around(MAX_TTL)) {
        let key = "limits/k";
        let (put, atomic, lock, read) = block_on(async {
            let store = MemoryStore::new();
            let opts = WriteOptions::with_ttl(ttl);
            let put = store.put(key, Bytes::from_static(b"v"), &opts).await;
            let atomic = store.atomic_put("limits/new", Bytes::from_static(b"v"), None, &opts).await;
            let lock = match store.new_lock("limits/lock", LockOptions::default().ttl(ttl)).await {
                Ok(locker) => {
                    let guard = locker.try_lock().await.map_err(|e| e.to_string())?.ok_or("the free lock was not taken")?;
                    guard.unlock().await.map_err(|e| e.to_string())?;
                    Ok(())
                }
                Err(err) => Err(err),
            };
            let read = store.get(key, &ReadOptions::default()).await;
            Ok::<_, String>((put, atomic, lock, read))
        }).map_err(TestCaseError::fail)?;
        if ttl <= MAX_TTL {
            prop_assert!(put.is_ok(), "{:?}", put);
            prop_assert!(atomic.is_ok(), "{:?}", atomic);
            prop_assert!(lock.is_ok(), "{:?}", lock.err());
            prop_assert_eq!(read.map(|pair| pair.value).ok(), Some(Bytes::from_static(b"v")));
        } else {
            prop_assert!(put.as_ref().is_err_and(|e| names_ttl_and_key(e, key)), "{:?}", put);
            prop_assert!(atomic.as_ref().is_err_and(|e| names_ttl_and_key(e, "limits/new")), "{:?}", atomic);
            prop_assert!(lock.as_ref().is_err_and(|e| names_ttl_and_key(e, "limits/lock")), "{:?}", lock.err());
            prop_assert_eq!(read.map_err(|e| e.kind()).err(), Some(ErrorKind::KeyNotFound));
        }
    }

    /// Any index, up to `i64::MAX` and `u64::MAX`, that the key does not have fails an
    /// atomic call as `KeyModified` and leaves the value alone.
    #[test]
    fn indexes_no_key_has_fail_as_modified(index in prop_oneof![
        Just(u64::MAX), Just(i64::MAX.unsigned_abs()), Just(i64::MAX.unsigned_abs() + 1), any::<u64>(),
    ]) {
        let outcome = block_on(async {
            let store = MemoryStore::new();
            store.put("limits/k", Bytes::from_static(b"v"), &WriteOptions::default()).await?;
            let current = store.get("limits/k", &ReadOptions::default()).await?;
            let previous = KvPair::new("limits/k", "v", index);
            let put = store.atomic_put("limits/k", Bytes::from_static(b"w"), Some(&previous), &WriteOptions::default()).await;
            let delete = store.atomic_delete("limits/k", &previous).await;
            let after = store.get("limits/k", &ReadOptions::default()).await?;
            Ok::<_, Error>((current, put.map(|_| ()), delete, after))
        });
        let (current, put, delete, after) = outcome.map_err(|e| TestCaseError::fail(e.to_string()))?;
        if index != current.last_index {
            prop_assert_eq!(put.map_err(|e| e.kind()), Err(ErrorKind::KeyModified));
            prop_assert_eq!(delete.map_err(|e| e.kind()), Err(ErrorKind::KeyModified));
            prop_assert_eq!(after, current);
        }
    }

    /// A config duration is accepted up to `MAX_CONFIG_DURATION` and refused past it,
    /// naming the field; as URL text, humantime's reading reaches the check or the text is
    /// refused naming the field (`584000000000y` overflows humantime).
    #[test]
    fn config_durations_are_bounded(
        duration in durations_around(MAX_CONFIG_DURATION),
        text in prop_oneof!["[0-9]{1,22} ?(ns|us|ms|s|m|h|d|w|M|y)", Just("584000000000y".to_owned())],
    ) {
        match check_duration(STORE, "timeout", duration) {
            Ok(()) => prop_assert!(duration <= MAX_CONFIG_DURATION),
            Err(err) => {
                prop_assert!(duration > MAX_CONFIG_DURATION);
                let named = matches!(&err, Error::InvalidConfiguration { field, .. } if field == "timeout");
                prop_assert!(named, "{:?}", err);
            }
        }
        let url = StoreUrl::parse(&format!("prop://h/?timeout={}", text.replace(' ', "+")))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        match (from_params::<Demo>(STORE, &url.params), humantime::parse_duration(&text)) {
            (Ok(config), Ok(expected)) => {
                prop_assert_eq!(config.timeout, Some(expected));
                prop_assert_eq!(check_duration(STORE, "timeout", expected).is_ok(), expected <= MAX_CONFIG_DURATION);
            }
            (Err(err), Err(_)) => {
                let named = matches!(&err, Error::InvalidConfiguration { field, .. } if field == "timeout");
                prop_assert!(named, "{:?}", err);
            }
            (got, expected) => prop_assert!(false, "{:?}: config {:?}, humantime {:?}", text, got, expected),
        }
    }
}

/// Texts of several humantime pieces, with numbers up to and past `u64::MAX`.
fn duration_text() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        Just(u64::MAX.to_string()),
        Just("1000000000".to_owned()),
        Just("999999999".to_owned()),
        "[0-9]{1,25}",
    ];
    let unit = prop_oneof![
        Just("ns"),
        Just("us"),
        Just("ms"),
        Just("s"),
        Just("m"),
        Just("h"),
        Just("d"),
        Just("w"),
        Just("M"),
        Just("y"),
        Just("nanos"),
        Just("years"),
        Just("x"),
    ];
    prop::collection::vec((number, unit), 1..4).prop_map(|pieces| {
        pieces
            .iter()
            .map(|(n, u)| format!("{n}{u}"))
            .collect::<Vec<_>>()
            .join(" ")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

    /// `config::duration::parse` reads what humantime reads, and refuses only what humantime
    /// refuses, panics on, or reads as longer than any config accepts.
    #[test]
    fn duration_parse_agrees_with_humantime_without_its_panics(text in duration_text()) {
        let ours = duration::parse(&text);
        let theirs = std::panic::catch_unwind(|| humantime::parse_duration(&text));
        match (&ours, theirs) {
            (Ok(d), Ok(Ok(h))) => prop_assert_eq!(*d, h),
            (Err(_), Ok(Err(_)) | Err(_)) => {}
            (Err(_), Ok(Ok(h))) => prop_assert!(h > MAX_CONFIG_DURATION, "{:?} refused, humantime reads {:?}", text, h),
            (Ok(d), theirs) => prop_assert!(false, "{:?}: ours {:?}, humantime {:?}", text, d, theirs.map(|r| r.is_ok())),
        }
    }
}

/// A config with one field of each kind a backend has.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Demo {
    #[serde(with = "humantime_serde")]
    timeout: Option<Duration>,
    size: u32,
    tls: bool,
    password: Option<Secret>,
    hosts: Vec<String>,
}

impl BackendConfig for Demo {
    const STORE: &'static str = STORE;
}
