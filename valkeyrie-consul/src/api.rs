//! The thin Consul HTTP API this backend needs beyond `rs-consul` 0.15, on the same client:
//!
//! * KV reads with values as bytes (`rs-consul` decodes them as UTF-8, so binary values
//!   fail), `recurse`, `keys` and blocking queries (`index` + `wait`);
//! * transactions (`/v1/txn`): writes return their exact `ModifyIndex`, and conditions
//!   (`check-index`, `check-session`, …) make every write atomic; `rs-consul` has no
//!   transactions and its KV writes return no index;
//! * sessions: create, renew, destroy, info (internal to `rs-consul`).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use valkeyrie_core::{Error, Result};

use crate::client::{key_path, ApiRequest, ConsulClient};
use crate::CONSUL;

/// The flags the Go store stamps on every key: Consul's lock API refuses to lock a key
/// with other flags, so stamping them keeps every key lockable by Go services.
pub(crate) const LOCK_FLAGS: u64 = 0x2ddc_cbc0_58a5_0c18;

/// One KV entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) value: Bytes,
    pub(crate) modify_index: u64,
    /// The session holding the key (a lock, or the Go store's TTL), if any.
    pub(crate) session: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEntry {
    key: String,
    #[serde(default, deserialize_with = "base64_value")]
    value: Option<std::result::Result<Bytes, base64::DecodeError>>,
    #[serde(default)]
    modify_index: u64,
    #[serde(default)]
    session: Option<String>,
}

/// A `Value`, decoded from base64 as it is parsed: the base64 text is never held, so a
/// large list holds its answer and its values once each instead of its answer, the values'
/// base64 and the values. A bad encoding is kept for [`RawEntry::decode`], which names the
/// key.
fn base64_value<'de, D>(
    deserializer: D,
) -> std::result::Result<Option<std::result::Result<Bytes, base64::DecodeError>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Base64Value;

    impl<'de> serde::de::Visitor<'de> for Base64Value {
        type Value = Option<std::result::Result<Bytes, base64::DecodeError>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a base64 string or null")
        }

        fn visit_str<E: serde::de::Error>(self, encoded: &str) -> std::result::Result<Self::Value, E> {
            Ok(Some(BASE64.decode(encoded).map(Bytes::from)))
        }

        fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            deserializer.deserialize_str(self)
        }
    }

    deserializer.deserialize_option(Base64Value)
}

impl RawEntry {
    fn decode(self) -> Result<Entry> {
        let value = match self.value {
            Some(decoded) => decoded.map_err(|e| Error::backend(CONSUL, self.key.as_str(), false, e))?,
            None => Bytes::new(),
        };
        Ok(Entry {
            key: self.key,
            value,
            modify_index: self.modify_index,
            session: self.session.filter(|s| !s.is_empty()),
        })
    }
}

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consistency {
    /// Through the leader, which confirms its leadership first (`?consistent`).
    Consistent,
    /// By the leader without confirming its leadership (Consul's default mode).
    Default,
}

/// A blocking query: answer once the data's index passes `index`, or after `wait`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocking {
    pub(crate) index: u64,
    pub(crate) wait: Duration,
}

/// One KV operation of a transaction.
#[derive(Debug, Clone)]
pub(crate) struct KvOp {
    /// Plain ASCII, written into JSON as is.
    verb: &'static str,
    key: String,
    /// In base64.
    value: Option<String>,
    flags: Option<u64>,
    index: Option<u64>,
    session: Option<String>,
}

impl KvOp {
    fn new(verb: &'static str, key: &str) -> Self {
        KvOp {
            verb,
            key: key.to_owned(),
            value: None,
            flags: None,
            index: None,
            session: None,
        }
    }

    fn with_value(mut self, value: &[u8]) -> Self {
        self.value = Some(BASE64.encode(value));
        self.flags = Some(LOCK_FLAGS);
        self
    }

    /// Writes `value`.
    pub(crate) fn set(key: &str, value: &[u8]) -> Self {
        KvOp::new("set", key).with_value(value)
    }

    /// Writes `value` and has `session` hold the key; fails if another session holds it.
    pub(crate) fn lock(key: &str, session: &str, value: &[u8]) -> Self {
        let mut op = KvOp::new("lock", key).with_value(value);
        op.session = Some(session.to_owned());
        op
    }

    /// Writes `value` and clears `session`'s hold; fails if `session` does not hold it.
    pub(crate) fn unlock(key: &str, session: &str, value: &[u8]) -> Self {
        let mut op = KvOp::new("unlock", key).with_value(value);
        op.session = Some(session.to_owned());
        op
    }

    /// Writes `value` if the key's `ModifyIndex` is `index` (`0`: if the key is absent);
    /// keeps the session holding the key, as `set` does.
    pub(crate) fn cas(key: &str, index: u64, value: &[u8]) -> Self {
        let mut op = KvOp::new("cas", key).with_value(value);
        op.index = Some(index);
        op
    }

    /// Fails unless the key's `ModifyIndex` is `index`.
    pub(crate) fn check_index(key: &str, index: u64) -> Self {
        let mut op = KvOp::new("check-index", key);
        op.index = Some(index);
        op
    }

    /// Fails unless the key exists and `session` holds it (`""`: no session does).
    pub(crate) fn check_session(key: &str, session: &str) -> Self {
        let mut op = KvOp::new("check-session", key);
        op.session = Some(session.to_owned());
        op
    }

    /// Fails if the key exists.
    pub(crate) fn check_not_exists(key: &str) -> Self {
        KvOp::new("check-not-exists", key)
    }

    /// Fails if the key does not exist.
    pub(crate) fn get(key: &str) -> Self {
        KvOp::new("get", key)
    }

    /// Deletes the key (no error if absent).
    pub(crate) fn delete(key: &str) -> Self {
        KvOp::new("delete", key)
    }

    /// Deletes every key starting with `prefix`.
    pub(crate) fn delete_tree(prefix: &str) -> Self {
        KvOp::new("delete-tree", prefix)
    }

    /// Deletes the key if its `ModifyIndex` is `index`.
    pub(crate) fn delete_cas(key: &str, index: u64) -> Self {
        let mut op = KvOp::new("delete-cas", key);
        op.index = Some(index);
        op
    }

    /// Whether the operation may write (a transaction of reads and checks only is a read).
    fn writes(&self) -> bool {
        !matches!(
            self.verb,
            "get" | "get-tree" | "check-index" | "check-session" | "check-not-exists"
        )
    }

    /// Appends the operation as the transaction API reads it, `{"KV":{"Verb":…}}`.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(br#"{"KV":{"Verb":""#);
        out.extend_from_slice(self.verb.as_bytes());
        out.extend_from_slice(br#"","Key":"#);
        serde_json::to_writer(&mut *out, &self.key)?;
        if let Some(value) = &self.value {
            // Copied as is: base64 never needs escaping, and serde_json's escaping scan of
            // a large value costs more than encoding it.
            out.extend_from_slice(br#","Value":""#);
            out.extend_from_slice(value.as_bytes());
            out.push(b'"');
        }
        for (name, number) in [(&br#","Flags":"#[..], self.flags), (br#","Index":"#, self.index)] {
            if let Some(number) = number {
                out.extend_from_slice(name);
                out.extend_from_slice(number.to_string().as_bytes());
            }
        }
        if let Some(session) = &self.session {
            out.extend_from_slice(br#","Session":"#);
            serde_json::to_writer(&mut *out, session)?;
        }
        out.extend_from_slice(b"}}");
        Ok(())
    }
}

/// The body of a transaction of `ops`, written in one buffer of about the right size.
pub(crate) fn txn_body(ops: &[KvOp]) -> serde_json::Result<Vec<u8>> {
    let size: usize = ops
        .iter()
        .map(|op| op.key.len() + op.value.as_ref().map_or(0, String::len) + 128)
        .sum();
    let mut body = Vec::with_capacity(size + 2);
    body.push(b'[');
    for (n, op) in ops.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        op.write_json(&mut body)?;
    }
    body.push(b']');
    Ok(body)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnReply {
    #[serde(default)]
    results: Option<Vec<TxnResult>>,
    #[serde(default)]
    errors: Option<Vec<TxnError>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResult {
    #[serde(rename = "KV")]
    kv: Option<RawEntry>,
}

/// Why Consul rolled a transaction back.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnError {
    /// The failed operation's position.
    pub(crate) op_index: usize,
    /// Consul's words.
    pub(crate) what: String,
}

/// What a transaction did.
#[derive(Debug)]
pub(crate) enum TxnOutcome {
    /// Everything applied; one entry per operation that returns one (writes and checks).
    Committed(Vec<Entry>),
    /// Nothing applied: a check failed, or a lock was held (never an ACL refusal, which is
    /// an error).
    RolledBack(Vec<TxnError>),
}

/// A session as Consul describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SessionInfo {
    /// `release` (locks) or `delete` (TTL keys).
    pub(crate) behavior: String,
}

/// What a new session looks like.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SessionSpec {
    /// `release` or `delete`: what happens to the keys it holds when it ends.
    pub(crate) behavior: &'static str,
    /// Invalidated this long (×2, Consul's grace) after the last renewal.
    #[serde(rename = "TTL", serialize_with = "go_duration")]
    pub(crate) ttl: Duration,
    /// How long a key it held cannot be taken after it is invalidated.
    #[serde(serialize_with = "go_duration")]
    pub(crate) lock_delay: Duration,
}

fn go_duration<S: serde::Serializer>(duration: &Duration, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str(&go_duration_string(*duration))
}

/// `duration` as Go's `time.Duration.String` writes it (`15s`, `1m30s`, `10.5s`, `1ms`),
/// which is how the Go store's sessions show their TTL.
pub(crate) fn go_duration_string(duration: Duration) -> String {
    fn fraction(nanos: u32, digits: usize) -> String {
        let text = format!("{nanos:0digits$}");
        let text = text.trim_end_matches('0');
        if text.is_empty() {
            String::new()
        } else {
            format!(".{text}")
        }
    }
    let (secs, nanos) = (duration.as_secs(), duration.subsec_nanos());
    if secs == 0 {
        return match nanos {
            0 => "0s".to_owned(),
            1..=999 => format!("{nanos}ns"),
            1_000..=999_999 => format!("{}{}µs", nanos / 1_000, fraction(nanos % 1_000, 3)),
            _ => format!("{}{}ms", nanos / 1_000_000, fraction(nanos % 1_000_000, 6)),
        };
    }
    let seconds = format!("{}{}s", secs % 60, fraction(nanos, 9));
    match (secs / 3600, secs % 3600 / 60) {
        (0, 0) => seconds,
        (0, minutes) => format!("{minutes}m{seconds}"),
        (hours, minutes) => format!("{hours}h{minutes}m{seconds}"),
    }
}

/// A session this handle created, destroyed in the background when dropped while armed:
/// for an attempt abandoned (or refused) before the session is handed on to a lock guard
/// or a key. Disarm it while a request that may attach it is in flight: a caller giving up
/// then must not end a session that may already hold a key.
pub(crate) struct OwnedSession {
    client: ConsulClient,
    id: String,
    /// The key it was created for, for the destroy's errors.
    key: String,
    armed: bool,
}

impl OwnedSession {
    /// Creates a session for `key` (which its errors name) as `spec` says, armed.
    pub(crate) async fn create(client: &ConsulClient, key: &str, spec: &SessionSpec) -> Result<Self> {
        Ok(OwnedSession {
            id: client.session_create(key, spec).await?,
            client: client.clone(),
            key: key.to_owned(),
            armed: true,
        })
    }

    /// The session's ID.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Whether dropping it destroys the session.
    pub(crate) fn arm(&mut self, armed: bool) {
        self.armed = armed;
    }
}

impl Drop for OwnedSession {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (client, id, key) = (
            self.client.clone(),
            std::mem::take(&mut self.id),
            std::mem::take(&mut self.key),
        );
        let spawner = client.spawner().clone();
        spawner.spawn_cleanup(async move {
            let _ = client.session_destroy(&key, &id).await;
        });
    }
}

#[derive(Deserialize)]
struct CreatedSession {
    #[serde(rename = "ID")]
    id: String,
}

/// The entries of a KV answer (a JSON array of entries with base64 values). The answer is
/// dropped before the entries are built: both at once were a large list's peak.
///
/// # Errors
/// A backend error for an answer that is no such array, or a value that is no base64.
pub(crate) fn kv_entries(key: &str, body: Bytes) -> Result<Vec<Entry>> {
    let raw: Vec<RawEntry> = parse(key, &body)?;
    drop(body);
    raw.into_iter().map(RawEntry::decode).collect()
}

/// What a transaction's answer says: 200 with results, or 409 (a rollback) with the
/// reasons. Consul reports an ACL refusal inside a transaction as a rollback too: that one
/// is `PermissionDenied`.
///
/// # Errors
/// `PermissionDenied`, or a backend error for an answer of another shape.
pub(crate) fn txn_outcome(key: &str, body: &[u8]) -> Result<TxnOutcome> {
    let answer: TxnReply = parse(key, body)?;
    if let Some(errors) = answer.errors.filter(|e| !e.is_empty()) {
        if let Some(denied) = errors.iter().find(|e| e.what.contains("Permission denied")) {
            let reason = format!("the ACL token's policies do not allow this ({})", denied.what);
            return Err(Error::permission_denied(CONSUL, key, reason));
        }
        return Ok(TxnOutcome::RolledBack(errors));
    }
    let entries = answer
        .results
        .unwrap_or_default()
        .into_iter()
        .filter_map(|result| result.kv)
        .map(RawEntry::decode)
        .collect::<Result<Vec<_>>>()?;
    Ok(TxnOutcome::Committed(entries))
}

fn parse<T: serde::de::DeserializeOwned>(key: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        let reason = format!("unexpected answer from the agent: {e}");
        Error::backend(CONSUL, key, false, reason)
    })
}

impl ConsulClient {
    /// A read of `path` served as `consistency` says, blocking if asked to.
    fn read_request(&self, path: String, consistency: Consistency, blocking: Option<Blocking>) -> ApiRequest {
        let mut request = ApiRequest::get(path);
        if consistency == Consistency::Consistent {
            request = request.flag("consistent");
        }
        if let Some(blocking) = blocking {
            // A blocking query may last its wait, plus Consul's jitter (wait/16), plus a request.
            let deadline = (blocking.wait + blocking.wait / 16).saturating_add(self.request_timeout());
            request = request
                .param("index", blocking.index)
                .param("wait", format!("{}ms", blocking.wait.as_millis()))
                .deadline(deadline);
        }
        request
    }

    /// The entry at `key` (or with `recurse`, every entry whose key starts with `key`) and
    /// the index of the answer; an empty vector when there is none.
    pub(crate) async fn kv_read(
        &self,
        key: &str,
        recurse: bool,
        consistency: Consistency,
        blocking: Option<Blocking>,
    ) -> Result<(Vec<Entry>, u64)> {
        let mut request = self.read_request(format!("kv/{}", key_path(key)), consistency, blocking);
        if recurse {
            request = request.flag("recurse");
        }
        let reply = self.send(key, request).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok((Vec::new(), reply.index));
        }
        Ok((kv_entries(key, reply.body)?, reply.index))
    }

    /// The value at `key` and its `ModifyIndex`, `None` when there is none. A `raw` read:
    /// the body is the value itself (no JSON, no base64), and for one existing key Consul
    /// sets `X-Consul-Index` to the key's `ModifyIndex`.
    pub(crate) async fn kv_value(&self, key: &str, consistency: Consistency) -> Result<Option<(Bytes, u64)>> {
        let request = self.read_request(format!("kv/{}", key_path(key)), consistency, None);
        let reply = self.send(key, request.flag("raw")).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if reply.index == 0 {
            let reason = "the agent's answer has no X-Consul-Index";
            return Err(Error::backend(CONSUL, key, false, reason));
        }
        Ok(Some((reply.body, reply.index)))
    }

    /// The key names starting with `prefix` (no values), served as `consistency` says;
    /// with a `separator`, each cut after the first one that follows the prefix.
    pub(crate) async fn kv_keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
        consistency: Consistency,
    ) -> Result<Vec<String>> {
        let mut request = self
            .read_request(format!("kv/{}", key_path(prefix)), consistency, None)
            .flag("keys");
        if let Some(separator) = separator {
            request = request.param("separator", separator);
        }
        let reply = self.send(prefix, request).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        parse(prefix, &reply.body)
    }

    /// Applies `ops` all or nothing.
    pub(crate) async fn txn(&self, key: &str, ops: &[KvOp]) -> Result<TxnOutcome> {
        let body = txn_body(ops).map_err(|e| Error::backend(CONSUL, key, false, e))?;
        let mut request = ApiRequest::put("txn", body);
        if !ops.iter().any(KvOp::writes) {
            // Consul serves a read-only transaction in its default mode (no leadership
            // check) unless asked; checks must not be answered by a deposed leader.
            request = request.flag("consistent");
        }
        let reply = self.send(key, request).await?;
        txn_outcome(key, &reply.body)
    }

    /// Creates a session on the agent's node.
    pub(crate) async fn session_create(&self, key: &str, spec: &SessionSpec) -> Result<String> {
        let body = serde_json::to_vec(spec).map_err(|e| Error::backend(CONSUL, key, false, e))?;
        let reply = self.send(key, ApiRequest::put("session/create", body)).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(Error::backend(CONSUL, key, false, "the agent has no session API"));
        }
        Ok(parse::<CreatedSession>(key, &reply.body)?.id)
    }

    /// Renews a session; `false` when it no longer exists.
    pub(crate) async fn session_renew(&self, key: &str, session: &str) -> Result<bool> {
        let request = ApiRequest::put(format!("session/renew/{session}"), Bytes::new());
        Ok(self.send(key, request).await?.status == StatusCode::OK)
    }

    /// Ends a session: keys it holds are released or deleted, as its behavior says.
    pub(crate) async fn session_destroy(&self, key: &str, session: &str) -> Result<()> {
        let request = ApiRequest::put(format!("session/destroy/{session}"), Bytes::new());
        self.send(key, request).await?;
        Ok(())
    }

    /// What a session is, or `None` when it no longer exists.
    pub(crate) async fn session_info(&self, key: &str, session: &str) -> Result<Option<SessionInfo>> {
        let request = self.read_request(format!("session/info/{session}"), Consistency::Consistent, None);
        let reply = self.send(key, request).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let sessions: Option<Vec<SessionInfo>> = parse(key, &reply.body)?;
        Ok(sessions.and_then(|s| s.into_iter().next()))
    }
}

/// The verbs of a transaction body, comma-separated, for tests of what is sent.
#[cfg(test)]
pub(crate) fn verbs(ops: &[KvOp]) -> String {
    serde_json::from_slice::<serde_json::Value>(&txn_body(ops).expect("a transaction body"))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["KV"]["Verb"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_serialize_as_consul_expects() {
        let ops = [
            KvOp::check_index("a", 7),
            KvOp::lock("a", "s-1", b"\x00v"),
            KvOp::check_session("a", ""),
        ];
        let json = String::from_utf8(txn_body(&ops).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"[{"KV":{"Verb":"check-index","Key":"a","Index":7}},{"KV":{"Verb":"lock","Key":"a","Value":"AHY=","Flags":3304740253564472344,"Session":"s-1"}},{"KV":{"Verb":"check-session","Key":"a","Session":""}}]"#
        );
        let spec = SessionSpec {
            behavior: "delete",
            ttl: Duration::from_millis(10_500),
            lock_delay: Duration::from_millis(1),
        };
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            r#"{"Behavior":"delete","TTL":"10.5s","LockDelay":"1ms"}"#
        );
        for (duration, go) in [
            (Duration::from_secs(15), "15s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(7200), "2h0m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(go_duration_string(duration), go);
        }
    }

    #[test]
    fn entries_decode_binary_values() {
        let raw: Vec<RawEntry> = serde_json::from_str(
            r#"[{"Key":"k","Value":"AP8=","ModifyIndex":9,"CreateIndex":3,"LockIndex":0,"Flags":1,"Session":""},{"Key":"e","Value":null,"ModifyIndex":2}]"#,
        )
        .unwrap();
        let entries: Vec<Entry> = raw.into_iter().map(|e| e.decode().unwrap()).collect();
        assert_eq!(entries[0].value.as_ref(), b"\x00\xff");
        assert_eq!(entries[0].modify_index, 9);
        assert_eq!(entries[0].session, None);
        assert!(entries[1].value.is_empty());
        let bad: Vec<RawEntry> = serde_json::from_str(r#"[{"Key":"bad-key","Value":"not base64!"}]"#).unwrap();
        let err = bad.into_iter().next().unwrap().decode().unwrap_err();
        assert!(err.to_string().contains("bad-key"), "{err}");
    }
}
