//! Turns measured pairs into the report: a markdown table on stdout and in
//! `results.md`, every figure in `results.json`, and `ratios.svg`, the heatmap of every
//! throughput ratio ([`heatmap`]).

use std::path::Path;

use serde::Serialize;

use crate::driver::BenchResult;
use crate::heatmap::{self, Ratio};
use crate::keep_alive::KeepAliveScale;
use crate::workload::{Kind, Sample, Scale, Workload, WORKLOADS};

/// One side's figures: medians over the measured rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Side {
    /// Operations per second.
    pub(crate) ops_per_sec: f64,
    /// Median latency, in microseconds.
    pub(crate) p50_us: f64,
    /// 99th percentile latency, in microseconds.
    pub(crate) p99_us: f64,
    /// 99.9th percentile latency, in microseconds.
    pub(crate) p999_us: f64,
    /// Peak resident memory of the process during a run, in MiB.
    pub(crate) peak_rss_mib: f64,
    /// How far the peak rose above the resident size at the start of a run, in MiB.
    pub(crate) rss_growth_mib: f64,
    /// For `list`: the heap a listing held at its peak above its start, in MiB.
    pub(crate) heap_growth_mib: f64,
}

/// One workload on one backend, both sides and their ratios.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Comparison {
    /// The backend.
    pub(crate) backend: &'static str,
    /// The workload.
    pub(crate) workload: Workload,
    /// Through valkeyrie.
    pub(crate) valkeyrie: Side,
    /// Through the raw client.
    pub(crate) raw: Side,
    /// Median over rounds of valkeyrie's throughput divided by raw's (1.0 = equal, higher is better).
    pub(crate) throughput_ratio: f64,
    /// Median over rounds of valkeyrie's p99 divided by raw's (1.0 = equal, lower is better).
    pub(crate) p99_ratio: f64,
    /// For `list`: the heap a listing through valkeyrie held at its peak, over the size of
    /// the listed values.
    pub(crate) list_memory_over_data: Option<f64>,
    /// For `list`: the same through the raw client.
    pub(crate) raw_list_memory_over_data: Option<f64>,
    /// Through a second raw client, where the bench has one for the backend.
    pub(crate) second_raw: Option<SecondRaw>,
    /// Through the Go library (`--with-go`), where it has the backend.
    pub(crate) go: Option<Side>,
    /// Median over rounds of valkeyrie's throughput divided by the Go library's.
    pub(crate) go_throughput_ratio: Option<f64>,
    /// Median over rounds of valkeyrie's p99 divided by the Go library's.
    pub(crate) go_p99_ratio: Option<f64>,
}

/// The raw recipes through a second client crate (redis-rs for Redis): how much of the raw
/// side's figure is its client's.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SecondRaw {
    /// The client crate.
    pub(crate) client: &'static str,
    /// Through it.
    pub(crate) side: Side,
    /// Median over rounds of the raw side's throughput divided by this client's.
    pub(crate) raw_throughput_ratio: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn micros(sample: &Sample, q: f64) -> f64 {
    sample.percentile(q).as_secs_f64() * 1e6
}

fn side(samples: &[&Sample]) -> Side {
    let of = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(|s| f(s)).collect());
    Side {
        ops_per_sec: of(&|s| s.throughput()),
        p50_us: of(&|s| micros(s, 0.5)),
        p99_us: of(&|s| micros(s, 0.99)),
        p999_us: of(&|s| micros(s, 0.999)),
        peak_rss_mib: of(&|s| s.peak_rss_kib as f64 / 1024.0),
        rss_growth_mib: of(&|s| s.peak_rss_kib.saturating_sub(s.start_rss_kib) as f64 / 1024.0),
        heap_growth_mib: of(&|s| s.peak_heap_growth as f64 / (1024.0 * 1024.0)),
    }
}

impl Comparison {
    /// The comparison of measured `(valkeyrie, raw)` pairs and, from the same rounds, a
    /// second raw client's samples and the Go library's (empty without `--with-go`).
    pub(crate) fn new(
        backend: &'static str,
        workload: Workload,
        pairs: Vec<(Sample, Sample)>,
        second: Option<(&'static str, Vec<Sample>)>,
        go: Vec<Sample>,
    ) -> Self {
        let throughput_ratio = median(
            pairs
                .iter()
                .map(|(v, r)| v.throughput() / r.throughput().max(1e-9))
                .collect(),
        );
        let p99_ratio = median(
            pairs
                .iter()
                .map(|(v, r)| micros(v, 0.99) / micros(r, 0.99).max(1e-3))
                .collect(),
        );
        let against_go = |f: &dyn Fn(&Sample, &Sample) -> f64| {
            (!go.is_empty()).then(|| median(pairs.iter().zip(&go).map(|((v, _), g)| f(v, g)).collect()))
        };
        let go_throughput_ratio = against_go(&|v, g| v.throughput() / g.throughput().max(1e-9));
        let go_p99_ratio = against_go(&|v, g| micros(v, 0.99) / micros(g, 0.99).max(1e-3));
        let go_side = (!go.is_empty()).then(|| side(&go.iter().collect::<Vec<_>>()));
        let second_raw = second
            .filter(|(_, samples)| !samples.is_empty())
            .map(|(client, samples)| SecondRaw {
                client,
                side: side(&samples.iter().collect::<Vec<_>>()),
                raw_throughput_ratio: median(
                    pairs
                        .iter()
                        .zip(&samples)
                        .map(|((_, r), s)| r.throughput() / s.throughput().max(1e-9))
                        .collect(),
                ),
            });
        let valkeyrie = side(&pairs.iter().map(|(v, _)| v).collect::<Vec<_>>());
        let raw = side(&pairs.iter().map(|(_, r)| r).collect::<Vec<_>>());
        let over_data = |side: &Side| match workload.kind {
            Kind::List { keys, size } => Some(side.heap_growth_mib / ((keys * size) as f64 / (1024.0 * 1024.0))),
            _ => None,
        };
        let (list_memory_over_data, raw_list_memory_over_data) = (over_data(&valkeyrie), over_data(&raw));
        Comparison {
            backend,
            workload,
            valkeyrie,
            raw,
            throughput_ratio,
            p99_ratio,
            list_memory_over_data,
            raw_list_memory_over_data,
            second_raw,
            go: go_side,
            go_throughput_ratio,
            go_p99_ratio,
        }
    }

    /// A progress line.
    pub(crate) fn one_line(&self) -> String {
        let mut line = format!(
            "{:<34} valkeyrie {:>10.0} ops/s  raw {:>10.0} ops/s  ratio {:.3}  p99 ratio {:.3}",
            self.workload.name, self.valkeyrie.ops_per_sec, self.raw.ops_per_sec, self.throughput_ratio, self.p99_ratio
        );
        if let Some(second) = &self.second_raw {
            line.push_str(&format!(
                "  {} {:>10.0} ops/s  raw/{} {:.3}",
                second.client, second.side.ops_per_sec, second.client, second.raw_throughput_ratio
            ));
        }
        if let (Some(go), Some(ratio)) = (&self.go, self.go_throughput_ratio) {
            line.push_str(&format!("  Go {:>10.0} ops/s  Rust/Go {ratio:.3}", go.ops_per_sec));
        }
        line
    }
}

/// A workload that failed on one backend: a finding of the run, reported in place of its
/// figures, after which the run goes on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Failure {
    /// The backend.
    pub(crate) backend: &'static str,
    /// The workload's name.
    pub(crate) workload: &'static str,
    /// What went wrong.
    pub(crate) error: String,
}

/// Every comparison of a run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    scale: Scale,
    reps: usize,
    machine: String,
    comparisons: Vec<Comparison>,
    failures: Vec<Failure>,
    keep_alive: Vec<KeepAliveScale>,
}

impl Report {
    /// An empty report of a run at `scale` with `reps` measured rounds.
    pub(crate) fn new(scale: Scale, reps: usize) -> Self {
        Report {
            scale,
            reps,
            machine: machine(),
            comparisons: Vec::new(),
            failures: Vec::new(),
            keep_alive: Vec::new(),
        }
    }

    /// Adds one keep-alive measurement.
    pub(crate) fn push_keep_alive(&mut self, scale: KeepAliveScale) {
        self.keep_alive.push(scale);
    }

    /// Adds one comparison.
    pub(crate) fn push(&mut self, comparison: Comparison) {
        self.comparisons.push(comparison);
    }

    /// Records a workload that failed.
    pub(crate) fn fail(&mut self, failure: Failure) {
        self.failures.push(failure);
    }

    /// The workloads that failed.
    pub(crate) fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// The markdown table.
    pub(crate) fn markdown(&self) -> String {
        let mut out = format!(
            "Measured on {}; {} measured rounds per workload, medians; ratio = valkeyrie / raw client.\n\n",
            self.machine, self.reps
        );
        out.push_str("| backend | workload | valkeyrie ops/s | raw ops/s | throughput ratio | valkeyrie p50 / p99 / p99.9 µs | raw p50 / p99 / p99.9 µs | p99 ratio | peak RSS MiB (valkeyrie / raw) |\n");
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        let with_go = self.comparisons.iter().any(|c| c.go.is_some());
        if with_go {
            out = out.replace(
                "| peak RSS MiB (valkeyrie / raw) |\n",
                "| peak RSS MiB (valkeyrie / raw) | Go ops/s | Rust/Go throughput | Rust/Go p99 |\n",
            );
            out = out.replace("|---:|\n", "|---:|---:|---:|---:|\n");
        }
        for c in &self.comparisons {
            let (v, r) = (&c.valkeyrie, &c.raw);
            let mut workload = c.workload.name.to_owned();
            if let (Some(ours), Some(raw)) = (c.list_memory_over_data, c.raw_list_memory_over_data) {
                workload.push_str(&format!(" (heap peak {ours:.2}× the values, raw {raw:.2}×)"));
            }
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} | {:.3} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.3} | {:.0} / {:.0} |\n",
                c.backend,
                workload,
                v.ops_per_sec,
                r.ops_per_sec,
                c.throughput_ratio,
                v.p50_us,
                v.p99_us,
                v.p999_us,
                r.p50_us,
                r.p99_us,
                r.p999_us,
                c.p99_ratio,
                v.peak_rss_mib,
                r.peak_rss_mib,
            ));
            if with_go {
                out.pop();
                match (&c.go, c.go_throughput_ratio, c.go_p99_ratio) {
                    (Some(go), Some(thr), Some(p99)) => {
                        out.push_str(&format!(" {:.0} | {thr:.3} | {p99:.3} |\n", go.ops_per_sec));
                    }
                    _ => out.push_str(" – | – | – |\n"),
                }
            }
        }
        if !self.keep_alive.is_empty() {
            out.push_str("\nKeep-alive writes on one handle (valkeyrie alone), kept for twice their TTL:\n\n");
            out.push_str("| backend | keys | TTL | tasks added | background work | renewal requests/s | RSS added MiB | keys alive |\n");
            out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
            for scale in &self.keep_alive {
                out.push_str(&scale.row());
            }
        }
        if !self.failures.is_empty() {
            out.push_str("\nFailed workloads (no figures):\n\n");
            for f in &self.failures {
                out.push_str(&format!("- {} / {}: {}\n", f.backend, f.workload, f.error));
            }
        }
        out
    }

    /// One cell per workload (rows) and backend (columns): `field` of the comparison, as
    /// `valkeyrie / raw` throughput or `Rust / Go` throughput, `–` where it was not measured.
    fn matrix(&self, title: &str, field: impl Fn(&Comparison) -> Option<f64>) -> String {
        let mut backends: Vec<&str> = self.comparisons.iter().map(|c| c.backend).collect();
        backends.extend(self.failures.iter().map(|f| f.backend));
        let mut seen = std::collections::HashSet::new();
        backends.retain(|b| seen.insert(*b));
        let mut workloads: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
        workloads.retain(|w| {
            self.comparisons.iter().any(|c| c.workload.name == *w) || self.failures.iter().any(|f| f.workload == *w)
        });
        let mut out = format!(
            "| {title} | {} |\n|---|{}\n",
            backends.join(" | "),
            "---:|".repeat(backends.len())
        );
        for workload in workloads {
            out.push_str(&format!("| {workload} |"));
            for backend in &backends {
                let failed = self
                    .failures
                    .iter()
                    .any(|f| f.backend == *backend && f.workload == workload);
                let cell = self
                    .comparisons
                    .iter()
                    .find(|c| c.backend == *backend && c.workload.name == workload)
                    .and_then(&field)
                    .map_or_else(
                        || if failed { "failed" } else { "–" }.to_owned(),
                        |ratio| format!("{ratio:.2}"),
                    );
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
        out
    }

    /// The summary matrices: valkeyrie / raw throughput, and Rust / Go when measured.
    fn summary(&self) -> String {
        let mut out = self.matrix("throughput, valkeyrie / raw", |c| Some(c.throughput_ratio));
        out.push('\n');
        out.push_str(&self.matrix("p99 latency, valkeyrie / raw", |c| Some(c.p99_ratio)));
        if let Some(client) = self
            .comparisons
            .iter()
            .find_map(|c| c.second_raw.as_ref())
            .map(|s| s.client)
        {
            out.push('\n');
            let title = format!("throughput, raw client / {client}");
            out.push_str(&self.matrix(&title, |c| c.second_raw.as_ref().map(|s| s.raw_throughput_ratio)));
        }
        if self.comparisons.iter().any(|c| c.go.is_some()) {
            out.push('\n');
            out.push_str(&self.matrix("throughput, Rust / Go library", |c| c.go_throughput_ratio));
        }
        out
    }

    /// Prints the table.
    pub(crate) fn print(&self) {
        println!("\n{}\n{}", self.summary(), self.markdown());
    }

    /// Writes `results.json`, `results.md` and `ratios.svg` into `dir`.
    pub(crate) fn write(&self, dir: &Path) -> BenchResult<()> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| format!("encoding the results: {e}"))?;
        write(&dir.join("results.json"), json.as_bytes())?;
        write(
            &dir.join("results.md"),
            format!("{}\n{}", self.summary(), self.markdown()).as_bytes(),
        )?;
        self.chart(&dir.join("ratios.svg"))
    }

    /// The heatmap of every throughput ratio ([`heatmap`]).
    fn chart(&self, path: &Path) -> BenchResult<()> {
        let ratios: Vec<Ratio> = self
            .comparisons
            .iter()
            .map(|c| Ratio {
                backend: c.backend.to_owned(),
                workload: c.workload.name.to_owned(),
                raw: c.throughput_ratio,
                go: c.go_throughput_ratio,
            })
            .collect();
        heatmap::draw(path, &ratios, &subtitle(&self.machine, self.reps))
    }
}

/// What the chart says about the run under its title.
pub(crate) fn subtitle(machine: &str, reps: usize) -> String {
    format!("Median of {reps} rounds; {machine}")
}

fn write(path: &Path, bytes: &[u8]) -> BenchResult<()> {
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// What the run was measured on: CPU model, core count and memory, from `/proc`, and where
/// `cargo xtask bench` placed the servers and the clients (`VALKEYRIE_BENCH_PLACEMENT`).
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "an unknown CPU".to_owned());
    let cores = cpuinfo.lines().filter(|line| line.starts_with("processor")).count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    let placement = std::env::var("VALKEYRIE_BENCH_PLACEMENT")
        .map(|placement| {
            // tokio's worker count and Go's GOMAXPROCS both follow the clients' CPUs.
            let workers = std::thread::available_parallelism().map_or(0, |n| n.get());
            format!("; {placement} ({workers} tokio workers, GOMAXPROCS {workers})")
        })
        .unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB, {}{placement}",
        std::env::consts::OS
    )
}
