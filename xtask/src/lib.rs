//! The project's tasks behind `cargo xtask`: setup, the real servers the backends are tested
//! against, and the test command. Depends on no backend crate, so it builds on a bare
//! machine and can install `protoc` and the servers before the rest of the workspace builds.

pub mod bench;
pub mod docker;
pub mod fuzz;
pub mod interop;
pub mod paths;
pub mod probe;
pub mod servers;
pub mod setup;
pub mod summary;
pub mod test;

/// Prints one line of progress, prefixed with the task. A closed stdout (the output piped
/// into `head`) is ignored: the run goes on and still stops its servers.
#[macro_export]
macro_rules! say {
    ($task:expr, $($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), "{}: {}", $task, format!($($arg)*));
    }};
}
