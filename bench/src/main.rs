//! `valkeyrie-bench`: every backend through valkeyrie and through its raw client, in one
//! process, alternating, so the ratio of the two says what the abstraction costs. Run it
//! through `cargo xtask bench [--backend NAME …] [--quick]`, which starts the servers and
//! exports their endpoints.
//!
//! Per backend and workload: a warm-up of each side, then `--reps` measured rounds, the
//! order of the two sides alternating between rounds; each ratio is computed within a
//! round (machine noise hits both sides of a pair alike) and the median ratio is reported.
//! Nothing here asserts a time: it measures and reports.
#![allow(clippy::print_stdout, clippy::print_stderr)] // A command-line tool reports on its terminal.

mod driver;
mod go;
mod heatmap;
mod keep_alive;
mod memory;
mod overhead;
mod raw;
mod report;
mod target;
mod through_valkeyrie;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use driver::{BenchResult, Driver};
use go::GoLibrary;
use report::{Comparison, Failure, Report};
use target::{Target, BACKENDS};
use through_valkeyrie::Valkeyrie;
use workload::{Keys, Kind, Sample, Scale, Workload, WORKLOADS};

/// Counts heap bytes while a `list` run measures what it holds.
#[global_allocator]
static ALLOCATOR: memory::CountingAllocator = memory::CountingAllocator;

const USAGE: &str =
    "usage: valkeyrie-bench [--backend NAME ...] [--workload TEXT ...] [--quick] [--with-go] [--reps N] [--out DIR]
       valkeyrie-bench --overhead [--reps N] [--out DIR]
       valkeyrie-bench --chart DIR
  --workload TEXT  only the workloads whose name contains TEXT (\"lock cycles\", \"keep-alive\")
  --overhead       what the handle and its layers add per call, on the memory store
  --chart DIR      draw DIR/ratios.svg again from DIR/results.json, without measuring
  (run it through `cargo xtask bench`, which starts the servers)";

struct Options {
    backends: Vec<&'static str>,
    scale: Scale,
    reps: usize,
    out: PathBuf,
    with_go: bool,
    /// Keys the keep-alive measurement keeps alive on one handle.
    keep_alive_keys: usize,
    /// Texts a workload's name must contain one of to run; every workload when empty.
    workloads: Vec<String>,
    /// Measure the handle's and the layers' cost per call instead (`overhead.rs`).
    overhead: bool,
    /// Only draw the chart of the run in this directory again.
    chart: Option<PathBuf>,
}

impl Options {
    /// Whether the workload named `name` runs.
    fn selects(&self, name: &str) -> bool {
        self.workloads.is_empty() || self.workloads.iter().any(|text| name.contains(text.as_str()))
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        backends: Vec::new(),
        scale: Scale::FULL,
        reps: 5,
        out: PathBuf::from("target/bench"),
        with_go: false,
        keep_alive_keys: 10_000,
        workloads: Vec::new(),
        overhead: false,
        chart: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backend" => {
                let name = args.next().ok_or("--backend needs a name")?;
                let known = BACKENDS
                    .iter()
                    .find(|b| **b == name)
                    .ok_or_else(|| format!("unknown backend {name}; known: {}", BACKENDS.join(", ")))?;
                options.backends.push(known);
            }
            "--workload" => options
                .workloads
                .push(args.next().ok_or("--workload needs a text")?.clone()),
            "--quick" => {
                options.scale = Scale::QUICK;
                options.reps = 3;
                options.keep_alive_keys = 1_000;
            }
            "--reps" => {
                options.reps = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--reps needs a positive number")?;
            }
            "--with-go" => options.with_go = true,
            "--overhead" => options.overhead = true,
            "--chart" => options.chart = Some(PathBuf::from(args.next().ok_or("--chart needs a directory")?)),
            "--out" => options.out = PathBuf::from(args.next().ok_or("--out needs a directory")?),
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if options.backends.is_empty() {
        options.backends = BACKENDS.to_vec();
    }
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(dir) = &options.chart {
        return match redraw_chart(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("bench: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bench: a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let finished = if options.overhead {
        runtime.block_on(overhead::run(options.reps, &options.out))
    } else {
        // The measured work runs as a task on the runtime's workers, beside the clients'
        // connection tasks, as a server's request handlers do and as a Go program's
        // goroutines share its Ps. Run by `block_on` it would sit on the main thread,
        // and every reply would cross from a worker to it: 12 % of a one-task Redis
        // round trip here.
        runtime.block_on(async move {
            tokio::spawn(async move { run(&options).await })
                .await
                .unwrap_or_else(|e| Err(format!("the run's task ended: {e}")))
        })
    };
    match finished {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Draws `dir/ratios.svg` from `dir/results.json`, so that the chart can change without a
/// new run.
fn redraw_chart(dir: &std::path::Path) -> BenchResult<()> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let results: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let unexpected = || format!("{} is not a valkeyrie-bench report", path.display());
    let mut ratios = Vec::new();
    for comparison in results["comparisons"].as_array().ok_or_else(unexpected)? {
        ratios.push(heatmap::Ratio {
            backend: comparison["backend"].as_str().ok_or_else(unexpected)?.to_owned(),
            workload: comparison["workload"]["name"]
                .as_str()
                .ok_or_else(unexpected)?
                .to_owned(),
            raw: comparison["throughput_ratio"].as_f64().ok_or_else(unexpected)?,
            go: comparison["go_throughput_ratio"].as_f64(),
        });
    }
    let machine = results["machine"].as_str().ok_or_else(unexpected)?;
    let reps = results["reps"].as_u64().ok_or_else(unexpected)?;
    let reps = usize::try_from(reps).map_err(|_| unexpected())?;
    heatmap::draw(&dir.join("ratios.svg"), &ratios, &report::subtitle(machine, reps))
}

async fn run(options: &Options) -> BenchResult<()> {
    keep_alive::count_renewals()?;
    let scratch = tempfile::tempdir().map_err(|e| format!("a scratch directory: {e}"))?;
    let mut report = Report::new(options.scale, options.reps);
    for backend in &options.backends {
        println!("bench: {backend}");
        let target = Target::from_env(backend, scratch.path().join(backend))?;
        std::fs::create_dir_all(&target.data_dir).map_err(|e| format!("{}: {e}", target.data_dir.display()))?;
        let valkeyrie = Valkeyrie::open(&target.valkeyrie_url()).await?;
        let raw = raw::connect(&target).await?;
        let second = raw::second(&target).await?;
        let go = match GoLibrary::for_target(&target).filter(|_| options.with_go) {
            Some(go) => Some(go?),
            None => None,
        };
        for workload in WORKLOADS.into_iter().filter(|w| options.selects(w.name)) {
            let begun = std::time::Instant::now();
            let second = second.as_ref().map(|(name, driver)| (*name, driver.as_ref()));
            match compare(
                backend,
                workload,
                &valkeyrie,
                raw.as_ref(),
                second,
                go.as_ref(),
                options,
            )
            .await
            {
                Ok(comparison) => {
                    println!("  {}  ({:.0?})", comparison.one_line(), begun.elapsed());
                    report.push(comparison);
                }
                // A failing workload is a finding to report, not a reason to lose the run.
                Err(error) => {
                    eprintln!(
                        "bench: {backend} / {}: {error} (recorded; the run goes on)",
                        workload.name
                    );
                    report.fail(Failure {
                        backend,
                        workload: workload.name,
                        error,
                    });
                }
            }
        }
        if options.selects("keep-alive") {
            match keep_alive_scale(backend, &target, options.keep_alive_keys).await {
                Ok(scale) => {
                    println!("  keep-alive: {}", scale.row().trim_end());
                    report.push_keep_alive(scale);
                }
                Err(error) => {
                    eprintln!("bench: {backend} / keep-alive: {error} (recorded; the run goes on)");
                    report.fail(Failure {
                        backend,
                        workload: "keep-alive",
                        error,
                    });
                }
            }
        }
        let root = format!("bench/{backend}");
        if let Err(err) = valkeyrie.kv().delete_tree(&root).await {
            eprintln!("bench: cleaning up {root}: {err}");
        }
        let _ = valkeyrie.kv().close().await;
    }
    report.print();
    report.write(&options.out)?;
    println!("bench: wrote {}", options.out.display());
    if !report.failures().is_empty() {
        eprintln!(
            "bench: {} workload(s) failed; listed under the table",
            report.failures().len()
        );
    }
    Ok(())
}

/// [`keep_alive::measure`] on a handle of its own, so the tasks it adds are the
/// keep-alives' alone; its keys are deleted afterwards.
async fn keep_alive_scale(
    backend: &'static str,
    target: &Target,
    keys: usize,
) -> BenchResult<keep_alive::KeepAliveScale> {
    let handle = Valkeyrie::open(&target.valkeyrie_url()).await?;
    let kv = handle.kv();
    let dir = format!("bench/{backend}/keep-alive");
    let measured = keep_alive::measure(backend, kv, &dir, keys).await;
    if let Err(err) = kv.delete_tree(&dir).await {
        eprintln!("bench: cleaning up {dir}: {err}");
    }
    let _ = kv.close().await;
    measured
}

/// Runs one workload on both sides (and through a second raw client and the Go library,
/// if given): warm-up, then alternating measured rounds.
async fn compare(
    backend: &'static str,
    workload: Workload,
    valkeyrie: &Valkeyrie,
    raw: &dyn Driver,
    second: Option<(&'static str, &dyn Driver)>,
    go: Option<&GoLibrary>,
    options: &Options,
) -> BenchResult<Comparison> {
    let slug: String = workload
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let keys_of = |side: &str| Keys {
        dir: format!("bench/{backend}/{slug}/{side}"),
    };
    const SIDES: [&str; 2] = ["valkeyrie", "raw client"];
    // Both sides read one layout, so a listed directory is written once and listed by both:
    // 10 000 writes fewer, minutes on the slower stores.
    let read_only = matches!(workload.kind, Kind::List { .. }) && raw.shares_the_store();
    let sides: [(&dyn Driver, Keys); 2] = if read_only {
        [(valkeyrie, keys_of("shared")), (raw, keys_of("shared"))]
    } else {
        [(valkeyrie, keys_of("valkeyrie")), (raw, keys_of("raw"))]
    };
    for (i, (name, (driver, keys))) in SIDES.iter().zip(&sides).enumerate() {
        get_ready(*driver, name, workload, keys, i == 0 || !read_only, options.scale).await?;
    }
    let second_keys = if read_only {
        keys_of("shared")
    } else {
        keys_of("second")
    };
    if let Some((name, driver)) = second {
        get_ready(driver, name, workload, &second_keys, !read_only, options.scale).await?;
    }
    let mut second_samples = Vec::new();
    let go_dir = keys_of("go").dir;
    let mut go = match go {
        Some(library) => {
            let ready = async {
                library.prepare(workload, &go_dir, options.scale).await?;
                library.run(workload, &go_dir, options.scale.warm_up(), 0).await
            };
            match ready.await {
                Ok(_) => Some(library),
                Err(err) => {
                    eprintln!("bench: {backend} / {} through Go failed: {err}", workload.name);
                    None
                }
            }
        }
        None => None,
    };
    let mut pairs: Vec<(Sample, Sample)> = Vec::with_capacity(options.reps);
    let mut go_samples = Vec::new();
    for round in 1..=options.reps {
        let order = if round % 2 == 0 { [1, 0] } else { [0, 1] };
        let mut samples: [Option<Sample>; 2] = [None, None];
        for side in order {
            let (driver, keys) = &sides[side];
            let sample = workload::run(*driver, workload, keys, options.scale, round)
                .await
                .map_err(|e| format!("round {round} through {}: {e}", SIDES[side]))?;
            samples[side] = Some(sample);
        }
        if let [Some(through), Some(direct)] = samples {
            pairs.push((through, direct));
        }
        if let Some((name, driver)) = second {
            let sample = workload::run(driver, workload, &second_keys, options.scale, round)
                .await
                .map_err(|e| format!("round {round} through {name}: {e}"))?;
            second_samples.push(sample);
        }
        if let Some(library) = go {
            match library.run(workload, &go_dir, options.scale, round).await {
                Ok(sample) => go_samples.push(sample),
                // The Go library failing a workload is a finding, not a reason to stop.
                Err(err) => {
                    eprintln!("bench: {backend} / {} through Go failed: {err}", workload.name);
                    go_samples.clear();
                    go = None;
                }
            }
        }
    }
    let second = second.map(|(name, _)| (name, second_samples));
    Ok(Comparison::new(backend, workload, pairs, second, go_samples))
}

/// Writes `workload`'s data through `driver` when `prepare` (a side that reads what another
/// wrote does not), then runs a warm-up round.
async fn get_ready(
    driver: &dyn Driver,
    name: &str,
    workload: Workload,
    keys: &Keys,
    prepare: bool,
    scale: Scale,
) -> BenchResult<()> {
    if prepare {
        workload::prepare(driver, workload, keys)
            .await
            .map_err(|e| format!("preparing through {name}: {e}"))?;
    }
    workload::run(driver, workload, keys, scale.warm_up(), 0)
        .await
        .map_err(|e| format!("warm-up through {name}: {e}"))
        .map(drop)
}
