//! `cargo xtask test`: every package's tests, one `cargo test` per package so the summary
//! can say which backend passed what.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::summary::{parse, Outcome};

/// The packages tested by default, in the order of the README's capability table.
const PACKAGES: [&str; 4] = [
    "valkeyrie-core",
    "valkeyrie-boltlike",
    "valkeyrie-template",
    "xtask",
];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let packages = parse_args(args)?;
    crate::setup::run()?;
    let mut results = Vec::new();
    for package in &packages {
        println!("\n== cargo test -p {package}");
        results.push((package.clone(), test_package(package)?));
    }
    print_summary(&results);
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, o)| o.failed > 0)
        .map(|(p, _)| p.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("tests failed in: {}", failed.join(", ")))
    }
}

fn parse_args(args: &[String]) -> Result<Vec<String>, String> {
    let mut packages = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--package" | "-p" => {
                let name = args.next().ok_or("--package needs a name")?;
                if !PACKAGES.contains(&name.as_str()) {
                    return Err(format!(
                        "unknown package {name}; known: {}",
                        PACKAGES.join(", ")
                    ));
                }
                packages.push(name.clone());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if packages.is_empty() {
        packages = PACKAGES.iter().map(|p| (*p).to_owned()).collect();
    }
    Ok(packages)
}

/// Runs `cargo test` for one package with all its features, echoing the output, and
/// returns the counts. A build failure counts as one failure.
fn test_package(package: &str) -> Result<Outcome, String> {
    // cargo names each test binary on stderr and the binaries report on stdout: one
    // stream keeps them in order, so results can be attributed to their binary.
    let mut child = Command::new("sh")
        .args(["-c", "exec \"$0\" \"$@\" 2>&1", env!("CARGO")])
        .args([
            "test",
            "--package",
            package,
            "--all-features",
            "--no-fail-fast",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running cargo test: {e}"))?;
    let mut output = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("reading cargo test output: {e}"))?;
            println!("{line}");
            output.push_str(&line);
            output.push('\n');
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo test: {e}"))?;
    let mut outcome = parse(&output);
    if !status.success() && outcome.failed == 0 {
        outcome.failed = 1;
        outcome
            .failures
            .push(format!("cargo test exited with {status} (build failure?)"));
    }
    Ok(outcome)
}

fn print_summary(results: &[(String, Outcome)]) {
    println!("\n== summary");
    println!(
        "{:<22} {:>7} {:>7} {:>8} {:>12}",
        "package", "passed", "failed", "ignored", "conformance"
    );
    for (package, outcome) in results {
        let conformance = if outcome.cases.is_empty() {
            "-".to_owned()
        } else {
            let passed = outcome.cases.values().filter(|ok| **ok).count();
            format!("{passed}/{}", outcome.cases.len())
        };
        println!(
            "{package:<22} {:>7} {:>7} {:>8} {conformance:>12}",
            outcome.passed, outcome.failed, outcome.ignored
        );
        for failure in &outcome.failures {
            println!("    FAILED {failure}");
        }
    }
}
