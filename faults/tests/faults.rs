//! The fault suite: each case on every backend where its fault applies, against the real
//! servers `cargo xtask test --backend faults` starts (and this suite stops, restarts and
//! pauses). The embedded store gets the process-level case only.

use valkeyrie_faults::{cases, Backend, Target};

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
    ($($backend:ident => $module:ident),+ $(,)?) => {
        $(
            #[allow(non_snake_case)]
            mod $module {
                use super::*;

                async fn target() -> Target {
                    Target::cluster(Backend::$backend).await
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
                    cases::cas_across_restart(&target().await).await;
                }
            }
        )+
    };
}

cluster_cases!(
    Etcd => EtcdCluster,
    Redis => RedisCluster,
    ZooKeeper => ZooKeeperCluster,
    Consul => ConsulCluster,
);
