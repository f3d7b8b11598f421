//! Which server each backend is benchmarked against, from the endpoint variables
//! `cargo xtask bench` exports (the same ones the tests use).

use std::path::PathBuf;
use std::time::Duration;

use crate::driver::BenchResult;

/// The backends, in table order.
pub(crate) const BACKENDS: [&str; 7] = [
    "boltlike",
    "consul",
    "dynamodb",
    "etcd",
    "redis",
    "redis-cluster",
    "zookeeper",
];

/// The DynamoDB table of the benchmark (created if missing, with a stream).
pub(crate) const DYNAMODB_TABLE: &str = "valkeyrie-bench";

/// How often the valkeyrie side's DynamoDB watch reads the stream: the cadence at which the
/// raw side reads the watched item (`raw::dynamodb`), so the watch latencies compare the work
/// done per notification rather than two polling intervals (the backend's default is 250 ms).
pub(crate) const DYNAMODB_WATCH_POLL: Duration = Duration::from_millis(15);

/// One backend's server.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The backend's registered name.
    pub(crate) backend: &'static str,
    /// `host:port` of each server (for DynamoDB, the endpoint URL; for sled, none).
    pub(crate) endpoints: Vec<String>,
    /// Where embedded stores keep their files; each side gets its own subdirectory.
    pub(crate) data_dir: PathBuf,
}

fn variable(name: &str) -> BenchResult<String> {
    std::env::var(name).map_err(|_| format!("{name} is not set: run `cargo xtask bench`"))
}

impl Target {
    /// The target of `backend`, with embedded data under `data_dir`.
    pub(crate) fn from_env(backend: &'static str, data_dir: PathBuf) -> BenchResult<Self> {
        let endpoints = match backend {
            "boltlike" => Vec::new(),
            "redis" => vec![variable("VALKEYRIE_REDIS_URL")?
                .trim_start_matches("redis://")
                .trim_end_matches('/')
                .to_owned()],
            // `redis://h1:p1,h2:p2?topology=cluster`: every node.
            "redis-cluster" => split(
                variable("VALKEYRIE_REDIS_CLUSTER_URL")?
                    .trim_start_matches("redis://")
                    .split('?')
                    .next()
                    .unwrap_or_default(),
            ),
            "etcd" => split(&variable("VALKEYRIE_ETCD_ENDPOINTS")?),
            "zookeeper" => split(&variable("VALKEYRIE_ZOOKEEPER_ENDPOINTS")?),
            "consul" => split(&variable("VALKEYRIE_CONSUL_ENDPOINTS")?),
            "dynamodb" => vec![variable("VALKEYRIE_DYNAMODB_ENDPOINT")?],
            other => return Err(format!("unknown backend {other}; known: {}", BACKENDS.join(", "))),
        };
        Ok(Target {
            backend,
            endpoints,
            data_dir,
        })
    }

    /// The URL valkeyrie opens.
    pub(crate) fn valkeyrie_url(&self) -> String {
        let endpoints = self.endpoints.join(",");
        match self.backend {
            "boltlike" => format!("boltlike://{}", self.data_dir.join("valkeyrie.db").display()),
            "dynamodb" => format!(
                "dynamodb://{DYNAMODB_TABLE}?endpoint={endpoints}&region=us-east-1&access_key_id=bench&secret_access_key=bench&create_table=true&watch_poll_interval={}ms",
                DYNAMODB_WATCH_POLL.as_millis()
            ),
            "redis-cluster" => format!("redis://{endpoints}?topology=cluster"),
            backend => format!("{backend}://{endpoints}"),
        }
    }
}

fn split(list: &str) -> Vec<String> {
    list.split(',').map(str::to_owned).collect()
}
