//! `cargo xtask …`: the project's tasks; see `cargo xtask help`.
#![allow(clippy::print_stdout, clippy::print_stderr)] // A command-line tool reports on its terminal.

use std::process::ExitCode;

use xtask::servers::cluster::{self, Cluster, Member};
use xtask::servers::secure::{self, Secured};
use xtask::servers::{install, process, Managed, Server};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup                          install what building and testing need: rustfmt, clippy,
                                 protoc, the servers (etcd, redis, zookeeper, consul, dynamodb)
                                 and the Go interop program (interop/go, Go modules from the proxy)
  test [--backend NAME ...] [--docker]
                                 start the servers a run needs, run every crate's tests with the
                                 endpoint variables set, stop what it started, print a summary;
                                 suites: memory boltlike consul dynamodb etcd redis
                                 redis-cluster zookeeper template facade interop servers
                                 security providers faults.
                                 --docker takes the servers from containers
                                 (testcontainers) instead of local processes
  bench [--backend NAME ...] [--workload TEXT ...] [--quick] [--with-go] [--reps N] [--publish]
                                 every backend through valkeyrie and through its raw client, in
                                 one process, alternating (--with-go: and through the Go library
                                 on etcd, redis, zookeeper, consul); prints the table and writes
                                 target/bench/results.json, results.md and ratios.svg
                                 (--publish: also to bench/results/, which the README shows).
                                 backends: boltlike consul dynamodb etcd redis redis-cluster
                                 zookeeper (redis-cluster: the harness's Redis Cluster against
                                 fred's cluster client; no Go side).
                                 The servers run on half the CPUs, the clients on the others
  bench --chart                  draw bench/results/ratios.svg again from its results.json
  bench --overhead [--reps N]    what the Kv handle and its layers add per call: 1 million gets
                                 on the memory store per path and round (target/bench/overhead.md)
  fuzz [--seconds N] [--target NAME]
                                 run the cargo fuzz targets of fuzz/ (every one, 20 s each by
                                 default; --target: one) on nightly Rust, installing cargo-fuzz
                                 and nightly when missing
  servers install [NAME ...]     install servers (all by default)
  servers start [--cluster] [NAME ...]
                                 start servers on loopback (all by default) and leave them
                                 running; --cluster: the clusters instead (etcd, zookeeper and
                                 consul with 3 members; redis-sentinel: a primary, a replica
                                 and 3 Sentinels; redis-cluster: a Redis Cluster of 3
                                 primaries and 3 replicas), on ports of their own
  servers start --secure [NAME ...]
                                 the secured servers instead (etcd, redis, consul, zookeeper,
                                 dynamodb and dynamodb-expired: TLS proxies in front of
                                 DynamoDB Local): TLS with client certificates from a test
                                 PKI (target/servers/pki/), users or tokens limited to a
                                 prefix, on ports of their own
  servers stop [--cluster|--secure] [NAME ...]
                                 stop servers (or clusters, or secured servers) the harness
                                 started
  servers status [--secure]      which servers, cluster members and secured servers run,
                                 with pids and endpoints
  servers env [--cluster|--secure] [NAME ...]
                                 the endpoint variables, as shell `export` lines
  servers install --secure [NAME ...]
                                 what the secured servers need (their servers, curl,
                                 redis-cli, openssl, socat)
  servers restart|pause|resume|kill NAME
                                 fault hooks on a server, a cluster member (etcd-2,
                                 sentinel-1, redis-cluster-4, …) or a secured server (secure-etcd): restart
                                 keeps the data directory; pause and resume send SIGSTOP and
                                 SIGCONT; kill sends SIGKILL";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["setup"] => xtask::setup::run(&Server::ALL, true),
        ["test", rest @ ..] => xtask::test::run(rest),
        ["bench", rest @ ..] => xtask::bench::run(rest),
        ["fuzz", rest @ ..] => xtask::fuzz::run(rest),
        ["servers", command, names @ ..] => servers(command, names),
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown or missing command\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn selected(names: &[&str]) -> Result<Vec<Server>, String> {
    if names.is_empty() {
        Ok(Server::ALL.to_vec())
    } else {
        names.iter().map(|name| Server::from_name(name)).collect()
    }
}

fn clusters(names: &[&str]) -> Result<Vec<Cluster>, String> {
    if names.is_empty() {
        Ok(Cluster::ALL.to_vec())
    } else {
        names.iter().map(|name| Cluster::from_name(name)).collect()
    }
}

fn secured(names: &[&str]) -> Result<Vec<Secured>, String> {
    if names.is_empty() {
        Ok(Secured::ALL.to_vec())
    } else {
        names.iter().map(|name| Secured::from_name(name)).collect()
    }
}

fn servers(command: &str, args: &[&str]) -> Result<(), String> {
    match args {
        ["--cluster", names @ ..] => return cluster_command(command, names),
        ["--secure", names @ ..] => return secure_command(command, names),
        _ => {}
    }
    let names = args;
    match command {
        "install" => install::install(&selected(names)?),
        "start" => {
            for server in selected(names)? {
                // The process outlives this command: dropping the handle does not stop it.
                process::start(server)?;
            }
            Ok(())
        }
        "stop" => selected(names)?.into_iter().try_for_each(process::stop_by_pid),
        "status" => {
            for server in Server::ALL {
                print_state(server);
            }
            for member in Cluster::ALL.into_iter().flat_map(Cluster::members) {
                print_state(member);
            }
            Secured::ALL.into_iter().for_each(print_state);
            Ok(())
        }
        "env" => {
            let env: Vec<_> = selected(names)?.into_iter().flat_map(Server::env).collect();
            print_exports(&env);
            Ok(())
        }
        "restart" | "pause" | "resume" | "kill" => match names {
            [name] => match (Member::from_label(name), Secured::from_label(name)) {
                (Some(member), _) if command == "restart" => cluster::restart(member),
                (Some(member), _) => fault(command, member),
                (None, Some(secured)) if command == "restart" => secure::restart(secured),
                (None, Some(secured)) => fault(command, secured),
                (None, None) => fault(command, Server::from_name(name)?),
            },
            _ => Err("name exactly one server, cluster member or secured server".to_owned()),
        },
        other => Err(format!("unknown servers command {other:?}; see `cargo xtask help`")),
    }
}

/// `servers start|stop|env --cluster [NAME ...]`.
fn cluster_command(command: &str, names: &[&str]) -> Result<(), String> {
    match command {
        "start" => clusters(names)?
            .into_iter()
            .try_for_each(|c| cluster::start(c).map(drop)),
        "stop" => clusters(names)?.into_iter().try_for_each(cluster::stop),
        "env" => {
            let env: Vec<_> = clusters(names)?.into_iter().flat_map(Cluster::env).collect();
            print_exports(&env);
            Ok(())
        }
        other => Err(format!("servers {other} takes no --cluster; see `cargo xtask help`")),
    }
}

/// `servers install|start|stop|status|env --secure [NAME ...]`.
fn secure_command(command: &str, names: &[&str]) -> Result<(), String> {
    match command {
        "install" => secure::install(&secured(names)?),
        "start" => secured(names)?
            .into_iter()
            // The process outlives this command: dropping the handle does not stop it.
            .try_for_each(|s| secure::start(s).map(drop)),
        "stop" => secured(names)?.into_iter().try_for_each(secure::stop),
        "status" => {
            secured(names)?.into_iter().for_each(print_state);
            Ok(())
        }
        "env" => {
            print_exports(&secure::env_of(&secured(names)?));
            Ok(())
        }
        other => Err(format!("servers {other} takes no --secure; see `cargo xtask help`")),
    }
}

/// Prints `export NAME=VALUE` lines, each value quoted for the shell when it needs it
/// (the secured servers' passwords hold `?` and `#`).
fn print_exports(env: &[(&str, String)]) {
    for (name, value) in env {
        println!("export {name}={}", shell_quoted(value));
    }
}

/// `value` as one shell word: as it is if it holds only characters no shell treats
/// specially, else in single quotes.
fn shell_quoted(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/.,:_-=+@%".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

fn print_state(process: impl Managed) {
    let state = match process::state(process) {
        process::State::Stopped => "stopped".to_owned(),
        process::State::Running(pid) => format!("running, pid {pid}"),
        process::State::Paused(pid) => format!("paused, pid {pid}"),
    };
    println!("{:<12} {:<22} {state}", process.label(), process.address());
}

/// A fault hook on one process.
fn fault(command: &str, process: impl Managed) -> Result<(), String> {
    match command {
        "restart" => {
            process::stop_by_pid(process)?;
            process::start(process).map(drop)
        }
        "pause" => process::pause(process, true),
        "resume" => process::pause(process, false),
        "kill" => process::kill(process),
        other => Err(format!("no fault hook {other:?}")),
    }
}
