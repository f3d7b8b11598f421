//! Each layer over the memory store, with failures injected by a layer below it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

use super::*;
use crate::error::{Error, ErrorKind, ErrorStatus};
use crate::handle::Kv;
use crate::raw::local::MemoryStore;

/// Fails the first `failures` attempts of each call with the error `fail` makes, and
/// records every attempt's call name.
#[derive(Clone)]
struct Flaky {
    failures: usize,
    fail: fn(&Call<'_>) -> Error,
    attempts: Arc<Mutex<Vec<&'static str>>>,
}

impl Flaky {
    fn new(failures: usize, fail: fn(&Call<'_>) -> Error) -> Self {
        Flaky {
            failures,
            fail,
            attempts: Arc::default(),
        }
    }

    fn attempts(&self) -> Vec<&'static str> {
        self.attempts.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.attempts.lock().unwrap().clear();
    }
}

impl Intercept for Flaky {
    async fn intercept<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: Next<'a, T>) -> Result<T> {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.push(call.name);
            attempts.iter().filter(|name| **name == call.name).count()
        };
        if attempt <= self.failures {
            return Err((self.fail)(&call));
        }
        next.run().await
    }
}

fn unreachable(call: &Call<'_>) -> Error {
    Error::not_reachable(call.store, call.key, "connection refused")
}

fn timed_out(call: &Call<'_>) -> Error {
    Error::timeout(call.store, call.key, Duration::from_secs(1))
}

fn memory() -> Kv {
    Kv::new(MemoryStore::new())
}

#[tokio::test(start_paused = true)]
async fn retry_retries_reads_and_unsent_writes() {
    let flaky = Flaky::new(2, unreachable);
    let kv = memory().layer(flaky.clone()).layer(RetryLayer::new());
    kv.put("k", "v").await.unwrap();
    assert_eq!(flaky.attempts(), ["put"; 3]);
    flaky.clear();
    assert_eq!(kv.get("k").await.unwrap().unwrap().value, "v");
    assert_eq!(flaky.attempts(), ["get"; 3]);
    flaky.clear();
    let mut events = kv.watch("k").await.unwrap();
    assert!(events.next().await.unwrap().is_ok());
    assert_eq!(flaky.attempts(), ["watch"; 3]);
    flaky.clear();
    kv.put("d/k", "v").await.unwrap();
    flaky.clear();
    let listed: Vec<_> = kv.list("d").stream().collect().await;
    assert!(matches!(&listed[..], [Ok(pair)] if pair.key == "d/k"), "{listed:?}");
    assert_eq!(flaky.attempts(), ["list_stream"; 3]);
}

#[tokio::test(start_paused = true)]
async fn retry_returns_a_write_that_may_have_been_applied() {
    let flaky = Flaky::new(1, timed_out);
    let kv = memory().layer(flaky.clone()).layer(RetryLayer::new());
    let err = kv.put("k", "v").await.unwrap_err();
    assert_eq!((err.kind(), err.status()), (ErrorKind::Timeout, ErrorStatus::Temporary));
    assert_eq!(flaky.attempts(), ["put"], "never sent twice");
    assert_eq!(
        kv.get("k").await.unwrap(),
        None,
        "the read is retried, the write was not"
    );
    assert_eq!(flaky.attempts(), ["put", "get", "get"]);
}

#[tokio::test(start_paused = true)]
async fn retry_gives_up_persistent_and_leaves_permanent_errors_alone() {
    let flaky = Flaky::new(usize::MAX, unreachable);
    let kv = memory().layer(flaky.clone()).layer(RetryLayer::new().max_attempts(3));
    let started = tokio::time::Instant::now();
    let err = kv.get("k").await.unwrap_err();
    assert_eq!(err.status(), ErrorStatus::Persistent, "{err}");
    assert_eq!(flaky.attempts().len(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it waited between attempts"
    );

    let flaky = Flaky::new(usize::MAX, unreachable);
    let kv = memory()
        .layer(flaky.clone())
        .layer(RetryLayer::new().max_elapsed(Duration::from_millis(150)));
    assert_eq!(kv.get("k").await.unwrap_err().status(), ErrorStatus::Persistent);
    assert!(flaky.attempts().len() < 4, "bounded by time: {:?}", flaky.attempts());

    let flaky = Flaky::new(0, unreachable);
    let kv = memory().layer(flaky.clone()).layer(RetryLayer::new());
    kv.put("k", "v").await.unwrap();
    flaky.clear();
    let err = kv.put("k", "w").if_absent().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyExists);
    assert_eq!(flaky.attempts(), ["atomic_put"]);
}

#[tokio::test(start_paused = true)]
async fn retry_never_retries_a_lock_wait() {
    let kv = memory().layer(RetryLayer::new());
    let held = kv.lock("l").await.unwrap();
    let err = kv.lock("l").timeout(Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    held.unlock().await.unwrap();
}

/// Takes `delay` before each call.
#[derive(Clone)]
struct Slow {
    delay: Duration,
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Slow {
    fn new(delay: Duration) -> Self {
        Slow {
            delay,
            in_flight: Arc::default(),
            most: Arc::default(),
        }
    }
}

impl Intercept for Slow {
    async fn intercept<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: Next<'a, T>) -> Result<T> {
        let _ = call;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let result = next.run().await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

#[tokio::test(start_paused = true)]
async fn timeout_bounds_each_call_but_not_a_lock_wait() {
    let kv = memory()
        .layer(Slow::new(Duration::from_secs(5)))
        .layer(TimeoutLayer::new(Duration::from_secs(1)));
    let err = kv.get("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.to_string(), "memory: get on \"k\" timed out after 1s");

    let kv = memory().layer(TimeoutLayer::new(Duration::from_millis(100)));
    let held = kv.lock("l").await.unwrap();
    let waiting = tokio::spawn({
        let kv = kv.clone();
        async move { kv.lock("l").await.map(drop) }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    held.unlock().await.unwrap();
    waiting.await.unwrap().expect("the wait outlived the call timeout");
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_holds_calls_in_flight_not_open_streams() {
    let slow = Slow::new(Duration::from_millis(10));
    let kv = memory().layer(slow.clone()).layer(ConcurrencyLimitLayer::new(2));
    let calls = (0..10).map(|n| {
        let kv = kv.clone();
        tokio::spawn(async move { kv.put(&format!("k{n}"), "v").await })
    });
    for call in futures_util::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    assert_eq!(slow.most.load(Ordering::SeqCst), 2);

    let kv = memory().layer(ConcurrencyLimitLayer::new(1));
    let _watch = kv.watch("k").await.unwrap();
    let mut pages = kv.list("d").stream();
    assert!(pages.next().await.is_none());
    kv.get("k").await.expect("an open stream holds no permit");
}

#[tokio::test]
async fn a_layer_is_per_handle_and_the_store_is_shared() {
    let flaky = Flaky::new(0, unreachable);
    let plain = memory();
    let layered = plain.clone().layer(flaky.clone());
    plain.put("k", "v").await.unwrap();
    assert_eq!(flaky.attempts(), Vec::<&str>::new());
    assert!(layered.exists("k").await.unwrap());
    assert_eq!(flaky.attempts(), ["exists"]);
    layered.close().await.unwrap();
    assert_eq!(plain.get("k").await.unwrap_err().kind(), ErrorKind::Closed);
}

#[cfg(feature = "metrics")]
#[tokio::test]
async fn metrics_count_time_and_classify_calls_by_store_and_call() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = ::metrics::set_default_local_recorder(&recorder);
    let kv = memory().layer(MetricsLayer::new());
    kv.put("k", "v").await.unwrap();
    kv.get("k").await.unwrap();
    assert_eq!(kv.get("missing").await.unwrap(), None);
    let _ = kv.put("k", "w").if_absent().await.unwrap_err();

    let mut seen = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        labels.sort();
        let value = match value {
            DebugValue::Counter(n) => n.to_string(),
            DebugValue::Histogram(samples) => format!("{} samples", samples.len()),
            DebugValue::Gauge(g) => g.to_string(),
        };
        seen.push(format!("{} {} {value}", key.name(), labels.join(",")));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "valkeyrie_call_duration_seconds call=atomic_put,store=memory 1 samples",
            "valkeyrie_call_duration_seconds call=get,store=memory 2 samples",
            "valkeyrie_call_duration_seconds call=put,store=memory 1 samples",
            "valkeyrie_calls_total call=atomic_put,store=memory 1",
            "valkeyrie_calls_total call=get,store=memory 2",
            "valkeyrie_calls_total call=put,store=memory 1",
            "valkeyrie_errors_total call=atomic_put,kind=key_exists,store=memory 1",
            "valkeyrie_errors_total call=get,kind=key_not_found,store=memory 1",
        ]
    );
}
