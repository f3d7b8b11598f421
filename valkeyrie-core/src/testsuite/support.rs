//! Helpers shared by the conformance cases: a per-case key prefix and assertions.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;

use super::TestTarget;
use crate::error::{ErrorKind, Result};
use crate::kv::{KvPair, ReadOptions, WriteOptions};
use crate::store::Store;
use crate::watch::{WatchEvent, WatchStream};

/// How long a watch may take to deliver one event before the case fails.
pub(crate) const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// One running case: a handle on the store and a key prefix nobody else uses.
pub struct Case<'t> {
    /// The target the case runs on.
    pub target: &'t dyn TestTarget,
    /// The case's first handle.
    pub store: Arc<dyn Store>,
    prefix: String,
}

impl<'t> Case<'t> {
    /// Opens a handle and picks a prefix unique to this case, process and moment.
    pub async fn start(target: &'t dyn TestTarget, name: &str) -> Case<'t> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let prefix = target.case_prefix(&format!("{name}-{}-{nanos}", std::process::id()));
        Case {
            target,
            store: target.open().await,
            prefix,
        }
    }

    /// The case's key for `relative` (`"a/b"` → `"vk-conformance/<case>-…/a/b"`).
    pub fn key(&self, relative: &str) -> String {
        if relative.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }

    /// A TTL the backend honours and a case can wait for: one second, or the backend's
    /// minimum when larger.
    pub fn ttl(&self) -> Duration {
        self.store.capabilities().min_ttl.max(Duration::from_secs(1))
    }

    /// Deletes everything the case wrote and closes its handle.
    pub async fn finish(self) {
        match self.store.delete_tree(&self.prefix).await {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::KeyNotFound => {}
            Err(err) => panic!("cleanup of {} failed: {err}", self.prefix),
        }
        ok(self.store.close().await, "close");
    }
}

/// Unwraps `result`, failing the case with `what` and the error.
#[track_caller]
pub(crate) fn ok<T>(result: Result<T>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{what}: unexpected error: {err}"),
    }
}

/// Asserts that `result` is an error of `kind` that names the store.
#[track_caller]
pub(crate) fn fails<T: Debug>(result: Result<T>, kind: ErrorKind, what: &str) {
    match result {
        Ok(value) => panic!("{what}: expected {kind:?}, got Ok({value:?})"),
        Err(err) => {
            assert_eq!(err.kind(), kind, "{what}: expected {kind:?}, got {err}");
            assert!(!err.store().is_empty(), "{what}: the error names no store: {err}");
        }
    }
}

/// Writes `value` at `key` without options.
pub(crate) async fn put(store: &dyn Store, key: &str, value: &str) {
    ok(
        store
            .put(key, Bytes::copy_from_slice(value.as_bytes()), &WriteOptions::default())
            .await,
        &format!("put {key}"),
    );
}

/// Reads `key` with default options.
pub(crate) async fn get(store: &dyn Store, key: &str) -> KvPair {
    ok(store.get(key, &ReadOptions::default()).await, &format!("get {key}"))
}

/// Reads `key`, `None` when not found.
pub(crate) async fn get_opt(store: &dyn Store, key: &str) -> Option<KvPair> {
    match store.get(key, &ReadOptions::default()).await {
        Ok(pair) => Some(pair),
        Err(err) if err.kind() == ErrorKind::KeyNotFound => None,
        Err(err) => panic!("get {key}: unexpected error: {err}"),
    }
}

/// The next item of a watch, failing the case on an error, the end of the stream or a
/// timeout.
pub(crate) async fn next_event(stream: &mut WatchStream, what: &str) -> WatchEvent {
    next_event_within(stream, what, EVENT_TIMEOUT).await
}

/// Like [`next_event`], waiting up to `within`: for events a TTL brings.
pub(crate) async fn next_event_within(stream: &mut WatchStream, what: &str, within: Duration) -> WatchEvent {
    match tokio::time::timeout(within, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(err))) => panic!("{what}: the watch failed: {err}"),
        Ok(None) => panic!("{what}: the watch ended"),
        Err(_) => panic!("{what}: no event within {within:?}"),
    }
}

/// The next event that is not a resync snapshot equal to what the consumer already knows;
/// backends may resend a snapshot at any time.
pub(crate) async fn next_change(stream: &mut WatchStream, what: &str) -> WatchEvent {
    next_change_within(stream, what, EVENT_TIMEOUT).await
}

/// Like [`next_change`], each event waited for up to `within`.
pub(crate) async fn next_change_within(stream: &mut WatchStream, what: &str, within: Duration) -> WatchEvent {
    loop {
        match next_event_within(stream, what, within).await {
            WatchEvent::Snapshot(_) => continue,
            event => return event,
        }
    }
}

/// Polls `check` until it returns `true`, failing with `what` after `within`.
pub(crate) async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not true within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The keys of `pairs`, relative to the case prefix.
pub(crate) fn relative_keys(case: &Case<'_>, pairs: &[KvPair]) -> Vec<String> {
    let prefix = case.key("");
    pairs
        .iter()
        .map(|p| {
            p.key
                .strip_prefix(&prefix)
                .map_or(p.key.clone(), |k| k.trim_start_matches('/').to_owned())
        })
        .collect()
}
