//! `cargo xtask setup`: installs what a build and a test run need, idempotently, one line
//! per step saying what it found or did: rustfmt and clippy, `protoc` (etcd-client's build
//! script needs it), the five servers, and the Go program of the interop tests.

use std::process::Command;

use crate::say;
use crate::servers::{install, Server};

/// The rustup components `.ci/run` uses.
const COMPONENTS: [&str; 2] = ["rustfmt", "clippy"];

/// Runs the setup for `servers`, and builds the Go interop program if `go_interop`.
pub fn run(servers: &[Server], go_interop: bool) -> Result<(), String> {
    for component in COMPONENTS {
        ensure_component(component)?;
    }
    install::install(servers)?;
    if go_interop {
        crate::interop::build()?;
    }
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
