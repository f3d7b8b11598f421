//! The fault suite: each case on every backend where its fault applies, against the real
//! servers `cargo xtask test --backend faults` starts (and this suite stops, restarts and
//! pauses). The embedded store gets the process-level case only.

use valkeyrie_faults::{cases, Backend, Target};
use xtask::servers::cluster::Cluster;

macro_rules! fault_cases {
    ($backend:ident: $($case:ident),+ $(,)?) => {
        #[allow(non_snake_case)]
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let target = Target::new(Backend::$backend).await;
                    cases::$case(&target).await;
                }
            )+
        }
    };
}

macro_rules! server_cases {
    ($($backend:ident),+) => {
        $(fault_cases!($backend:
            watch_across_restart,
            watch_across_dropped_connection,
            lock_across_pause,
            calls_while_down,
            cas_across_restart,
            close_under_load,
            retry_layer_across_outages,
        );)+
    };
}

server_cases!(Etcd, Redis, ZooKeeper, Consul);
/// The error statuses, on the backends whose watches retry for `watch_retry_for`, then give up.
mod error_statuses {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd() {
        cases::error_statuses(&Target::new(Backend::Etcd).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        cases::error_statuses(&Target::new(Backend::Redis).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consul() {
        cases::error_statuses(&Target::new(Backend::Consul).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dynamodb() {
        cases::error_statuses(&Target::new(Backend::DynamoDb).await).await;
    }
}
// DynamoDB Local runs in memory, so a restart is a new, empty database: its outages are a
// proxy's refused connections (`calls_while_down`, `cas_across_restart` use one for it).
fault_cases!(DynamoDb:
    watch_across_dropped_connection,
    lock_across_pause,
    calls_while_down,
    cas_across_restart,
    close_under_load,
    retry_layer_across_outages,
);
fault_cases!(Boltlike: close_under_load);

macro_rules! cluster_cases {
    ($($cluster:ident => $module:ident $(with $cas_parameters:literal)?),+ $(,)?) => {
        $(
            #[allow(non_snake_case)]
            mod $module {
                use super::*;

                async fn target() -> Target {
                    Target::cluster(Cluster::$cluster).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn watch_across_failover() {
                    cases::watch_across_failover(&target().await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn calls_across_failover() {
                    cases::calls_across_failover(&target().await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn lock_across_failover() {
                    cases::lock_across_failover(&target().await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cas_across_failover() {
                    let target = target().await $(.with_parameters($cas_parameters))?;
                    cases::cas_across_restart(&target).await;
                }
            }
        )+
    };
}

cluster_cases!(
    Etcd => EtcdCluster,
    RedisSentinel => RedisSentinel,
    // Replication is asynchronous: a write the killed primary acknowledged but had not
    // passed on yet is lost unless the write waits for its replica.
    RedisCluster => RedisCluster with "wait_for_replicas=1",
    ZooKeeper => ZooKeeperCluster,
    Consul => ConsulCluster,
);

/// A Redis Cluster's topology changing while a watch runs: slots moving between its
/// primaries, and to a node added meanwhile.
mod redis_cluster_topology {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_across_reshard() {
        cases::watch_across_reshard(&Target::cluster(Cluster::RedisCluster).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_across_node_added() {
        cases::watch_across_node_added(&Target::cluster(Cluster::RedisCluster).await).await;
    }
}
