//! Starting and stopping server processes.
//!
//! A started server runs in its own process group (Ctrl-C at the terminal reaches the
//! harness, which stops the servers cleanly, not the servers directly), with its directory
//! as working directory, its output in `server.log` and its pid in `pid`. A process counts
//! as ours only if its pid file says so *and* its working directory is the server's
//! directory: `stop` never signals anything else. `start` refuses a port held by another
//! process and names it.
//!
//! Zombies: the harness waits for the servers it started in the same process (`cargo xtask
//! test`). A server started by a separate `cargo xtask servers start` is re-parented to PID
//! 1 when that command exits; if PID 1 does not reap (as in some sandboxes), a stopped
//! server stays a zombie holding nothing but its pid, and `status` reports it as stopped.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::Managed;
use crate::paths::servers_dir;
use crate::say;

/// How long a server may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The server's directory under `target/servers/`.
pub fn dir(server: impl Managed) -> PathBuf {
    servers_dir().join(server.label())
}

fn pid_file(server: impl Managed) -> PathBuf {
    dir(server).join("pid")
}

/// The log file of the server's latest start.
pub fn log_file(server: impl Managed) -> PathBuf {
    dir(server).join("server.log")
}

/// What a server's process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No process of ours.
    Stopped,
    /// Running with this pid.
    Running(u32),
    /// Stopped by SIGSTOP (`pause`).
    Paused(u32),
}

/// The `/proc/<pid>/stat` state letter, if the process exists.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: the state follows the last `)`.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
}

/// Whether `pid` has fully exited: gone, or a zombie with no thread left. A JVM's main
/// thread can be a zombie while its other threads still shut down, holding the ports.
fn exited(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    field("State:").starts_with('Z') && field("Threads:") == "1"
}

/// Whether `pid` is a live process working inside `server`'s directory (Redis moves into
/// its data directory, so any directory below counts).
fn is_ours(server: impl Managed, pid: u32) -> bool {
    let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
        return false;
    };
    let expected = std::fs::canonicalize(dir(server)).unwrap_or_else(|_| dir(server));
    cwd.starts_with(&expected) && !matches!(proc_state(pid), None | Some('Z'))
}

/// The state of `server`, cleaning up a stale pid file.
pub fn state(server: impl Managed) -> State {
    let Some(pid) = std::fs::read_to_string(pid_file(server))
        .ok()
        .and_then(|s| s.trim().parse().ok())
    else {
        return State::Stopped;
    };
    if !is_ours(server, pid) {
        let _ = std::fs::remove_file(pid_file(server));
        return State::Stopped;
    }
    if proc_state(pid) == Some('T') {
        State::Paused(pid)
    } else {
        State::Running(pid)
    }
}

/// What [`start`] did.
#[derive(Debug)]
pub enum Started {
    /// The server was already running (started earlier by the harness) and healthy.
    Reused(u32),
    /// A new process; the caller waits for it when stopping it.
    Spawned(Child),
}

/// Starts `server` unless the harness already runs it, and waits until it is healthy.
pub fn start(server: impl Managed) -> Result<Started, String> {
    match spawn(server)? {
        Started::Spawned(child) => await_healthy(server, child).map(Started::Spawned),
        reused => Ok(reused),
    }
}

/// Starts every member of a group whose members are healthy only together (a cluster's
/// quorum): spawns those not running, then waits for each. A failure stops what this
/// call spawned.
pub fn start_all<M: Managed>(members: &[M]) -> Result<Vec<(M, Started)>, String> {
    let mut spawned = Vec::new();
    for member in members {
        // A running member is reused even if its probe fails: alone, it may lack the
        // quorum its probe needs.
        if let State::Running(pid) = state(*member) {
            spawned.push((*member, Started::Reused(pid)));
            continue;
        }
        match spawn(*member) {
            Ok(started) => spawned.push((*member, started)),
            Err(why) => {
                stop_spawned(spawned);
                return Err(why);
            }
        }
    }
    let mut healthy = Vec::new();
    let mut failure = None;
    for (member, started) in spawned {
        match started {
            Started::Spawned(child) if failure.is_none() => match await_healthy(member, child) {
                Ok(child) => healthy.push((member, Started::Spawned(child))),
                Err(why) => failure = Some(why),
            },
            Started::Spawned(child) => {
                let _ = stop_child(member, child);
            }
            reused => healthy.push((member, reused)),
        }
    }
    match failure {
        None => Ok(healthy),
        Some(why) => {
            stop_spawned(healthy);
            Err(why)
        }
    }
}

/// Stops the processes of `started` that were spawned rather than reused.
pub fn stop_spawned<M: Managed>(started: Vec<(M, Started)>) {
    for (member, started) in started {
        if let Started::Spawned(child) = started {
            let _ = stop_child(member, child);
        }
    }
}

/// Spawns `server`'s process, or reuses the healthy one the harness already runs.
fn spawn(server: impl Managed) -> Result<Started, String> {
    if let State::Running(pid) = state(server) {
        if server.probe().is_ok() {
            say!("servers", "{}: already running (pid {pid}), reusing it", server.label());
            return Ok(Started::Reused(pid));
        }
    }
    if let State::Paused(pid) = state(server) {
        return Err(format!(
            "{} (pid {pid}) is paused; `cargo xtask servers resume {}` first",
            server.label(),
            server.label()
        ));
    }
    for port in server.ports() {
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            // Without a listener, what blocks the bind is the closing connections of the
            // server just stopped (a restart): the server's own bind copes with those.
            if let Some(owner) = port_owner(port) {
                return Err(format!(
                    "{}: port {port} is held by {owner}; stop it or free the port",
                    server.label()
                ));
            }
        }
    }
    let dir = dir(server);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let log = File::create(log_file(server)).map_err(|e| format!("create {}: {e}", log_file(server).display()))?;
    let log_err = log.try_clone().map_err(|e| format!("log file: {e}"))?;
    let mut command = server.command(&dir)?;
    command
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0);
    let child = command
        .spawn()
        .map_err(|e| format!("{}: cannot start {:?}: {e}", server.label(), command.get_program()))?;
    std::fs::write(pid_file(server), child.id().to_string()).map_err(|e| format!("write pid file: {e}"))?;
    Ok(Started::Spawned(child))
}

/// Waits until the just spawned `child` of `server` is healthy; stops it if it does not
/// get there within the server's start timeout.
fn await_healthy(server: impl Managed, mut child: Child) -> Result<Child, String> {
    let started = Instant::now();
    let deadline = started + server.start_timeout();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let _ = std::fs::remove_file(pid_file(server));
            return Err(format!(
                "{} exited during start-up ({status}); last log lines:\n{}",
                server.label(),
                log_tail(server)
            ));
        }
        match server.probe() {
            Ok(()) => {
                say!(
                    "servers",
                    "{}: healthy on {} after {} ms (pid {})",
                    server.label(),
                    server.address(),
                    started.elapsed().as_millis(),
                    child.id()
                );
                return Ok(child);
            }
            Err(why) if Instant::now() >= deadline => {
                let _ = stop_child(server, child);
                return Err(format!(
                    "{} not healthy after {:?}: {why}; last log lines:\n{}",
                    server.label(),
                    server.start_timeout(),
                    log_tail(server)
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn log_tail(server: impl Managed) -> String {
    let text = std::fs::read_to_string(log_file(server)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`) to `pid` with kill(1).
fn signal(pid: u32, signal: &str) -> Result<(), String> {
    let mut kill = std::process::Command::new("kill");
    kill.arg(format!("-{signal}")).arg(pid.to_string());
    crate::run_checked(&mut kill, &format!("kill -{signal} {pid}")).map(drop)
}

/// Stops a server this process spawned: SIGTERM, then SIGKILL after a grace period, and
/// waits for it so no zombie is left.
pub fn stop_child(server: impl Managed, mut child: Child) -> Result<(), String> {
    let pid = child.id();
    if let Ok(None) = child.try_wait() {
        let _ = signal(pid, "CONT");
        signal(pid, "TERM")?;
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = child.try_wait() {
            say!(
                "servers",
                "{}: no exit {STOP_GRACE:?} after SIGTERM, sending SIGKILL",
                server.label()
            );
            let _ = child.kill();
        }
    }
    child.wait().map_err(|e| format!("wait for {}: {e}", server.label()))?;
    say!("servers", "{}: stopped (pid {pid})", server.label());
    // A fault test may have restarted the server: that process is not our child, and its
    // pid file names it.
    match state(server) {
        State::Running(other) | State::Paused(other) if other != pid => stop_by_pid(server),
        _ => {
            let _ = std::fs::remove_file(pid_file(server));
            Ok(())
        }
    }
}

/// Stops a server the harness started in another process, by its pid file.
pub fn stop_by_pid(server: impl Managed) -> Result<(), String> {
    let pid = match state(server) {
        State::Stopped => {
            say!("servers", "{}: not running", server.label());
            return Ok(());
        }
        State::Running(pid) | State::Paused(pid) => pid,
    };
    let _ = signal(pid, "CONT");
    signal(pid, "TERM")?;
    let deadline = Instant::now() + STOP_GRACE;
    while !exited(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !exited(pid) {
        say!(
            "servers",
            "{}: no exit {STOP_GRACE:?} after SIGTERM, sending SIGKILL",
            server.label()
        );
        signal(pid, "KILL")?;
        while !exited(pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_file(pid_file(server));
    say!("servers", "{}: stopped (pid {pid})", server.label());
    Ok(())
}

/// Kills a server of ours with SIGKILL, as a crash would, and waits until it has exited.
pub fn kill(server: impl Managed) -> Result<(), String> {
    let pid = match state(server) {
        State::Stopped => return Err(format!("{} is not running", server.label())),
        State::Running(pid) | State::Paused(pid) => pid,
    };
    signal(pid, "KILL")?;
    let deadline = Instant::now() + STOP_GRACE;
    while !exited(pid) {
        if Instant::now() > deadline {
            return Err(format!(
                "{} (pid {pid}) still there {STOP_GRACE:?} after SIGKILL",
                server.label()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(pid_file(server));
    say!("servers", "{}: killed (pid {pid})", server.label());
    Ok(())
}

/// SIGSTOP (`pause`) or SIGCONT (`resume`) to a running server of ours.
pub fn pause(server: impl Managed, paused: bool) -> Result<(), String> {
    let pid = match state(server) {
        State::Stopped => return Err(format!("{} is not running", server.label())),
        State::Running(pid) | State::Paused(pid) => pid,
    };
    signal(pid, if paused { "STOP" } else { "CONT" })?;
    say!(
        "servers",
        "{}: {} (pid {pid})",
        server.label(),
        if paused { "paused" } else { "resumed" }
    );
    Ok(())
}

/// Who listens on `port` on this machine: `pid N (command line)`.
pub fn port_owner(port: u16) -> Option<String> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)?
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())?;
            (local_port == port && fields.get(3) == Some(&"0A")).then(|| fields.get(9).map(|s| (*s).to_owned()))?
        })
    })?;
    let socket = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.to_string_lossy() == socket))
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            return Some(format!("pid {pid} ({})", cmdline.trim()));
        }
    }
    Some(format!("a process this user cannot see (socket inode {inode})"))
}
