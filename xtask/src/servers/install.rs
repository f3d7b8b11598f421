//! Installing the servers (and `protoc`), idempotently, one line per step.
//!
//! * etcd, ZooKeeper, Redis and `protoc`: Debian packages.
//! * Consul 1.8.7: Debian 11's package, downloaded by apt with a private state directory
//!   (Debian 12 has none) or, when that fails, the checked copy in `../shared/debs/`;
//!   unpacked into the cache, never installed system-wide.
//! * DynamoDB Local 2.6.1: resolved by Maven into the cache (never committed: its licence
//!   is proprietary). If that fails, moto's server from PyPI in a cache venv, and the run
//!   says so loudly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Server;
use crate::paths::{cache_dir, shared_dir};
use crate::say;

const CONSUL_DEB: &str = "consul_1.8.7+dfsg1-2+b3_amd64.deb";
const CONSUL_VERSION: &str = "1.8.7+dfsg1-2+b3";
const CONSUL_SHA256: &str = "e4e888bba104daba1d9161f49bfc52649a7e4efd45b1a7ead5bc54f2cb9c89d9";
const DYNAMODB_LOCAL: &str = "2.6.1";
const DYNAMODB_MAIN: &str = "com.amazonaws.services.dynamodbv2.local.main.ServerRunner";

/// Installs what `servers` need, plus `protoc`.
pub fn install(servers: &[Server]) -> Result<(), String> {
    // etcd-client's build script runs protoc, which needs the well-known .proto files too.
    let mut packages = vec![
        ("protoc", "protobuf-compiler"),
        ("/usr/include/google/protobuf/descriptor.proto", "libprotobuf-dev"),
    ];
    for server in servers {
        match server {
            Server::Etcd => packages.extend([("etcd", "etcd-server"), ("etcdctl", "etcd-client")]),
            Server::Redis => packages.push(("redis-server", "redis-server")),
            Server::ZooKeeper => packages.push(("/usr/share/java/zookeeper.jar", "zookeeper")),
            Server::Consul | Server::DynamoDb => {}
        }
    }
    apt_install(&packages)?;
    if servers.contains(&Server::Consul) {
        install_consul()?;
    }
    if servers.contains(&Server::DynamoDb) {
        install_dynamodb()?;
    }
    Ok(())
}

pub(crate) fn found(program: &str) -> bool {
    if program.starts_with('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

pub(crate) fn run(what: &str, command: &mut Command) -> Result<(), String> {
    let status = command.status().map_err(|e| format!("{what}: cannot run: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: failed ({status})"))
    }
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .any(|line| line.strip_prefix("Uid:").and_then(|ids| ids.split_whitespace().next()) == Some("0"))
}

/// Installs the Debian packages whose program (or file) is missing.
pub(crate) fn apt_install(packages: &[(&str, &str)]) -> Result<(), String> {
    let mut missing = Vec::new();
    for (program, package) in packages {
        if found(program) {
            say!("install", "{package}: present ({program})");
        } else {
            say!("install", "{package}: missing");
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "installing Debian packages needs root: sudo apt-get install -y {}",
            missing.join(" ")
        ));
    }
    say!("install", "apt-get install {}", missing.join(" "));
    let install = |update_first: bool| -> Result<(), String> {
        if update_first {
            run("apt-get update", Command::new("apt-get").args(["-q", "update"]))?;
        }
        run(
            "apt-get install",
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["-q", "install", "-y", "--no-install-recommends"])
                .args(&missing),
        )
    };
    // The package lists may be stale or absent on a fresh machine: update once and retry.
    install(false).or_else(|_| install(true))
}

/// The Consul binary in the cache.
pub fn consul_binary() -> PathBuf {
    cache_dir().join("consul-1.8.7").join("usr/bin/consul")
}

fn install_consul() -> Result<(), String> {
    let binary = consul_binary();
    if binary.exists() {
        say!("install", "consul 1.8.7: present ({})", binary.display());
        return Ok(());
    }
    let deb = match download_consul_with_apt() {
        Ok(deb) => deb,
        Err(why) => {
            say!(
                "install",
                "consul: apt download from Debian 11 failed ({why}); using ../shared/debs/"
            );
            shared_dir().join("debs").join(CONSUL_DEB)
        }
    };
    let sum = sha256(&deb)?;
    if sum != CONSUL_SHA256 {
        return Err(format!(
            "consul: {} has SHA256 {sum}, expected {CONSUL_SHA256}",
            deb.display()
        ));
    }
    say!("install", "consul: {} checksum ok", deb.display());
    let target = cache_dir().join("consul-1.8.7");
    run("dpkg-deb -x", Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&target))?;
    if binary.exists() {
        say!("install", "consul 1.8.7: unpacked to {}", binary.display());
        Ok(())
    } else {
        Err(format!("consul: {} not found after unpacking", binary.display()))
    }
}

/// The URI of the machine's Debian mirror, from its apt sources.
fn debian_mirror() -> String {
    let sources = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let deb822 = sources
        .lines()
        .filter_map(|l| l.strip_prefix("URIs:"))
        .map(str::trim)
        .find(|uri| !uri.contains("security"));
    let classic = std::fs::read_to_string("/etc/apt/sources.list").ok().and_then(|list| {
        list.lines()
            .filter(|l| l.starts_with("deb ") && !l.contains("security"))
            .find_map(|l| l.split_whitespace().find(|w| w.starts_with("http")).map(str::to_owned))
    });
    deb822
        .map(str::to_owned)
        .or(classic)
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned())
}

/// Downloads Consul's .deb from Debian 11 with apt, using a private state directory.
fn download_consul_with_apt() -> Result<PathBuf, String> {
    let state = cache_dir().join("apt-bullseye");
    for dir in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(state.join(dir)).map_err(|e| format!("create {}: {e}", state.join(dir).display()))?;
    }
    let deb = state.join(CONSUL_DEB);
    if deb.exists() {
        return Ok(deb);
    }
    let list = state.join("sources.list");
    let source = format!(
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} bullseye main\n",
        debian_mirror()
    );
    std::fs::write(&list, source).map_err(|e| format!("write {}: {e}", list.display()))?;
    let options = [
        format!("Dir::Etc::SourceList={}", list.display()),
        "Dir::Etc::SourceParts=/dev/null".to_owned(),
        format!("Dir::State::Lists={}", state.join("lists").display()),
        format!("Dir::Cache={}", state.join("cache").display()),
        "APT::Sandbox::User=root".to_owned(),
    ];
    let apt = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        for option in &options {
            command.args(["-o", option]);
        }
        command
            .args(["-q"])
            .args(args)
            .current_dir(&state)
            .stdout(Stdio::null());
        command
    };
    say!(
        "install",
        "consul: downloading {CONSUL_DEB} from Debian 11 (bullseye) with a private apt state"
    );
    run("apt-get update (bullseye)", &mut apt(&["update"]))?;
    run(
        "apt-get download consul",
        &mut apt(&["download", &format!("consul={CONSUL_VERSION}")]),
    )?;
    if deb.exists() {
        Ok(deb)
    } else {
        Err(format!("{} missing after apt-get download", deb.display()))
    }
}

fn sha256(file: &Path) -> Result<String, String> {
    let mut sha256sum = Command::new("sha256sum");
    sha256sum.arg(file);
    let said = crate::run_checked(&mut sha256sum, &format!("sha256sum {}", file.display()))?;
    Ok(said.split_whitespace().next().unwrap_or_default().to_owned())
}

/// Which DynamoDB endpoint the harness runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DynamoDbFlavor {
    /// Amazon's DynamoDB Local, its jars in this directory.
    Local(PathBuf),
    /// moto's server, in this virtualenv.
    Moto(PathBuf),
}

impl DynamoDbFlavor {
    /// `dynamodb-local` or `moto`.
    pub fn name(&self) -> &'static str {
        match self {
            DynamoDbFlavor::Local(_) => "dynamodb-local",
            DynamoDbFlavor::Moto(_) => "moto",
        }
    }

    pub(crate) fn command(&self, port: u16, data: &Path) -> Command {
        match self {
            DynamoDbFlavor::Local(lib) => {
                let mut c = Command::new("java");
                // A 1 GiB heap: the suites write 10 000-key directories and values near the
                // item limit. With 256 MiB, a server that had run every suite several times
                // answered contended increments ten times slower, until restarted.
                c.args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xms64m", "-Xmx1g"])
                    .arg(format!("-Dorg.sqlite.tmpdir={}", data.display()))
                    .arg("-cp")
                    .arg(format!("{}/*", lib.display()))
                    .arg(DYNAMODB_MAIN)
                    .args(["-port", &port.to_string(), "-inMemory", "-disableTelemetry"]);
                c
            }
            DynamoDbFlavor::Moto(venv) => {
                let mut c = Command::new(venv.join("bin/moto_server"));
                c.args(["-H", "127.0.0.1", "-p", &port.to_string()]).current_dir(data);
                c
            }
        }
    }
}

fn dynamodb_local_dir() -> PathBuf {
    cache_dir().join(format!("dynamodb-local-{DYNAMODB_LOCAL}"))
}

fn moto_venv() -> PathBuf {
    cache_dir().join("moto-venv")
}

/// The installed flavor: DynamoDB Local when its jars are complete, else moto.
pub fn dynamodb_flavor() -> DynamoDbFlavor {
    let local = dynamodb_local_dir();
    if local.join(".complete").exists() {
        DynamoDbFlavor::Local(local.join("lib"))
    } else {
        DynamoDbFlavor::Moto(moto_venv())
    }
}

fn install_dynamodb() -> Result<(), String> {
    let dir = dynamodb_local_dir();
    if dir.join(".complete").exists() {
        say!(
            "install",
            "DynamoDB Local {DYNAMODB_LOCAL}: present ({})",
            dir.display()
        );
        return Ok(());
    }
    match fetch_dynamodb_local(&dir) {
        Ok(()) => {
            say!(
                "install",
                "DynamoDB Local {DYNAMODB_LOCAL}: resolved by Maven into {}",
                dir.display()
            );
            Ok(())
        }
        Err(why) => {
            say!(
                "install",
                "!!! DynamoDB Local could not be fetched from Maven Central: {why}"
            );
            say!(
                "install",
                "!!! FALLING BACK TO moto's DynamoDB server (less faithful: no real TTL expiry)"
            );
            install_moto()
        }
    }
}

fn fetch_dynamodb_local(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let pom = format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>rs.valkeyrie</groupId>
  <artifactId>dynamodb-local-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>com.amazonaws</groupId>
      <artifactId>DynamoDBLocal</artifactId>
      <version>{DYNAMODB_LOCAL}</version>
    </dependency>
  </dependencies>
</project>
"#
    );
    std::fs::write(dir.join("pom.xml"), pom).map_err(|e| format!("write pom.xml: {e}"))?;
    if !found("mvn") {
        return Err("mvn (Maven) is not installed".to_owned());
    }
    say!("install", "DynamoDB Local {DYNAMODB_LOCAL}: resolving with Maven");
    run(
        "mvn dependency:copy-dependencies",
        Command::new("mvn")
            .args([
                "-B",
                "-q",
                "--no-transfer-progress",
                "-Dstyle.color=never",
                "dependency:copy-dependencies",
                "-DoutputDirectory=lib",
                "-DexcludeTypes=so,dll,dylib",
            ])
            .current_dir(dir),
    )?;
    std::fs::write(dir.join(".complete"), DYNAMODB_LOCAL).map_err(|e| format!("mark complete: {e}"))
}

fn install_moto() -> Result<(), String> {
    let venv = moto_venv();
    if venv.join("bin/moto_server").exists() {
        say!("install", "moto: present ({})", venv.display());
        return Ok(());
    }
    run(
        "python3 -m venv",
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
    )?;
    run(
        "pip install moto",
        Command::new(venv.join("bin/pip")).args(["install", "-q", "moto[server,dynamodb]==5.2.5"]),
    )?;
    say!("install", "moto 5.2.5: installed in {}", venv.display());
    Ok(())
}
