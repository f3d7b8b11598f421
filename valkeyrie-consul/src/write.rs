//! How a value lands on a key.
//!
//! Every write is one transaction that states what it assumes about the key, so it is
//! atomic and returns the exact `ModifyIndex` it created (a KV `PUT` returns no index).
//! A TTL is a session with `Behavior=delete` holding the key, as the Go store does: the
//! session lasts half the TTL and Consul invalidates it after twice that, so the key goes
//! when the TTL has passed since the last write (or renewal, with `keep_alive`, whose
//! writes of one TTL share one session per handle: `keep_alive.rs`).
//!
//! The first attempt assumes the common case (no session on the key). When Consul rolls it
//! back, the key is read and the write planned again from what is there:
//! * a TTL session (ours or a Go service's) lets go of the key in the same transaction
//!   (`unlock`), so a write without TTL makes the key permanent again; the session itself is
//!   left alone (it may hold other keys of its owner) and ends unrenewed, holding nothing;
//! * a lock holder's session is kept (the holder keeps its lock, as in Go); a write with a
//!   TTL on a locked key is refused, since it would take the lock from its holder.

use std::time::Duration;

use std::sync::Arc;

use valkeyrie_core::raw::{Backoff, Expect, Key, Spawner};
use valkeyrie_core::{Error, Result};

use crate::api::{Consistency, KvOp, OwnedSession, SessionSpec, TxnOutcome};
use crate::client::ConsulClient;
use crate::keep_alive::KeepAliveSessions;
use crate::CONSUL;

/// The key as a read found it.
#[derive(Debug)]
pub(crate) enum Found {
    /// No such key.
    Absent,
    /// The key, with its `ModifyIndex`.
    Present {
        /// Its `ModifyIndex`.
        index: u64,
        /// The holding session and whether it is a TTL (`Behavior=delete`) session; `None`
        /// for the behavior when the session ended between the two reads.
        session: Option<(String, Option<bool>)>,
    },
}

/// Attempts before a write that keeps losing races gives up.
pub(crate) const ATTEMPTS: u32 = 8;

/// The lock delay of TTL sessions, as the Go store sets it.
const TTL_LOCK_DELAY: Duration = Duration::from_millis(1);

/// The session length that makes a key expire `ttl` after its last renewal.
pub(crate) fn session_ttl(ttl: Duration) -> Duration {
    ttl / 2
}

/// The session that holds a key written with `ttl`.
pub(crate) fn ttl_session(ttl: Duration) -> SessionSpec {
    SessionSpec {
        behavior: "delete",
        ttl: session_ttl(ttl),
        lock_delay: TTL_LOCK_DELAY,
    }
}

/// The refusal of a write with a TTL on a key a lock holds.
pub(crate) fn held_by_lock(key: &str) -> Error {
    let reason = "the key is held by a lock; a write with a TTL would take it from its holder";
    Error::backend(CONSUL, key, false, reason)
}

/// What carries a write's TTL.
enum TtlSession {
    /// A plain TTL write's own session, destroyed if the write certainly failed.
    Own(OwnedSession),
    /// The handle's session for `keep_alive` writes of this TTL.
    Shared(Arc<str>, Duration),
}

impl TtlSession {
    fn id(&self) -> &str {
        match self {
            TtlSession::Own(session) => session.id(),
            TtlSession::Shared(id, _) => id,
        }
    }
}

/// The handle's pieces a write may need beside its client: the shared `keep_alive`
/// sessions, and the spawner that hands a new one to the driver.
pub(crate) struct KeepAlive<'a> {
    pub(crate) sessions: &'a KeepAliveSessions,
    pub(crate) spawner: &'a Spawner,
}

/// Writes `value` at `key` if `expect` holds, with a TTL when `ttl` is set (`(ttl, true)`
/// for a `keep_alive` write, on the handle's shared session of that TTL); returns the new
/// `ModifyIndex`.
///
/// Cancel-safe in the sense of every write: dropped before Consul answered, the write may or
/// may not have happened, and a session of its own is destroyed only when it certainly did
/// not.
///
/// # Errors
/// `KeyExists`, `KeyNotFound` or `KeyModified` when `expect` does not hold.
pub(crate) async fn write(
    client: &ConsulClient,
    keep_alive: &KeepAlive<'_>,
    key: &Key,
    value: &[u8],
    expect: Expect,
    ttl: Option<(Duration, bool)>,
) -> Result<u64> {
    let name = key.as_str();
    let shared = |ttl| keep_alive.sessions.session(client, keep_alive.spawner, name, ttl);
    let mut session = match ttl {
        Some((ttl, true)) => Some(TtlSession::Shared(shared(ttl).await?, ttl)),
        Some((ttl, false)) => Some(TtlSession::Own(
            OwnedSession::create(client, name, &ttl_session(ttl)).await?,
        )),
        None => None,
    };
    let mut found: Option<Found> = None;
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(250));
    let mut last_reason = String::new();
    for _ in 0..ATTEMPTS {
        let ops = plan(
            name,
            value,
            expect,
            session.as_ref().map(TtlSession::id),
            found.as_ref(),
        )?;
        // Until Consul answers, the write may have attached the session: keep it.
        if let Some(TtlSession::Own(session)) = session.as_mut() {
            session.arm(false);
        }
        let errors = match client.txn(name, &ops).await? {
            TxnOutcome::Committed(entries) => return Ok(entries.last().map_or(0, |entry| entry.modify_index)),
            TxnOutcome::RolledBack(errors) => errors,
        };
        last_reason = errors.iter().map(|e| e.what.as_str()).collect::<Vec<_>>().join("; ");
        match session.as_mut() {
            // Certainly not applied: the session holds nothing.
            Some(TtlSession::Own(session)) => session.arm(true),
            Some(TtlSession::Shared(id, ttl)) if last_reason.to_ascii_lowercase().contains("invalid session") => {
                // The shared session ended while Consul was away: the key gets a new one.
                keep_alive.sessions.forget(*ttl, id).await;
                *id = shared(*ttl).await?;
                continue;
            }
            _ => {}
        }
        found = Some(if found.is_none() && last_reason.contains("doesn't exist") {
            // The optimistic attempt's index check found no key.
            Found::Absent
        } else {
            if found.is_some() {
                // A planned attempt lost a race (or a lock delay is running): let it pass.
                backoff.wait().await;
            }
            read(client, name).await?
        });
    }
    let reason = format!("the key kept changing under {ATTEMPTS} attempts; last: {last_reason}");
    Err(Error::gave_up(CONSUL, name, reason))
}

/// The operations of one attempt.
fn plan(
    key: &str,
    value: &[u8],
    expect: Expect,
    new_session: Option<&str>,
    found: Option<&Found>,
) -> Result<Vec<KvOp>> {
    let write = |ops: &mut Vec<KvOp>| {
        ops.push(match new_session {
            Some(session) => KvOp::lock(key, session, value),
            None => KvOp::set(key, value),
        });
    };
    let mut ops = Vec::with_capacity(3);
    let Some(found) = found else {
        // First attempt: assume no session holds the key.
        match expect {
            Expect::Anything => {}
            Expect::Absent => ops.push(KvOp::check_not_exists(key)),
            Expect::Index(index) => ops.push(KvOp::check_index(key, index)),
        }
        write(&mut ops);
        if new_session.is_none() && expect != Expect::Absent {
            // After the write, which creates a missing key (so a new key needs no second
            // attempt) and keeps the session of a held one (which this check then refuses).
            ops.push(KvOp::check_session(key, ""));
        }
        return Ok(ops);
    };
    let (index, session) = match (found, expect) {
        (Found::Present { .. }, Expect::Absent) => return Err(Error::exists(CONSUL, key)),
        (Found::Absent, Expect::Index(_)) => return Err(Error::not_found(CONSUL, key)),
        (Found::Present { index, .. }, Expect::Index(expected)) if *index != expected => {
            return Err(Error::modified(CONSUL, key))
        }
        (Found::Absent, _) => {
            ops.push(KvOp::check_not_exists(key));
            write(&mut ops);
            return Ok(ops);
        }
        (Found::Present { index, session }, _) => (*index, session),
    };
    ops.push(KvOp::check_index(key, index));
    match session {
        None => {}
        Some((old, Some(true))) => {
            // A TTL session: it lets go of the key here (the next op writes the value).
            ops.push(KvOp::unlock(key, old, b""));
        }
        Some((_, Some(false))) if new_session.is_some() => return Err(held_by_lock(key)),
        // A lock holder keeps its lock, as with the Go store; a session that just ended
        // releases or deletes the key shortly, which the index check will notice.
        Some((_, _)) => {}
    }
    write(&mut ops);
    Ok(ops)
}

/// Reads the key and, if a session holds it, what kind of session.
pub(crate) async fn read(client: &ConsulClient, key: &str) -> Result<Found> {
    let (entries, _) = client.kv_read(key, false, Consistency::Consistent, None).await?;
    let Some(entry) = entries.into_iter().find(|e| e.key == key) else {
        return Ok(Found::Absent);
    };
    let session = match entry.session {
        Some(id) => {
            let info = client.session_info(key, &id).await?;
            Some((id, info.map(|info| info.behavior == "delete")))
        }
        None => None,
    };
    Ok(Found::Present {
        index: entry.modify_index,
        session,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::verbs;

    #[test]
    fn first_attempts_assume_no_session() {
        let ops = plan("k", b"v", Expect::Anything, None, None).unwrap();
        assert_eq!(verbs(&ops), "set,check-session");
        let ops = plan("k", b"v", Expect::Absent, None, None).unwrap();
        assert_eq!(verbs(&ops), "check-not-exists,set");
        let ops = plan("k", b"v", Expect::Index(4), Some("s"), None).unwrap();
        assert_eq!(verbs(&ops), "check-index,lock");
    }

    #[test]
    fn planned_attempts_follow_what_was_found() {
        let ttl_held = Found::Present {
            index: 9,
            session: Some(("old".into(), Some(true))),
        };
        let ops = plan("k", b"v", Expect::Anything, None, Some(&ttl_held)).unwrap();
        assert_eq!(verbs(&ops), "check-index,unlock,set");
        let lock_held = Found::Present {
            index: 9,
            session: Some(("holder".into(), Some(false))),
        };
        let ops = plan("k", b"v", Expect::Index(9), None, Some(&lock_held)).unwrap();
        assert_eq!(verbs(&ops), "check-index,set");
        assert!(plan("k", b"v", Expect::Anything, Some("new"), Some(&lock_held)).is_err());
        let kind = |r: Result<Vec<KvOp>>| r.unwrap_err().kind();
        use valkeyrie_core::ErrorKind;
        assert_eq!(
            kind(plan("k", b"v", Expect::Absent, None, Some(&lock_held))),
            ErrorKind::KeyExists
        );
        assert_eq!(
            kind(plan("k", b"v", Expect::Index(3), None, Some(&lock_held))),
            ErrorKind::KeyModified
        );
        assert_eq!(
            kind(plan("k", b"v", Expect::Index(3), None, Some(&Found::Absent))),
            ErrorKind::KeyNotFound
        );
    }
}
