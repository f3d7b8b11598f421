//! Transactions as Consul `/v1/txn` requests.
//!
//! A transaction is one request in the common case. Its compares come first, one txn op
//! each and in order, then its operations, one txn op each, so Consul's limit of 64 txn ops
//! per request ([`MAX_TXN_OPS`]) is the limit of compares plus operations:
//!
//! * `Exists` is `get` (it fails when the key is missing), `Absent` is `check-not-exists`,
//!   `IndexIs` is `check-index`;
//! * `ValueIs` has no txn op: the key is read first (consistently) and the compare becomes a
//!   `check-index` on the `ModifyIndex` read, so it stays atomic; a value that differs fails
//!   locally, and a key rewritten with the same value in between is read again;
//! * `HeldBy` is `check-session` on the lock key with the acquisition's session (the fence's
//!   record); a fence without one is not from this backend's locks and fails;
//! * a put is `set`, or with a TTL `lock` by a `Behavior=delete` session created before the
//!   request (one per distinct TTL, destroyed again when the transaction does not commit);
//!   a delete is `delete`.
//!
//! Consul reports every txn op that failed in a rolled-back transaction; the compares come
//! first, so the lowest `OpIndex` among them is the first failed compare. When a compare
//! fails locally, only the compares before it are sent (nothing is written), to learn
//! whether one of them fails first.
//!
//! A put writes what `put` writes, and `set` keeps the session holding a key: the first
//! attempt checks, after its writes, that no session holds a key it `set` (`check-session`
//! with no session; a transaction where those checks would not fit in 64 reads its keys
//! first instead). When a session holds one, the written keys are read and the transaction
//! sent again with each put one txn op conditional on what was read: `cas` on the index
//! read (a lock holder keeps its lock, as with `put`), or the TTL session's `unlock` with the
//! new value (the key becomes permanent, as with `put`). A put with a TTL on a key that
//! already has one takes two txn ops (the old session lets go, the new one takes the key),
//! so a transaction at the limit with one is refused.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use valkeyrie_core::raw::{Key, Txn, TxnOp};
use valkeyrie_core::{Check, Error, Result, TxnOutcome};

use crate::api::{self, Consistency, KvOp, OwnedSession, TxnError};
use crate::client::ConsulClient;
use crate::write::{held_by_lock, read, ttl_session, Found, ATTEMPTS};
use crate::CONSUL;

/// The most txn ops Consul 1.8 accepts in one transaction, and so the most compares plus
/// operations of one commit.
pub(crate) const MAX_TXN_OPS: usize = 64;

/// Commits `txn` (validated by the core, within [`MAX_TXN_OPS`]).
pub(crate) async fn commit(client: &ConsulClient, txn: &Txn) -> Result<TxnOutcome> {
    Commit {
        client,
        txn,
        name: txn.first_key().map_or("", Key::as_str),
        sessions: TtlSessions {
            client,
            by_ttl: Vec::new(),
        },
        written: None,
    }
    .run()
    .await
}

/// One commit in progress.
struct Commit<'a> {
    client: &'a ConsulClient,
    txn: &'a Txn,
    /// The key errors about the whole transaction name.
    name: &'a str,
    sessions: TtlSessions<'a>,
    /// What each key a put writes held when read; `None` until a read is needed.
    written: Option<HashMap<&'a Key, Found>>,
}

/// What one attempt leads to.
enum Step {
    Done(TxnOutcome),
    /// Consul rolled the attempt back for this reason, which another attempt may not meet.
    Again(String),
}

impl<'a> Commit<'a> {
    async fn run(mut self) -> Result<TxnOutcome> {
        if optimistic_len(self.txn) > MAX_TXN_OPS {
            self.written = Some(self.read_written().await?);
        }
        let mut last_reason = String::new();
        for _ in 0..ATTEMPTS {
            match self.attempt().await? {
                Step::Done(outcome) => return Ok(outcome),
                Step::Again(reason) => last_reason = reason,
            }
        }
        let reason = format!("the keys kept changing under {ATTEMPTS} attempts; last: {last_reason}");
        Err(Error::backend(CONSUL, self.name, true, reason))
    }

    /// Sends the transaction once, as planned from what is known of its keys.
    async fn attempt(&mut self) -> Result<Step> {
        let (mut ops, doomed) = self.compare_ops().await?;
        let compares = ops.len();
        match doomed {
            Some(0) => return Ok(Step::Done(TxnOutcome::Failed { compare: 0 })),
            // Only the compares before it are sent, to learn whether one fails first.
            Some(_) => {}
            None => ops.extend(self.write_ops().await?),
        }
        if ops.len() > MAX_TXN_OPS {
            return Err(self.over_limit());
        }
        // Until Consul answers, the writes may have attached the sessions: keep them.
        self.sessions.arm(false);
        match self.client.txn(self.name, &ops).await? {
            api::TxnOutcome::Committed(_) => {
                Ok(Step::Done(doomed.map_or(TxnOutcome::Committed, |compare| {
                    TxnOutcome::Failed { compare }
                })))
            }
            api::TxnOutcome::RolledBack(errors) => {
                // Certainly not applied: the sessions hold nothing.
                self.sessions.arm(true);
                self.rolled_back(&errors, compares).await
            }
        }
    }

    /// What a rollback means, the first `compares` txn ops being compares: a failed compare,
    /// or a reason to try again.
    async fn rolled_back(&mut self, errors: &[TxnError], compares: usize) -> Result<Step> {
        match first_failed(errors, compares) {
            Some(compare) if !matches!(self.txn.compares[compare].check, Check::ValueIs(_)) => {
                return Ok(Step::Done(TxnOutcome::Failed { compare }));
            }
            // The key of a value compare changed since it was read: read it again.
            Some(_) => {}
            // A write met a session, or a planned write's key changed since it was read.
            None => {
                if self.written.is_some() {
                    // A planned attempt lost a race (or a lock delay is running): let it pass.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                self.written = Some(self.read_written().await?);
            }
        }
        Ok(Step::Again(reasons(errors)))
    }

    /// The refusal of a transaction whose planned txn ops do not fit in one request.
    fn over_limit(&self) -> Error {
        let reason = format!(
            "a put with a TTL on a key that has one takes two operations, which brings this \
             transaction over Consul's limit of {MAX_TXN_OPS}"
        );
        Error::InvalidTransaction {
            store: CONSUL,
            key: self.name.to_owned(),
            reason,
        }
    }

    /// The txn ops of the compares up to the first that fails locally, and its position.
    async fn compare_ops(&self) -> Result<(Vec<KvOp>, Option<usize>)> {
        let mut values: HashMap<&Key, Option<(Bytes, u64)>> = HashMap::new();
        let mut ops = Vec::with_capacity(self.txn.compares.len());
        for (position, compare) in self.txn.compares.iter().enumerate() {
            // Once per key, so that value compares on one key see the same read.
            if matches!(compare.check, Check::ValueIs(_)) && !values.contains_key(&compare.key) {
                let read = self
                    .client
                    .kv_value(compare.key.as_str(), Consistency::Consistent)
                    .await?;
                values.insert(&compare.key, read);
            }
            let current = values.get(&compare.key).and_then(Option::as_ref);
            match check_op(compare.key.as_str(), &compare.check, current) {
                Some(op) => ops.push(op),
                None => return Ok((ops, Some(position))),
            }
        }
        Ok((ops, None))
    }

    /// The txn ops of the operations: as the first attempt has them, or planned on what
    /// their keys held when read.
    async fn write_ops(&mut self) -> Result<Vec<KvOp>> {
        let mut ops = Vec::with_capacity(self.txn.ops.len());
        for op in &self.txn.ops {
            let TxnOp::Put { key, value, opts } = op else {
                ops.push(KvOp::delete(op.key().as_str()));
                continue;
            };
            let session = match opts.ttl {
                Some(ttl) => Some(self.sessions.id(ttl, key).await?),
                None => None,
            };
            let found = self.written.as_ref().and_then(|written| written.get(key));
            ops.extend(put_ops(key.as_str(), value, session.as_deref(), found)?);
        }
        if self.written.is_none() {
            // After the writes, which create missing keys: a `set` kept no session.
            ops.extend(plain_puts(self.txn).map(|key| KvOp::check_session(key.as_str(), "")));
        }
        Ok(ops)
    }

    /// What each key a put writes holds now.
    async fn read_written(&self) -> Result<HashMap<&'a Key, Found>> {
        let mut written = HashMap::with_capacity(self.txn.ops.len());
        for op in &self.txn.ops {
            if let TxnOp::Put { key, .. } = op {
                written.insert(key, read(self.client, key.as_str()).await?);
            }
        }
        Ok(written)
    }
}

/// The txn ops of the first attempt: one per compare and operation, and a session check per
/// put without TTL.
fn optimistic_len(txn: &Txn) -> usize {
    txn.compares.len() + txn.ops.len() + plain_puts(txn).count()
}

/// The keys of the puts without TTL.
fn plain_puts(txn: &Txn) -> impl Iterator<Item = &Key> {
    txn.ops.iter().filter_map(|op| match op {
        TxnOp::Put { key, opts, .. } if opts.ttl.is_none() => Some(key),
        _ => None,
    })
}

/// The txn op that checks `check` on `key`, given the value and `ModifyIndex` read for a
/// value compare; `None` when the compare fails already (a different or missing value, a
/// fence without a session).
fn check_op(key: &str, check: &Check, current: Option<&(Bytes, u64)>) -> Option<KvOp> {
    match check {
        Check::Exists => Some(KvOp::get(key)),
        Check::Absent => Some(KvOp::check_not_exists(key)),
        Check::IndexIs(index) => Some(KvOp::check_index(key, *index)),
        Check::ValueIs(expected) => current
            .filter(|(value, _)| value == expected)
            .map(|(_, index)| KvOp::check_index(key, *index)),
        Check::HeldBy(fence) => fence.record().map(|session| KvOp::check_session(key, session)),
    }
}

/// The txn ops of a put of `value` at `key`, by the TTL `session` if any: as the first
/// attempt has them (`found` is `None`), or conditional on what a read found.
fn put_ops(key: &str, value: &[u8], session: Option<&str>, found: Option<&Found>) -> Result<Vec<KvOp>> {
    let Some(found) = found else {
        return Ok(vec![match session {
            Some(new) => KvOp::lock(key, new, value),
            None => KvOp::set(key, value),
        }]);
    };
    let (index, holder) = match found {
        Found::Absent => (0, None),
        Found::Present { index, session } => (*index, session.as_ref()),
    };
    Ok(match (session, holder) {
        // A TTL session lets go of the key: it becomes permanent, or the new session takes it.
        (None, Some((old, Some(true)))) => vec![KvOp::unlock(key, old, value)],
        (Some(new), Some((old, Some(true)))) => vec![KvOp::unlock(key, old, b""), KvOp::lock(key, new, value)],
        (Some(_), Some((_, Some(false)))) => return Err(held_by_lock(key)),
        // A lock holder keeps its lock, as with `put`; a session that just ended releases or
        // deletes the key, which moves its index.
        (None, _) => vec![KvOp::cas(key, index, value)],
        (Some(new), _) => vec![KvOp::lock(key, new, value)],
    })
}

/// The first failed compare among the failed txn ops, the first `compares` being compares.
fn first_failed(errors: &[TxnError], compares: usize) -> Option<usize> {
    errors
        .iter()
        .map(|error| error.op_index)
        .filter(|&index| index < compares)
        .min()
}

fn reasons(errors: &[TxnError]) -> String {
    errors
        .iter()
        .map(|error| error.what.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The TTL sessions of one commit's puts, one per distinct TTL, created when first needed
/// and destroyed when dropped armed (the transaction did not commit).
struct TtlSessions<'a> {
    client: &'a ConsulClient,
    by_ttl: Vec<(Duration, OwnedSession)>,
}

impl TtlSessions<'_> {
    /// The session of the puts with `ttl`, created for `key` if there is none yet.
    async fn id(&mut self, ttl: Duration, key: &Key) -> Result<String> {
        if let Some((_, session)) = self.by_ttl.iter().find(|(existing, _)| *existing == ttl) {
            return Ok(session.id().to_owned());
        }
        let session = OwnedSession::create(self.client, key.as_str(), &ttl_session(ttl)).await?;
        let id = session.id().to_owned();
        self.by_ttl.push((ttl, session));
        Ok(id)
    }

    /// Whether dropping them destroys the sessions.
    fn arm(&mut self, armed: bool) {
        for (_, session) in &mut self.by_ttl {
            session.arm(armed);
        }
    }
}

#[cfg(test)]
mod tests {
    use valkeyrie_core::{ErrorKind, Fence, WriteOptions};

    use super::*;
    use crate::api::verbs;

    fn verb(op: Option<KvOp>) -> String {
        op.map_or_else(|| "fails".to_owned(), |op| verbs(&[op]))
    }

    #[test]
    fn each_compare_is_one_txn_op_or_fails_locally() {
        let read = (Bytes::from_static(b"v"), 7);
        assert_eq!(verb(check_op("k", &Check::Exists, None)), "get");
        assert_eq!(verb(check_op("k", &Check::Absent, None)), "check-not-exists");
        assert_eq!(verb(check_op("k", &Check::IndexIs(3), None)), "check-index");
        let same = Check::ValueIs("v".into());
        let op = check_op("k", &same, Some(&read)).unwrap();
        assert!(String::from_utf8(api::txn_body(&[op]).unwrap())
            .unwrap()
            .contains(r#""Index":7"#));
        assert_eq!(verb(check_op("k", &Check::ValueIs("w".into()), Some(&read))), "fails");
        assert_eq!(verb(check_op("k", &same, None)), "fails");
        let ours = Fence::new(CONSUL, "k", 9, Some("session-1".to_owned()));
        assert_eq!(verb(check_op("k", &Check::HeldBy(ours), None)), "check-session");
        let foreign = Fence::new(CONSUL, "k", 9, None);
        assert_eq!(verb(check_op("k", &Check::HeldBy(foreign), None)), "fails");
    }

    #[test]
    fn puts_follow_what_was_found() {
        let plan = |session, found| verbs(&put_ops("k", b"v", session, found).unwrap());
        assert_eq!(plan(None, None), "set");
        assert_eq!(plan(Some("new"), None), "lock");
        let ttl_held = Found::Present {
            index: 4,
            session: Some(("old".into(), Some(true))),
        };
        assert_eq!(plan(None, Some(&ttl_held)), "unlock");
        assert_eq!(plan(Some("new"), Some(&ttl_held)), "unlock,lock");
        let lock_held = Found::Present {
            index: 4,
            session: Some(("holder".into(), Some(false))),
        };
        assert_eq!(plan(None, Some(&lock_held)), "cas");
        let refused = put_ops("k", b"v", Some("new"), Some(&lock_held)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Backend);
        let plain = Found::Present {
            index: 4,
            session: None,
        };
        assert_eq!(plan(None, Some(&plain)), "cas");
        assert_eq!(plan(None, Some(&Found::Absent)), "cas");
        assert_eq!(plan(Some("new"), Some(&Found::Absent)), "lock");
    }

    #[test]
    fn the_first_failed_compare_is_the_lowest_failed_op() {
        let error = |op_index| TxnError {
            op_index,
            what: String::new(),
        };
        assert_eq!(first_failed(&[error(3), error(1), error(5)], 4), Some(1));
        assert_eq!(first_failed(&[error(4), error(5)], 4), None, "only writes failed");
    }

    #[test]
    fn the_first_attempt_checks_each_put_without_ttl() {
        let key = |raw| Key::parse(CONSUL, raw).unwrap();
        let txn = Txn {
            compares: Vec::new(),
            ops: vec![
                TxnOp::Put {
                    key: key("a"),
                    value: "1".into(),
                    opts: WriteOptions::default(),
                },
                TxnOp::Put {
                    key: key("b"),
                    value: "2".into(),
                    opts: WriteOptions::with_ttl(Duration::from_secs(30)),
                },
                TxnOp::Delete { key: key("c") },
            ],
        };
        assert_eq!(optimistic_len(&txn), 4);
        assert_eq!(plain_puts(&txn).map(Key::as_str).collect::<Vec<_>>(), ["a"]);
    }
}
