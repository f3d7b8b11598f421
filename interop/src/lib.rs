//! # valkeyrie-interop
//!
//! Runs a Go service next to a Rust one on the same store, to prove they share data and
//! locks. The Go side is `valkeyrie-go`, a small command-line program on the Go library
//! (`github.com/kvtools/valkeyrie` v1.0.0 and its stores, pinned in `interop/go/go.mod`)
//! that `cargo xtask setup` builds. [`GoService`] runs one call of it and parses its JSON
//! lines; [`GoProcess`] drives a long-running one (a held lock, a watch). [`Backend`] says
//! how each side reaches the server the harness started.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use valkeyrie_interop::Backend;
//!
//! let backend = Backend::Etcd;
//! let go = backend.go()?;
//! go.put("shared/mode", b"blue", None).await?;
//! let rust = backend.open_rust().await?;
//! assert_eq!(rust.get("shared/mode").await?.map(|pair| pair.value), Some("blue".into()));
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use valkeyrie::Kv;

/// How long one short Go call may take before it counts as hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The stores both libraries have and this harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Redis; the Go side uses the store's JSON codec (see `valkeyrie-redis`'s docs).
    Redis,
    /// Redis with plain values: the Go side opened by `valkeyrie.NewStore` (its raw codec),
    /// the Rust side with `value_encoding=raw`.
    RedisRaw,
    /// etcd v3.
    Etcd,
    /// ZooKeeper.
    ZooKeeper,
    /// Consul.
    Consul,
}

impl Backend {
    /// The Go store's registered name.
    pub fn go_store(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::RedisRaw => "redis-raw",
            Backend::Etcd => "etcdv3",
            Backend::ZooKeeper => "zookeeper",
            Backend::Consul => "consul",
        }
    }

    /// The server's endpoints (`host:port,…`), from the variable `cargo xtask test` sets.
    pub fn endpoints(self) -> Result<String, GoError> {
        let variable = match self {
            Backend::Redis | Backend::RedisRaw => "VALKEYRIE_REDIS_URL",
            Backend::Etcd => "VALKEYRIE_ETCD_ENDPOINTS",
            Backend::ZooKeeper => "VALKEYRIE_ZOOKEEPER_ENDPOINTS",
            Backend::Consul => "VALKEYRIE_CONSUL_ENDPOINTS",
        };
        let value = std::env::var(variable).map_err(|_| {
            GoError::Setup(format!(
                "{variable} is not set: run `cargo xtask test --backend interop`"
            ))
        })?;
        // Redis is named by URL; its host and port are what the Go store takes.
        Ok(value
            .strip_prefix("redis://")
            .map_or(value.as_str(), |rest| rest.trim_end_matches('/'))
            .to_owned())
    }

    /// The URL a Rust service opens the store with.
    pub fn rust_url(self) -> Result<String, GoError> {
        let (scheme, params) = match self {
            Backend::Redis => ("redis", ""),
            Backend::RedisRaw => ("redis", "?value_encoding=raw"),
            Backend::Etcd => ("etcd", ""),
            Backend::ZooKeeper => ("zookeeper", ""),
            Backend::Consul => ("consul", ""),
        };
        Ok(format!("{scheme}://{}{params}", self.endpoints()?))
    }

    /// A Rust service's store handle.
    pub async fn open_rust(self) -> Result<Kv, GoError> {
        let url = self.rust_url()?;
        valkeyrie::open(&url)
            .await
            .map_err(|e| GoError::Setup(format!("open {url}: {e}")))
    }

    /// A Go service on this store.
    pub fn go(self) -> Result<GoService, GoError> {
        Ok(GoService {
            binary: go_binary()?,
            store: self.go_store(),
            endpoints: self.endpoints()?,
        })
    }
}

/// The `valkeyrie-go` program: `$VALKEYRIE_GO_BIN`, else `target/interop/valkeyrie-go`.
pub fn go_binary() -> Result<PathBuf, GoError> {
    let path = std::env::var_os("VALKEYRIE_GO_BIN").map_or_else(
        || {
            let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| workspace.join("target"), PathBuf::from)
                .join("interop")
                .join("valkeyrie-go")
        },
        PathBuf::from,
    );
    if path.is_file() {
        Ok(path)
    } else {
        Err(GoError::Setup(format!(
            "{} does not exist: build it with `cargo xtask setup` (needs Go and the module proxy)",
            path.display()
        )))
    }
}

/// What went wrong with a Go call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoError {
    /// The Go library returned an error; `kind` is `key_modified`, `key_not_found`,
    /// `key_exists`, `lost` or `other`.
    Go {
        /// The error's class.
        kind: String,
        /// The Go error's text.
        message: String,
    },
    /// The program could not be run, hung, or answered something unexpected.
    Run(String),
    /// The test environment is incomplete (a variable unset, the program not built).
    Setup(String),
}

impl GoError {
    /// The Go error's class, if the Go library returned one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            GoError::Go { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

impl fmt::Display for GoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoError::Go { kind, message } => write!(f, "Go store error ({kind}): {message}"),
            GoError::Run(why) => write!(f, "valkeyrie-go: {why}"),
            GoError::Setup(why) => write!(f, "interop setup: {why}"),
        }
    }
}

impl std::error::Error for GoError {}

/// A key/value pair as the Go library returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoPair {
    /// The key, as the Go store reports it.
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The Go `LastIndex`.
    pub index: u64,
}

#[derive(Deserialize)]
struct WirePair {
    key: String,
    value: String,
    index: u64,
}

impl WirePair {
    fn into_pair(self) -> Result<GoPair, GoError> {
        Ok(GoPair {
            value: from_hex(&self.value)?,
            key: self.key,
            index: self.index,
        })
    }
}

/// One Go service: runs `valkeyrie-go` against one store.
#[derive(Debug, Clone)]
pub struct GoService {
    binary: PathBuf,
    store: &'static str,
    endpoints: String,
}

impl GoService {
    fn command(&self, flags: &[String], args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("-store")
            .arg(self.store)
            .arg("-endpoints")
            .arg(&self.endpoints)
            .args(flags)
            .args(args)
            .kill_on_drop(true);
        command
    }

    /// Runs one call to its end; its output lines, or the Go error it reported.
    pub async fn call(&self, flags: &[String], args: &[&str]) -> Result<Vec<serde_json::Value>, GoError> {
        let run = self.command(flags, args).stdin(Stdio::null()).output();
        let output = tokio::time::timeout(CALL_TIMEOUT, run)
            .await
            .map_err(|_| GoError::Run(format!("{args:?} did not finish within {CALL_TIMEOUT:?}")))?
            .map_err(|e| GoError::Run(format!("running {}: {e}", self.binary.display())))?;
        let mut lines = Vec::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let value = parse_line(line)?;
            check_error(&value)?;
            lines.push(value);
        }
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(GoError::Run(format!(
                "{args:?} exited with {}: {stderr}",
                output.status
            )));
        }
        Ok(lines)
    }

    /// `Put`, with a TTL if given.
    pub async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), GoError> {
        let flags = ttl
            .map(|ttl| duration_flag("-ttl", ttl))
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        self.call(&flags, &["put", key, &to_hex(value)]).await.map(drop)
    }

    /// `Get`.
    pub async fn get(&self, key: &str) -> Result<GoPair, GoError> {
        let lines = self.call(&[], &["get", key]).await?;
        let line = lines
            .into_iter()
            .next()
            .ok_or_else(|| GoError::Run("get printed nothing".into()))?;
        pair(line)
    }

    /// `List`, in the order the Go store returned.
    pub async fn list(&self, dir: &str) -> Result<Vec<GoPair>, GoError> {
        let lines = self.call(&[], &["list", dir]).await?;
        lines
            .into_iter()
            .filter(|line| line.get("event").is_none())
            .map(pair)
            .collect()
    }

    /// `AtomicPut` over the pair at `previous` (`None`: create only); the new index.
    pub async fn atomic_put(&self, key: &str, value: &[u8], previous: Option<u64>) -> Result<u64, GoError> {
        let previous = previous.map_or_else(|| "-".to_owned(), |index| index.to_string());
        let lines = self.call(&[], &["atomic-put", key, &to_hex(value), &previous]).await?;
        lines
            .first()
            .and_then(|line| line.get("index"))
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| GoError::Run(format!("atomic-put answered {lines:?}")))
    }

    /// `NewLock` + `Lock` with a deadline of `timeout`: whether it was locked (then at
    /// once unlocked) or busy.
    pub async fn try_lock(&self, key: &str, value: &[u8], timeout: Duration) -> Result<bool, GoError> {
        let flags = duration_flag("-timeout", timeout);
        let lines = self.call(&flags, &["lock-try", key, &to_hex(value)]).await?;
        match lines
            .first()
            .and_then(|line| line.get("event"))
            .and_then(|e| e.as_str())
        {
            Some("locked") => Ok(true),
            Some("busy") => Ok(false),
            _ => Err(GoError::Run(format!("lock-try answered {lines:?}"))),
        }
    }

    /// Starts a long-running call (`lock-hold`, `watch`, `watch-tree`, `put -hold`).
    pub fn spawn(&self, flags: &[String], args: &[&str]) -> Result<GoProcess, GoError> {
        let mut child = self
            .command(flags, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| GoError::Run(format!("running {}: {e}", self.binary.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| GoError::Run("no stdout pipe".into()))?;
        Ok(GoProcess {
            stdin: child.stdin.take(),
            lines: BufReader::new(stdout).lines(),
            child,
        })
    }
}

/// A running `valkeyrie-go` call; killed when dropped.
#[derive(Debug)]
pub struct GoProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl GoProcess {
    /// The next output line, waiting at most `timeout`; a Go error line is an error.
    pub async fn next(&mut self, timeout: Duration) -> Result<serde_json::Value, GoError> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .map_err(|_| GoError::Run(format!("no output within {timeout:?}")))?
            .map_err(|e| GoError::Run(format!("reading output: {e}")))?
            .ok_or_else(|| GoError::Run("the program ended".into()))?;
        let value = parse_line(&line)?;
        check_error(&value)?;
        Ok(value)
    }

    /// Waits for the line `{"event": event}`.
    pub async fn expect_event(&mut self, event: &str, timeout: Duration) -> Result<(), GoError> {
        let line = self.next(timeout).await?;
        if line.get("event").and_then(|e| e.as_str()) == Some(event) {
            Ok(())
        } else {
            Err(GoError::Run(format!("expected {event:?}, got {line}")))
        }
    }

    /// The next output line as a pair (what `watch` prints).
    pub async fn next_pair(&mut self, timeout: Duration) -> Result<GoPair, GoError> {
        pair(self.next(timeout).await?)
    }

    /// Tells a `lock-hold` to unlock (a line on its stdin).
    pub async fn release(&mut self) -> Result<(), GoError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| GoError::Run("stdin already closed".into()))?;
        stdin
            .write_all(b"release\n")
            .await
            .map_err(|e| GoError::Run(format!("writing to the program: {e}")))?;
        stdin
            .flush()
            .await
            .map_err(|e| GoError::Run(format!("writing to the program: {e}")))
    }

    /// Waits for the program to end successfully.
    pub async fn finish(mut self, timeout: Duration) -> Result<(), GoError> {
        drop(self.stdin.take());
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| GoError::Run(format!("still running after {timeout:?}")))?
            .map_err(|e| GoError::Run(format!("waiting for the program: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(GoError::Run(format!("exited with {status}")))
        }
    }
}

/// A Go duration flag, in milliseconds.
pub fn duration_flag(name: &str, duration: Duration) -> Vec<String> {
    vec![name.to_owned(), format!("{}ms", duration.as_millis())]
}

fn parse_line(line: &str) -> Result<serde_json::Value, GoError> {
    serde_json::from_str(line).map_err(|e| GoError::Run(format!("unexpected output {line:?}: {e}")))
}

fn check_error(line: &serde_json::Value) -> Result<(), GoError> {
    match line.get("error").and_then(|e| e.as_str()) {
        Some(kind) => Err(GoError::Go {
            kind: kind.to_owned(),
            message: line
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_owned(),
        }),
        None => Ok(()),
    }
}

fn pair(line: serde_json::Value) -> Result<GoPair, GoError> {
    serde_json::from_value::<WirePair>(line.clone())
        .map_err(|e| GoError::Run(format!("expected a pair, got {line}: {e}")))?
        .into_pair()
}

/// Lower-case hex, the CLI's encoding of values.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lower- or upper-case hex.
pub fn from_hex(hex: &str) -> Result<Vec<u8>, GoError> {
    if hex.len() % 2 != 0 {
        return Err(GoError::Run(format!("odd-length hex {hex:?}")));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|digits| u8::from_str_radix(digits, 16).ok())
                .ok_or_else(|| GoError::Run(format!("bad hex {hex:?}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&all)), Ok(all));
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }

    #[test]
    fn go_error_lines_become_typed_errors() {
        let line =
            parse_line(r#"{"error":"key_modified","message":"unable to complete atomic operation, key modified"}"#);
        let err = line.and_then(|l| check_error(&l)).unwrap_err();
        assert_eq!(err.kind(), Some("key_modified"));
    }
}
