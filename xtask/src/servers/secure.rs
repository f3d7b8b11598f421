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
//! secured server: an administrator (etcd `root`, Redis `admin`) with [`ADMIN_PASSWORD`],
//! and [`APP_USER`] with [`APP_PASSWORD`], allowed to read and write under [`APP_PREFIX`]
//! only. The passwords are test secrets on loopback; they hold characters a URL must
//! percent-encode, so the way a client parses them is tested too.
//!
//! The harness reaches these servers through curl, redis-cli and etcdctl (child processes
//! with timeouts) rather than a TLS stack of its own.
//!
//! Designed to grow: ZooKeeper, Consul and a TLS proxy in front of DynamoDB Local become
//! further variants of [`Secured`].

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
/// Redis's administrator (the `default` user is off).
pub const REDIS_ADMIN_USER: &str = "admin";
/// The lifetime of etcd's simple tokens, short so that tokens expire during a suite (the
/// default is 5 minutes). A token lives this long after its last use.
pub const ETCD_TOKEN_TTL: Duration = Duration::from_secs(3);

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
}

impl Secured {
    /// Every secured server, in the order they are started.
    pub const ALL: [Secured; 2] = [Secured::Redis, Secured::Etcd];

    /// The store's name, as for the single server.
    pub fn name(self) -> &'static str {
        self.software().name()
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
        }
        env
    }

    /// What a healthy server needs beyond answering: etcd's users, role and `auth
    /// enable`, set up once (they live in its data directory, so a reused or restarted
    /// server already has them). Redis reads its users from its configuration.
    fn configure(self) -> Result<(), String> {
        match self {
            Secured::Etcd => configure_etcd(),
            Secured::Redis => Ok(()),
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
        }
    }

    fn command(self, dir: &Path) -> Result<Command, String> {
        pki::ensure()?;
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("create {}: {e}", data.display()))?;
        match self {
            Secured::Etcd => Ok(etcd_command(self, &data)),
            Secured::Redis => redis_command(self, dir, &data),
        }
    }

    fn probe(self) -> Result<(), String> {
        match self {
            Secured::Etcd => {
                let body = curl(self, "/health")?;
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
        }
    }

    fn start_timeout(self) -> Duration {
        match self {
            Secured::Redis => Duration::from_secs(10),
            Secured::Etcd => Duration::from_secs(30),
        }
    }
}

/// Installs the software `secured` runs, and the clients the harness reaches them with.
pub fn install(secured: &[Secured]) -> Result<(), String> {
    let mut servers: Vec<Server> = secured.iter().map(|s| s.software()).collect();
    servers.sort();
    servers.dedup();
    install::install(&servers)?;
    install::apt_install(&[("curl", "curl"), ("redis-cli", "redis-tools")])
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

/// A double-quoted word of a Redis configuration file.
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

/// GETs `path` from the secured etcd with the client certificate; the body.
fn curl(secured: Secured, path: &str) -> Result<String, String> {
    let mut c = Command::new("curl");
    c.args(["--silent", "--show-error", "--noproxy", "*", "--max-time"])
        .arg(probe::PROBE_TIMEOUT.as_secs().to_string())
        .args(client_certificate_args("--cacert"))
        .arg(format!("https://{}{path}", secured.address()));
    let output = probe::output(&mut c, CLIENT_TIMEOUT)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("curl {path}: {}", failure(&output)))
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
