//! `cargo xtask fuzz [--seconds N] [--target NAME]`: runs the `cargo fuzz` targets of `fuzz/`
//! (libFuzzer, nightly Rust), each for a bounded time: every target (as `cargo fuzz list`
//! names them) for `--seconds` each (default 20 s, a few minutes in all), or only `--target`.
//! Installs `cargo-fuzz` from crates.io and the nightly toolchain through rustup when they
//! are missing. Not part of `cargo xtask test`: fuzzing for long is its own job; the property
//! tests in `valkeyrie-core/tests` and the backends' unit tests cover the same inputs in
//! every test run.

use std::process::Command;

use crate::paths::workspace;
use crate::say;
use crate::servers::install::run as run_status;

/// How long each target runs by default: with the seven targets, under two and a half
/// minutes in all (plus the first build).
const DEFAULT_SECONDS: u64 = 20;

fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
}

fn has_cargo_fuzz() -> bool {
    crate::cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs the fuzz command with its arguments.
pub fn run(args: &[&str]) -> Result<(), String> {
    let mut seconds = DEFAULT_SECONDS;
    let mut only: Option<&str> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match *arg {
            "--seconds" => {
                seconds = rest
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--seconds needs a positive number")?;
            }
            "--target" => only = Some(rest.next().ok_or("--target needs a name")?),
            other => return Err(format!("unknown argument {other}; see `cargo xtask help`")),
        }
    }
    if !has_nightly() {
        say!("fuzz", "installing the nightly toolchain (libFuzzer needs it)");
        run_status(
            "rustup toolchain install nightly",
            Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]),
        )?;
    }
    if !has_cargo_fuzz() {
        say!("fuzz", "installing cargo-fuzz from crates.io");
        run_status(
            "cargo install cargo-fuzz",
            crate::cargo().args(["install", "cargo-fuzz", "--locked"]),
        )?;
    }
    let fuzz_dir = workspace().join("fuzz");
    let targets = match only {
        Some(target) => vec![target.to_owned()],
        None => list_targets(&fuzz_dir)?,
    };
    for target in &targets {
        run_target(&fuzz_dir, target, seconds)?;
    }
    say!("fuzz", "{} target(s), {seconds} s each: no crash", targets.len());
    Ok(())
}

/// The targets of `fuzz/`, as `cargo fuzz list` names them.
fn list_targets(fuzz_dir: &std::path::Path) -> Result<Vec<String>, String> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "cargo", "fuzz", "list"])
        .current_dir(fuzz_dir)
        .output()
        .map_err(|e| format!("cargo fuzz list: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo fuzz list: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let targets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        return Err("cargo fuzz list names no target".to_owned());
    }
    Ok(targets)
}

/// Runs one target for `seconds`, reading its committed seeds.
fn run_target(fuzz_dir: &std::path::Path, target: &str, seconds: u64) -> Result<(), String> {
    let corpus = fuzz_dir.join("target").join("corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("creating {}: {e}", corpus.display()))?;
    say!("fuzz", "running {target} for {seconds} s (corpus {})", corpus.display());
    // The committed seeds are read, new inputs go to the corpus under fuzz/target.
    let seeds = fuzz_dir.join("seeds").join(target);
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo", "fuzz", "run", target])
        .arg(&corpus);
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    run_status(
        "cargo fuzz run",
        command
            .args(["--", &format!("-max_total_time={seconds}")])
            .current_dir(fuzz_dir),
    )?;
    say!("fuzz", "{target}: no crash in {seconds} s");
    Ok(())
}
