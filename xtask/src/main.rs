//! `cargo xtask …`: the project's tasks; see `cargo xtask help`.
#![allow(clippy::print_stdout, clippy::print_stderr)] // A command-line tool reports on its terminal.

use std::process::ExitCode;

use xtask::servers::{install, process, Server};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup                          install what building and testing need: rustfmt, clippy,
                                 protoc, the servers (etcd, redis, zookeeper, consul, dynamodb)
                                 and the Go interop program (interop/go, Go modules from the proxy)
  test [--backend NAME ...] [--docker]
                                 start the servers a run needs, run every crate's tests with the
                                 endpoint variables set, stop what it started, print a summary;
                                 suites: memory boltlike consul dynamodb etcd redis zookeeper
                                 template facade interop servers. --docker takes the servers
                                 from containers (testcontainers) instead of local processes
  bench [--backend NAME ...] [--quick] [--with-go] [--reps N] [--publish]
                                 every backend through valkeyrie and through its raw client, in
                                 one process, alternating (--with-go: and through the Go library
                                 on etcd, redis, zookeeper, consul); prints the table and writes
                                 target/bench/results.json, results.md and ratios.svg
                                 (--publish: also to bench/results/, which the README shows).
                                 backends: boltlike consul dynamodb etcd redis zookeeper
  fuzz [--seconds N] [--target NAME]
                                 run a cargo fuzz target of fuzz/ (default store_url, 60 s) on
                                 nightly Rust, installing cargo-fuzz and nightly when missing
  servers install [NAME ...]     install servers (all by default)
  servers start [NAME ...]       start servers on loopback (all by default) and leave them running
  servers stop [NAME ...]        stop servers the harness started
  servers status                 which servers run, with pids and endpoints
  servers env                    the endpoint variables, as shell `export` lines
  servers restart|pause|resume NAME
                                 fault hooks: restart keeps the data directory; pause and resume
                                 send SIGSTOP and SIGCONT";

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

fn one(names: &[&str]) -> Result<Server, String> {
    match names {
        [name] => Server::from_name(name),
        _ => Err("name exactly one server".to_owned()),
    }
}

fn servers(command: &str, names: &[&str]) -> Result<(), String> {
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
                let state = match process::state(server) {
                    process::State::Stopped => "stopped".to_owned(),
                    process::State::Running(pid) => format!("running, pid {pid}"),
                    process::State::Paused(pid) => format!("paused, pid {pid}"),
                };
                println!("{:<10} {:<22} {state}", server.name(), server.address());
            }
            Ok(())
        }
        "env" => {
            for server in selected(names)? {
                for (name, value) in server.env() {
                    println!("export {name}={value}");
                }
            }
            Ok(())
        }
        "restart" => {
            let server = one(names)?;
            process::stop_by_pid(server)?;
            process::start(server).map(drop)
        }
        "pause" => process::pause(one(names)?, true),
        "resume" => process::pause(one(names)?, false),
        other => Err(format!("unknown servers command {other:?}; see `cargo xtask help`")),
    }
}
