//! How `keep_alive` writes scale on one handle: many keys kept alive at once, measured by
//! what they cost (tasks, renewal requests, memory) and whether every key stays alive. A
//! measurement of valkeyrie alone: the raw clients have no keep-alive to compare with.
//!
//! Renewal requests are counted from the trace event the lock-holding driver emits for
//! each renewal it sends (target `valkeyrie::renewal`), by a tracing layer that enables
//! nothing else, so the other workloads run as they would without it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use serde::Serialize;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use valkeyrie::Kv;

use crate::driver::BenchResult;
use crate::memory;

/// Keys written at once while the keys are set up.
const CONCURRENCY: usize = 64;

/// The shortest TTL the measurement uses (a backend's `min_ttl` may be longer).
const TTL: Duration = Duration::from_secs(10);

/// Renewal requests sent by every store handle of the process.
static RENEWALS: AtomicU64 = AtomicU64::new(0);

/// Counts the driver's renewal events; enables no other span or event.
struct RenewalCounter;

impl<S: tracing::Subscriber> Layer<S> for RenewalCounter {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        metadata.target() == "valkeyrie::renewal"
    }

    fn on_event(&self, _event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        RENEWALS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Installs the renewal counter as the process's subscriber; once, before any store opens.
pub(crate) fn count_renewals() -> BenchResult<()> {
    let subscriber = tracing_subscriber::registry().with(RenewalCounter);
    tracing::subscriber::set_global_default(subscriber).map_err(|e| format!("the renewal counter: {e}"))
}

/// What keeping `keys` keys alive on one handle cost.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KeepAliveScale {
    /// The backend.
    pub(crate) backend: &'static str,
    /// Keys kept alive at once.
    pub(crate) keys: usize,
    /// Their TTL.
    pub(crate) ttl: Duration,
    /// Tasks of the runtime that the keep-alives added (the handle's driver).
    pub(crate) tasks: i64,
    /// What the handle reports as background work (one per key kept alive).
    pub(crate) background_work: usize,
    /// Renewal requests per second while they were kept alive.
    pub(crate) renewals_per_sec: f64,
    /// Resident memory the keep-alives added, in MiB.
    pub(crate) rss_mib: f64,
    /// Keys still there after twice their TTL.
    pub(crate) alive: usize,
}

/// Writes `keys` keys with `keep_alive` below `dir`, waits twice their TTL, and measures.
pub(crate) async fn measure(backend: &'static str, kv: &Kv, dir: &str, keys: usize) -> BenchResult<KeepAliveScale> {
    let ttl = TTL.max(kv.capabilities().min_ttl);
    // Plain writes first, as many at once as below, so the connections they open (and
    // their tasks) are there before counting.
    put_all(kv, &format!("{dir}/warm-up"), CONCURRENCY, None).await?;
    let runtime = tokio::runtime::Handle::current().metrics();
    let (tasks_before, rss_before) = (runtime.num_alive_tasks(), memory::current_kib());
    put_all(kv, dir, keys, Some(ttl)).await?;
    let renewals_before = RENEWALS.load(Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(ttl * 2).await;
    let renewals = RENEWALS.load(Ordering::Relaxed) - renewals_before;
    let renewals_per_sec = renewals as f64 / window.elapsed().as_secs_f64();
    let tasks =
        i64::try_from(runtime.num_alive_tasks()).unwrap_or(i64::MAX) - i64::try_from(tasks_before).unwrap_or(i64::MAX);
    let background_work = kv.background_tasks();
    let rss_mib = memory::current_kib().saturating_sub(rss_before) as f64 / 1024.0;
    let alive = kv
        .list(dir)
        .await
        .map_err(|e| format!("list {dir}: {e}"))?
        .iter()
        .filter(|pair| !pair.key.contains("/warm-up/"))
        .count();
    Ok(KeepAliveScale {
        backend,
        keys,
        ttl,
        tasks,
        background_work,
        renewals_per_sec,
        rss_mib,
        alive,
    })
}

/// Writes `count` keys below `dir`, [`CONCURRENCY`] at a time; with `keep_alive`, keys of
/// that TTL kept alive by the handle.
async fn put_all(kv: &Kv, dir: &str, count: usize, keep_alive: Option<Duration>) -> BenchResult<()> {
    stream::iter(0..count)
        .map(|i| {
            let key = format!("{dir}/{i:05}");
            async move {
                let put = kv.put(&key, Bytes::from_static(b"alive"));
                let put = match keep_alive {
                    Some(ttl) => put.ttl(ttl).keep_alive(),
                    None => put,
                };
                put.await.map_err(|e| format!("put {key}: {e}"))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

impl KeepAliveScale {
    /// One row of the report's keep-alive table.
    pub(crate) fn row(&self) -> String {
        format!(
            "| {} | {} | {:?} | {} | {} | {:.1} | {:.1} | {} |\n",
            self.backend,
            self.keys,
            self.ttl,
            self.tasks,
            self.background_work,
            self.renewals_per_sec,
            self.rss_mib,
            self.alive
        )
    }
}
