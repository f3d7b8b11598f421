//! `cargo xtask …`: the project's tasks, written in Rust so they run wherever cargo does.
//!
//! * `cargo xtask setup` installs what a build and test run need.
//! * `cargo xtask test [--package NAME …]` runs every crate's tests (each backend's
//!   conformance suite included) package by package and prints a summary per package.
#![allow(clippy::print_stdout, clippy::print_stderr)] // A command-line tool reports on its terminal.

mod setup;
mod summary;
mod test;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup                        install what building and testing need (rustfmt, clippy)
  test [--package NAME ...]    run the workspace's tests package by package, with a summary";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("test") => test::run(&args[1..]),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown or missing command\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
