//! `cargo xtask test`: starts the servers a run needs (reusing ones the harness already
//! runs), exports their endpoint variables, runs each suite's package with `cargo test`,
//! stops what it started (also on failure and Ctrl-C), and prints a summary per backend.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

use crate::say;
use crate::servers::cluster::{self, Cluster, Member};
use crate::servers::process::{self, Started};
use crate::servers::secure::{self, Secured};
use crate::servers::Managed;
use crate::servers::Server;
use crate::summary::{parse, Outcome};

/// A test suite: the backend it checks, its package, and the servers it needs.
struct Suite {
    backend: &'static str,
    package: &'static str,
    /// The package's manifest, relative to the workspace, for a crate outside the
    /// workspace; it builds into the workspace's target directory, sharing what it can.
    manifest: Option<&'static str>,
    servers: &'static [Server],
    /// The feature flags of each `cargo test` run of the package.
    feature_sets: &'static [&'static [&'static str]],
    /// Arguments after the features: `cargo test`'s own (`--test NAME`), then `--` and the
    /// test binaries'.
    test_args: &'static [&'static str],
    /// The clusters it needs besides its servers.
    clusters: &'static [Cluster],
    /// The secured servers it needs (TLS, users), started just before it like clusters.
    secured: &'static [Secured],
}

/// One run with every feature: what a backend's suite needs.
const ALL_FEATURES: &[&[&str]] = &[&["--all-features"]];

/// What a suite has unless it says otherwise: no server, every feature, nothing more.
const SUITE: Suite = Suite {
    backend: "",
    package: "",
    manifest: None,
    servers: &[],
    feature_sets: ALL_FEATURES,
    test_args: &[],
    clusters: &[],
    secured: &[],
};

/// Every suite, in the order of the README's capability table.
const SUITES: [Suite; 15] = [
    Suite {
        backend: "memory",
        package: "valkeyrie-core",
        ..SUITE
    },
    Suite {
        backend: "boltlike",
        package: "valkeyrie-boltlike",
        ..SUITE
    },
    Suite {
        backend: "consul",
        package: "valkeyrie-consul",
        servers: &[Server::Consul],
        ..SUITE
    },
    Suite {
        backend: "dynamodb",
        package: "valkeyrie-dynamodb",
        servers: &[Server::DynamoDb],
        ..SUITE
    },
    Suite {
        backend: "etcd",
        package: "valkeyrie-etcd",
        servers: &[Server::Etcd],
        ..SUITE
    },
    Suite {
        backend: "redis",
        package: "valkeyrie-redis",
        servers: &[Server::Redis],
        // The cluster's tests (`tests/*cluster.rs`) are the next suite's.
        test_args: &["--", "--skip", "cluster::"],
        ..SUITE
    },
    // The whole conformance suite on a Redis Cluster (3 primaries, 3 replicas), on both
    // layouts, and the calls whose keys span slots.
    Suite {
        backend: "redis-cluster",
        package: "valkeyrie-redis",
        test_args: &["--test", "conformance_cluster", "--test", "cluster"],
        clusters: &[Cluster::RedisCluster],
        ..SUITE
    },
    Suite {
        backend: "zookeeper",
        package: "valkeyrie-zookeeper",
        servers: &[Server::ZooKeeper],
        ..SUITE
    },
    Suite {
        backend: "template",
        package: "valkeyrie-template",
        ..SUITE
    },
    // The facade crate: the registry holds exactly what its features enable, with none,
    // the default, one network store, and all of them.
    Suite {
        backend: "facade",
        package: "valkeyrie",
        servers: &[],
        feature_sets: &[
            &["--no-default-features"],
            &[],
            &["--no-default-features", "--features", "redis"],
            &["--all-features"],
        ],
        ..SUITE
    },
    // Go and Rust services on one store: the Go library through `interop/go`.
    Suite {
        backend: "interop",
        package: "valkeyrie-interop",
        servers: &[Server::Redis, Server::Etcd, Server::ZooKeeper, Server::Consul],
        ..SUITE
    },
    // The harness's own tests: every server is reachable through its variable and works.
    Suite {
        backend: "servers",
        package: "xtask",
        servers: &Server::ALL,
        ..SUITE
    },
    // TLS and authentication against the secured servers: certificates (a wrong CA, none,
    // an expired one), users, passwords and prefixes, etcd tokens that expire.
    Suite {
        backend: "security",
        package: "valkeyrie-security",
        // DynamoDB Local, behind the TLS proxies.
        servers: &[Server::DynamoDb],
        secured: &Secured::ALL,
        ..SUITE
    },
    // Every TLS backend from a graph with both rustls providers (ring and aws-lc-rs): a
    // crate outside the workspace, so that the workspace's graph keeps ring alone.
    Suite {
        backend: "providers",
        package: "valkeyrie-providers",
        manifest: Some("providers/Cargo.toml"),
        feature_sets: &[&[]],
        servers: &[Server::DynamoDb],
        secured: &[
            Secured::Etcd,
            Secured::Redis,
            Secured::Consul,
            Secured::ZooKeeper,
            Secured::DynamoDb,
        ],
        ..SUITE
    },
    // Restarts, pauses and dropped connections, and the clusters' failovers: last, since it
    // stops and restarts the servers the other suites use. Each case prints what it measured (lost-signal delays,
    // recovery times), kept in the log of a passing run too.
    Suite {
        backend: "faults",
        package: "valkeyrie-faults",
        servers: &Server::ALL,
        test_args: &["--", "--show-output"],
        clusters: &Cluster::ALL,
        ..SUITE
    },
];

/// A process this run spawned: a server, a cluster's member or a secured server.
enum Spawned {
    Server(Server, Child),
    Member(Member, Child),
    Secured(Secured, Child),
}

/// Servers, cluster members and secured servers this run started, stopped on every way out.
#[derive(Clone, Default)]
struct StartedServers {
    children: Arc<Mutex<Vec<Spawned>>>,
}

impl StartedServers {
    fn push(&self, spawned: Spawned) {
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(spawned);
    }

    fn stop_all(&self) {
        let children = std::mem::take(&mut *self.children.lock().unwrap_or_else(PoisonError::into_inner));
        for spawned in children.into_iter().rev() {
            let (label, stopped) = match spawned {
                Spawned::Server(server, child) => (server.name().to_owned(), process::stop_child(server, child)),
                Spawned::Member(member, child) => (member.label(), process::stop_child(member, child)),
                Spawned::Secured(secured, child) => (secured.label(), process::stop_child(secured, child)),
            };
            if let Err(why) = stopped {
                say!("servers", "{label}: stopping failed: {why}");
            }
        }
    }
}

/// Runs `cargo xtask test` with its arguments (`--backend NAME …`, `--docker`).
pub fn run(args: &[&str]) -> Result<(), String> {
    let (suites, docker) = select(args)?;
    let mut servers: Vec<Server> = suites.iter().flat_map(|s| s.servers.iter().copied()).collect();
    servers.sort();
    servers.dedup();
    let go_interop = suites.iter().any(|s| s.backend == "interop");
    if docker {
        return run_in_containers(args, &suites, &servers, go_interop);
    }
    crate::setup::run(&servers, go_interop)?;
    let mut secured: Vec<Secured> = suites.iter().flat_map(|s| s.secured.iter().copied()).collect();
    secured.sort();
    secured.dedup();
    if !secured.is_empty() {
        secure::install(&secured)?;
    }
    with_servers("test", &servers, |mut env, starter| {
        env.extend(go_binary_env(go_interop));
        run_suites(&suites, env, Some(starter))
    })
}

/// `--docker` from an xtask built without the container runner: the same command again,
/// from an xtask built with it.
#[cfg(not(feature = "docker"))]
fn run_in_containers(args: &[&str], _: &[&Suite], _: &[Server], _: bool) -> Result<(), String> {
    say!("test", "building the xtask with its container runner (feature docker)");
    crate::servers::install::run(
        "the containerized run",
        crate::cargo()
            .args([
                "run",
                "--quiet",
                "--package",
                "xtask",
                "--features",
                "docker",
                "--",
                "test",
            ])
            .args(args)
            .current_dir(crate::paths::workspace()),
    )
}

/// The suites against servers in containers.
#[cfg(feature = "docker")]
fn run_in_containers(_: &[&str], suites: &[&Suite], servers: &[Server], go_interop: bool) -> Result<(), String> {
    crate::setup::run(&[], go_interop)?;
    let _containers = crate::docker::start(servers)?;
    let env: Vec<(&str, String)> = servers
        .iter()
        .flat_map(|s| s.env())
        .map(|(k, v)| match k {
            "VALKEYRIE_DYNAMODB_FLAVOR" => (k, "dynamodb-local".to_owned()),
            _ => (k, v),
        })
        .chain(go_binary_env(go_interop))
        .collect();
    run_suites(suites, env, None)
}

/// Starts clusters and secured servers for a run, on demand; [`with_servers`] stops them
/// with its servers.
pub(crate) struct Starter<'a> {
    started: &'a StartedServers,
}

impl Starter<'_> {
    /// Starts `cluster` (reusing running members) and waits until it is ready; its
    /// endpoint variables.
    pub(crate) fn start(&self, cluster: Cluster) -> Result<Vec<(&'static str, String)>, String> {
        let members = cluster::start(cluster)
            .map_err(|why| format!("the {} cluster could not be started: {why}", cluster.name()))?;
        for (member, how) in members {
            if let Started::Spawned(child) = how {
                self.started.push(Spawned::Member(member, child));
            }
        }
        Ok(cluster.env())
    }

    /// Starts `secured` (reusing a running one) and waits until it is healthy and set up;
    /// its variables.
    fn start_secured(&self, secured: Secured) -> Result<Vec<(&'static str, String)>, String> {
        let started =
            secure::start(secured).map_err(|why| format!("{} could not be started: {why}", secured.label()))?;
        if let Started::Spawned(child) = started {
            self.started.push(Spawned::Secured(secured, child));
        }
        Ok(secured.env())
    }
}

/// Starts `servers` (reusing running ones), runs `body` with their endpoint variables and
/// a way to start clusters and secured servers, and stops what it started however `body`
/// ends: error, panic or Ctrl-C.
pub(crate) fn with_servers(
    task: &'static str,
    servers: &[Server],
    body: impl FnOnce(Vec<(&'static str, String)>, &Starter<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let started = StartedServers::default();
    let on_interrupt = started.clone();
    ctrlc::set_handler(move || {
        say!(task, "interrupted: stopping the servers this run started");
        on_interrupt.stop_all();
        std::process::exit(130);
    })
    .map_err(|e| format!("installing the Ctrl-C handler: {e}"))?;

    // Stops the servers however this function ends, a panic included (a closed stdout
    // makes printing panic).
    let _stop_on_exit = StopOnExit(started.clone());
    let mut env = Vec::new();
    for server in servers {
        match process::start(*server).map_err(|why| format!("{} could not be started: {why}", server.name()))? {
            Started::Reused(_) => {}
            Started::Spawned(child) => started.push(Spawned::Server(*server, child)),
        }
        env.extend(server.env());
    }
    body(env, &Starter { started: &started })
}

/// Stops the servers a run started when dropped.
struct StopOnExit(StartedServers);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.stop_all();
    }
}

/// `VALKEYRIE_GO_BIN` for the interop suite, when it runs.
fn go_binary_env(go_interop: bool) -> Option<(&'static str, String)> {
    go_interop.then(|| ("VALKEYRIE_GO_BIN", crate::interop::binary().display().to_string()))
}

/// Runs `suites` in order with `env`, starting the clusters and secured servers a suite
/// needs just before it (none with `--docker`, where the servers are containers), and
/// prints the summary.
fn run_suites(
    suites: &[&Suite],
    mut env: Vec<(&'static str, String)>,
    starter: Option<&Starter<'_>>,
) -> Result<(), String> {
    for (name, value) in &env {
        say!("test", "{name}={value}");
    }
    let mut results = Vec::new();
    let mut running = Vec::new();
    let mut running_secured = Vec::new();
    for suite in suites {
        for cluster in suite.clusters {
            if running.contains(cluster) {
                continue;
            }
            let starter = starter.ok_or_else(|| {
                format!(
                    "the {} suite needs the {} cluster, which runs only as local processes (not with --docker)",
                    suite.backend,
                    cluster.name()
                )
            })?;
            env.extend(starter.start(*cluster)?);
            running.push(*cluster);
        }
        for secured in suite.secured {
            if running_secured.contains(secured) {
                continue;
            }
            let starter = starter.ok_or_else(|| {
                format!(
                    "the {} suite needs {}, which runs only as a local process (not with --docker)",
                    suite.backend,
                    secured.label()
                )
            })?;
            let new = starter.start_secured(*secured)?;
            for (name, value) in new {
                if !env.iter().any(|(known, _)| *known == name) {
                    say!("test", "{name}={value}");
                    env.push((name, value));
                }
            }
            running_secured.push(*secured);
        }
        let mut outcome = Outcome::default();
        for features in suite.feature_sets {
            say!(
                "test",
                "== {} (cargo test -p {} {})",
                suite.backend,
                suite.package,
                features.join(" ")
            );
            outcome.absorb(test_package(suite, features, &env)?);
        }
        results.push((suite.backend, outcome));
    }
    print_summary(&results);
    let failed: Vec<&str> = results.iter().filter(|(_, o)| o.failed > 0).map(|(b, _)| *b).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("tests failed for: {}", failed.join(", ")))
    }
}

/// The suites to run and whether servers come from Docker.
fn select(args: &[&str]) -> Result<(Vec<&'static Suite>, bool), String> {
    let mut chosen = Vec::new();
    let mut docker = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--docker" => docker = true,
            "--backend" | "-b" => {
                let name = args.next().ok_or("--backend needs a name")?;
                let suite = SUITES.iter().find(|s| s.backend == *name).ok_or_else(|| {
                    let known: Vec<&str> = SUITES.iter().map(|s| s.backend).collect();
                    format!("unknown backend {name}; known: {}", known.join(", "))
                })?;
                chosen.push(suite);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if chosen.is_empty() {
        chosen = SUITES.iter().collect();
    }
    Ok((chosen, docker))
}

/// Runs `cargo test` for the suite's package with `features` and `env`, echoing the
/// output, and returns the counts. A build failure counts as one failure.
fn test_package(suite: &Suite, features: &[&str], env: &[(&str, String)]) -> Result<Outcome, String> {
    let mut command = Command::new("sh");
    // cargo names each test binary on stderr and the binaries report on stdout: one
    // stream keeps them in order, so results can be attributed to their binary.
    crate::without_build_env(&mut command)
        .args(["-c", "exec \"$0\" \"$@\" 2>&1", env!("CARGO")])
        .args(["test", "--package", suite.package, "--no-fail-fast"]);
    if let Some(manifest) = suite.manifest {
        let workspace = crate::paths::workspace();
        command
            .arg("--manifest-path")
            .arg(workspace.join(manifest))
            .arg("--target-dir")
            .arg(workspace.join("target"));
    }
    let mut child = command
        .args(features)
        .args(suite.test_args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running cargo test: {e}"))?;
    let mut output = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("reading cargo test output: {e}"))?;
            say!("  ", "{line}");
            output.push_str(&line);
            output.push('\n');
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for cargo test: {e}"))?;
    let mut outcome = parse(&output);
    if !status.success() && outcome.failed == 0 {
        outcome.failed = 1;
        outcome
            .failures
            .push(format!("cargo test exited with {status} (build failure?)"));
    }
    Ok(outcome)
}

fn print_summary(results: &[(&str, Outcome)]) {
    say!(
        "summary",
        "{:<10} {:>7} {:>7} {:>8} {:>12}",
        "backend",
        "passed",
        "failed",
        "ignored",
        "conformance"
    );
    for (backend, outcome) in results {
        let conformance = if outcome.cases.is_empty() {
            "-".to_owned()
        } else {
            let passed = outcome.cases.values().filter(|ok| **ok).count();
            format!("{passed}/{}", outcome.cases.len())
        };
        say!(
            "summary",
            "{backend:<10} {:>7} {:>7} {:>8} {conformance:>12}",
            outcome.passed,
            outcome.failed,
            outcome.ignored
        );
        for failure in &outcome.failures {
            say!("summary", "    FAILED {failure}");
        }
    }
}
