//! [`MetricsLayer`]: counts, latencies and errors of every call, through the `metrics` facade.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use metrics::{Counter, Histogram};
use tokio::time::Instant;

use super::{Call, Intercept, Next};
use crate::error::Result;

/// Calls made, by store and call.
const CALLS: &str = "valkeyrie_calls_total";
/// Call latencies in seconds, by store and call.
const DURATION: &str = "valkeyrie_call_duration_seconds";
/// Failed calls, by store, call and error kind.
const ERRORS: &str = "valkeyrie_errors_total";

/// Records every call it sees into the [`metrics`] facade (feature `metrics`), for whatever
/// exporter the application installed (Prometheus, StatsD, …); with none installed it
/// costs a few atomic loads per call.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `valkeyrie_calls_total` | counter | `store`, `call` |
/// | `valkeyrie_call_duration_seconds` | histogram | `store`, `call` |
/// | `valkeyrie_errors_total` | counter | `store`, `call`, `kind` |
///
/// `call` is the [`Store`](crate::Store) method (`get`, `put`, `watch_tree`, …) and `kind`
/// the [`ErrorKind::as_str`](crate::ErrorKind::as_str) of the error (`timeout`,
/// `not_reachable`, …). Keys are never labels: their number has no bound. A `get` of an
/// absent key counts as an error of kind `key_not_found`, which the handle answers as
/// `None`.
///
/// Placed outermost, it measures what the application waits for, retries included; placed
/// below a [`RetryLayer`](super::RetryLayer), each attempt.
///
/// It registers each store and call's counter and histogram with the recorder on that
/// call's first use and keeps the handles (what the `metrics` crate recommends: a lookup by
/// labels costs more than the recording), so install the recorder before the first call.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    handles: Arc<RwLock<HashMap<(&'static str, &'static str), CallMetrics>>>,
}

/// The registered metrics of one store and call.
#[derive(Debug, Clone)]
struct CallMetrics {
    calls: Counter,
    duration: Histogram,
}

impl CallMetrics {
    fn register(store: &'static str, call: &'static str) -> Self {
        let labels = [("store", store), ("call", call)];
        CallMetrics {
            calls: metrics::counter!(CALLS, &labels),
            duration: metrics::histogram!(DURATION, &labels),
        }
    }
}

impl MetricsLayer {
    /// Records into the global recorder, and describes the three metrics to it (a recorder
    /// installed later gets no descriptions, only the values).
    pub fn new() -> Self {
        metrics::describe_counter!(CALLS, "Calls made, by store and call.");
        metrics::describe_histogram!(DURATION, metrics::Unit::Seconds, "Call latencies, by store and call.");
        metrics::describe_counter!(ERRORS, "Failed calls, by store, call and error kind.");
        MetricsLayer {
            handles: Arc::default(),
        }
    }

    /// The handles of `call`, registered on first use.
    fn of(&self, call: &Call<'_>) -> CallMetrics {
        let id = (call.store, call.name);
        let known = self
            .handles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        known.unwrap_or_else(|| {
            let mut handles = self.handles.write().unwrap_or_else(PoisonError::into_inner);
            handles
                .entry(id)
                .or_insert_with(|| CallMetrics::register(call.store, call.name))
                .clone()
        })
    }
}

impl Default for MetricsLayer {
    fn default() -> Self {
        MetricsLayer::new()
    }
}

impl Intercept for MetricsLayer {
    async fn intercept<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: Next<'a, T>) -> Result<T> {
        let handles = self.of(&call);
        handles.calls.increment(1);
        let started = Instant::now();
        let result = next.run().await;
        handles.duration.record(started.elapsed().as_secs_f64());
        if let Err(err) = &result {
            let labels = [
                ("store", call.store),
                ("call", call.name),
                ("kind", err.kind().as_str()),
            ];
            metrics::counter!(ERRORS, &labels).increment(1);
        }
        result
    }
}
