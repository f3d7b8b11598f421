//! The secured servers (`cargo xtask servers start --secure`): the stores as production
//! runs them, with mutual TLS (a client certificate signed by the test CA is required) and
//! users whose permissions stop at a prefix, so the backends' TLS and authentication can
//! be tested against the real thing: a wrong CA, a missing or expired client certificate,
//! a wrong password, a key outside the user's prefix, an etcd token that expires.
//!
//! Each one is a process of its own ([`Secured`], run by [`super::process`] like a single
//! server), with its directory under `target/servers/secure-<name>/` and ports apart from
//! the single servers' and the clusters', so all of them can run at once. Their
//! certificates come from [`super::pki`]. Users and passwords are the same on every
//! secured server: an administrator (etcd `root`, Redis `admin`, Consul's master token)
//! with [`ADMIN_PASSWORD`], and [`APP_USER`] with [`APP_PASSWORD`], allowed to read and
//! write under [`APP_PREFIX`] only. The passwords are test secrets on loopback; they hold
//! characters a URL must percent-encode, so the way a client parses them is tested too.
//! Consul has tokens instead of users: the master token is [`ADMIN_PASSWORD`], and the
//! tokens it makes must be UUIDs ([`CONSUL_APP_TOKEN`], [`CONSUL_READ_TOKEN`]). ZooKeeper
//! has no user list: digest `addauth` accepts any `user:password`, the password is checked
//! against the ACLs of the nodes that user created, and `enforce.auth` refuses sessions
//! that never authenticate.
//!
//! DynamoDB Local has neither TLS nor credentials: a TLS proxy (socat, test infrastructure
//! only) in front of the plain server proves that a private CA works for the DynamoDB
//! backend, and a second one with an expired certificate that it is refused.
//!
//! The harness reaches these servers through curl, redis-cli, etcdctl and openssl (child
//! processes with timeouts) rather than a TLS stack of its own.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::process::{self, Started, State};
use super::{install, pki, EtcdMember, Managed, Server, HOST};
use crate::{probe, say};

/// The administrators' password on every secured server (etcd `root`, Redis `admin`).
pub const ADMIN_PASSWORD: &str = "r00t/pa?ss#w@rd";
/// The application user on every secured server.
pub const APP_USER: &str = "app";
/// [`APP_USER`]'s password.
pub const APP_PASSWORD: &str = "app:pa/ss?w#rd@1";
/// The key prefix [`APP_USER`] may read and write; everything else is refused. The side
/// keys of a lock on `app/x` (`app/x___lock/…`) are under it too.
pub const APP_PREFIX: &str = "app/";
/// etcd's administrator: `root`, the user etcd requires before `auth enable`.
pub const ETCD_ADMIN_USER: &str = "root";
/// The digest user the security suite calls ZooKeeper's administrator: any user may create
/// nodes, so it is one more user whose nodes the app cannot touch.
pub const ZOOKEEPER_ADMIN_USER: &str = "admin";
/// Redis's administrator (the `default` user is off).
pub const REDIS_ADMIN_USER: &str = "admin";
/// The lifetime of etcd's simple tokens, short so that tokens expire during a suite (the
/// default is 5 minutes). A token lives this long after its last use.
pub const ETCD_TOKEN_TTL: Duration = Duration::from_secs(3);

/// Consul's token for the app: write under [`APP_PREFIX`], and the sessions that TTLs and
/// locks need. Consul wants a UUID for a token it is given.
pub const CONSUL_APP_TOKEN: &str = "6f1e2a4c-3b5d-4e7f-9a8b-0c1d2e3f4a5b";
/// Consul's read-only token: read under [`APP_PREFIX`], nothing else.
pub const CONSUL_READ_TOKEN: &str = "0b9c8d7e-6f5a-4b3c-8d2e-1f0a9b8c7d6e";

/// Keys under [`APP_PREFIX`] that [`CONSUL_APP_TOKEN`] may not read: a list of their
/// directory shows what a list filtered by ACLs looks like.
pub const CONSUL_HIDDEN_PREFIX: &str = "app/listing/hidden";

/// Consul's ACL policies: its name, rules, and the token that carries it.
const CONSUL_POLICIES: [(&str, &str, &str); 2] = [
    (
        "valkeyrie-app",
        "key_prefix \"app/\" { policy = \"write\" }\nkey_prefix \"app/listing/hidden\" { policy = \"deny\" }\n\
         session_prefix \"\" { policy = \"write\" }\nnode_prefix \"\" { policy = \"read\" }",
        CONSUL_APP_TOKEN,
    ),
    (
        "valkeyrie-read",
        "key_prefix \"app/\" { policy = \"read\" }",
        CONSUL_READ_TOKEN,
    ),
];

/// The etcd role of [`APP_USER`].
const APP_ROLE: &str = "app";

/// How long one etcdctl or redis-cli command may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The variables naming the PKI's files, and the file each names.
const TLS_FILES: [(&str, &str); 8] = [
    ("VALKEYRIE_TLS_CA_FILE", pki::CA),
    ("VALKEYRIE_TLS_OTHER_CA_FILE", pki::OTHER_CA),
    ("VALKEYRIE_TLS_CLIENT_CERT", pki::CLIENT),
    ("VALKEYRIE_TLS_CLIENT_KEY", pki::CLIENT_KEY),
    ("VALKEYRIE_TLS_OTHER_CLIENT_CERT", pki::OTHER_CLIENT),
    ("VALKEYRIE_TLS_OTHER_CLIENT_KEY", pki::OTHER_CLIENT_KEY),
    ("VALKEYRIE_TLS_EXPIRED_CLIENT_CERT", pki::EXPIRED_CLIENT),
    ("VALKEYRIE_TLS_EXPIRED_CLIENT_KEY", pki::EXPIRED_CLIENT_KEY),
];

/// One secured server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Secured {
    /// etcd with client TLS, `--client-cert-auth`, users and roles, and simple tokens that
    /// expire after [`ETCD_TOKEN_TTL`].
    Etcd,
    /// Redis on a TLS port only, requiring client certificates, with ACL users.
    Redis,
    /// Consul on HTTPS only with `verify_incoming`, and ACLs with `default_policy = "deny"`.
    Consul,
    /// ZooKeeper on its `secureClientPort` only (Netty), requiring client certificates,
    /// with digest authentication enforced.
    ZooKeeper,
    /// A TLS proxy with the server certificate in front of the plain DynamoDB Local.
    DynamoDb,
    /// A TLS proxy with an expired server certificate in front of the plain DynamoDB Local.
    DynamoDbExpired,
}

impl Secured {
    /// Every secured server, in the order they are started.
    pub const ALL: [Secured; 6] = [
        Secured::Redis,
        Secured::Etcd,
        Secured::Consul,
        Secured::ZooKeeper,
        Secured::DynamoDb,
        Secured::DynamoDbExpired,
    ];

    /// The store's name, as for the single server.
    pub fn name(self) -> &'static str {
        match self {
            Secured::DynamoDbExpired => "dynamodb-expired",
            _ => self.software().name(),
        }
    }

    /// Parses a name given on the command line (`etcd`, `redis`).
    pub fn from_name(name: &str) -> Result<Secured, String> {
        Secured::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Secured::ALL.iter().map(|s| s.name()).collect();
            format!("unknown secured server {name:?}; known: {}", known.join(", "))
        })
    }

    /// The secured server labelled `label` (`secure-etcd`, …), if one is.
    pub fn from_label(label: &str) -> Option<Secured> {
        Secured::ALL.into_iter().find(|s| s.label() == label)
    }

    /// The single server whose software it runs (what must be installed).
    pub fn software(self) -> Server {
        match self {
            Secured::Etcd => Server::Etcd,
            Secured::Redis => Server::Redis,
            Secured::Consul => Server::Consul,
            Secured::ZooKeeper => Server::ZooKeeper,
            Secured::DynamoDb | Secured::DynamoDbExpired => Server::DynamoDb,
        }
    }

    /// The plain server it stands in front of, which must run first: DynamoDB Local for
    /// the TLS proxies.
    pub fn upstream(self) -> Option<Server> {
        match self {
            Secured::DynamoDb | Secured::DynamoDbExpired => Some(Server::DynamoDb),
            Secured::Etcd | Secured::Redis | Secured::Consul | Secured::ZooKeeper => None,
        }
    }

    /// The environment variables a test run needs to reach this server: its endpoint and
    /// administrator, and the [shared](shared_env) PKI files and users.
    pub fn env(self) -> Vec<(&'static str, String)> {
        let mut env = shared_env();
        let address = self.address();
        match self {
            Secured::Etcd => env.extend([
                ("VALKEYRIE_SECURE_ETCD_ENDPOINTS", address),
                ("VALKEYRIE_SECURE_ETCD_ADMIN_USER", ETCD_ADMIN_USER.to_owned()),
                (
                    "VALKEYRIE_SECURE_ETCD_TOKEN_TTL",
                    format!("{}s", ETCD_TOKEN_TTL.as_secs()),
                ),
            ]),
            Secured::Redis => env.extend([
                ("VALKEYRIE_SECURE_REDIS_ADDRESS", address),
                ("VALKEYRIE_SECURE_REDIS_ADMIN_USER", REDIS_ADMIN_USER.to_owned()),
            ]),
            Secured::Consul => env.extend([
                ("VALKEYRIE_SECURE_CONSUL_ADDRESS", address),
                ("VALKEYRIE_SECURE_CONSUL_APP_TOKEN", CONSUL_APP_TOKEN.to_owned()),
                ("VALKEYRIE_SECURE_CONSUL_READ_TOKEN", CONSUL_READ_TOKEN.to_owned()),
                ("VALKEYRIE_SECURE_CONSUL_HIDDEN_PREFIX", CONSUL_HIDDEN_PREFIX.to_owned()),
            ]),
            Secured::ZooKeeper => env.extend([
                ("VALKEYRIE_SECURE_ZOOKEEPER_ENDPOINTS", address),
                ("VALKEYRIE_SECURE_ZOOKEEPER_ADMIN_USER", ZOOKEEPER_ADMIN_USER.to_owned()),
            ]),
            Secured::DynamoDb => env.push(("VALKEYRIE_SECURE_DYNAMODB_ENDPOINT", format!("https://{address}"))),
            Secured::DynamoDbExpired => env.push((
                "VALKEYRIE_SECURE_DYNAMODB_EXPIRED_ENDPOINT",
                format!("https://{address}"),
            )),
        }
        env
    }

    /// What a healthy server needs beyond answering: etcd's users, role and `auth
    /// enable`, Consul's policies and tokens, set up once (they live in the data
    /// directory, so a reused or restarted server already has them). Redis reads its users
    /// from its configuration.
    fn configure(self) -> Result<(), String> {
        match self {
            Secured::Etcd => configure_etcd(),
            Secured::Redis | Secured::ZooKeeper | Secured::DynamoDb | Secured::DynamoDbExpired => Ok(()),
            Secured::Consul => configure_consul(),
        }
    }
}

/// The variables every secured server shares: the PKI's files (absolute paths), the
/// administrator's password and the application user.
pub fn shared_env() -> Vec<(&'static str, String)> {
    let files = TLS_FILES.map(|(name, file)| (name, pki::path(file).display().to_string()));
    let users = [
        ("VALKEYRIE_SECURE_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("VALKEYRIE_SECURE_APP_USER", APP_USER),
        ("VALKEYRIE_SECURE_APP_PASSWORD", APP_PASSWORD),
        ("VALKEYRIE_SECURE_APP_PREFIX", APP_PREFIX),
    ];
    files
        .into_iter()
        .chain(users.map(|(name, value)| (name, value.to_owned())))
        .collect()
}

/// The variables of several secured servers, each once.
pub fn env_of(secured: &[Secured]) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = Vec::new();
    for (name, value) in secured.iter().flat_map(|s| s.env()) {
        if !env.iter().any(|(known, _)| *known == name) {
            env.push((name, value));
        }
    }
    env
}

impl Managed for Secured {
    fn label(self) -> String {
        format!("secure-{}", self.name())
    }

    fn ports(self) -> Vec<u16> {
        match self {
            // client (https), peer (http on loopback)
            Secured::Etcd => vec![23795, 23805],
            // TLS only: the plain port is off
            Secured::Redis => vec![16390],
            // https, dns, serf lan, serf wan, server rpc (the http port is off)
            Secured::Consul => vec![28501, 28600, 28301, 28302, 28300],
            // the secure client port only (no plain port, no admin server)
            Secured::ZooKeeper => vec![29281],
            Secured::DynamoDb => vec![28000],
            Secured::DynamoDbExpired => vec![28001],
        }
    }

    fn command(self, dir: &Path) -> Result<Command, String> {
        pki::ensure()?;
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("create {}: {e}", data.display()))?;
        match self {
            Secured::Etcd => Ok(etcd_command(self, &data)),
            Secured::Redis => redis_command(self, dir, &data),
            Secured::Consul => consul_command(self, dir, &data),
            Secured::ZooKeeper => zookeeper_command(self, dir, &data),
            Secured::DynamoDb => Ok(tls_proxy_command(self, pki::SERVER, pki::SERVER_KEY)),
            Secured::DynamoDbExpired => Ok(tls_proxy_command(self, pki::EXPIRED_SERVER, pki::EXPIRED_SERVER_KEY)),
        }
    }

    fn probe(self) -> Result<(), String> {
        match self {
            Secured::Etcd => {
                let body = curl(self, Request::get("/health"))?;
                if body.contains("\"health\":\"true\"") {
                    Ok(())
                } else {
                    Err(format!("{} /health answered {body:?}", self.label()))
                }
            }
            Secured::Redis => match redis_cli(REDIS_ADMIN_USER, ADMIN_PASSWORD, &["PING"]) {
                Ok(reply) if reply == "PONG" => Ok(()),
                Ok(reply) => Err(format!("{} PING answered {reply:?}", self.label())),
                Err(why) => Err(why),
            },
            Secured::Consul => {
                let leader = curl(self, Request::get("/v1/status/leader"))?;
                if leader.trim().len() <= 2 {
                    return Err(format!("{} has no leader yet ({leader:?})", self.label()));
                }
                // Until the server has loaded its ACL state even the master token is
                // refused; a read that is answered at all (found or not) means it has.
                curl(
                    self,
                    Request::get("/v1/kv/valkeyrie-probe")
                        .token(ADMIN_PASSWORD)
                        .allow_not_found(),
                )
                .map(drop)
            }
            Secured::ZooKeeper => match zookeeper_ruok(self)? {
                reply if reply.contains("imok") => Ok(()),
                reply => Err(format!("{} ruok answered {reply:?}", self.label())),
            },
            // Any HTTP answer means the proxy and DynamoDB Local behind it both run; the
            // expired certificate's proxy is asked without verification.
            Secured::DynamoDb | Secured::DynamoDbExpired => {
                let mut c = Command::new("curl");
                c.args(["--silent", "--noproxy", "*", "--output", "/dev/null", "--max-time"])
                    .arg(probe::PROBE_TIMEOUT.as_secs().to_string())
                    .args(["--write-out", "%{http_code}"])
                    .args(["--cacert"])
                    .arg(pki::path(pki::CA));
                if self == Secured::DynamoDbExpired {
                    c.arg("--insecure");
                }
                let output = probe::output(c.arg(format!("https://{}/", self.address())), CLIENT_TIMEOUT)?;
                match String::from_utf8_lossy(&output.stdout).trim() {
                    "000" | "" => Err(format!(
                        "{}: no HTTP answer through the proxy ({})",
                        self.label(),
                        failure(&output)
                    )),
                    _ => Ok(()),
                }
            }
        }
    }

    fn start_timeout(self) -> Duration {
        match self {
            Secured::Redis => Duration::from_secs(10),
            Secured::Etcd | Secured::Consul | Secured::ZooKeeper => Duration::from_secs(30),
            Secured::DynamoDb | Secured::DynamoDbExpired => Duration::from_secs(10),
        }
    }
}

/// Installs the software `secured` runs, and the clients the harness reaches them with.
pub fn install(secured: &[Secured]) -> Result<(), String> {
    let mut servers: Vec<Server> = secured.iter().map(|s| s.software()).collect();
    servers.sort();
    servers.dedup();
    install::install(&servers)?;
    install::apt_install(&[
        ("curl", "curl"),
        ("redis-cli", "redis-tools"),
        ("openssl", "openssl"),
        ("socat", "socat"),
    ])
}

/// Starts `secured` unless the harness already runs it, waits until it is healthy and set
/// up (users, roles, auth). Generates the PKI first if a file of it is missing, and then
/// restarts any secured server still running on the old one.
pub fn start(secured: Secured) -> Result<Started, String> {
    if pki::ensure()? {
        for stale in Secured::ALL {
            if process::state(stale) != State::Stopped {
                say!("servers", "{}: runs on the previous PKI, restarting it", stale.label());
                process::stop_by_pid(stale)?;
            }
        }
    }
    if let Some(server) = secured.upstream() {
        if process::state(server) == State::Stopped {
            // It outlives this call, as servers started by `servers start` do; a test
            // run starts it itself first (the suite lists it), and stops it.
            process::start(server).map_err(|why| format!("{}: {why}", server.name()))?;
        }
    }
    let started = process::start(secured)?;
    if let Err(why) = secured.configure() {
        if let Started::Spawned(child) = started {
            let _ = process::stop_child(secured, child);
        }
        return Err(why);
    }
    Ok(started)
}

/// Stops `secured` if the harness runs it, by its pid file.
pub fn stop(secured: Secured) -> Result<(), String> {
    process::stop_by_pid(secured)
}

/// Stops `secured` (SIGTERM) and starts it again on its data directory, waiting until it
/// is healthy: the fault hook the security tests use (an etcd token must survive a
/// restart of the server). Redis keeps no data across it (no snapshots).
pub fn restart(secured: Secured) -> Result<(), String> {
    process::stop_by_pid(secured)?;
    start(secured).map(drop)
}

/// etcd serving clients over TLS only, requiring a client certificate signed by the CA;
/// its peer port stays plain HTTP on loopback (one member, no peer traffic).
fn etcd_command(secured: Secured, data: &Path) -> Command {
    let ports = secured.ports();
    let client = format!("https://{HOST}:{}", ports[0]);
    let peer = format!("http://{HOST}:{}", ports[1]);
    let mut c = super::etcd_command(EtcdMember {
        name: &secured.label(),
        data,
        client_url: &client,
        peer_url: &peer,
        initial_cluster: &format!("{}={peer}", secured.label()),
        token: "valkeyrie-secure",
    });
    c.arg("--cert-file")
        .arg(pki::path(pki::SERVER))
        .arg("--key-file")
        .arg(pki::path(pki::SERVER_KEY))
        .arg("--trusted-ca-file")
        .arg(pki::path(pki::CA))
        .arg("--client-cert-auth");
    c.args(["--auth-token", "simple", "--auth-token-ttl"])
        .arg(ETCD_TOKEN_TTL.as_secs().to_string());
    c
}

/// Redis from a generated `redis.conf`: the TLS port only, client certificates required,
/// the ACL users, keyspace notifications on, nothing on disk.
fn redis_command(secured: Secured, dir: &Path, data: &Path) -> Result<Command, String> {
    let file = |name: &str| quoted(&pki::path(name).display().to_string());
    let config = format!(
        "bind {HOST}\nport 0\ntls-port {port}\n\
         tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\ntls-auth-clients yes\n\
         notify-keyspace-events KEA\nsave \"\"\nappendonly no\ndir {data}\n\
         daemonize no\nlogfile \"\"\n\
         user default off\n\
         user {admin} on {admin_password} ~* &* +@all\n\
         user {app} on {app_password} {app_keys} &* +@all\n",
        port = secured.ports()[0],
        cert = file(pki::SERVER),
        key = file(pki::SERVER_KEY),
        ca = file(pki::CA),
        data = quoted(&data.display().to_string()),
        admin = REDIS_ADMIN_USER,
        admin_password = quoted(&format!(">{ADMIN_PASSWORD}")),
        app = APP_USER,
        app_password = quoted(&format!(">{APP_PASSWORD}")),
        app_keys = quoted(&format!("~{APP_PREFIX}*")),
    );
    let path = dir.join("redis.conf");
    std::fs::write(&path, config).map_err(|e| format!("write {}: {e}", path.display()))?;
    let mut c = Command::new("redis-server");
    c.arg(path);
    Ok(c)
}

/// Consul from a generated `consul.hcl`: one server, HTTPS only with `verify_incoming`
/// (a client certificate signed by the CA is required), and ACLs denying by default. The
/// master token is also the agent's own, so the agent may register its node (sessions need
/// it) whatever the policies.
fn consul_command(secured: Secured, dir: &Path, data: &Path) -> Result<Command, String> {
    let [https, dns, serf_lan, serf_wan, server] = secured.ports()[..] else {
        unreachable!("the secured consul has five ports")
    };
    let file = |name: &str| quoted(&pki::path(name).display().to_string());
    let config = format!(
        "node_name = \"valkeyrie-secure\"\nserver = true\nbootstrap_expect = 1\n\
         data_dir = {data}\nbind_addr = \"{HOST}\"\nclient_addr = \"{HOST}\"\n\
         ports {{\n  http = -1\n  https = {https}\n  dns = {dns}\n  serf_lan = {serf_lan}\n  \
         serf_wan = {serf_wan}\n  server = {server}\n  grpc = -1\n}}\n\
         performance {{ raft_multiplier = 1 }}\n\
         ca_file = {ca}\ncert_file = {cert}\nkey_file = {key}\n\
         verify_incoming = true\nverify_outgoing = true\n\
         acl {{\n  enabled = true\n  default_policy = \"deny\"\n  down_policy = \"extend-cache\"\n  \
         tokens {{\n    master = {master}\n    agent = {master}\n  }}\n}}\n",
        data = quoted(&data.display().to_string()),
        ca = file(pki::CA),
        cert = file(pki::SERVER),
        key = file(pki::SERVER_KEY),
        master = quoted(ADMIN_PASSWORD),
    );
    let path = dir.join("consul.hcl");
    std::fs::write(&path, config).map_err(|e| format!("write {}: {e}", path.display()))?;
    let mut c = Command::new(install::consul_binary());
    c.env("CHECKPOINT_DISABLE", "1")
        .args(["agent", "-config-file"])
        .arg(path);
    Ok(c)
}

/// socat terminating TLS with `cert` and `key` on the variant's port and forwarding each
/// connection to the plain DynamoDB Local. It asks for no client certificate: the AWS SDK's
/// HTTP client cannot present one.
fn tls_proxy_command(secured: Secured, cert: &str, key: &str) -> Command {
    let listen = format!(
        "OPENSSL-LISTEN:{port},bind={HOST},reuseaddr,fork,verify=0,cert={cert},key={key}",
        port = secured.ports()[0],
        cert = pki::path(cert).display(),
        key = pki::path(key).display(),
    );
    let mut c = Command::new("socat");
    c.arg(listen).arg(format!("TCP:{}", Server::DynamoDb.address()));
    c
}

/// ZooKeeper from a generated `zoo.cfg`: the secure client port only, through Netty (the
/// one connection factory with TLS), client certificates required, TLS 1.3 offered (3.8
/// speaks only 1.2 unless its cipher list names 1.3's suites), digest authentication
/// enforced, the admin server off, and TTL nodes on as on the plain server.
fn zookeeper_command(secured: Secured, dir: &Path, data: &Path) -> Result<Command, String> {
    // ZooKeeper reads the key and the certificate from one PEM file.
    let keystore = dir.join("server-keystore.pem");
    let mut pem = std::fs::read(pki::path(pki::SERVER_KEY)).map_err(|e| format!("read the server key: {e}"))?;
    pem.extend(std::fs::read(pki::path(pki::SERVER)).map_err(|e| format!("read the server certificate: {e}"))?);
    std::fs::write(&keystore, pem).map_err(|e| format!("write {}: {e}", keystore.display()))?;
    let config = format!(
        "tickTime=2000\ndataDir={data}\n\
         secureClientPort={port}\nsecureClientPortAddress={HOST}\n\
         serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
         ssl.keyStore.location={keystore}\nssl.keyStore.type=PEM\n\
         ssl.trustStore.location={ca}\nssl.trustStore.type=PEM\nssl.clientAuth=need\n\
         ssl.protocol=TLSv1.3\nssl.enabledProtocols=TLSv1.3,TLSv1.2\n\
         ssl.ciphersuites=TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384,\
         TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n\
         authProvider.1=org.apache.zookeeper.server.auth.DigestAuthenticationProvider\n\
         enforce.auth.enabled=true\nenforce.auth.schemes=digest\n\
         admin.enableServer=false\n4lw.commands.whitelist=ruok\n",
        data = data.display(),
        port = secured.ports()[0],
        keystore = keystore.display(),
        ca = pki::path(pki::CA).display(),
    );
    let path = dir.join("zoo.cfg");
    std::fs::write(&path, config).map_err(|e| format!("write {}: {e}", path.display()))?;
    let mut c = super::zookeeper_java();
    // Netty's codec: zookeeper.jar's manifest lists Netty's other jars, not this one, and
    // without it every connection fails once accepted.
    c.args([
        "-cp",
        "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar:/usr/share/java/netty-codec.jar",
    ])
    .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
    .arg(path);
    Ok(c)
}

/// `ruok` over TLS with the client certificate (openssl; the four-letter words need no
/// session, so `enforce.auth` lets them through); what the server answered.
fn zookeeper_ruok(secured: Secured) -> Result<String, String> {
    let mut c = Command::new("sh");
    c.args([
        "-c",
        "printf ruok | openssl s_client -connect \"$1\" -cert \"$2\" -key \"$3\" -CAfile \"$4\" -quiet 2>/dev/null",
        "sh",
    ])
    .arg(secured.address())
    .arg(pki::path(pki::CLIENT))
    .arg(pki::path(pki::CLIENT_KEY))
    .arg(pki::path(pki::CA));
    let output = probe::output(&mut c, CLIENT_TIMEOUT)?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A double-quoted string of a Redis configuration file or of HCL (both escape `\\` and
/// `"` alike).
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `CA_FLAG <ca> --cert <client> --key <client key>`: the flags curl, redis-cli and
/// etcdctl share for the private CA and the client certificate.
fn client_certificate_args(ca_flag: &str) -> [std::ffi::OsString; 6] {
    [
        ca_flag.into(),
        pki::path(pki::CA).into(),
        "--cert".into(),
        pki::path(pki::CLIENT).into(),
        "--key".into(),
        pki::path(pki::CLIENT_KEY).into(),
    ]
}

/// One HTTPS request of the harness to a secured etcd or Consul.
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    /// A Consul ACL token, sent as `X-Consul-Token`.
    token: Option<&'a str>,
    body: Option<&'a str>,
    /// Whether a 404 is an answer (the body is returned) rather than a failure.
    allow_not_found: bool,
}

impl<'a> Request<'a> {
    fn get(path: &'a str) -> Self {
        Request {
            method: "GET",
            path,
            token: None,
            body: None,
            allow_not_found: false,
        }
    }

    fn put(path: &'a str, body: &'a str) -> Self {
        Request {
            method: "PUT",
            body: Some(body),
            ..Request::get(path)
        }
    }

    fn token(self, token: &'a str) -> Self {
        Request {
            token: Some(token),
            ..self
        }
    }

    fn allow_not_found(self) -> Self {
        Request {
            allow_not_found: true,
            ..self
        }
    }
}

/// Sends `request` to `secured` with the client certificate; the body of a 2xx answer
/// (or of a 404 the request allows).
fn curl(secured: Secured, request: Request) -> Result<String, String> {
    const STATUS_MARK: &str = "\nvalkeyrie-http-status:";
    let mut c = Command::new("curl");
    c.args(["--silent", "--show-error", "--noproxy", "*", "--max-time"])
        .arg(probe::PROBE_TIMEOUT.as_secs().to_string())
        .args(client_certificate_args("--cacert"))
        .args(["--request", request.method, "--write-out"])
        .arg(format!("{STATUS_MARK}%{{http_code}}"));
    if let Some(token) = request.token {
        c.arg("--header").arg(format!("X-Consul-Token: {token}"));
    }
    if let Some(body) = request.body {
        c.args(["--data-binary", body]);
    }
    c.arg(format!("https://{}{}", secured.address(), request.path));
    let output = probe::output(&mut c, CLIENT_TIMEOUT)?;
    let what = format!("curl {} {}", request.method, request.path);
    if !output.status.success() {
        return Err(format!("{what}: {}", failure(&output)));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, status) = text.rsplit_once(STATUS_MARK).unwrap_or((&text, ""));
    match status.trim() {
        code if code.starts_with('2') => Ok(body.to_owned()),
        "404" if request.allow_not_found => Ok(body.to_owned()),
        code => Err(format!("{what}: HTTP {code}: {}", body.trim())),
    }
}

/// One redis-cli command on the secured Redis as `user`, with the client certificate;
/// the reply, trimmed.
fn redis_cli(user: &str, password: &str, args: &[&str]) -> Result<String, String> {
    let secured = Secured::Redis;
    let mut c = Command::new("redis-cli");
    c.arg("--tls")
        .args(client_certificate_args("--cacert"))
        .args(["-h", HOST, "-p", &secured.ports()[0].to_string()])
        .args(["--user", user, "--pass", password, "--no-auth-warning", "-e"])
        .args(args);
    let output = probe::output(&mut c, CLIENT_TIMEOUT)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!("redis-cli {}: {}", args.join(" "), failure(&output)))
    }
}

/// One etcdctl command on the secured etcd with the client certificate and no user (what
/// the setup needs: it runs before `auth enable`); its output.
fn etcdctl(args: &[&str]) -> Result<String, String> {
    let mut c = Command::new("etcdctl");
    // Variables of the caller's shell (ETCDCTL_ENDPOINTS, …) would conflict with the flags.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ETCDCTL_") {
            c.env_remove(name);
        }
    }
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}", Secured::Etcd.address()))
        .args(client_certificate_args("--cacert"))
        .args(["--dial-timeout=2s", "--command-timeout=5s"]);
    c.args(args);
    let output = probe::output(&mut c, CLIENT_TIMEOUT)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("etcdctl {}: {}", args.join(" "), failure(&output)))
    }
}

/// What a failed client program said, on one line.
fn failure(output: &Output) -> String {
    let said = format!(
        "{} {}",
        String::from_utf8_lossy(&output.stderr).trim(),
        String::from_utf8_lossy(&output.stdout).trim()
    );
    format!("{} ({})", said.trim().replace('\n', " | "), output.status)
}

/// Sets up etcd's users and roles and turns auth on, unless that is done: `root` (role
/// root), role `app` with read-write on [`APP_PREFIX`], user `app` with that role. Each
/// step tolerates what an interrupted earlier setup left.
fn configure_etcd() -> Result<(), String> {
    let begun = Instant::now();
    let label = Secured::Etcd.label();
    // With auth on, a request with the client certificate alone is refused (its CN is no
    // user); with auth off it succeeds. (etcdctl with `--user` is no test: when auth is
    // off it warns and goes on without.) `auth enable` is the last step, so auth on means
    // the setup is complete.
    match etcdctl(&["get", "valkeyrie-auth-probe"]) {
        Ok(_) => {}
        Err(why) if why.contains("permission denied") => return Ok(()),
        Err(why) => return Err(format!("{label}: checking whether auth is on: {why}")),
    }
    let steps: [&[&str]; 7] = [
        &["user", "add", ETCD_ADMIN_USER, "--new-user-password", ADMIN_PASSWORD],
        &["user", "grant-role", ETCD_ADMIN_USER, "root"],
        &["role", "add", APP_ROLE],
        &[
            "role",
            "grant-permission",
            APP_ROLE,
            "--prefix=true",
            "readwrite",
            APP_PREFIX,
        ],
        &["user", "add", APP_USER, "--new-user-password", APP_PASSWORD],
        &["user", "grant-role", APP_USER, APP_ROLE],
        &["auth", "enable"],
    ];
    for step in steps {
        match etcdctl(step) {
            Err(why) if !why.contains("already exists") => return Err(format!("{label}: setting up auth: {why}")),
            _ => {}
        }
    }
    say!(
        "servers",
        "{label}: users {ETCD_ADMIN_USER} and {APP_USER} (read-write on {APP_PREFIX}) set up, auth enabled, in {} ms",
        begun.elapsed().as_millis()
    );
    Ok(())
}

/// Makes Consul's ACL policies and the tokens that carry them, unless that is done: each
/// token is looked up first (a token reads itself), and "already exists" answers of an
/// interrupted earlier setup are tolerated.
fn configure_consul() -> Result<(), String> {
    let begun = Instant::now();
    let label = Secured::Consul.label();
    for (policy, rules, token) in CONSUL_POLICIES {
        if curl(Secured::Consul, Request::get("/v1/acl/token/self").token(token)).is_ok() {
            continue;
        }
        let body = format!(
            "{{\"Name\":\"{policy}\",\"Rules\":\"{}\"}}",
            rules.replace('"', "\\\"").replace('\n', "\\n")
        );
        match curl(
            Secured::Consul,
            Request::put("/v1/acl/policy", &body).token(ADMIN_PASSWORD),
        ) {
            Err(why) if !why.contains("already exists") => return Err(format!("{label}: policy {policy}: {why}")),
            _ => {}
        }
        let body = format!("{{\"SecretID\":\"{token}\",\"Policies\":[{{\"Name\":\"{policy}\"}}]}}");
        curl(
            Secured::Consul,
            Request::put("/v1/acl/token", &body).token(ADMIN_PASSWORD),
        )
        .map_err(|why| format!("{label}: the token of {policy}: {why}"))?;
    }
    say!(
        "servers",
        "{label}: tokens for write and read on {APP_PREFIX} set up, in {} ms",
        begun.elapsed().as_millis()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_apart_from_every_other_process() {
        let mut ports: Vec<u16> = Server::ALL.into_iter().flat_map(|s| s.ports().to_vec()).collect();
        for cluster in super::super::cluster::Cluster::ALL {
            ports.extend(cluster.members().into_iter().flat_map(Managed::ports));
        }
        ports.extend(Secured::ALL.into_iter().flat_map(Managed::ports));
        let count = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), count, "two processes share a port");
    }

    #[test]
    fn labels_and_names_round_trip() {
        for secured in Secured::ALL {
            assert_eq!(Secured::from_label(&secured.label()), Some(secured));
            assert_eq!(Secured::from_name(secured.name()), Ok(secured));
        }
        assert_eq!(Secured::Etcd.label(), "secure-etcd");
        assert!(Secured::from_label("etcd").is_none());
    }

    #[test]
    fn every_variant_exports_the_shared_variables_once() {
        let env = env_of(&Secured::ALL);
        for (name, _) in shared_env() {
            assert_eq!(env.iter().filter(|(n, _)| *n == name).count(), 1, "{name}");
        }
        let value = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        assert_eq!(
            value("VALKEYRIE_SECURE_ETCD_ENDPOINTS").as_deref(),
            Some("127.0.0.1:23795")
        );
        assert_eq!(
            value("VALKEYRIE_SECURE_REDIS_ADDRESS").as_deref(),
            Some("127.0.0.1:16390")
        );
        assert_eq!(value("VALKEYRIE_SECURE_ETCD_TOKEN_TTL").as_deref(), Some("3s"));
        assert!(
            value("VALKEYRIE_TLS_CA_FILE").is_some_and(|path| path.starts_with('/') && path.ends_with("/pki/ca.pem"))
        );
    }

    #[test]
    fn passwords_need_percent_encoding_and_fit_one_config_word() {
        for password in [ADMIN_PASSWORD, APP_PASSWORD] {
            assert!(password.contains(['/', '?', '#', '@']), "{password}");
            assert!(!password.contains([' ', '"', '\\']), "{password}");
        }
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
