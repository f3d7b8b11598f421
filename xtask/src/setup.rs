//! `cargo xtask setup`: installs what a build and a test run need, idempotently, one line
//! per step saying what it found or did: rustfmt and clippy, `protoc` (etcd-client's build
//! script needs it), and the five servers.

use std::process::Command;

use crate::say;
use crate::servers::{install, Server};

/// The rustup components `.ci/run` uses.
const COMPONENTS: [&str; 2] = ["rustfmt", "clippy"];

/// Runs the whole setup for `servers`.
pub fn run(servers: &[Server]) -> Result<(), String> {
    for component in COMPONENTS {
        ensure_component(component)?;
    }
    install::install(servers)?;
    say!("setup", "done");
    Ok(())
}

fn ensure_component(component: &str) -> Result<(), String> {
    let probe = match component {
        "rustfmt" => Command::new("cargo").args(["fmt", "--version"]).output(),
        _ => Command::new("cargo").args([component, "--version"]).output(),
    };
    if probe.is_ok_and(|out| out.status.success()) {
        say!("setup", "{component}: present");
        return Ok(());
    }
    say!("setup", "{component}: missing, installing with rustup");
    let status = Command::new("rustup")
        .args(["component", "add", component])
        .status()
        .map_err(|e| format!("running rustup to install {component}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("rustup component add {component} failed ({status})"))
    }
}
