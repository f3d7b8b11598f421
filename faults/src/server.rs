//! The harness's fault hooks, called from tests: stop, start, restart, pause and resume
//! the server `cargo xtask test` started (by the pid it recorded). Each runs on a blocking
//! thread and panics with the harness's message if the server cannot be controlled: a
//! fault case that cannot inject its fault fails, it never passes.

use std::time::{Duration, Instant};

use xtask::servers::cluster::{Cluster, Member};
use xtask::servers::{process, Managed, Server};

/// How long a cluster may take to be ready for the next fault after a member restarts.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

async fn blocking(what: String, hook: impl FnOnce() -> Result<(), String> + Send + 'static) {
    let outcome = tokio::task::spawn_blocking(hook).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(why)) => panic!("{what}: {why}"),
        Err(join) => panic!("{what}: {join}"),
    }
}

/// A server stopped by [`stop`]; [`Stopped::start`] or dropping it starts it again, so a
/// failing case never leaves the server down for the next one.
#[derive(Debug)]
pub struct Stopped<P: Managed = Server> {
    server: P,
    started: bool,
}

/// Stops `server` (SIGTERM, then SIGKILL after the harness's grace period).
pub async fn stop(server: Server) -> Stopped {
    blocking(format!("stop {}", server.name()), move || process::stop_by_pid(server)).await;
    Stopped { server, started: false }
}

/// Kills `member` with SIGKILL, as a crash would.
pub async fn kill(member: Member) -> Stopped<Member> {
    blocking(format!("kill {}", member.label()), move || process::kill(member)).await;
    Stopped {
        server: member,
        started: false,
    }
}

/// The member that leads `cluster` now, waiting up to a minute for one.
pub async fn leader(cluster: Cluster) -> Member {
    let begun = Instant::now();
    loop {
        let answer = tokio::task::spawn_blocking(move || cluster.leader())
            .await
            .unwrap_or_else(|e| panic!("asking {} who leads: {e}", cluster.name()));
        match answer {
            Ok(member) => return member,
            Err(why) if begun.elapsed() > READY_TIMEOUT => panic!("{why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until a member other than `killed` leads `cluster` (everywhere the cluster
/// reports it: every Sentinel for Redis), so the killed one restarts as a follower; how
/// long that took.
pub async fn failed_over(cluster: Cluster, killed: Member) -> Duration {
    let begun = Instant::now();
    loop {
        let answer = tokio::task::spawn_blocking(move || cluster.leader())
            .await
            .unwrap_or_else(|e| panic!("asking {} who leads: {e}", cluster.name()));
        match answer {
            Ok(leader) if leader != killed => return begun.elapsed(),
            other if begun.elapsed() > READY_TIMEOUT => {
                panic!(
                    "the {} cluster did not fail over from {} within {READY_TIMEOUT:?}: {other:?}",
                    cluster.name(),
                    killed.label()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

impl Stopped<Member> {
    /// Once another member leads, starts the killed member again and waits until the
    /// cluster is whole; how long the failover took and how long the member took to rejoin.
    pub async fn rejoin(self) -> (Duration, Duration) {
        let (member, cluster) = (self.server, self.server.cluster());
        let failover = failed_over(cluster, member).await;
        let rejoined = self.start().await + ready(cluster).await;
        (failover, rejoined)
    }
}

/// Starts every member of `cluster` that is not running (a failed case may have left one
/// down), then waits until the cluster is [ready].
pub async fn make_whole(cluster: Cluster) {
    for member in cluster.members() {
        if process::state(member) == process::State::Stopped {
            blocking(format!("start {}", member.label()), move || {
                process::start(member).map(drop)
            })
            .await;
        }
    }
    ready(cluster).await;
}

/// Waits until every member of `cluster` is up and the cluster could survive the next
/// fault (Redis: the replica in sync, the Sentinels aware of each other); how long it took.
pub async fn ready(cluster: Cluster) -> Duration {
    let begun = Instant::now();
    loop {
        let answer = tokio::task::spawn_blocking(move || cluster.ready())
            .await
            .unwrap_or_else(|e| panic!("checking the {} cluster: {e}", cluster.name()));
        match answer {
            Ok(()) => return begun.elapsed(),
            Err(why) if begun.elapsed() > READY_TIMEOUT => {
                panic!(
                    "the {} cluster not ready after {READY_TIMEOUT:?}: {why}",
                    cluster.name()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

impl<P: Managed + Send + 'static> Stopped<P> {
    /// Starts the server on its data directory and waits until it is healthy; how long
    /// that took.
    pub async fn start(mut self) -> Duration {
        self.started = true;
        let server = self.server;
        let begun = Instant::now();
        blocking(format!("start {}", server.label()), move || {
            process::start(server).map(drop)
        })
        .await;
        begun.elapsed()
    }
}

impl<P: Managed> Drop for Stopped<P> {
    fn drop(&mut self) {
        if !self.started {
            let _ = process::start(self.server);
        }
    }
}

/// Stops and starts `server`, keeping its data; how long it was unavailable.
pub async fn restart(server: Server) -> Duration {
    let begun = Instant::now();
    stop(server).await.start().await;
    begun.elapsed()
}

/// A server stopped by SIGSTOP; [`Paused::resume`] or dropping it sends SIGCONT, so a
/// failing case never leaves the server frozen for the next one.
#[derive(Debug)]
pub struct Paused {
    server: Server,
    resumed: bool,
}

/// Freezes `server` (SIGSTOP): its connections stay open and nothing answers.
pub async fn pause(server: Server) -> Paused {
    blocking(format!("pause {}", server.name()), move || process::pause(server, true)).await;
    Paused { server, resumed: false }
}

impl Paused {
    /// Lets the server run again.
    pub async fn resume(mut self) {
        self.resumed = true;
        let server = self.server;
        blocking(format!("resume {}", server.name()), move || {
            process::pause(server, false)
        })
        .await;
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if !self.resumed {
            let _ = process::pause(self.server, false);
        }
    }
}
