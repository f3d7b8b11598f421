//! The project's tasks behind `cargo xtask`: setup, the real servers the backends are tested
//! against, and the test command. Depends on no backend crate, so it builds on a bare
//! machine and can install `protoc` and the servers before the rest of the workspace builds.

pub mod bench;
#[cfg(feature = "docker")]
pub mod docker;
pub mod fuzz;
pub mod interop;
pub mod paths;
pub mod placement;
pub mod probe;
pub mod servers;
pub mod setup;
pub mod summary;
pub mod test;

use std::process::Command;

/// `cargo`, for a child build, without the variables `cargo run` set for this xtask
/// (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, …). Build scripts such as ring's rerun when those
/// change, so a child build that inherited them would rebuild what a build from the shell
/// made, and the next shell build would rebuild it again.
pub fn cargo() -> Command {
    let mut command = Command::new(env!("CARGO"));
    without_build_env(&mut command);
    command
}

/// Runs `command` to completion and expects it to succeed: its stdout, or an error that
/// starts with `what` and gives what the program wrote to stderr.
pub(crate) fn run_checked(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command.output().map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("{what}: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Removes from `command`'s environment the variables `cargo run` set for this xtask; see
/// [`cargo`].
pub fn without_build_env(command: &mut Command) -> &mut Command {
    let inherited = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    for name in inherited {
        let set_by_cargo_run = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                name.as_str(),
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            );
        if set_by_cargo_run {
            command.env_remove(name);
        }
    }
    command
}

/// Prints one line of progress, prefixed with the task. A closed stdout (the output piped
/// into `head`) is ignored: the run goes on and still stops its servers.
#[macro_export]
macro_rules! say {
    ($task:expr, $($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), "{}: {}", $task, format!($($arg)*));
    }};
}
