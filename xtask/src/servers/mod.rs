//! The real servers the backends are tested against: what each one is, how it is started
//! on loopback, how its health is probed, and the endpoint variables the tests read.
//!
//! Each server runs on fixed loopback ports with its own directory under
//! `target/servers/<name>/` (data, `server.log`, `pid`). [`install`] gets the software,
//! [`process`] starts and stops the processes, and [`cluster`] describes the clusters
//! (`servers start --cluster`): the same software, several processes per store, on ports
//! of their own, so a cluster runs next to the single servers. [`secure`] describes the
//! secured servers (`servers start --secure`): TLS with client certificates and users with
//! passwords, on ports of their own too, with the certificates [`pki`] generates.

pub mod cluster;
pub mod install;
pub mod pki;
pub mod process;
pub mod secure;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::probe;

/// One kind of server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Server {
    /// etcd 3.4 (Debian `etcd-server`).
    Etcd,
    /// Redis 7.0 (Debian `redis-server`).
    Redis,
    /// ZooKeeper 3.8 (Debian `zookeeper`).
    ZooKeeper,
    /// Consul 1.8.7 in `-dev` mode (Debian 11's package, unpacked into the cache).
    Consul,
    /// DynamoDB Local 2.6.1 from Maven Central, or moto's server as the fallback.
    DynamoDb,
}

const HOST: &str = "127.0.0.1";

/// A process the harness runs: one of the single servers or a member of a cluster.
pub trait Managed: Copy {
    /// Its name in messages, and its directory's name under `target/servers/`.
    fn label(self) -> String;
    /// Every loopback port it binds; the first is the client port.
    fn ports(self) -> Vec<u16>;
    /// The command that runs it in the foreground with its files under `dir`.
    fn command(self, dir: &Path) -> Result<Command, String>;
    /// Whether it answers like a healthy one; the error says what it answered.
    fn probe(self) -> Result<(), String>;
    /// How long a start may take before it is declared failed.
    fn start_timeout(self) -> Duration;
    /// `127.0.0.1:<client port>`.
    fn address(self) -> String {
        // Invariant: every process the harness runs has a client port, listed first.
        format!("{HOST}:{}", self.ports()[0])
    }
}

impl Managed for Server {
    fn label(self) -> String {
        self.name().to_owned()
    }

    fn ports(self) -> Vec<u16> {
        Server::ports(self).to_vec()
    }

    fn command(self, dir: &Path) -> Result<Command, String> {
        Server::command(self, dir)
    }

    fn probe(self) -> Result<(), String> {
        Server::probe(self)
    }

    fn start_timeout(self) -> Duration {
        Server::start_timeout(self)
    }
}

/// The ACL master token of the test agent (a loopback `-dev` agent: not a secret).
const CONSUL_MASTER_TOKEN: &str = "valkeyrie-test-master-token";

impl Server {
    /// Every server, in the order they are started.
    pub const ALL: [Server; 5] = [
        Server::Redis,
        Server::Etcd,
        Server::ZooKeeper,
        Server::Consul,
        Server::DynamoDb,
    ];

    /// The name used on the command line and for the directory.
    pub fn name(self) -> &'static str {
        match self {
            Server::Etcd => "etcd",
            Server::Redis => "redis",
            Server::ZooKeeper => "zookeeper",
            Server::Consul => "consul",
            Server::DynamoDb => "dynamodb",
        }
    }

    /// Parses a name given on the command line.
    pub fn from_name(name: &str) -> Result<Server, String> {
        Server::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Server::ALL.iter().map(|s| s.name()).collect();
            format!("unknown server {name:?}; known: {}", known.join(", "))
        })
    }

    /// Every loopback port the server binds; the first is the client port.
    pub fn ports(self) -> &'static [u16] {
        match self {
            Server::Etcd => &[23790, 23800],
            Server::Redis => &[16379],
            Server::ZooKeeper => &[21810],
            Server::Consul => &[18500, 18600, 18301, 18302, 18300],
            Server::DynamoDb => &[18000],
        }
    }

    /// The environment variables a test run needs to reach this server.
    pub fn env(self) -> Vec<(&'static str, String)> {
        let address = self.address();
        match self {
            Server::Etcd => vec![("VALKEYRIE_ETCD_ENDPOINTS", address)],
            Server::Redis => vec![("VALKEYRIE_REDIS_URL", format!("redis://{address}"))],
            Server::ZooKeeper => vec![("VALKEYRIE_ZOOKEEPER_ENDPOINTS", address)],
            Server::Consul => vec![
                ("VALKEYRIE_CONSUL_ENDPOINTS", address),
                ("VALKEYRIE_CONSUL_MASTER_TOKEN", CONSUL_MASTER_TOKEN.to_owned()),
            ],
            Server::DynamoDb => vec![
                ("VALKEYRIE_DYNAMODB_ENDPOINT", format!("http://{address}")),
                (
                    "VALKEYRIE_DYNAMODB_FLAVOR",
                    install::dynamodb_flavor().name().to_owned(),
                ),
            ],
        }
    }

    /// How long a start may take before it is declared failed.
    pub fn start_timeout(self) -> Duration {
        match self {
            Server::Redis => Duration::from_secs(10),
            Server::Etcd | Server::Consul => Duration::from_secs(30),
            Server::ZooKeeper | Server::DynamoDb => Duration::from_secs(60),
        }
    }

    /// The command that runs the server in the foreground with its data under `dir`.
    pub fn command(self, dir: &Path) -> Result<Command, String> {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("create {}: {e}", data.display()))?;
        let [client, rest @ ..] = self.ports() else {
            unreachable!("every server has a client port")
        };
        let command = match self {
            Server::Etcd => {
                let peer = format!("http://{HOST}:{}", rest[0]);
                etcd_command(EtcdMember {
                    name: "valkeyrie",
                    data: &data,
                    client_url: &format!("http://{HOST}:{client}"),
                    initial_cluster: &format!("valkeyrie={peer}"),
                    peer_url: &peer,
                    token: "valkeyrie",
                })
            }
            Server::Redis => {
                let mut c = Command::new("redis-server");
                c.args([
                    "--bind",
                    HOST,
                    "--port",
                    &client.to_string(),
                    // No snapshots while running, one at shutdown (SIGTERM): a restart
                    // (`servers restart`, the fault suite) keeps the data, at no cost to
                    // a benchmark's writes.
                    "--save",
                    "3600 1",
                    "--appendonly",
                    "no",
                    "--dir",
                ])
                .arg(&data)
                .args(["--notify-keyspace-events", "KEA", "--daemonize", "no", "--logfile", ""]);
                c
            }
            Server::ZooKeeper => {
                // tickTime 500 ms allows sessions from 1 s, so expiry tests stay quick.
                let config = dir.join("zoo.cfg");
                let text = format!(
                    "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={client}\n\
                     clientPortAddress={HOST}\nmaxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=*\n",
                    data.display()
                );
                std::fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
                let mut c = zookeeper_java();
                c.args(["-cp", "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"])
                    .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                    .arg(&config);
                c
            }
            Server::Consul => {
                let [dns, serf_lan, serf_wan, server] = rest else {
                    unreachable!("consul has five ports")
                };
                let mut c = Command::new(install::consul_binary());
                // A one-server cluster rather than `-dev`, whose state lives in memory: a
                // restart keeps the data directory, as in production. Raft at its fastest
                // timings (as `-dev` has) elects the one server within about a second.
                c.env("CHECKPOINT_DISABLE", "1")
                    .args([
                        "agent",
                        "-server",
                        "-bootstrap-expect",
                        "1",
                        "-hcl",
                        "performance { raft_multiplier = 1 }",
                        "-node",
                        "valkeyrie",
                        "-bind",
                        HOST,
                        "-client",
                        HOST,
                        "-data-dir",
                    ])
                    .arg(&data)
                    .args(["-http-port", &client.to_string(), "-dns-port", &dns.to_string()])
                    .args([
                        "-serf-lan-port",
                        &serf_lan.to_string(),
                        "-serf-wan-port",
                        &serf_wan.to_string(),
                    ])
                    .args(["-server-port", &server.to_string(), "-grpc-port", "-1"])
                    // Every client here comes from 127.0.0.1, and Consul refuses a client
                    // IP's connections past 200 (with an EOF): a benchmark at concurrency
                    // 64 holds that many per side (valkeyrie, raw, Go) at once.
                    .args(["-hcl", "limits { http_max_conns_per_client = 2000 }"])
                    // ACLs on, allowing everything by default, so tests can make tokens that
                    // are refused (and check what a refusal looks like).
                    .args([
                        "-hcl",
                        &format!(
                            "acl {{ enabled = true, default_policy = \"allow\", tokens {{ master = \"{CONSUL_MASTER_TOKEN}\" }} }}"
                        ),
                    ]);
                c
            }
            Server::DynamoDb => install::dynamodb_flavor().command(*client, &data),
        };
        Ok(command)
    }

    /// Whether the server answers like a healthy one; the error says what it answered.
    pub fn probe(self) -> Result<(), String> {
        let address = self.address();
        match self {
            Server::Etcd => match probe::http(&address, "GET", "/health", &[], "")? {
                (200, body) if body.contains("\"health\":\"true\"") => Ok(()),
                (status, body) => Err(format!("etcd /health answered {status}: {body}")),
            },
            Server::Redis => match probe::redis(&address, &["PING"])? {
                reply if reply.starts_with("+PONG") => Ok(()),
                reply => Err(format!("redis PING answered {reply:?}")),
            },
            Server::ZooKeeper => match probe::four_letter_word(&address, "ruok")? {
                reply if reply == "imok" => Ok(()),
                reply => Err(format!("zookeeper ruok answered {reply:?}")),
            },
            Server::Consul => match probe::http(&address, "GET", "/v1/status/leader", &[], "")? {
                // A leader is not enough: until the servers have loaded their ACL state,
                // a request without a token is refused with "ACL not found".
                (200, body) if body.trim().len() > 2 => {
                    match probe::http(&address, "GET", "/v1/kv/valkeyrie-probe", &[], "")? {
                        (200 | 404, _) => Ok(()),
                        (status, body) => Err(format!("consul refuses a key read yet ({status}: {body})")),
                    }
                }
                (status, body) => Err(format!("consul has no leader yet ({status}: {body})")),
            },
            Server::DynamoDb => match probe::dynamodb(&address, "ListTables", "{}")? {
                (200, body) if body.contains("TableNames") => Ok(()),
                (status, body) => Err(format!("dynamodb ListTables answered {status}: {body}")),
            },
        }
    }
}

/// One etcd member as the harness runs it: the single server, a cluster's member or the
/// secured server.
pub(crate) struct EtcdMember<'a> {
    /// Its `--name`.
    pub(crate) name: &'a str,
    /// Its data directory.
    pub(crate) data: &'a Path,
    /// The URL it serves clients on and advertises (`http://` or `https://`).
    pub(crate) client_url: &'a str,
    /// The URL it serves its peers on and advertises.
    pub(crate) peer_url: &'a str,
    /// Every member of its cluster, `name=peer URL,…`.
    pub(crate) initial_cluster: &'a str,
    /// The cluster's `--initial-cluster-token`.
    pub(crate) token: &'a str,
}

/// `java` with the settings every ZooKeeper server of the harness runs with (the single
/// server, the cluster's members, the secured server): a small serial-GC heap, TTL nodes
/// on, and expired TTL nodes and empty containers reaped every 500 ms, not every minute.
pub(crate) fn zookeeper_java() -> Command {
    let mut c = Command::new("java");
    c.args([
        "-Xms64m",
        "-Xmx512m",
        "-XX:+UseSerialGC",
        "-Dzookeeper.extendedTypesEnabled=true",
        "-Dznode.container.checkIntervalMs=500",
    ]);
    c
}

/// The etcd command of `member`, logging to stderr (the harness keeps it in `server.log`);
/// callers add what their variant needs (TLS, authentication).
pub(crate) fn etcd_command(member: EtcdMember<'_>) -> Command {
    let mut c = Command::new("etcd");
    c.args(["--name", member.name, "--data-dir"]).arg(member.data).args([
        "--listen-client-urls",
        member.client_url,
        "--advertise-client-urls",
        member.client_url,
        "--listen-peer-urls",
        member.peer_url,
        "--initial-advertise-peer-urls",
        member.peer_url,
        "--initial-cluster",
        member.initial_cluster,
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        member.token,
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
    ]);
    c
}
