//! The Go side of the interop tests: builds the `valkeyrie-go` program from `interop/go`
//! into `target/interop/`, with modules from the Go module proxy checked against the
//! committed `go.sum`.
//!
//! A `go` on `PATH` at least as new as [`GO_VERSION`] is used as it is. Otherwise that
//! toolchain comes from the module proxy (the `golang.org/toolchain` module, as
//! `GOTOOLCHAIN=auto` would fetch it) into the download cache: Debian 12's `golang-go` is
//! too old for the Go library's dependencies.

use std::path::PathBuf;
use std::process::Command;

use crate::paths::{cache_dir, target_dir, workspace};
use crate::say;
use crate::servers::install::{found, run};

/// The Go release fetched when the machine has none new enough (`interop/go/go.mod` needs 1.24).
pub const GO_VERSION: &str = "1.24.4";

/// Where the built program lives; the interop tests read it from `VALKEYRIE_GO_BIN`.
pub fn binary() -> PathBuf {
    target_dir().join("interop").join("valkeyrie-go")
}

/// Builds (or, when up to date, just checks) the program.
pub fn build() -> Result<PathBuf, String> {
    let go = toolchain()?;
    let output = binary();
    run(
        "go build (interop/go)",
        Command::new(&go)
            .args(["build", "-trimpath", "-o"])
            .arg(&output)
            .arg(".")
            .current_dir(workspace().join("interop").join("go"))
            // Never rewrite go.mod or go.sum: what is committed is what is tested.
            .env("GOFLAGS", "-mod=readonly")
            // Use this toolchain even if go.mod names a newer one.
            .env("GOTOOLCHAIN", "local"),
    )?;
    say!("setup", "valkeyrie-go: built at {}", output.display());
    Ok(output)
}

/// A `go` command new enough for the module.
fn toolchain() -> Result<PathBuf, String> {
    if found("go") {
        if let Some(version) = version_of(&PathBuf::from("go")) {
            if at_least(&version, GO_VERSION) {
                say!("setup", "go: {version} on PATH");
                return Ok(PathBuf::from("go"));
            }
            say!("setup", "go: {version} on PATH is older than {GO_VERSION}");
        }
    }
    let root = cache_dir().join(format!("golang.org-toolchain-go{GO_VERSION}"));
    let go = root.join("bin").join("go");
    if !go.is_file() {
        fetch_toolchain(&root)?;
    }
    say!("setup", "go: {GO_VERSION} from the module proxy, at {}", go.display());
    Ok(go)
}

/// The `go1.x.y` version a `go` command reports.
fn version_of(go: &PathBuf) -> Option<String> {
    let output = Command::new(go)
        .arg("version")
        .env("GOTOOLCHAIN", "local")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .find_map(|word| word.strip_prefix("go").filter(|v| v.starts_with(char::is_numeric)))
        .map(str::to_owned)
}

/// Whether dotted version `have` is at least `want`.
fn at_least(have: &str, want: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parts(have) >= parts(want)
}

/// Downloads the toolchain module's zip from the proxy and unpacks it into `root`.
fn fetch_toolchain(root: &std::path::Path) -> Result<(), String> {
    let proxy = std::env::var("GOPROXY")
        .ok()
        .and_then(|p| p.split(',').find(|p| p.starts_with("http")).map(str::to_owned))
        .unwrap_or_else(|| "https://proxy.golang.org".to_owned());
    let module = format!("v0.0.1-go{GO_VERSION}.linux-amd64");
    let url = format!("{proxy}/golang.org/toolchain/@v/{module}.zip");
    let staging = cache_dir().join(format!("golang.org-toolchain-go{GO_VERSION}-download"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let zip = staging.join("toolchain.zip");
    say!("setup", "go: fetching {url}");
    run(
        "download the Go toolchain",
        Command::new("curl").args(["-fsSL", "-o"]).arg(&zip).arg(&url),
    )?;
    // The zip holds golang.org/toolchain@<module>/...; Python's zipfile is always there.
    run(
        "unpack the Go toolchain",
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&zip)
            .arg(&staging),
    )?;
    let unpacked = staging.join("golang.org").join(format!("toolchain@{module}"));
    // zipfile drops the executable bits.
    run(
        "chmod the Go toolchain",
        Command::new("chmod").args(["-R", "a+x"]).arg(unpacked.join("bin")),
    )?;
    run(
        "chmod the Go toolchain",
        Command::new("chmod")
            .args(["-R", "a+x"])
            .arg(unpacked.join("pkg").join("tool")),
    )?;
    std::fs::rename(&unpacked, root).map_err(|e| format!("moving the Go toolchain into place: {e}"))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(at_least("1.26.8", GO_VERSION));
        assert!(at_least("1.24.4", "1.24.4"));
        assert!(at_least("1.100", "1.24.4"));
        assert!(!at_least("1.19.8", GO_VERSION));
        assert!(!at_least("1.24", "1.24.4"));
    }
}
