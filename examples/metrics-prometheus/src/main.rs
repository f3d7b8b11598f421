//! valkeyrie's `MetricsLayer` exported for Prometheus: a handle on the embedded store with
//! the metrics layer (and a retry layer under it), some calls, then the Prometheus text a
//! scrape would get, with a latency histogram per store and call.
//!
//! Run it with `cargo run -p valkeyrie-example-metrics-prometheus`.
#![allow(clippy::print_stdout)] // An example talks to its reader.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use valkeyrie::layers::{MetricsLayer, RetryLayer};

/// Latency buckets in seconds, from 50 µs to 1 s: embedded calls take microseconds,
/// networked ones milliseconds.
const BUCKETS: &[f64] = &[0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Histograms, not summaries: buckets aggregate across instances.
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("valkeyrie_call_duration_seconds".into()), BUCKETS)?
        .install_recorder()?;

    let dir = tempfile::tempdir()?;
    let kv = valkeyrie::open(&format!("boltlike://{}", dir.path().join("kv.db").display()))
        .await?
        .layer(RetryLayer::new())
        .layer(MetricsLayer::new());

    for n in 0..100 {
        kv.put(&format!("jobs/{n:03}"), "queued").await?;
    }
    for n in 0..150 {
        kv.get(&format!("jobs/{n:03}")).await?;
    }
    kv.list("jobs").await?;
    let guard = kv.lock("jobs/lock").value("example").await?;
    guard.unlock().await?;
    kv.close().await?;

    print!("{}", prometheus.render());
    Ok(())
}
