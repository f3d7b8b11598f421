//! The Go library as a third side (`--with-go`): the same workloads through
//! `kvtools/valkeyrie` on the same servers, run by the `valkeyrie-go` program
//! (`interop/go/bench.go`), which measures inside its own process so start-up is not
//! counted. Only for the backends the Go library has here: etcd, Redis, ZooKeeper, Consul.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::driver::BenchResult;
use crate::target::Target;
use crate::workload::{Kind, Sample, Scale, Workload};

/// The `valkeyrie-go` program against one store.
pub(crate) struct GoLibrary {
    binary: PathBuf,
    store: &'static str,
    endpoints: String,
}

/// What `bench-run` prints.
#[derive(Deserialize)]
struct Measured {
    ops: usize,
    elapsed_ns: u64,
    latencies_ns: Vec<u64>,
    /// The most operations the program had in flight at once.
    max_in_flight: usize,
}

impl GoLibrary {
    /// The Go side of `target`, if the Go library has its backend; the program is
    /// `$VALKEYRIE_GO_BIN` (set by `cargo xtask bench --with-go`).
    pub(crate) fn for_target(target: &Target) -> Option<BenchResult<Self>> {
        let store = match target.backend {
            "etcd" => "etcdv3",
            "redis" => "redis",
            "zookeeper" => "zookeeper",
            "consul" => "consul",
            _ => return None,
        };
        let binary = std::env::var_os("VALKEYRIE_GO_BIN")
            .map(PathBuf::from)
            .ok_or_else(|| "VALKEYRIE_GO_BIN is not set: run `cargo xtask bench --with-go`".to_owned());
        Some(binary.map(|binary| GoLibrary {
            binary,
            store,
            endpoints: target.endpoints.join(","),
        }))
    }

    /// The workload's name for the program and its parameters.
    fn args(workload: Workload, scale: Scale, round: usize) -> (&'static str, Vec<String>) {
        let flag = |name: &str, value: usize| [format!("-{name}"), value.to_string()];
        let (kind, flags): (&str, Vec<[String; 2]>) = match workload.kind {
            Kind::Put { size, concurrency } | Kind::Get { size, concurrency } => (
                if matches!(workload.kind, Kind::Put { .. }) {
                    "put"
                } else {
                    "get"
                },
                vec![
                    flag("size", size),
                    flag("concurrency", concurrency),
                    flag("ops", scale.ops),
                ],
            ),
            Kind::Increment { tasks } => (
                "increment",
                vec![flag("tasks", tasks), flag("per-task", scale.increments)],
            ),
            Kind::List { keys, size } => (
                "list",
                vec![flag("keys", keys), flag("size", size), flag("lists", scale.lists)],
            ),
            Kind::WatchLatency => ("watch", vec![flag("notifications", scale.notifications)]),
            Kind::Lock { contenders } => (
                "lock",
                // The Go side takes cycles per contender.
                vec![
                    flag("contenders", contenders),
                    flag("cycles", scale.lock_cycles / contenders),
                ],
            ),
        };
        let mut args: Vec<String> = flags.into_iter().flatten().collect();
        args.extend(flag("round", round));
        (kind, args)
    }

    async fn call(&self, command: &str, kind: &str, flags: Vec<String>, dir: &str) -> BenchResult<String> {
        let mut process = std::process::Command::new(&self.binary);
        process
            .args(["-store", self.store, "-endpoints", &self.endpoints])
            .args(flags)
            .args([command, kind, dir]);
        let output = tokio::task::spawn_blocking(move || process.output())
            .await
            .map_err(|e| format!("valkeyrie-go: {e}"))?
            .map_err(|e| format!("running valkeyrie-go: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!("valkeyrie-go {command} {kind}: {}", stdout.trim()))
        }
    }

    /// Writes what `workload` reads under `dir`.
    pub(crate) async fn prepare(&self, workload: Workload, dir: &str, scale: Scale) -> BenchResult<()> {
        let (kind, args) = Self::args(workload, scale, 0);
        self.call("bench-prepare", kind, args, dir).await.map(drop)
    }

    /// Runs `workload` once under `dir`.
    pub(crate) async fn run(&self, workload: Workload, dir: &str, scale: Scale, round: usize) -> BenchResult<Sample> {
        let (kind, args) = Self::args(workload, scale, round);
        let output = self.call("bench-run", kind, args, dir).await?;
        let measured: Measured =
            serde_json::from_str(output.trim()).map_err(|e| format!("valkeyrie-go answered {output:?}: {e}"))?;
        // The Go side must do what the row says: at most the workload's tasks at once.
        let tasks = workload.kind.tasks();
        if measured.max_in_flight > tasks {
            return Err(format!(
                "valkeyrie-go had {} operations in flight at once in {:?}, which runs {tasks} tasks",
                measured.max_in_flight, workload.name
            ));
        }
        Ok(Sample {
            ops: measured.ops,
            elapsed: Duration::from_nanos(measured.elapsed_ns),
            latencies: measured.latencies_ns.into_iter().map(Duration::from_nanos).collect(),
            peak_rss_kib: 0,
            start_rss_kib: 0,
            peak_heap_growth: 0,
        })
    }
}
