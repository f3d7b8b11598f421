//! `cargo xtask test --docker`: the same servers from containers (testcontainers, with
//! testcontainers-modules where it has the image), on the same loopback ports, so the
//! endpoint variables and the tests are unchanged. Containers are removed when the run ends.

use std::any::Any;
use std::path::Path;

use testcontainers_modules::consul::Consul;
use testcontainers_modules::dynamodb_local::DynamoDb;
use testcontainers_modules::redis::{Redis, REDIS_PORT};
use testcontainers_modules::testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{GenericImage, ImageExt};
use testcontainers_modules::zookeeper::Zookeeper;

use crate::say;
use crate::servers::Server;

/// Running containers; dropping this removes them.
pub struct Containers {
    _running: Vec<Box<dyn Any>>,
}

/// Checks that a Docker daemon is reachable, saying where it looked when not.
pub fn daemon_available() -> Result<(), String> {
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        say!("docker", "using DOCKER_HOST={host}");
        return Ok(());
    }
    let socket = Path::new("/var/run/docker.sock");
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "no Docker daemon found: DOCKER_HOST is not set and {} does not answer ({e}); \
             run `cargo xtask test` without --docker to use local servers",
            socket.display()
        )),
    }
}

fn failed(server: Server) -> impl Fn(testcontainers_modules::testcontainers::TestcontainersError) -> String {
    move |e| format!("{} container: {e}", server.name())
}

/// Starts a container for each of `servers`, mapped to the harness's loopback ports.
pub fn start(servers: &[Server]) -> Result<Containers, String> {
    daemon_available()?;
    let mut running: Vec<Box<dyn Any>> = Vec::new();
    for &server in servers {
        let port = server.ports()[0];
        say!("docker", "{}: starting a container on 127.0.0.1:{port}", server.name());
        match server {
            Server::Redis => running.push(Box::new(
                Redis::default()
                    .with_tag("7.0")
                    .with_cmd(["redis-server", "--notify-keyspace-events", "KEA"])
                    .with_mapped_port(port, REDIS_PORT.tcp())
                    .start()
                    .map_err(failed(server))?,
            )),
            Server::ZooKeeper => running.push(Box::new(
                Zookeeper::default()
                    .with_tag("3.8")
                    .with_env_var("JVMFLAGS", "-Dzookeeper.extendedTypesEnabled=true")
                    .with_env_var("ZOO_4LW_COMMANDS_WHITELIST", "*")
                    .with_mapped_port(port, 2181.tcp())
                    .start()
                    .map_err(failed(server))?,
            )),
            Server::Consul => running.push(Box::new(
                Consul::default()
                    .with_tag("1.8.7")
                    .with_mapped_port(port, 8500.tcp())
                    .start()
                    .map_err(failed(server))?,
            )),
            Server::DynamoDb => running.push(Box::new(
                DynamoDb::default()
                    .with_tag("2.6.1")
                    .with_mapped_port(port, 8000.tcp())
                    .start()
                    .map_err(failed(server))?,
            )),
            Server::Etcd => running.push(Box::new(
                GenericImage::new("quay.io/coreos/etcd", "v3.4.23")
                    .with_exposed_port(2379.tcp())
                    .with_wait_for(WaitFor::message_on_stderr("ready to serve client requests"))
                    .with_cmd([
                        "etcd",
                        "--listen-client-urls=http://0.0.0.0:2379",
                        "--advertise-client-urls=http://127.0.0.1:2379",
                    ])
                    .with_mapped_port(port, 2379.tcp())
                    .start()
                    .map_err(failed(server))?,
            )),
        }
    }
    Ok(Containers { _running: running })
}
