//! The harness's fault hooks, called from tests: stop, start, restart, pause and resume
//! the server `cargo xtask test` started (by the pid it recorded). Each runs on a blocking
//! thread and panics with the harness's message if the server cannot be controlled: a
//! fault case that cannot inject its fault fails, it never passes.

use std::time::{Duration, Instant};

use xtask::servers::{process, Server};

async fn blocking(what: String, hook: impl FnOnce() -> Result<(), String> + Send + 'static) {
    let outcome = tokio::task::spawn_blocking(hook).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(why)) => panic!("{what}: {why}"),
        Err(join) => panic!("{what}: {join}"),
    }
}

/// A server stopped by [`stop`]; [`Stopped::start`] or dropping it starts it again, so a
/// failing case never leaves the server down for the next one.
#[derive(Debug)]
pub struct Stopped {
    server: Server,
    started: bool,
}

/// Stops `server` (SIGTERM, then SIGKILL after the harness's grace period).
pub async fn stop(server: Server) -> Stopped {
    blocking(format!("stop {}", server.name()), move || process::stop_by_pid(server)).await;
    Stopped { server, started: false }
}

impl Stopped {
    /// Starts the server on its data directory and waits until it is healthy; how long
    /// that took.
    pub async fn start(mut self) -> Duration {
        self.started = true;
        let server = self.server;
        let begun = Instant::now();
        blocking(format!("start {}", server.name()), move || {
            process::start(server).map(drop)
        })
        .await;
        begun.elapsed()
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.started {
            let _ = process::start(self.server);
        }
    }
}

/// Stops and starts `server`, keeping its data; how long it was unavailable.
pub async fn restart(server: Server) -> Duration {
    let begun = Instant::now();
    stop(server).await.start().await;
    begun.elapsed()
}

/// A server stopped by SIGSTOP; [`Paused::resume`] or dropping it sends SIGCONT, so a
/// failing case never leaves the server frozen for the next one.
#[derive(Debug)]
pub struct Paused {
    server: Server,
    resumed: bool,
}

/// Freezes `server` (SIGSTOP): its connections stay open and nothing answers.
pub async fn pause(server: Server) -> Paused {
    blocking(format!("pause {}", server.name()), move || process::pause(server, true)).await;
    Paused { server, resumed: false }
}

impl Paused {
    /// Lets the server run again.
    pub async fn resume(mut self) {
        self.resumed = true;
        let server = self.server;
        blocking(format!("resume {}", server.name()), move || {
            process::pause(server, false)
        })
        .await;
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if !self.resumed {
            let _ = process::pause(self.server, false);
        }
    }
}
