//! `cargo xtask setup`: installs what building and testing need, idempotently, one line per
//! step saying what it found or did.

use std::process::Command;

/// The rustup components `.ci/run` uses.
const COMPONENTS: [&str; 2] = ["rustfmt", "clippy"];

pub(crate) fn run() -> Result<(), String> {
    for component in COMPONENTS {
        ensure_component(component)?;
    }
    println!("setup: done");
    Ok(())
}

fn ensure_component(component: &str) -> Result<(), String> {
    let probe = match component {
        "rustfmt" => Command::new("cargo").args(["fmt", "--version"]).output(),
        _ => Command::new("cargo")
            .args([component, "--version"])
            .output(),
    };
    if probe.is_ok_and(|out| out.status.success()) {
        println!("setup: {component}: present");
        return Ok(());
    }
    println!("setup: {component}: missing, installing with rustup");
    let status = Command::new("rustup")
        .args(["component", "add", component])
        .status()
        .map_err(|e| format!("running rustup to install {component}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "rustup component add {component} failed ({status})"
        ))
    }
}
