//! Where a benchmark runs: the servers on one half of this process's CPUs, the clients
//! (`valkeyrie-bench` and the Go program it starts) on the other half.
//!
//! Why: at one request in flight, a round trip costs one wake-up of the server and one
//! of the client. On this project's 2-vCPU machine a wake-up on the CPU that just went
//! idle costs about 20 µs, one on the other CPU about 100 µs, so a `SET` at one client
//! ran at 47k/s when the client's thread happened to share the server's CPU and at 10k/s
//! when it did not. Left to the kernel, that placement differs between the Rust runtime's
//! threads and Go's, and between rounds: the Go library's 57.5k `SET`/s at one goroutine
//! (above `redis-benchmark -c 1` on the same server) was that luck, not a faster client.
//! Disjoint CPU sets give both sides the same conditions, those of a server on another
//! host, and both runtimes size themselves from the affinity they inherit (tokio's worker
//! count, Go's `GOMAXPROCS`).

use std::process::Command;

use crate::servers::process::{self, State};
use crate::servers::Managed;

/// Two disjoint CPU sets, as `taskset` lists.
pub struct Placement {
    /// The CPUs the servers run on.
    pub servers: String,
    /// The CPUs the benchmark's clients run on.
    pub clients: String,
    /// Every CPU this process may use, to give the servers back.
    all: String,
}

impl Placement {
    /// Splits this process's CPUs in two halves (the servers get the first), or `None`
    /// when it has a single CPU.
    pub fn split() -> Result<Option<Placement>, String> {
        let status =
            std::fs::read_to_string("/proc/self/status").map_err(|e| format!("reading /proc/self/status: {e}"))?;
        let list = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim)
            .ok_or("/proc/self/status has no Cpus_allowed_list")?;
        let cpus = expand(list)?;
        if cpus.len() < 2 {
            return Ok(None);
        }
        let (servers, clients) = cpus.split_at(cpus.len() / 2);
        let join = |cpus: &[u32]| cpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        Ok(Some(Placement {
            servers: join(servers),
            clients: join(clients),
            all: list.to_owned(),
        }))
    }

    /// Moves every thread of each running server onto the servers' CPUs; threads they
    /// start later inherit it.
    pub fn pin_servers<M: Managed>(&self, servers: &[M]) -> Result<(), String> {
        for server in servers {
            set_affinity(*server, &self.servers)?;
        }
        Ok(())
    }

    /// Gives each running server every CPU again (a server reused by a later run must not
    /// stay confined).
    pub fn release_servers<M: Managed>(&self, servers: &[M]) -> Result<(), String> {
        for server in servers {
            set_affinity(*server, &self.all)?;
        }
        Ok(())
    }

    /// `command` wrapped in `taskset` so that it, and every process it starts, runs on
    /// the clients' CPUs.
    pub fn clients_command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("taskset");
        command.args(["--cpu-list", &self.clients]).arg(program);
        command
    }

    /// How the run was placed, for the report.
    pub fn describe(&self) -> String {
        format!("servers on CPU {}, clients on CPU {}", self.servers, self.clients)
    }
}

/// `server`'s threads onto `cpus`, if it runs.
fn set_affinity(server: impl Managed, cpus: &str) -> Result<(), String> {
    let State::Running(pid) = process::state(server) else {
        return Ok(());
    };
    let what = format!("taskset could not move {} (pid {pid}) to CPU {cpus}", server.label());
    let mut taskset = Command::new("taskset");
    taskset.args(["--all-tasks", "--cpu-list", "--pid", cpus, &pid.to_string()]);
    crate::run_checked(&mut taskset, &what).map(drop)
}

/// The CPUs of a kernel CPU list such as `0-3,8,10-11`, in order.
fn expand(list: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|part| !part.is_empty()) {
        let bad = || format!("unexpected CPU list {list:?}");
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (u32, u32) = (first.parse().map_err(|_| bad())?, last.parse().map_err(|_| bad())?);
                cpus.extend(first..=last);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn cpu_lists_expand_in_order() {
        assert_eq!(expand("0-1").unwrap(), vec![0, 1]);
        assert_eq!(expand("0-2,5,7-8").unwrap(), vec![0, 1, 2, 5, 7, 8]);
        assert_eq!(expand("3").unwrap(), vec![3]);
        assert!(expand("0-x").is_err());
    }
}
