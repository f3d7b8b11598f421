//! Transactions: compares and writes on several keys, committed all-or-nothing.
//!
//! A [`Transaction`] is a list of compares (a key exists, is absent, has an index, has a
//! value, or a lock is still held) and a list of operations (puts and deletes).
//! [`Store::commit`](crate::Store::commit) sends it in one request that the store applies
//! only if every compare holds: etcd `Txn`, Consul's `/v1/txn`, ZooKeeper `multi`, one Redis
//! Lua script, DynamoDB `TransactWriteItems`, one writer step of the local engine. Either
//! every operation is applied or none, and no reader ever sees part of a transaction.
//!
//! The outcome says which compare failed, so a caller can tell "someone moved the key"
//! from "the lock is gone":
//!
//! ```
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use valkeyrie_core::{Transaction, TxnOutcome};
//!
//! let kv = valkeyrie_core::open("memory://").await?;
//! let a = kv.put("accounts/a", "10").if_absent().await?;
//! let b = kv.put("accounts/b", "0").if_absent().await?;
//!
//! // Move 5 units, only if nobody touched either account since we read them.
//! let transfer = Transaction::new()
//!     .when_index(&a.key, a.last_index)
//!     .when_index(&b.key, b.last_index)
//!     .put(&a.key, "5")
//!     .put(&b.key, "5");
//! assert_eq!(kv.commit(transfer.clone()).await?, TxnOutcome::Committed);
//! // The same transaction again: the first compare no longer holds, nothing is written.
//! assert_eq!(kv.commit(transfer).await?, TxnOutcome::Failed { compare: 0 });
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! Rules every backend shares, checked before anything is sent:
//!
//! * keys follow the [key rules](crate::key), values the size limit;
//! * no two operations name the same key (a compare and an operation may);
//! * compares plus operations stay within
//!   [`Capabilities::max_transaction_ops`](crate::Capabilities::max_transaction_ops);
//! * puts may carry a TTL but not `keep_alive` (a keep-alive belongs to a single `put`);
//! * a delete of a key that does not exist is not an error (add a
//!   [`when_exists`](Transaction::when_exists) compare to require it).
//!
//! A [`Fence`], taken from a held [`LockGuard`](crate::LockGuard), makes a compare that
//! the *store* checks: it fails once that acquisition is over, even if the holder has not
//! noticed yet. [`Store::put_if_held`](crate::Store::put_if_held) and
//! [`Store::delete_if_held`](crate::Store::delete_if_held) are the one-key forms.

use bytes::Bytes;

use crate::key::Key;
use crate::kv::{KvPair, WriteOptions};

/// What a compare requires of its key.
///
/// Not `#[non_exhaustive]` on purpose: every backend must evaluate every check natively, so
/// a new one should fail to compile in each backend until it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The key exists.
    Exists,
    /// The key does not exist.
    Absent,
    /// The key exists with this [`last_index`](KvPair::last_index).
    IndexIs(u64),
    /// The key exists with this value.
    ValueIs(Bytes),
    /// The lock acquisition behind this fence still holds the lock (the compare's key is
    /// the lock's key).
    HeldBy(Fence),
}

impl Check {
    /// Whether the check holds for the key's current pair (`None`: absent). `None` for
    /// [`Check::HeldBy`], which only the backend can evaluate, on its lock record.
    pub fn holds_for(&self, current: Option<&KvPair>) -> Option<bool> {
        Some(match self {
            Check::Exists => current.is_some(),
            Check::Absent => current.is_none(),
            Check::IndexIs(index) => current.is_some_and(|pair| pair.last_index == *index),
            Check::ValueIs(value) => current.is_some_and(|pair| pair.value == *value),
            Check::HeldBy(_) => return None,
        })
    }
}

/// One compare of a validated transaction: `check` on `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The normalized key.
    pub key: Key,
    /// What it requires.
    pub check: Check,
}

/// One operation of a validated transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Writes `value` at `key` (with `opts.ttl` when set; `keep_alive` is never set here).
    Put {
        /// The normalized key.
        key: Key,
        /// The value.
        value: Bytes,
        /// The TTL, already raised to the backend's minimum.
        opts: WriteOptions,
    },
    /// Deletes `key` (only that key) if it exists.
    Delete {
        /// The normalized key.
        key: Key,
    },
}

impl TxnOp {
    /// The key the operation writes.
    pub fn key(&self) -> &Key {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } => key,
        }
    }
}

/// A transaction after the shared checks, as a backend receives it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    /// The compares, in the order the caller added them.
    pub compares: Vec<Compare>,
    /// The operations, in order; no two have the same key.
    pub ops: Vec<TxnOp>,
}

impl Txn {
    /// The key errors about the whole transaction name: the first compare's, else the first
    /// operation's; `None` only for an empty transaction, which backends never receive.
    pub fn first_key(&self) -> Option<&Key> {
        self.compares
            .first()
            .map(|compare| &compare.key)
            .or_else(|| self.ops.first().map(TxnOp::key))
    }

    /// The first compare, in order, that fails for `current` (the state of each compared
    /// key, read atomically by the backend), evaluating [`Check::HeldBy`] with `held`.
    pub fn first_failed<'p>(
        &self,
        mut current: impl FnMut(&Key) -> Option<&'p KvPair>,
        mut held: impl FnMut(&Fence) -> bool,
    ) -> Option<usize> {
        self.compares.iter().position(|compare| match &compare.check {
            Check::HeldBy(fence) => !held(fence),
            check => check.holds_for(current(&compare.key)) == Some(false),
        })
    }
}

/// What [`Store::commit`](crate::Store::commit) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every compare held; every operation was applied.
    Committed,
    /// The compare at this position (0-based, in the order added) did not hold, and nothing
    /// was written. When several fail, the first.
    Failed {
        /// Position of the failed compare.
        compare: usize,
    },
}

impl TxnOutcome {
    /// Whether the transaction was applied.
    pub fn is_committed(&self) -> bool {
        matches!(self, TxnOutcome::Committed)
    }
}

/// Proof of one lock acquisition that the store can check, from
/// [`LockGuard::fence`](crate::LockGuard::fence). A compare on it holds while that
/// acquisition holds the lock on the server, and fails for ever once it ended (released,
/// expired, taken over), whatever the holder believes.
///
/// The backend recognizes its acquisition by the fencing token and, where the lock
/// layout needs it, the name of its own record (etcd's contender key, ZooKeeper's
/// contender node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    store: &'static str,
    key: String,
    token: u64,
    record: Option<String>,
}

impl Fence {
    /// A fence for the acquisition of `key` with fencing `token`; `record` names the
    /// backend's own record of it when the key and token alone do not. For backends.
    pub fn new(store: &'static str, key: impl Into<String>, token: u64, record: Option<String>) -> Self {
        Fence {
            store,
            key: key.into(),
            token,
            record,
        }
    }

    /// The store the lock lives in.
    pub fn store(&self) -> &'static str {
        self.store
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The acquisition's fencing token.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The backend's record of the acquisition, when it has one.
    pub fn record(&self) -> Option<&str> {
        self.record.as_deref()
    }
}

/// A transaction being built; see the [module docs](self). Methods take and return the
/// builder, so a transaction reads as one expression.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    pub(crate) compares: Vec<(String, Check)>,
    pub(crate) ops: Vec<RawOp>,
}

/// An operation with its key as given, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawOp {
    Put {
        key: String,
        value: Bytes,
        opts: WriteOptions,
    },
    Delete {
        key: String,
    },
}

impl RawOp {
    pub(crate) fn key(&self) -> &str {
        match self {
            RawOp::Put { key, .. } | RawOp::Delete { key } => key,
        }
    }
}

impl Transaction {
    /// An empty transaction: it commits and does nothing.
    pub fn new() -> Self {
        Transaction::default()
    }

    /// Requires `key` to exist.
    pub fn when_exists(self, key: impl Into<String>) -> Self {
        self.when(key, Check::Exists)
    }

    /// Requires `key` to be absent.
    pub fn when_absent(self, key: impl Into<String>) -> Self {
        self.when(key, Check::Absent)
    }

    /// Requires `key` to exist with `last_index` `index` (as read with `get` or `list`).
    pub fn when_index(self, key: impl Into<String>, index: u64) -> Self {
        self.when(key, Check::IndexIs(index))
    }

    /// Requires `key` to exist with exactly `value`.
    pub fn when_value(self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.when(key, Check::ValueIs(value.into()))
    }

    /// Requires the acquisition behind `fence` to still hold its lock.
    pub fn when_held(self, fence: &Fence) -> Self {
        let key = fence.key.clone();
        self.when(key, Check::HeldBy(fence.clone()))
    }

    /// Adds a compare.
    pub fn when(mut self, key: impl Into<String>, check: Check) -> Self {
        self.compares.push((key.into(), check));
        self
    }

    /// Writes `value` at `key`, without expiry.
    pub fn put(self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.put_with(key, value, WriteOptions::default())
    }

    /// Writes `value` at `key` with `opts` (a TTL; `keep_alive` is refused at commit).
    pub fn put_with(mut self, key: impl Into<String>, value: impl Into<Bytes>, opts: WriteOptions) -> Self {
        self.ops.push(RawOp::Put {
            key: key.into(),
            value: value.into(),
            opts,
        });
        self
    }

    /// Deletes `key` if it exists.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(RawOp::Delete { key: key.into() });
        self
    }

    /// How many compares and operations it has (what
    /// [`Capabilities::max_transaction_ops`](crate::Capabilities::max_transaction_ops)
    /// limits).
    pub fn len(&self) -> usize {
        self.compares.len() + self.ops.len()
    }

    /// The key errors name when no single key is at fault: the first compare's, else the
    /// first operation's.
    pub(crate) fn first_key(&self) -> &str {
        self.compares
            .first()
            .map(|(key, _)| key.as_str())
            .or_else(|| self.ops.first().map(RawOp::key))
            .unwrap_or_default()
    }

    /// Whether it has neither compares nor operations.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> Key {
        Key::parse("memory", raw).expect("valid key")
    }

    #[test]
    fn first_failed_reports_the_first_compare_that_does_not_hold() {
        let present = KvPair::new("a", "1", 7);
        let txn = Txn {
            compares: vec![
                Compare {
                    key: key("a"),
                    check: Check::Exists,
                },
                Compare {
                    key: key("a"),
                    check: Check::ValueIs("1".into()),
                },
                Compare {
                    key: key("b"),
                    check: Check::Absent,
                },
                Compare {
                    key: key("a"),
                    check: Check::IndexIs(8),
                },
                Compare {
                    key: key("lock"),
                    check: Check::HeldBy(Fence::new("memory", "lock", 3, None)),
                },
            ],
            ops: Vec::new(),
        };
        let state = |k: &Key| (k.as_str() == "a").then_some(&present);
        assert_eq!(txn.first_failed(state, |_| true), Some(3));
        let mut held_only = txn.clone();
        held_only.compares.remove(3);
        assert_eq!(held_only.first_failed(state, |_| false), Some(3));
        assert_eq!(held_only.first_failed(state, |_| true), None);
    }

    #[test]
    fn the_builder_keeps_the_order_given() {
        let txn = Transaction::new()
            .when_absent("x")
            .put("x", "1")
            .delete("y")
            .when_exists("z");
        assert_eq!(txn.len(), 4);
        assert_eq!(txn.compares[0], ("x".to_owned(), Check::Absent));
        assert_eq!(txn.compares[1], ("z".to_owned(), Check::Exists));
        assert!(matches!(&txn.ops[1], RawOp::Delete { key } if key == "y"));
    }
}
