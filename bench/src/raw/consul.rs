//! Consul through its HTTP API on hyper (the `hyper-util` legacy client, the stack
//! `valkeyrie-consul` is built on, plain HTTP to the first agent), in `valkeyrie-consul`'s
//! layout: a key is the KV entry of that name holding the value as is, stamped with the Go
//! store's lock flags; its index is the entry's `ModifyIndex`. Keys go into URLs
//! percent-encoded as the backend encodes them. Reads are `consistent`, as the backend
//! reads by default.
//!
//! A put is a `/v1/txn` of a `set` with the flags and then a `check-session` that no
//! session holds the key, a compare-and-set the same with `cas` for the `set`: a write
//! without TTL must leave the key permanent, and a KV `PUT` would keep the hold of a TTL
//! session (which deletes the key when it ends), so the backend writes this way too. A
//! directory `dir` is the entries under `dir/`, read with `recurse` and decoded from
//! base64. A watch reads the key, then repeats blocking queries from the last answer's
//! `X-Consul-Index` in a background task, sending each new `ModifyIndex`'s value. A lock is
//! the Go store's recipe, as the backend takes it: a session (`Behavior=release`, TTL 10 s
//! — half of valkeyrie's default 20 s lock TTL — lock delay 1 ms) acquires the key with the
//! lock value and flags; a contender refused while another session holds the key blocks on
//! the key until it changes and tries again; releasing rewrites the value with `release`,
//! then the session is destroyed. Unlike the backend, a lock cycle renews nothing and
//! watches nothing in the background: a cycle ends long before its session would.

use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::driver::{BenchResult, Driver, ValueStream};
use crate::target::Target;

/// The flags the Go store (and so the backend) stamps on every key it writes.
const LOCK_FLAGS: u64 = 3_304_740_253_564_472_344;

/// What a lock holder writes at the lock's key (what the valkeyrie side writes).
const LOCK_VALUE: &[u8] = b"bench";

/// The lock session, as the backend creates it for valkeyrie's default 20 s lock TTL.
const LOCK_SESSION: &str = r#"{"Behavior":"release","TTL":"10s","LockDelay":"1ms"}"#;

/// How long a refused acquisition waits when no session holds the key (a lock delay runs).
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// How long one blocking query may wait at the agent (the backend's default `watch_wait`).
const WAIT: Duration = Duration::from_secs(60);

/// How long connecting and each ordinary request may take (the backend's defaults).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Values buffered between a watch's query task and its consumer.
const WATCH_BUFFER: usize = 64;

/// An HTTP client of one Consul agent. Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub(crate) struct RawConsul {
    http: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port`.
    base: String,
}

/// What the agent answered: 200, 404 or 409 (a rolled-back transaction); any other status
/// is an error.
struct Reply {
    status: StatusCode,
    /// `X-Consul-Index`.
    index: u64,
    body: Bytes,
}

/// One KV entry as the JSON API returns it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    /// The value in base64; `null` when empty.
    value: Option<String>,
    modify_index: u64,
    /// The session holding the key, if any.
    #[serde(default)]
    session: Option<String>,
}

impl Entry {
    /// The value, decoded.
    fn value(&self) -> BenchResult<Bytes> {
        match &self.value {
            Some(encoded) => BASE64
                .decode(encoded)
                .map(Bytes::from)
                .map_err(|e| format!("consul: a value is not base64: {e}")),
            None => Ok(Bytes::new()),
        }
    }

    /// Whether a session holds the key.
    fn is_held(&self) -> bool {
        self.session.as_deref().is_some_and(|s| !s.is_empty())
    }
}

/// A created session.
#[derive(Deserialize)]
struct Session {
    #[serde(rename = "ID")]
    id: String,
}

/// `key` as a URL path, encoded as the backend encodes it: every byte but unreserved
/// characters and `/` percent-encoded.
fn key_path(key: &str) -> String {
    let mut path = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

/// Parses a JSON answer to `what`.
fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> BenchResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| format!("{what}: unexpected answer {:?}: {e}", String::from_utf8_lossy(body)))
}

/// The query of a blocking read from `index`.
fn blocking(index: u64) -> String {
    // Consul's advice: never block on index 0, which answers at once.
    format!("index={}&wait={}ms", index.max(1), WAIT.as_millis())
}

impl RawConsul {
    /// Connects to the first agent of `target` and asks it for the cluster leader.
    pub(crate) async fn connect(target: &Target) -> BenchResult<Self> {
        let endpoint = super::endpoint(target)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(TIMEOUT));
        connector.set_nodelay(true);
        let consul = RawConsul {
            http: Client::builder(TokioExecutor::new()).build(connector),
            base: format!("http://{endpoint}"),
        };
        consul.send(Method::GET, "status/leader", Bytes::new(), TIMEOUT).await?;
        Ok(consul)
    }

    /// Sends `method` to `/v1/<path_and_query>` with `body`, within `deadline`; the reply,
    /// which is 200, 404 or 409.
    async fn send(&self, method: Method, path_and_query: &str, body: Bytes, deadline: Duration) -> BenchResult<Reply> {
        let what = format!("consul {method} /v1/{path_and_query}");
        let request = Request::builder()
            .method(method)
            .uri(format!("{}/v1/{path_and_query}", self.base))
            .body(Full::new(body))
            .map_err(|e| format!("{what}: {e}"))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| format!("{what}: {e}"))?;
            let status = response.status();
            let index = response
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{what}: {e}"))?
                .to_bytes();
            Ok::<_, String>(Reply { status, index, body })
        };
        let reply = tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| format!("{what}: no answer within {deadline:?}"))??;
        match reply.status {
            StatusCode::OK | StatusCode::NOT_FOUND | StatusCode::CONFLICT => Ok(reply),
            status => Err(format!("{what}: {status}: {}", String::from_utf8_lossy(&reply.body))),
        }
    }

    /// A KV `PUT` of `body` at `key` with the Go flags and `query`; whether Consul applied it.
    async fn write(&self, key: &str, query: &str, body: Bytes) -> BenchResult<bool> {
        let path = format!("kv/{}?flags={LOCK_FLAGS}{query}", key_path(key));
        let reply = self.send(Method::PUT, &path, body, TIMEOUT).await?;
        parse(&format!("consul PUT {key}"), &reply.body)
    }

    /// A transaction writing `value` at `key` with the Go flags by `verb` (`set`, or `cas`
    /// with `index`), then checking that no session holds the key; whether Consul applied it.
    async fn write_unheld(&self, key: &str, verb: &str, index: Option<u64>, value: &[u8]) -> BenchResult<bool> {
        let what = format!("consul txn {verb} {key}");
        let key = serde_json::to_string(key).map_err(|e| format!("{what}: {e}"))?;
        let index = index.map(|index| format!(r#","Index":{index}"#)).unwrap_or_default();
        let body = format!(
            r#"[{{"KV":{{"Verb":"{verb}","Key":{key},"Value":"{}","Flags":{LOCK_FLAGS}{index}}}}},{{"KV":{{"Verb":"check-session","Key":{key},"Session":""}}}}]"#,
            BASE64.encode(value)
        );
        let reply = self.send(Method::PUT, "txn", Bytes::from(body), TIMEOUT).await?;
        Ok(reply.status == StatusCode::OK)
    }

    /// The entry at `key` read with `query` (blocking ones get the wait on their deadline),
    /// `None` when there is none, and the answer's index.
    async fn read(&self, key: &str, query: &str) -> BenchResult<(Option<Entry>, u64)> {
        let deadline = if query.contains("index=") {
            WAIT + WAIT / 16 + TIMEOUT
        } else {
            TIMEOUT
        };
        let mut path = format!("kv/{}", key_path(key));
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        let reply = self.send(Method::GET, &path, Bytes::new(), deadline).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok((None, reply.index));
        }
        let entries: Vec<Entry> = parse(&format!("consul GET {key}"), &reply.body)?;
        Ok((entries.into_iter().next(), reply.index))
    }

    /// The entry at `key`, which exists, read consistently.
    async fn entry(&self, key: &str) -> BenchResult<Entry> {
        let (entry, _) = self.read(key, "consistent").await?;
        entry.ok_or_else(|| format!("consul GET {key}: no such key"))
    }

    /// Acquires the lock at `key` with `session`, waiting while another session holds it,
    /// then releases it.
    async fn hold_once(&self, key: &str, session: &str) -> BenchResult<()> {
        let acquire = format!("&acquire={session}");
        while !self.write(key, &acquire, Bytes::from_static(LOCK_VALUE)).await? {
            let (entry, index) = self.read(key, "").await?;
            if entry.is_some_and(|e| e.is_held()) {
                // Until the key changes: its holder releases it, most likely.
                self.read(key, &blocking(index)).await?;
            } else {
                tokio::time::sleep(LOCK_RETRY).await;
            }
        }
        let release = format!("&release={session}");
        if !self.write(key, &release, Bytes::from_static(LOCK_VALUE)).await? {
            return Err(format!("consul unlock {key}: the session no longer held the lock"));
        }
        Ok(())
    }

    /// Sends each new value of `key` after the one at `index` (modified at `seen`) to
    /// `values`, until the consumer goes away or a query fails.
    async fn feed(self, key: String, mut index: u64, mut seen: u64, values: mpsc::Sender<BenchResult<Bytes>>) {
        loop {
            let query = format!("consistent&{}", blocking(index));
            let answer = tokio::select! {
                () = values.closed() => return,
                answer = self.read(&key, &query) => answer,
            };
            let (entry, new_index) = match answer {
                Ok(answer) => answer,
                Err(err) => {
                    let _ = values.send(Err(err)).await;
                    return;
                }
            };
            index = new_index;
            let Some(entry) = entry.filter(|e| e.modify_index != seen) else {
                continue;
            };
            seen = entry.modify_index;
            if values.send(entry.value()).await.is_err() {
                return;
            }
        }
    }
}

#[async_trait]
impl Driver for RawConsul {
    async fn put(&self, key: &str, value: Bytes) -> BenchResult<()> {
        if self.write_unheld(key, "set", None, &value).await? {
            Ok(())
        } else {
            Err(format!("consul PUT {key}: refused"))
        }
    }

    async fn get(&self, key: &str) -> BenchResult<Bytes> {
        let path = format!("kv/{}?raw&consistent", key_path(key));
        let reply = self.send(Method::GET, &path, Bytes::new(), TIMEOUT).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(format!("consul GET {key}: no such key"));
        }
        Ok(reply.body)
    }

    async fn get_indexed(&self, key: &str) -> BenchResult<(Bytes, u64)> {
        let entry = self.entry(key).await?;
        Ok((entry.value()?, entry.modify_index))
    }

    async fn compare_and_set(&self, key: &str, value: Bytes, index: u64) -> BenchResult<bool> {
        self.write_unheld(key, "cas", Some(index), &value).await
    }

    async fn list(&self, dir: &str) -> BenchResult<usize> {
        let path = format!("kv/{}?recurse&consistent", key_path(&format!("{dir}/")));
        let reply = self.send(Method::GET, &path, Bytes::new(), TIMEOUT).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(0);
        }
        let entries: Vec<Entry> = parse(&format!("consul list {dir}"), &reply.body)?;
        for entry in &entries {
            entry.value()?;
        }
        Ok(entries.len())
    }

    async fn watch(&self, key: &str) -> BenchResult<ValueStream> {
        let (entry, index) = self.read(key, "consistent").await?;
        let entry = entry.ok_or_else(|| format!("consul watch {key}: no such key"))?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        // The channel is new and empty: the current value always fits.
        let _ = sender.try_send(entry.value());
        tokio::spawn(self.clone().feed(key.to_owned(), index, entry.modify_index, sender));
        let values = stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|value| (value, receiver))
        });
        Ok(Box::pin(values))
    }

    async fn lock_cycle(&self, key: &str) -> BenchResult<()> {
        let created = self
            .send(
                Method::PUT,
                "session/create",
                Bytes::from_static(LOCK_SESSION.as_bytes()),
                TIMEOUT,
            )
            .await?;
        let session: Session = parse(&format!("consul lock {key}: session/create"), &created.body)?;
        let cycle = self.hold_once(key, &session.id).await;
        // Destroying the session releases whatever it still holds, whatever the cycle did.
        let destroyed = self
            .send(
                Method::PUT,
                &format!("session/destroy/{}", session.id),
                Bytes::new(),
                TIMEOUT,
            )
            .await;
        cycle?;
        destroyed.map(drop)
    }
}
