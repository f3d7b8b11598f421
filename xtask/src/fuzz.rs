//! `cargo xtask fuzz [--seconds N] [--target NAME]`: runs a `cargo fuzz` target of `fuzz/`
//! (libFuzzer, nightly Rust) for a bounded time. Installs `cargo-fuzz` from crates.io and
//! the nightly toolchain through rustup when they are missing. Not part of `cargo xtask
//! test`: fuzzing for long is its own job; the property tests in `valkeyrie-core/tests`
//! cover the same inputs in every test run.

use std::process::Command;

use crate::paths::workspace;
use crate::say;
use crate::servers::install::run as run_status;

/// The default target and how long it runs.
const DEFAULT_TARGET: &str = "store_url";
const DEFAULT_SECONDS: u64 = 60;

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
    let mut target = DEFAULT_TARGET;
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
            "--target" => target = rest.next().ok_or("--target needs a name")?,
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
    let corpus = fuzz_dir.join("target").join("corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("creating {}: {e}", corpus.display()))?;
    say!("fuzz", "running {target} for {seconds} s (corpus {})", corpus.display());
    // The committed seeds are read, new inputs go to the corpus under fuzz/target.
    let seeds = fuzz_dir.join("seeds").join(target);
    run_status(
        "cargo fuzz run",
        Command::new("rustup")
            .args(["run", "nightly", "cargo", "fuzz", "run", target])
            .arg(&corpus)
            .arg(&seeds)
            .args(["--", &format!("-max_total_time={seconds}")])
            .current_dir(&fuzz_dir),
    )?;
    say!("fuzz", "{target}: no crash in {seconds} s");
    Ok(())
}
