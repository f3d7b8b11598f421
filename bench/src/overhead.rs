//! `--overhead`: what the handle and its layers cost per call, measured where calls are
//! cheapest (the memory store, no I/O), so that nothing hides the difference.
//!
//! Each round makes [`CALLS`] sequential `get`s of one existing key through each path in
//! turn (`dyn Store`, then the handle without layers, then with layers), so that a noisy
//! moment of this shared machine lands on every path alike; the table holds each path's
//! median over the rounds and its difference from `dyn Store`'s median.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;
use valkeyrie::layers::{MetricsLayer, RetryLayer};
use valkeyrie::{Kv, MemoryStore, ReadOptions, Store};

use crate::driver::BenchResult;

/// `get`s per path and round.
pub(crate) const CALLS: u32 = 1_000_000;

/// The key every call reads.
const KEY: &str = "bench/overhead/key";

/// One way of calling `get`.
enum CallPath {
    Dyn(Arc<dyn Store>),
    Handle(Kv),
}

impl CallPath {
    /// Nanoseconds per call over `calls` calls.
    async fn time(&self, calls: u32) -> BenchResult<f64> {
        let read = ReadOptions::default();
        let started = Instant::now();
        for _ in 0..calls {
            let found = match self {
                CallPath::Dyn(store) => store.get(KEY, &read).await.is_ok(),
                CallPath::Handle(kv) => kv.get(KEY).await.map_err(|e| e.to_string())?.is_some(),
            };
            if !found {
                return Err(format!("{KEY} is missing"));
            }
        }
        Ok(per_call(started.elapsed(), calls))
    }
}

fn per_call(elapsed: Duration, calls: u32) -> f64 {
    elapsed.as_secs_f64() * 1e9 / f64::from(calls)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Runs `rounds` rounds, prints the table and writes it to `out/overhead.md`.
pub(crate) async fn run(rounds: usize, out: &Path) -> BenchResult<()> {
    // What an application exporting metrics runs: a recorder that keeps histograms.
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("a metrics recorder: {e}"))?;
    let kv = Kv::new(MemoryStore::new());
    kv.put(KEY, "value").await.map_err(|e| e.to_string())?;
    let paths = [
        ("`dyn Store`", CallPath::Dyn(Arc::clone(kv.store()))),
        ("`Kv`, no layers", CallPath::Handle(kv.clone())),
        (
            "`Kv` + `RetryLayer`",
            CallPath::Handle(kv.clone().layer(RetryLayer::new())),
        ),
        (
            "`Kv` + `MetricsLayer`",
            CallPath::Handle(kv.clone().layer(MetricsLayer::new())),
        ),
        (
            "`Kv` + `RetryLayer` + `MetricsLayer`",
            CallPath::Handle(kv.clone().layer(RetryLayer::new()).layer(MetricsLayer::new())),
        ),
    ];
    for (_, path) in &paths {
        path.time(CALLS / 10).await?;
    }
    let mut samples = vec![Vec::with_capacity(rounds); paths.len()];
    for round in 0..rounds {
        for ((name, path), samples) in paths.iter().zip(&mut samples) {
            let ns = path.time(CALLS).await?;
            println!("  round {round}: {name}: {ns:.1} ns/call");
            samples.push(ns);
        }
    }
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let mut table = format!(
        "| {CALLS} `get`s of one key on the memory store, median of {rounds} rounds | ns per call | added to `dyn Store` |\n|---|---:|---:|\n"
    );
    for ((name, _), ns) in paths.iter().zip(&medians) {
        // Writing to a String cannot fail.
        let _ = writeln!(table, "| {name} | {ns:.1} | {:+.1} |", ns - medians[0]);
    }
    println!("{table}");
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let file = out.join("overhead.md");
    std::fs::write(&file, &table).map_err(|e| format!("{}: {e}", file.display()))?;
    println!("bench: wrote {}", file.display());
    Ok(())
}
