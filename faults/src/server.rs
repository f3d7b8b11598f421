//! The harness's fault hooks, called from tests: stop, start, restart, pause and resume
//! the server `cargo xtask test` started (by the pid it recorded), kill a cluster's leader
//! and wait for the failover. Each runs on a blocking thread and panics with the
//! harness's message if the server cannot be controlled: a fault case that cannot inject
//! its fault fails, it never passes.

use std::time::{Duration, Instant};

use xtask::servers::cluster::{self, Cluster, Member};
use xtask::servers::{process, Managed, Server};

/// Runs the harness's `hook` on a blocking thread; its answer, or a panic naming `what`.
async fn blocking<T: Send + 'static>(what: String, hook: impl FnOnce() -> Result<T, String> + Send + 'static) -> T {
    let outcome = tokio::task::spawn_blocking(hook).await;
    match outcome {
        Ok(Ok(value)) => value,
        Ok(Err(why)) => panic!("{what}: {why}"),
        Err(join) => panic!("{what}: {join}"),
    }
}

/// A server stopped by [`stop`] (or a cluster member killed by [`kill`]);
/// [`Stopped::start`] or dropping it starts it again, so a failing case never leaves the
/// server down for the next one.
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
    blocking(format!("the {} cluster's leader", cluster.name()), move || {
        cluster::wait_until("no leader", Duration::from_secs(60), || cluster.leader())
    })
    .await
}

/// A Redis Cluster primary other than `primary`.
pub async fn primary_other_than(primary: Member) -> Member {
    blocking("the redis-cluster's primaries".to_owned(), move || {
        let primaries = cluster::redis_cluster_primaries()?;
        primaries
            .into_iter()
            .find(|other| *other != primary)
            .ok_or_else(|| format!("no primary besides {}", primary.label()))
    })
    .await
}

/// Starts the Redis Cluster's spare node and adds it as a primary without slots.
pub async fn add_spare_node() -> Member {
    blocking("adding a node to the redis-cluster".to_owned(), cluster::add_spare_node).await;
    cluster::REDIS_CLUSTER_SPARE
}

/// Moves the spare node's slots to `to` and takes the spare out of the Redis Cluster.
pub async fn remove_spare_node(to: Member) {
    let what = format!(
        "taking the added node out of the redis-cluster (its slots to {})",
        to.label()
    );
    blocking(what, move || cluster::remove_spare_node(to)).await;
}

/// Moves `slots` hash slots (the lowest first) from the Redis Cluster primary `from` to
/// `to`, keys and all.
pub async fn reshard(from: Member, to: Member, slots: u32) {
    let what = format!("moving {slots} slots from {} to {}", from.label(), to.label());
    blocking(what, move || cluster::reshard(from, to, slots)).await;
}

/// Waits until a member other than `killed` leads `cluster` (everywhere the cluster
/// reports it: every Sentinel for Redis), so the killed one restarts as a follower; how
/// long that took.
pub async fn failed_over(cluster: Cluster, killed: Member) -> Duration {
    let begun = Instant::now();
    blocking(format!("the {} failover", cluster.name()), move || {
        cluster.await_leader_other_than(killed)
    })
    .await;
    begun.elapsed()
}

/// Waits until every member of `cluster` is up and the cluster could survive the next
/// fault (Redis: the replica in sync, the Sentinels aware of each other); how long it took.
pub async fn ready(cluster: Cluster) -> Duration {
    let begun = Instant::now();
    blocking(format!("the {} cluster", cluster.name()), move || cluster.await_ready()).await;
    begun.elapsed()
}

/// Starts every member of `cluster` that is not running (a failed case may have left one
/// down; a Redis data node once the Sentinels have promoted the other), then waits until
/// the cluster is [ready].
pub async fn make_whole(cluster: Cluster) {
    blocking(format!("the {} cluster", cluster.name()), move || {
        for member in cluster.members() {
            if process::state(member) == process::State::Stopped {
                cluster::await_safe_to_start(member)?;
            }
        }
        cluster::start(cluster).map(drop)
    })
    .await;
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
