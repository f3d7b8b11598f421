//! The store under test: which backend, where its server is, and how a fault case opens
//! handles on it, directly or through a [`Proxy`](crate::Proxy).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use valkeyrie::Store;
use xtask::servers::cluster::Cluster;
use xtask::servers::{Managed, Server};

/// Every call's deadline in the fault suite (`request_timeout`), short so that a case
/// proves quickly that calls to a dead server fail instead of hanging.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The connect deadline of the fault suite's handles (`connect_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How much later than its deadline a call may fail: scheduling on a loaded two-core
/// machine, and a backend's last attempt started just before the deadline.
pub const SLACK: Duration = Duration::from_secs(2);

/// A backend the fault suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// etcd v3.
    Etcd,
    /// Redis, standalone.
    Redis,
    /// ZooKeeper.
    ZooKeeper,
    /// Consul.
    Consul,
    /// DynamoDB (DynamoDB Local).
    DynamoDb,
    /// The embedded store: process-level cases only.
    Boltlike,
}

/// One lock per backend: fault cases on one server run one at a time (a restart in one
/// case must not land in the middle of another), cases on different servers in parallel.
static SERIAL: [Mutex<()>; 6] = [const { Mutex::const_new(()) }; 6];

/// The same for each cluster.
static CLUSTER_SERIAL: [Mutex<()>; Cluster::ALL.len()] = [const { Mutex::const_new(()) }; Cluster::ALL.len()];

/// How long a call on a cluster may keep failing after its leader (or Redis primary) is
/// killed before the store reaches the new one: an election (etcd, ZooKeeper, Consul:
/// a few seconds at these timings; Sentinel: 1 s to notice, then the failover), plus a
/// client's reconnection.
pub const FAILOVER_BOUND: Duration = Duration::from_secs(20);

impl Backend {
    /// The backend's URL scheme, also its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Etcd => "etcd",
            Backend::Redis => "redis",
            Backend::ZooKeeper => "zookeeper",
            Backend::Consul => "consul",
            Backend::DynamoDb => "dynamodb",
            Backend::Boltlike => "boltlike",
        }
    }

    /// The store a cluster of the harness runs.
    pub fn of_cluster(cluster: Cluster) -> Backend {
        match cluster {
            Cluster::Etcd => Backend::Etcd,
            Cluster::RedisSentinel | Cluster::RedisCluster => Backend::Redis,
            Cluster::ZooKeeper => Backend::ZooKeeper,
            Cluster::Consul => Backend::Consul,
        }
    }

    /// The harness's server, `None` for the embedded store.
    pub fn server(self) -> Option<Server> {
        match self {
            Backend::Etcd => Some(Server::Etcd),
            Backend::Redis => Some(Server::Redis),
            Backend::ZooKeeper => Some(Server::ZooKeeper),
            Backend::Consul => Some(Server::Consul),
            Backend::DynamoDb => Some(Server::DynamoDb),
            Backend::Boltlike => None,
        }
    }

    /// Whether a restart of the server keeps its data. DynamoDB Local runs in memory (on
    /// disk it is too slow for the benchmark's 10 000-key directories), and the service it
    /// stands for never restarts from a client's point of view: its outages are the
    /// proxy's dropped connections.
    pub fn restart_keeps_data(self) -> bool {
        !matches!(self, Backend::DynamoDb | Backend::Boltlike)
    }

    /// The lock TTL the cases ask for (a backend raises it to its `min_ttl`: Consul's locks
    /// last twice its shortest session, 20 s); ZooKeeper's is the session timeout.
    pub fn lock_ttl(self) -> Duration {
        match self {
            Backend::Consul => Duration::from_secs(20),
            // The longest session the harness's ZooKeeper grants (20 ticks of 500 ms): a
            // session survives the suite's outages, as a production one would survive a
            // server restart.
            Backend::ZooKeeper => Duration::from_secs(10),
            Backend::Etcd => Duration::from_secs(3),
            Backend::Redis | Backend::DynamoDb | Backend::Boltlike => Duration::from_secs(2),
        }
    }

    /// The URL of a handle on the server at `address` (`host:port`), with the suite's
    /// deadlines.
    fn url(self, address: &str) -> String {
        let timeouts = timeouts();
        match self {
            Backend::Etcd | Backend::Redis | Backend::Consul => format!("{}://{address}?{timeouts}", self.name()),
            Backend::ZooKeeper => format!(
                "zookeeper://{address}?{timeouts}&session_timeout={}ms",
                self.lock_ttl().as_millis()
            ),
            Backend::DynamoDb => format!(
                "dynamodb://valkeyrie-faults?endpoint=http://{address}&region=us-east-1&access_key_id=test&secret_access_key=test&create_table=true&{timeouts}"
            ),
            Backend::Boltlike => unreachable!("the embedded store has no address"),
        }
    }

    /// The URL of a handle on the backend's cluster: every member as an endpoint (the
    /// Redis Sentinel group: the Sentinels).
    fn cluster_url(self, cluster: Cluster) -> String {
        let endpoints = cluster.endpoints();
        match cluster {
            Cluster::RedisSentinel => format!(
                "redis://{endpoints}?topology=sentinel&sentinel_service={}&{}",
                xtask::servers::cluster::REDIS_SERVICE,
                timeouts()
            ),
            Cluster::RedisCluster => format!("redis://{endpoints}?topology=cluster&{}", timeouts()),
            _ => self.url(&endpoints),
        }
    }
}

/// Prints the logs `RUST_LOG` asks for (none without it), captured per test like its output.
fn show_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The suite's deadlines as URL parameters.
fn timeouts() -> String {
    format!(
        "connect_timeout={}ms&request_timeout={}ms",
        CONNECT_TIMEOUT.as_millis(),
        REQUEST_TIMEOUT.as_millis()
    )
}

/// One case's hold on a backend: it runs alone on that server while this lives, and opens
/// handles on it.
#[derive(Debug)]
pub struct Target {
    /// The backend.
    pub backend: Backend,
    /// The embedded store's database, deleted with the target.
    database: Option<tempfile::TempDir>,
    /// The cluster the handles reach, for a target made by [`Target::cluster`].
    cluster: Option<Cluster>,
    /// URL parameters (`name=value&…`) of every handle on the cluster, beyond the suite's
    /// deadlines.
    parameters: Option<&'static str>,
    _serial: MutexGuard<'static, ()>,
}

impl Target {
    /// Waits until no other fault case uses `backend`'s server, then holds it.
    pub async fn new(backend: Backend) -> Target {
        show_logs();
        let serial = SERIAL[backend as usize].lock().await;
        let database = (backend == Backend::Boltlike)
            .then(|| tempfile::tempdir().unwrap_or_else(|e| panic!("a directory for the embedded store: {e}")));
        Target {
            backend,
            database,
            cluster: None,
            parameters: None,
            _serial: serial,
        }
    }

    /// Waits until no other fault case uses `cluster`, then holds it, with every member
    /// running; handles from [`Target::open`] know every member.
    pub async fn cluster(cluster: Cluster) -> Target {
        let backend = Backend::of_cluster(cluster);
        show_logs();
        let serial = CLUSTER_SERIAL[cluster as usize].lock().await;
        crate::server::make_whole(cluster).await;
        Target {
            backend,
            database: None,
            cluster: Some(cluster),
            parameters: None,
            _serial: serial,
        }
    }

    /// This cluster target with `parameters` (`name=value&…`) in every handle's URL.
    pub fn with_parameters(mut self, parameters: &'static str) -> Target {
        self.parameters = Some(parameters);
        self
    }

    /// The target's name in reports: the backend's, or on a cluster the cluster's
    /// (`redis-sentinel`, `redis-cluster`, `etcd`, …).
    pub fn name(&self) -> &'static str {
        self.cluster.map_or(self.backend.name(), Cluster::name)
    }

    /// The cluster of a target made by [`Target::cluster`].
    pub fn cluster_under_test(&self) -> Option<Cluster> {
        self.cluster
    }

    /// A directory of its own for one run of `case`; on a cluster, where killing the
    /// leader hits it (see [`Cluster::leader_key_prefix`]).
    pub fn unique(&self, case: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let prefix = self.cluster.map(Cluster::leader_key_prefix).unwrap_or_default();
        format!("{prefix}vk-faults/{case}-{}-{nanos}", std::process::id())
    }

    /// The server's `host:port`, as the harness exports it.
    pub fn address(&self) -> String {
        self.backend
            .server()
            .unwrap_or_else(|| panic!("{} has no server", self.backend.name()))
            .address()
    }

    /// A new handle on the server (or the cluster).
    pub async fn open(&self) -> Arc<dyn Store> {
        match (&self.database, self.cluster) {
            (Some(dir), _) => open(&format!("boltlike://{}", dir.path().join("faults.db").display())).await,
            (None, Some(cluster)) => {
                let url = self.backend.cluster_url(cluster);
                match self.parameters {
                    Some(parameters) => open(&format!("{url}&{parameters}")).await,
                    None => open(&url).await,
                }
            }
            (None, None) => self.open_via(&self.address()).await,
        }
    }

    /// A proxy in front of the server, for cases that cut one handle's connection.
    pub async fn proxy(&self) -> crate::Proxy {
        crate::Proxy::start(&self.address())
            .await
            .unwrap_or_else(|e| panic!("a proxy to {}: {e}", self.address()))
    }

    /// A new handle that reaches the server through `address` (a proxy's).
    pub async fn open_via(&self, address: &str) -> Arc<dyn Store> {
        open(&self.backend.url(address)).await
    }

    /// [`Target::open_via`] with more URL parameters (`name=value&…`).
    pub async fn open_via_with(&self, address: &str, parameters: &str) -> Arc<dyn Store> {
        open(&format!("{}&{parameters}", self.backend.url(address))).await
    }

    /// The server, for the cases that stop, restart or pause it.
    pub fn server(&self) -> Server {
        self.backend
            .server()
            .unwrap_or_else(|| panic!("{} has no server to fault", self.backend.name()))
    }
}

async fn open(url: &str) -> Arc<dyn Store> {
    valkeyrie::open(url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e} (run the suite through `cargo xtask test --backend faults`)"))
        .into()
}
