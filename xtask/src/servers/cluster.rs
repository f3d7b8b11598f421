//! The clusters users run in production, on loopback (`cargo xtask servers start
//! --cluster`): a 3-member etcd cluster, a 3-node ZooKeeper ensemble, a 3-server Consul
//! cluster, a Redis primary with one replica watched by three Sentinels (`redis-sentinel`),
//! and a Redis Cluster of three primaries with a replica each (`redis-cluster`).
//!
//! Each member is a process of its own ([`Member`], run by [`super::process`] like a
//! single server), with its directory under `target/servers/<label>/` and ports apart
//! from the single servers', so both sets can run at once. [`Cluster::leader`] asks the
//! cluster itself who leads, so a fault case kills the process that matters.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::{self, Started};
use super::{etcd_command, install, EtcdMember, Managed, CONSUL_MASTER_TOKEN, HOST};
use crate::{probe, say};

/// How long a started cluster may take to be [ready](Cluster::ready) for a fault.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How many members each cluster has (Redis: how many Sentinels).
const MEMBERS: usize = 3;

/// Redis data nodes of the Sentinel group: a primary and its replica.
const REDIS_DATA_NODES: u16 = 2;

/// Nodes of the Redis Cluster: three primaries, then a replica for each.
const REDIS_CLUSTER_NODES: u16 = 6;

/// How long a Redis Cluster node may go unreachable before the others mark it failed and
/// its replica takes over: well below the fault suite's failover bound.
const REDIS_CLUSTER_NODE_TIMEOUT_MS: u32 = 1000;

/// Hash slots of a Redis Cluster.
const REDIS_CLUSTER_SLOTS: u32 = 16384;

/// The Redis Cluster's spare node, on ports of its own: no member until
/// [`add_spare_node`] adds it (a fault case's "node added").
pub const REDIS_CLUSTER_SPARE: Member = Member::ClusterNode(REDIS_CLUSTER_NODES);

/// The name Sentinel monitors the Redis primary under.
pub const REDIS_SERVICE: &str = "valkeyrie";

/// A hash tag in slot 0 of a Redis Cluster (`CLUSTER KEYSLOT` agrees: the readiness check
/// asks), whose primary is the cluster's [leader](Cluster::leader).
const REDIS_CLUSTER_LEADER_TAG: &str = "{vk-slot0-1810}";

/// One of the clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cluster {
    /// Three etcd members.
    Etcd,
    /// Three ZooKeeper servers in one ensemble.
    ZooKeeper,
    /// Three Consul servers.
    Consul,
    /// A Redis primary, its replica and three Sentinels.
    RedisSentinel,
    /// A Redis Cluster: three primaries and a replica of each.
    RedisCluster,
}

/// One process of a cluster; the number counts from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    /// etcd member `n`.
    Etcd(u16),
    /// ZooKeeper server `n` (its `myid` is `n + 1`).
    ZooKeeper(u16),
    /// Consul server `n`.
    Consul(u16),
    /// Redis data node `n` of the Sentinel group: 0 starts as the primary, 1 as its replica.
    Redis(u16),
    /// Sentinel `n`.
    Sentinel(u16),
    /// Redis Cluster node `n`: 0–2 start as the primaries, 3–5 as their replicas.
    ClusterNode(u16),
}

impl Cluster {
    /// Every cluster.
    pub const ALL: [Cluster; 5] = [
        Cluster::RedisSentinel,
        Cluster::RedisCluster,
        Cluster::Etcd,
        Cluster::ZooKeeper,
        Cluster::Consul,
    ];

    /// Its name on the command line: the store's, as for the single server (Redis: how
    /// its nodes are arranged).
    pub fn name(self) -> &'static str {
        match self {
            Cluster::Etcd => "etcd",
            Cluster::ZooKeeper => "zookeeper",
            Cluster::Consul => "consul",
            Cluster::RedisSentinel => "redis-sentinel",
            Cluster::RedisCluster => "redis-cluster",
        }
    }

    /// Parses a name given on the command line.
    pub fn from_name(name: &str) -> Result<Cluster, String> {
        Cluster::ALL.into_iter().find(|c| c.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Cluster::ALL.iter().map(|c| c.name()).collect();
            format!("unknown cluster {name:?}; known: {}", known.join(", "))
        })
    }

    /// Every process of the cluster, in start order (Redis: data nodes, then Sentinels).
    pub fn members(self) -> Vec<Member> {
        let n = 0..MEMBERS as u16;
        match self {
            Cluster::Etcd => n.map(Member::Etcd).collect(),
            Cluster::ZooKeeper => n.map(Member::ZooKeeper).collect(),
            Cluster::Consul => n.map(Member::Consul).collect(),
            Cluster::RedisSentinel => (0..REDIS_DATA_NODES)
                .map(Member::Redis)
                .chain(n.map(Member::Sentinel))
                .collect(),
            Cluster::RedisCluster => (0..REDIS_CLUSTER_NODES).map(Member::ClusterNode).collect(),
        }
    }

    /// The members a client connects to: every member (the Sentinel group: its Sentinels).
    pub fn client_members(self) -> Vec<Member> {
        self.members()
            .into_iter()
            .filter(|m| !matches!(m, Member::Redis(_)))
            .collect()
    }

    /// What a key starts with to live where the [leader](Cluster::leader) serves it, so
    /// that killing the leader hits it: on the Redis Cluster a hash tag in slot 0 and a
    /// slash; elsewhere nothing (the leader serves every key).
    pub fn leader_key_prefix(self) -> String {
        match self {
            Cluster::RedisCluster => format!("{REDIS_CLUSTER_LEADER_TAG}/"),
            _ => String::new(),
        }
    }

    /// The client endpoints, comma-separated `host:port`s.
    pub fn endpoints(self) -> String {
        let addresses: Vec<String> = self.client_members().into_iter().map(Managed::address).collect();
        addresses.join(",")
    }

    /// The environment variables a test run needs to reach this cluster.
    pub fn env(self) -> Vec<(&'static str, String)> {
        let endpoints = self.endpoints();
        match self {
            Cluster::Etcd => vec![("VALKEYRIE_ETCD_CLUSTER_ENDPOINTS", endpoints)],
            Cluster::ZooKeeper => vec![("VALKEYRIE_ZOOKEEPER_CLUSTER_ENDPOINTS", endpoints)],
            Cluster::Consul => vec![("VALKEYRIE_CONSUL_CLUSTER_ENDPOINTS", endpoints)],
            Cluster::RedisSentinel => vec![
                ("VALKEYRIE_REDIS_SENTINELS", endpoints),
                ("VALKEYRIE_REDIS_SENTINEL_SERVICE", REDIS_SERVICE.to_owned()),
            ],
            Cluster::RedisCluster => vec![(
                "VALKEYRIE_REDIS_CLUSTER_URL",
                format!("redis://{endpoints}?topology=cluster"),
            )],
        }
    }

    /// The member that leads now (the Sentinel group: the data node every Sentinel names
    /// as primary; the Redis Cluster: the primary of slot 0 as every reachable node sees
    /// it). While a failover spreads, Sentinels or nodes that disagree are an error.
    pub fn leader(self) -> Result<Member, String> {
        let agreement = matches!(self, Cluster::RedisSentinel | Cluster::RedisCluster);
        let mut answers = Vec::new();
        let mut named = Vec::new();
        for member in self.client_members() {
            match member.leader_seen() {
                Ok(Some(leader)) if !agreement => return Ok(leader),
                Ok(Some(leader)) => named.push((member, leader)),
                Ok(None) => answers.push(format!("{}: no leader", member.label())),
                Err(why) => answers.push(why),
            }
        }
        match named.as_slice() {
            [(_, first), rest @ ..] if rest.iter().all(|(_, other)| other == first) => Ok(*first),
            [_, ..] => {
                let views: Vec<String> = named
                    .iter()
                    .map(|(member, primary)| format!("{} names {}", member.label(), primary.label()))
                    .collect();
                Err(format!("the {} cluster disagrees: {}", self.name(), views.join(", ")))
            }
            [] => Err(format!("{} cluster has no leader: {}", self.name(), answers.join("; "))),
        }
    }

    /// Whether the whole cluster is ready for a fault: every member healthy, (Consul) every
    /// server a raft voter, (the Sentinel group) the replica in sync and every Sentinel
    /// aware of the replica and the other Sentinels, so a failover can happen, and (the
    /// Redis Cluster) every node seeing all six with every slot served, and each primary's
    /// replica in sync.
    pub fn ready(self) -> Result<(), String> {
        for member in self.members() {
            member.probe()?;
        }
        if self == Cluster::RedisCluster {
            return redis_cluster_ready();
        }
        if self == Cluster::Consul {
            // A server that rejoins is a non-voter until autopilot promotes it: until then
            // the cluster could not survive losing another.
            for member in self.members() {
                let token = [("X-Consul-Token", CONSUL_MASTER_TOKEN)];
                let (status, body) =
                    probe::http(&member.address(), "GET", "/v1/operator/raft/configuration", &token, "")?;
                let voters = body.matches("\"Voter\":true").count();
                if status != 200 || voters != MEMBERS {
                    return Err(format!("{} counts {voters} raft voters ({status})", member.label()));
                }
                // For a moment after the election the ACL system is still in legacy mode.
                let (status, body) = probe::http(&member.address(), "GET", "/v1/acl/token/self", &token, "")?;
                if status != 200 {
                    return Err(format!("{}: ACLs not ready ({status}: {body})", member.label()));
                }
            }
        }
        if self == Cluster::RedisSentinel {
            // A write reaches the replica: until the replica's first acknowledgement after
            // a full sync, the primary only buffers what it owes it, and a failover then
            // loses those writes. `WAIT` counts the replicas that have this connection's
            // write.
            let primary = self.leader()?;
            let replies = probe::redis_lines(
                &primary.address(),
                &[&["SET", "valkeyrie-cluster-probe", "1"], &["WAIT", "1", "1000"]],
            )?;
            if replies.last().map(String::as_str) != Some(":1") {
                return Err(format!(
                    "{}'s replica has not acknowledged a write ({replies:?})",
                    primary.label()
                ));
            }
            // Every Sentinel knows the others (a failover needs a majority of them) and
            // sees the replica as a healthy one it could promote.
            let others = (MEMBERS - 1).to_string();
            for sentinel in self.client_members() {
                let master = probe::redis(&sentinel.address(), &["SENTINEL", "MASTER", REDIS_SERVICE])?;
                let replicas = probe::redis(&sentinel.address(), &["SENTINEL", "REPLICAS", REDIS_SERVICE])?;
                let seen = resp_field(&master, "num-other-sentinels");
                let flags = resp_field(&replicas, "flags");
                let link = resp_field(&replicas, "master-link-status");
                if seen.as_deref() != Some(others.as_str())
                    || flags.as_deref() != Some("slave")
                    || link.as_deref() != Some("ok")
                {
                    return Err(format!(
                        "{} sees {seen:?} other sentinels and a replica flagged {flags:?} with link {link:?}",
                        sentinel.label()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Calls `check` every 100 ms until it answers `Ok`, for at most `timeout`; its last error
/// otherwise, prefixed with `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let begun = Instant::now();
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(why) if begun.elapsed() > timeout => return Err(format!("{what} after {timeout:?}: {why}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

impl Cluster {
    /// Waits until the cluster is [ready](Cluster::ready), for at most a minute.
    pub fn await_ready(self) -> Result<(), String> {
        wait_until(&format!("the {} cluster not ready", self.name()), READY_TIMEOUT, || {
            self.ready()
        })
    }

    /// Waits until a member other than `gone` leads (everywhere the cluster says so),
    /// for at most a minute; that member.
    pub fn await_leader_other_than(self, gone: Member) -> Result<Member, String> {
        let what = format!("the {} cluster did not fail over from {}", self.name(), gone.label());
        wait_until(&what, READY_TIMEOUT, || match self.leader()? {
            leader if leader == gone => Err(format!("{} still leads", gone.label())),
            leader => Ok(leader),
        })
    }
}

/// Starts every member of `cluster` not running yet (the Redis Cluster: forming it when
/// its nodes do not know each other yet) and waits until the cluster is
/// [ready](Cluster::ready); what each member's start did.
pub fn start(cluster: Cluster) -> Result<Vec<(Member, Started)>, String> {
    let started = process::start_all(&cluster.members())?;
    let formed = match cluster {
        Cluster::RedisCluster => form_redis_cluster(),
        _ => Ok(()),
    };
    match formed.and_then(|()| cluster.await_ready()) {
        Ok(()) => {
            say!("servers", "{} cluster: ready ({})", cluster.name(), cluster.endpoints());
            Ok(started)
        }
        Err(why) => {
            process::stop_spawned(started);
            Err(why)
        }
    }
}

/// Restarts `member` on its data and waits until the cluster is ready. A Redis data node
/// keeps nothing on disk: it is killed, and started only once the others have promoted a
/// replica in its place if it was a primary (started at once, as the primary they still
/// name, it would come back empty and its replica would copy the empty data set).
pub fn restart(member: Member) -> Result<(), String> {
    if let Member::Redis(_) | Member::ClusterNode(_) = member {
        process::kill(member)?;
        await_safe_to_start(member)?;
    } else {
        process::stop_by_pid(member)?;
    }
    process::start(member)?;
    member.cluster().await_ready()
}

/// Waits until the stopped `member` can start without harm: a Redis data node (of the
/// Sentinel group or the cluster) that keeps nothing on disk once the others have promoted
/// a replica in its place, if it was a primary; any other member at once.
pub fn await_safe_to_start(member: Member) -> Result<(), String> {
    match member {
        Member::Redis(_) => member.cluster().await_leader_other_than(member).map(drop),
        Member::ClusterNode(_) if member.serves_slots()? => await_replaced(member),
        _ => Ok(()),
    }
}

/// Moves `slots` hash slots from the Redis Cluster primary `from` to the primary `to`
/// with `redis-cli --cluster reshard` (keys and all, `MIGRATE` by `MIGRATE`); `from`'s
/// lowest slots go first, so slot 0 (the [leader](Cluster::leader)'s) moves.
pub fn reshard(from: Member, to: Member, slots: u32) -> Result<(), String> {
    let (from_id, to_id, count) = (node_id(from)?, node_id(to)?, slots.to_string());
    let args = [
        "reshard",
        &from.address(),
        "--cluster-from",
        &from_id,
        "--cluster-to",
        &to_id,
        "--cluster-slots",
        &count,
        "--cluster-yes",
    ];
    redis_cli_cluster(&args, Duration::from_secs(120))?;
    say!(
        "servers",
        "redis-cluster: {slots} slots moved from {} to {}",
        from.label(),
        to.label()
    );
    Ok(())
}

/// Starts the [spare node](REDIS_CLUSTER_SPARE) afresh (no data, no cluster configuration)
/// and adds it to the Redis Cluster as a primary without slots (`redis-cli --cluster
/// add-node`); waits until every node knows it.
pub fn add_spare_node() -> Result<(), String> {
    let spare = REDIS_CLUSTER_SPARE;
    process::stop_by_pid(spare)?;
    let dir = process::dir(spare);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("remove {}: {e}", dir.display()));
        }
        _ => {}
    }
    process::start(spare)?;
    redis_cli_cluster(
        &["add-node", &spare.address(), &Member::ClusterNode(0).address()],
        Duration::from_secs(60),
    )?;
    let known = format!("cluster_known_nodes:{}", REDIS_CLUSTER_NODES + 1);
    wait_until("the added node is not known everywhere", READY_TIMEOUT, || {
        for node in Cluster::RedisCluster.members().into_iter().chain([spare]) {
            let info = probe::redis(&node.address(), &["CLUSTER", "INFO"])?;
            if !info.contains(&known) || !info.contains("cluster_state:ok") {
                return Err(format!("{}: {info:?}", node.label()));
            }
        }
        Ok(())
    })?;
    say!(
        "servers",
        "redis-cluster: {} added as a primary without slots",
        spare.label()
    );
    Ok(())
}

/// Moves the [spare node](REDIS_CLUSTER_SPARE)'s slots to the primary `to`, takes it out of
/// the Redis Cluster (`redis-cli --cluster del-node`, which shuts it down) and waits until
/// the cluster is ready.
pub fn remove_spare_node(to: Member) -> Result<(), String> {
    let spare = REDIS_CLUSTER_SPARE;
    let served: u32 = cluster_nodes(&spare.address())?
        .iter()
        .filter(|n| n.port == spare.ports()[0])
        .map(|n| n.slot_count)
        .sum();
    if served > 0 {
        reshard(spare, to, served)?;
    }
    redis_cli_cluster(&["del-node", &to.address(), &node_id(spare)?], Duration::from_secs(60))?;
    process::stop_by_pid(spare)?;
    say!("servers", "redis-cluster: {} taken out", spare.label());
    Cluster::RedisCluster.await_ready()
}

/// The Redis Cluster node id of `member` (`CLUSTER MYID`).
fn node_id(member: Member) -> Result<String, String> {
    let reply = probe::redis(&member.address(), &["CLUSTER", "MYID"])?;
    reply
        .lines()
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| format!("{}: CLUSTER MYID answered {reply:?}", member.label()))
}

/// The Redis Cluster's primaries that serve slots now, as the running nodes see it.
pub fn redis_cluster_primaries() -> Result<Vec<Member>, String> {
    any_cluster_view()?
        .into_iter()
        .filter(|n| n.primary && n.slots && !n.failed)
        .map(|n| Member::cluster_node_at(n.port).ok_or_else(|| format!("no node of ours on port {}", n.port)))
        .collect()
}

/// Stops every member of `cluster` the harness started, by pid.
pub fn stop(cluster: Cluster) -> Result<(), String> {
    cluster.members().into_iter().rev().try_for_each(process::stop_by_pid)
}

impl Member {
    /// The member named `label` (`etcd-2`, `sentinel-1`, …), if one is.
    pub fn from_label(label: &str) -> Option<Member> {
        Cluster::ALL
            .into_iter()
            .flat_map(Cluster::members)
            .find(|m| m.label() == label)
    }

    /// The cluster this member belongs to.
    pub fn cluster(self) -> Cluster {
        match self {
            Member::Etcd(_) => Cluster::Etcd,
            Member::ZooKeeper(_) => Cluster::ZooKeeper,
            Member::Consul(_) => Cluster::Consul,
            Member::Redis(_) | Member::Sentinel(_) => Cluster::RedisSentinel,
            Member::ClusterNode(_) => Cluster::RedisCluster,
        }
    }

    fn index(self) -> u16 {
        match self {
            Member::Etcd(n)
            | Member::ZooKeeper(n)
            | Member::Consul(n)
            | Member::Redis(n)
            | Member::Sentinel(n)
            | Member::ClusterNode(n) => n,
        }
    }

    /// The Redis Cluster node (or the spare) listening on `port`, if one does.
    fn cluster_node_at(port: u16) -> Option<Member> {
        Cluster::RedisCluster
            .members()
            .into_iter()
            .chain([REDIS_CLUSTER_SPARE])
            .find(|m| m.ports()[0] == port)
    }

    /// Whether this Redis Cluster node serves slots now, as the running nodes see it.
    fn serves_slots(self) -> Result<bool, String> {
        let view = any_cluster_view()?;
        Ok(view.iter().any(|n| n.port == self.ports()[0] && n.primary && n.slots))
    }

    /// The Redis primary the running Sentinels agree on, or the first data node when no
    /// Sentinel runs (a cold start).
    fn current_primary(self) -> Result<Member, String> {
        let cluster = self.cluster();
        if cluster.client_members().into_iter().any(|m| m.probe().is_ok()) {
            cluster.leader()
        } else {
            Ok(Member::Redis(0))
        }
    }

    /// Who this member says leads, if anyone.
    fn leader_seen(self) -> Result<Option<Member>, String> {
        let address = self.address();
        match self {
            Member::Etcd(_) => {
                // The gateway's status names this member and the leader by id.
                let (status, body) = probe::http(&address, "POST", "/v3/maintenance/status", &[], "{}")?;
                if status != 200 {
                    return Err(format!("{}: status answered {status}: {body}", self.label()));
                }
                let own = json_string(&body, "member_id");
                let leader = json_string(&body, "leader");
                Ok(match (own, leader) {
                    (Some(own), Some(leader)) if own == leader => Some(self),
                    (Some(_), Some(leader)) if leader != "0" => {
                        // Ask each other member for its id: the one whose id is the leader's.
                        self.cluster().members().into_iter().find(|m| {
                            probe::http(&m.address(), "POST", "/v3/maintenance/status", &[], "{}")
                                .ok()
                                .and_then(|(_, body)| json_string(&body, "member_id"))
                                .is_some_and(|id| id == leader)
                        })
                    }
                    _ => None,
                })
            }
            Member::ZooKeeper(_) => {
                let reply = probe::four_letter_word(&address, "srvr")?;
                if reply.contains("Mode: leader") {
                    return Ok(Some(self));
                }
                // A follower does not name its leader: ask the others.
                Ok(self.cluster().members().into_iter().find(|m| {
                    *m != self
                        && probe::four_letter_word(&m.address(), "srvr").is_ok_and(|r| r.contains("Mode: leader"))
                }))
            }
            Member::Consul(_) => {
                let (status, body) = probe::http(&address, "GET", "/v1/status/leader", &[], "")?;
                if status != 200 {
                    return Err(format!("{}: /v1/status/leader answered {status}", self.label()));
                }
                let leader = body.trim().trim_matches('"');
                Ok(self
                    .cluster()
                    .members()
                    .into_iter()
                    .find(|m| leader == format!("{HOST}:{}", m.ports()[4])))
            }
            Member::Sentinel(_) => {
                let reply = probe::redis(&address, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", REDIS_SERVICE])?;
                let port = reply
                    .lines()
                    .filter(|l| !l.starts_with(['*', '$']))
                    .nth(1)
                    .map(str::trim);
                Ok(self
                    .cluster()
                    .members()
                    .into_iter()
                    .find(|m| matches!(m, Member::Redis(_)) && port == Some(&m.ports()[0].to_string())))
            }
            Member::ClusterNode(_) => Ok(cluster_nodes(&address)?
                .into_iter()
                .find(|n| n.primary && !n.failed && n.first_slot)
                .and_then(|n| Member::cluster_node_at(n.port))),
            Member::Redis(_) => Err(format!("{}: ask a Sentinel who leads", self.label())),
        }
    }
}

impl Managed for Member {
    fn label(self) -> String {
        let kind = match self {
            Member::Sentinel(_) => "sentinel",
            Member::Redis(_) => "redis",
            other => other.cluster().name(),
        };
        format!("{kind}-{}", self.index() + 1)
    }

    fn ports(self) -> Vec<u16> {
        let n = self.index();
        match self {
            // client, peer
            Member::Etcd(_) => vec![23791 + n, 23801 + n],
            // client, quorum, election
            Member::ZooKeeper(_) => vec![21811 + n, 28881 + n, 38881 + n],
            // HTTP, DNS, Serf LAN, Serf WAN, server RPC
            Member::Consul(_) => {
                let base = 10 * n;
                vec![18510 + base, 18611 + base, 18311 + base, 18312 + base, 18310 + base]
            }
            Member::Redis(_) => vec![16380 + n],
            Member::Sentinel(_) => vec![26380 + n],
            // client, cluster bus (Redis takes the client port plus 10000)
            Member::ClusterNode(_) => vec![17001 + n, 27001 + n],
        }
    }

    fn command(self, dir: &Path) -> Result<Command, String> {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("create {}: {e}", data.display()))?;
        let ports = self.ports();
        let others = |port: usize| -> Vec<String> {
            self.cluster()
                .members()
                .into_iter()
                .map(|m| format!("{HOST}:{}", m.ports()[port]))
                .collect()
        };
        let write = |path: &Path, text: String| {
            std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
        };
        let command = match self {
            Member::Etcd(_) => {
                let peers: Vec<String> = self
                    .cluster()
                    .members()
                    .into_iter()
                    .map(|m| format!("{}=http://{HOST}:{}", m.label(), m.ports()[1]))
                    .collect();
                etcd_command(EtcdMember {
                    name: &self.label(),
                    data: &data,
                    client_url: &format!("http://{HOST}:{}", ports[0]),
                    peer_url: &format!("http://{HOST}:{}", ports[1]),
                    initial_cluster: &peers.join(","),
                    token: "valkeyrie-cluster",
                })
            }
            Member::ZooKeeper(n) => {
                write(&data.join("myid"), format!("{}\n", n + 1))?;
                let servers: String = self
                    .cluster()
                    .members()
                    .into_iter()
                    .map(|m| format!("server.{}={HOST}:{}:{}\n", m.index() + 1, m.ports()[1], m.ports()[2]))
                    .collect();
                let config = dir.join("zoo.cfg");
                // tickTime as the single server's: sessions from 1 s to 10 s.
                write(
                    &config,
                    format!(
                        "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
                         clientPortAddress={HOST}\nmaxClientCnxns=0\nadmin.enableServer=false\n\
                         4lw.commands.whitelist=*\n{servers}",
                        data.display(),
                        ports[0]
                    ),
                )?;
                let mut c = super::zookeeper_java();
                // Three members share two cores: a smaller heap (the JVM takes the last
                // -Xms/-Xmx given) and no optimizing JIT.
                c.args(["-Xms32m", "-Xmx256m", "-XX:TieredStopAtLevel=1"])
                    .args(["-cp", "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"])
                    .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                    .arg(&config);
                c
            }
            Member::Consul(_) => {
                let [http, dns, serf_lan, serf_wan, server] = ports[..] else {
                    unreachable!("a consul member has five ports")
                };
                let mut c = Command::new(install::consul_binary());
                c.env("CHECKPOINT_DISABLE", "1")
                    .args(["agent", "-server", "-bootstrap-expect", &MEMBERS.to_string()])
                    .args(["-hcl", "performance { raft_multiplier = 1 }"])
                    // Autopilot makes a rejoining server a voter after it has been stable
                    // this long (10 s by default).
                    .args(["-hcl", "autopilot { server_stabilization_time = \"2s\" }"])
                    .args(["-node", &self.label(), "-bind", HOST, "-client", HOST, "-data-dir"])
                    .arg(&data)
                    .args(["-http-port", &http.to_string(), "-dns-port", &dns.to_string()])
                    .args([
                        "-serf-lan-port",
                        &serf_lan.to_string(),
                        "-serf-wan-port",
                        &serf_wan.to_string(),
                    ])
                    .args(["-server-port", &server.to_string(), "-grpc-port", "-1"]);
                for peer in others(2).into_iter().filter(|p| *p != format!("{HOST}:{serf_lan}")) {
                    c.args(["-retry-join", &peer]);
                }
                c.args(["-hcl", "limits { http_max_conns_per_client = 2000 }"]).args([
                    "-hcl",
                    &format!(
                        "primary_datacenter = \"dc1\" acl {{ enabled = true, default_policy = \"allow\", tokens {{ master = \"{CONSUL_MASTER_TOKEN}\" }} }}"
                    ),
                ]);
                c
            }
            Member::Redis(_) => {
                let mut c = Command::new("redis-server");
                c.args(["--bind", HOST, "--port", &ports[0].to_string()])
                    // The replica holds the data: nothing on disk, so a restarted node
                    // comes back empty and syncs from the primary.
                    .args(["--save", "", "--appendonly", "no", "--dir"])
                    .arg(&data)
                    .args(["--notify-keyspace-events", "KEA", "--daemonize", "no", "--logfile", ""])
                    // A replica's first full sync starts at once, not after 5 s.
                    .args(["--repl-diskless-sync-delay", "0", "--replica-announce-ip", HOST]);
                // The primary the Sentinels name now, so a restarted old primary rejoins as
                // a replica rather than as a second primary; at a cold start (no Sentinel
                // up yet) the first node.
                let primary = self.current_primary()?;
                let peer_runs = self
                    .cluster()
                    .members()
                    .into_iter()
                    .any(|m| matches!(m, Member::Redis(_)) && m != self && m.probe().is_ok());
                if primary == self && peer_runs {
                    return Err(format!(
                        "the Sentinels still name {} the primary: started now it would come back empty and \
                         the replica would copy that; kill it and start it after the failover \
                         (`servers restart` does)",
                        self.label()
                    ));
                }
                if primary != self {
                    c.args(["--replicaof", HOST, &primary.ports()[0].to_string()]);
                }
                c
            }
            Member::ClusterNode(_) => {
                // A node that still serves slots in the others' view would come back empty
                // with them, and its replica would copy the empty data set.
                if let Ok(view) = any_cluster_view() {
                    if view
                        .iter()
                        .any(|n| n.port == ports[0] && n.primary && n.slots && n.failed)
                    {
                        return Err(format!(
                            "the cluster still names {} a primary: started now it would come back empty and \
                             its replica would copy that; start it after the failover (`servers restart` does)",
                            self.label()
                        ));
                    }
                }
                let mut c = Command::new("redis-server");
                c.args(["--bind", HOST, "--port", &ports[0].to_string()])
                    // Nothing on disk but the cluster's configuration (`nodes.conf`): a
                    // restarted node rejoins as a replica and syncs from its primary.
                    .args(["--save", "", "--appendonly", "no", "--dir"])
                    .arg(&data)
                    .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                    .args(["--cluster-node-timeout", &REDIS_CLUSTER_NODE_TIMEOUT_MS.to_string()])
                    // A replica may take over however long it was cut off from its primary.
                    .args(["--cluster-replica-validity-factor", "0"])
                    .args(["--cluster-announce-ip", HOST])
                    .args(["--notify-keyspace-events", "KEA", "--daemonize", "no", "--logfile", ""])
                    .args(["--repl-diskless-sync-delay", "0"]);
                c
            }
            Member::Sentinel(_) => {
                // Sentinel rewrites its file as it learns; each start writes it afresh
                // from the primary the running Sentinels name (none at a cold start: the
                // first node), with an id of its own that stays the same across restarts.
                let config = dir.join("sentinel.conf");
                write(
                    &config,
                    format!(
                        "port {}\nbind {HOST}\ndaemonize no\nlogfile \"\"\ndir {}\n\
                         sentinel announce-ip {HOST}\n\
                         sentinel myid {:040x}\n\
                         sentinel monitor {REDIS_SERVICE} {HOST} {} 2\n\
                         sentinel down-after-milliseconds {REDIS_SERVICE} 1000\n\
                         sentinel failover-timeout {REDIS_SERVICE} 3000\n\
                         sentinel parallel-syncs {REDIS_SERVICE} 1\n",
                        ports[0],
                        data.display(),
                        self.index() + 1,
                        self.current_primary()?.ports()[0]
                    ),
                )?;
                let mut c = Command::new("redis-server");
                c.arg(&config).arg("--sentinel");
                c
            }
        };
        Ok(command)
    }

    fn probe(self) -> Result<(), String> {
        let address = self.address();
        match self {
            Member::Etcd(_) => match probe::http(&address, "GET", "/health", &[], "")? {
                (200, body) if body.contains("\"health\":\"true\"") => Ok(()),
                (status, body) => Err(format!("{} /health answered {status}: {body}", self.label())),
            },
            Member::ZooKeeper(_) => match probe::four_letter_word(&address, "srvr")? {
                reply if reply.contains("Mode: leader") || reply.contains("Mode: follower") => Ok(()),
                reply => Err(format!("{} srvr answered {reply:?}", self.label())),
            },
            Member::Consul(_) => match probe::http(&address, "GET", "/v1/status/leader", &[], "")? {
                (200, body) if body.trim().len() > 2 => {
                    match probe::http(&address, "GET", "/v1/kv/valkeyrie-probe", &[], "")? {
                        (200 | 404, _) => Ok(()),
                        (status, body) => Err(format!("{} refuses a key read yet ({status}: {body})", self.label())),
                    }
                }
                (status, body) => Err(format!("{} has no leader yet ({status}: {body})", self.label())),
            },
            Member::Redis(_) | Member::ClusterNode(_) => match probe::redis(&address, &["PING"])? {
                reply if reply.starts_with("+PONG") => Ok(()),
                reply => Err(format!("{} PING answered {reply:?}", self.label())),
            },
            Member::Sentinel(_) => {
                match probe::redis(&address, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", REDIS_SERVICE])? {
                    reply if reply.starts_with("*2") => Ok(()),
                    reply => Err(format!("{} knows no primary: {reply:?}", self.label())),
                }
            }
        }
    }

    fn start_timeout(self) -> Duration {
        match self {
            Member::Redis(_) | Member::Sentinel(_) | Member::ClusterNode(_) => Duration::from_secs(10),
            Member::Etcd(_) | Member::Consul(_) => Duration::from_secs(60),
            Member::ZooKeeper(_) => Duration::from_secs(90),
        }
    }
}

/// One node as a line of `CLUSTER NODES` describes it.
#[derive(Debug, PartialEq, Eq)]
struct ClusterNodeLine {
    /// Its client port.
    port: u16,
    /// Flagged `master`.
    primary: bool,
    /// Flagged `fail` (or `fail?`, suspected by this node).
    failed: bool,
    /// Serves at least one slot.
    slots: bool,
    /// How many slots it serves.
    slot_count: u32,
    /// Serves slot 0.
    first_slot: bool,
    /// Its cluster bus link, as the node asked sees it, is `connected`.
    connected: bool,
    /// A slot of its is migrating or importing (`[slot->-id]`, `[slot-<-id]`): a reshard
    /// under way, or one that stopped halfway.
    open_slots: bool,
}

/// The lines of a `CLUSTER NODES` reply (a RESP bulk string).
fn parse_cluster_nodes(reply: &str) -> Vec<ClusterNodeLine> {
    reply
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, address, flags, _, _, _, _, link, slots @ ..] = fields.as_slice() else {
                return None;
            };
            let port = address.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags: Vec<&str> = flags.split(',').collect();
            let (open, ranges): (Vec<&str>, Vec<&str>) = slots.iter().partition(|s| s.starts_with('['));
            let slot_count = ranges
                .iter()
                .map(|range| match range.split_once('-') {
                    Some((first, last)) => {
                        let bound = |b: &str| b.parse::<u32>().unwrap_or(0);
                        (bound(last) + 1).saturating_sub(bound(first))
                    }
                    None => 1,
                })
                .sum();
            Some(ClusterNodeLine {
                port,
                primary: flags.contains(&"master"),
                failed: flags.iter().any(|f| f.starts_with("fail")),
                slots: !ranges.is_empty(),
                slot_count,
                first_slot: ranges.iter().any(|r| *r == "0" || r.starts_with("0-")),
                connected: *link == "connected",
                open_slots: !open.is_empty(),
            })
        })
        .collect()
}

/// `CLUSTER NODES` as the node at `address` sees the cluster.
fn cluster_nodes(address: &str) -> Result<Vec<ClusterNodeLine>, String> {
    let reply = probe::redis(address, &["CLUSTER", "NODES"])?;
    match parse_cluster_nodes(&reply) {
        lines if lines.is_empty() => Err(format!("{address}: CLUSTER NODES answered {reply:?}")),
        lines => Ok(lines),
    }
}

/// The cluster as the first Redis Cluster node that answers sees it.
fn any_cluster_view() -> Result<Vec<ClusterNodeLine>, String> {
    let mut failures = Vec::new();
    for node in Cluster::RedisCluster.members() {
        match cluster_nodes(&node.address()) {
            Ok(view) => return Ok(view),
            Err(why) => failures.push(why),
        }
    }
    Err(format!("no redis-cluster node answers: {}", failures.join("; ")))
}

/// Whether the Redis Cluster is ready: every node sees all of them and every slot served,
/// three primaries without a failure flag, and each primary's replica online and caught up.
fn redis_cluster_ready() -> Result<(), String> {
    let wanted = [
        "cluster_state:ok".to_owned(),
        format!("cluster_slots_ok:{REDIS_CLUSTER_SLOTS}"),
        format!("cluster_known_nodes:{REDIS_CLUSTER_NODES}"),
    ];
    for node in Cluster::RedisCluster.members() {
        let info = probe::redis(&node.address(), &["CLUSTER", "INFO"])?;
        if let Some(missing) = wanted.iter().find(|w| !info.contains(w.as_str())) {
            return Err(format!("{}: CLUSTER INFO lacks {missing}", node.label()));
        }
        let view = cluster_nodes(&node.address())?;
        if view.iter().any(|n| n.open_slots) {
            return Err(format!(
                "{} sees a slot migrating (a reshard under way or stopped halfway)",
                node.label()
            ));
        }
        let primaries = view.iter().filter(|n| n.primary && n.slots && !n.failed).count();
        let replicas = view.iter().filter(|n| !n.primary && n.connected && !n.failed).count();
        if primaries != 3 || replicas != 3 {
            return Err(format!(
                "{} sees {primaries} serving primaries and {replicas} connected replicas",
                node.label()
            ));
        }
    }
    let tag = REDIS_CLUSTER_LEADER_TAG;
    let slot = probe::redis(&Member::ClusterNode(0).address(), &["CLUSTER", "KEYSLOT", tag])?;
    if slot.trim() != ":0" {
        return Err(format!(
            "{tag} is in slot {slot:?}, not 0: the leader's keys would be elsewhere"
        ));
    }
    for line in any_cluster_view()?.into_iter().filter(|n| n.primary && n.slots) {
        let Some(primary) = Member::cluster_node_at(line.port) else {
            return Err(format!("the cluster names a primary on port {}, not ours", line.port));
        };
        let info = probe::redis(&primary.address(), &["INFO", "replication"])?;
        // `slave0:ip=…,port=…,state=online,offset=…,lag=0`: the replica's last ack, in s.
        let lag = info
            .split("lag=")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|lag| lag.parse::<u32>().ok());
        let lag_ok = lag.is_some_and(|lag| lag <= 1);
        if !info.contains("connected_slaves:1") || !info.contains("state=online") || !lag_ok {
            return Err(format!("{}'s replica is not in sync: {info:?}", primary.label()));
        }
    }
    Ok(())
}

/// Runs `redis-cli --cluster ARGS…` (at most `timeout`); its output, or an error with it.
fn redis_cli_cluster(args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut command = Command::new("redis-cli");
    command.arg("--cluster").args(args);
    let output = probe::output(&mut command, timeout)?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "redis-cli --cluster {} failed: {stdout}{stderr}",
            args.join(" ")
        ));
    }
    Ok(stdout)
}

/// Forms the Redis Cluster with `redis-cli --cluster create` when its nodes do not all
/// know each other yet (a first start, or nodes whose configuration was lost). The nodes
/// keep no data, so a node left with a configuration of its own is reset first. A formed
/// cluster with a slot left migrating (a reshard stopped halfway, say by a failed fault
/// case) is mended with `redis-cli --cluster fix`, or formed anew if that fails.
fn form_redis_cluster() -> Result<(), String> {
    let nodes = Cluster::RedisCluster.members();
    let known = format!("cluster_known_nodes:{REDIS_CLUSTER_NODES}");
    let formed = nodes
        .iter()
        .all(|node| probe::redis(&node.address(), &["CLUSTER", "INFO"]).is_ok_and(|info| info.contains(&known)));
    if formed {
        let open = nodes
            .iter()
            .any(|node| cluster_nodes(&node.address()).is_ok_and(|view| view.iter().any(|n| n.open_slots)));
        if !open {
            return Ok(());
        }
        match redis_cli_cluster(&["fix", &nodes[0].address(), "--cluster-yes"], Duration::from_secs(60)) {
            Ok(_) => {
                say!("servers", "redis-cluster: mended a slot left migrating");
                return Ok(());
            }
            Err(why) => say!(
                "servers",
                "redis-cluster: a slot left migrating could not be mended ({why}); forming the cluster anew"
            ),
        }
    }
    // A spare node left in by a failed case would keep the old cluster's configuration.
    process::stop_by_pid(REDIS_CLUSTER_SPARE)?;
    for node in &nodes {
        // A replica refuses FLUSHALL (READONLY) and a primary holding keys refuses RESET:
        // flush where it may, reset (a replica becomes an empty primary), flush again.
        let first = probe::redis(&node.address(), &["FLUSHALL"])?;
        if !first.starts_with("+OK") && !first.starts_with("-READONLY") {
            return Err(format!("{}: FLUSHALL answered {first:?}", node.label()));
        }
        for command in [&["CLUSTER", "RESET", "HARD"][..], &["FLUSHALL"]] {
            let reply = probe::redis(&node.address(), command)?;
            if !reply.starts_with("+OK") {
                return Err(format!("{}: {} answered {reply:?}", node.label(), command.join(" ")));
            }
        }
    }
    let addresses: Vec<String> = nodes.iter().map(|node| node.address()).collect();
    let mut args = vec!["create"];
    args.extend(addresses.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
    let output = redis_cli_cluster(&args, Duration::from_secs(60))?;
    if !output.contains("All 16384 slots covered") {
        return Err(format!("redis-cli --cluster create left slots uncovered: {output}"));
    }
    say!("servers", "redis-cluster: formed (3 primaries, 3 replicas)");
    Ok(())
}

/// Waits until the other Redis Cluster nodes have promoted a replica in place of the killed
/// primary `gone` (it serves no slot in their view), for at most a minute.
fn await_replaced(gone: Member) -> Result<(), String> {
    let what = format!("the redis-cluster did not fail over from {}", gone.label());
    wait_until(&what, READY_TIMEOUT, || {
        let view = any_cluster_view()?;
        let slots: bool = view.iter().any(|n| n.port == gone.ports()[0] && n.slots);
        let serving = view.iter().filter(|n| n.primary && n.slots && !n.failed).count();
        if slots || serving != 3 {
            return Err(format!("{} still serves slots", gone.label()));
        }
        Ok(())
    })
}

/// The string value of `"name":"…"` in a flat JSON body.
fn json_string(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let end = body[start..].find('"')? + start;
    Some(body[start..end].to_owned())
}

/// The value following `name` in a RESP array of alternating names and values.
fn resp_field(reply: &str, name: &str) -> Option<String> {
    let items: Vec<&str> = reply
        .lines()
        .filter(|l| !l.starts_with(['*', '$']))
        .map(str::trim)
        .collect();
    items
        .iter()
        .position(|i| *i == name)
        .and_then(|at| items.get(at + 1))
        .map(|v| (*v).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_have_ports_apart_from_each_other_and_the_single_servers() {
        let mut ports: Vec<u16> = super::super::Server::ALL
            .into_iter()
            .flat_map(|s| s.ports().to_vec())
            .collect();
        for cluster in Cluster::ALL {
            for member in cluster.members() {
                ports.extend(member.ports());
            }
        }
        let count = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), count, "two processes share a port");
    }

    #[test]
    fn labels_name_the_store_and_count_from_one() {
        let labels: Vec<String> = Cluster::RedisSentinel
            .members()
            .into_iter()
            .map(Managed::label)
            .collect();
        assert_eq!(labels, ["redis-1", "redis-2", "sentinel-1", "sentinel-2", "sentinel-3"]);
        let labels: Vec<String> = Cluster::RedisCluster
            .members()
            .into_iter()
            .map(Managed::label)
            .collect();
        assert_eq!(labels[0], "redis-cluster-1");
        assert_eq!(labels.len(), 6);
        assert_eq!(
            Cluster::Etcd.endpoints(),
            "127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
        );
    }

    #[test]
    fn parses_the_answers_leaders_are_read_from() {
        let status = r#"{"header":{"cluster_id":"1","member_id":"42","revision":"3"},"leader":"42"}"#;
        assert_eq!(json_string(status, "member_id").as_deref(), Some("42"));
        assert_eq!(json_string(status, "leader").as_deref(), Some("42"));
        let master = "*4\r\n$4\r\nname\r\n$9\r\nvalkeyrie\r\n$9\r\nnum-slaves\r\n$1\r\n1\r\n";
        assert_eq!(resp_field(master, "num-slaves").as_deref(), Some("1"));
        let nodes = "$400\r\n\
            a1 127.0.0.1:17001@27001 myself,master - 0 0 1 connected 0-5460\n\
            b2 127.0.0.1:17004@27004 slave a1 0 1 1 connected\n\
            c3 127.0.0.1:17002@27002 master,fail - 0 1 2 disconnected\n\
            d4 127.0.0.1:17005@27005 master - 0 1 4 connected 5461-10922 [5462->-a1]\n\r\n";
        let lines = parse_cluster_nodes(nodes);
        assert_eq!(lines.len(), 4);
        assert!(lines[0].primary && lines[0].first_slot && lines[0].slots && !lines[0].failed);
        assert!(!lines[1].primary && lines[1].connected && lines[1].port == 17004);
        assert!(lines[2].failed && !lines[2].slots);
        assert!(lines[3].slots && !lines[3].first_slot && lines[3].open_slots && !lines[0].open_slots);
    }
}
