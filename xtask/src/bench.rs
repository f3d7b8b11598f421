//! `cargo xtask bench`: starts the servers through the harness, runs the `valkeyrie-bench`
//! binary (optimized, profile `bench-run`) with their endpoints on CPUs of its own (see
//! [`Placement`]), and stops what it started.
//! The binary prints the table and writes `target/bench/results.{json,md}` and
//! `target/bench/ratios.svg`.

use crate::paths::{target_dir, workspace};
use crate::placement::Placement;
use crate::say;
use crate::servers::cluster::Cluster;
use crate::servers::{process, Server};

/// Which clusters a benchmark of `backends` needs: the Redis Cluster for `redis-cluster`
/// (and for a run of every backend).
fn clusters_for(backends: &[&str]) -> Vec<Cluster> {
    if backends.is_empty() || backends.contains(&"redis-cluster") {
        vec![Cluster::RedisCluster]
    } else {
        Vec::new()
    }
}

/// Which servers a benchmark of `backends` needs (all when none is named).
fn servers_for(backends: &[&str]) -> Vec<Server> {
    if backends.is_empty() {
        return Server::ALL.to_vec();
    }
    Server::ALL
        .into_iter()
        .filter(|server| backends.contains(&server.name()))
        .collect()
}

/// Runs `cargo xtask bench` with its arguments (`--backend NAME …`, `--workload TEXT …`,
/// `--quick`, `--with-go`, `--reps N`, `--publish`, or `--overhead` or `--chart` alone);
/// `--with-go` also builds the Go interop program, the Go library's side, `--publish` copies
/// the results to `bench/results/` for the README, and `--chart` draws the published chart
/// again from the published figures.
pub fn run(args: &[&str]) -> Result<(), String> {
    let mut backends = Vec::new();
    let mut passed: Vec<String> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match *arg {
            "--backend" => {
                let name = rest.next().ok_or("--backend needs a name")?;
                backends.push(*name);
                passed.extend(["--backend".to_owned(), (*name).to_owned()]);
            }
            "--reps" | "--workload" => {
                let value = rest.next().ok_or_else(|| format!("{arg} needs a value"))?;
                passed.extend([(*arg).to_owned(), (*value).to_owned()]);
            }
            "--quick" | "--with-go" | "--overhead" => passed.push((*arg).to_owned()),
            "--chart" => {
                let published = workspace().join("bench").join("results");
                passed.extend(["--chart".to_owned(), published.display().to_string()]);
            }
            "--publish" => {}
            other => return Err(format!("unknown argument {other}; see `cargo xtask help`")),
        }
    }
    // The overhead measurement runs on the memory store, and a chart is drawn from a file:
    // no server.
    let (servers, clusters) = if args.contains(&"--overhead") || args.contains(&"--chart") {
        (Vec::new(), Vec::new())
    } else {
        (servers_for(&backends), clusters_for(&backends))
    };
    let with_go = args.contains(&"--with-go");
    let mut installed = servers.clone();
    if !clusters.is_empty() && !installed.contains(&Server::Redis) {
        // The Redis Cluster's nodes are Debian's redis-server.
        installed.push(Server::Redis);
    }
    crate::setup::run(&installed, with_go)?;
    fresh_etcd(&servers)?;
    let out = target_dir().join("bench");
    passed.extend(["--out".to_owned(), out.display().to_string()]);
    say!("bench", "building valkeyrie-bench (profile bench-run)");
    let status = crate::cargo()
        .args(["build", "--profile", "bench-run", "--package", "valkeyrie-bench"])
        .current_dir(workspace())
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building valkeyrie-bench failed ({status})"));
    }
    let binary = target_dir().join("bench-run").join("valkeyrie-bench");
    let placement = Placement::split()?;
    crate::test::with_servers("bench", &servers, |mut env, starter| {
        let mut members = Vec::new();
        for cluster in &clusters {
            env.extend(starter.start(*cluster)?);
            members.extend(cluster.members());
        }
        let mut bench = match &placement {
            Some(placement) => {
                placement.pin_servers(&servers)?;
                placement.pin_servers(&members)?;
                say!("bench", "running valkeyrie-bench with {}", placement.describe());
                let mut command = placement.clients_command(&binary);
                command.env("VALKEYRIE_BENCH_PLACEMENT", placement.describe());
                command
            }
            None => {
                say!(
                    "bench",
                    "running valkeyrie-bench (one CPU: servers and clients share it)"
                );
                std::process::Command::new(&binary)
            }
        };
        let status = bench
            .args(&passed)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(with_go.then(|| ("VALKEYRIE_GO_BIN", crate::interop::binary().display().to_string())))
            .current_dir(workspace())
            .status()
            .map_err(|e| format!("running valkeyrie-bench: {e}"));
        if let Some(placement) = &placement {
            placement.release_servers(&servers)?;
            placement.release_servers(&members)?;
        }
        let status = status?;
        if !status.success() {
            return Err(format!("valkeyrie-bench failed ({status})"));
        }
        if args.contains(&"--publish") {
            publish(&out)?;
        }
        Ok(())
    })
}

/// Empties the harness etcd's data directory when the bench is about to start it: nothing
/// compacts the history the benchmarks write, and three full runs fill etcd's 2 GiB quota
/// (`mvcc: database space exceeded`). A running etcd (started by hand) is left alone.
fn fresh_etcd(servers: &[Server]) -> Result<(), String> {
    if !servers.contains(&Server::Etcd) || process::state(Server::Etcd) != process::State::Stopped {
        return Ok(());
    }
    let data = process::dir(Server::Etcd).join("data");
    match std::fs::remove_dir_all(&data) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("remove {}: {e}", data.display())),
        _ => Ok(()),
    }
}

/// The files of a run that the README shows, copied from `target/bench/` to
/// `bench/results/` (committed).
const PUBLISHED: [&str; 3] = ["results.md", "results.json", "ratios.svg"];

/// Copies the run's table, figures and chart to `bench/results/` for the README.
fn publish(out: &std::path::Path) -> Result<(), String> {
    let published = workspace().join("bench").join("results");
    std::fs::create_dir_all(&published).map_err(|e| format!("creating {}: {e}", published.display()))?;
    for file in PUBLISHED {
        std::fs::copy(out.join(file), published.join(file))
            .map_err(|e| format!("publishing {file} to {}: {e}", published.display()))?;
    }
    say!("bench", "published the run to {}", published.display());
    Ok(())
}
