//! What a backend supports, queryable before calling.

use std::time::Duration;

/// The calls and options a backend supports.
///
/// Naming: a `bool` field is named after the call or option it enables; limits are
/// `max_*`/`min_*`. A call whose field is `false` returns
/// [`Error::CallNotSupported`](crate::Error::CallNotSupported), and the conformance suite
/// checks both sides: claimed means it works, not claimed means that error.
///
/// Fields may be added in minor releases; build one from [`Capabilities::default`] (nothing
/// supported) and set fields.
///
/// ```
/// use valkeyrie_core::Capabilities;
///
/// let mut caps = Capabilities::default();
/// caps.watch = true;
/// assert!(!caps.lock);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// `watch` on one key.
    pub watch: bool,
    /// `watch_tree` on a directory.
    pub watch_tree: bool,
    /// `new_lock` and the lock calls.
    pub lock: bool,
    /// Others take a lock over [`LockOptions::ttl`](crate::LockOptions::ttl) after its holder
    /// stops renewing it. Every store with locks accepts a TTL, and every holder's lost
    /// signal fires within it; where this is `false` (ZooKeeper), the lock lives as long as
    /// the holder's session, so a takeover waits for the server to expire the session.
    pub lock_ttl: bool,
    /// `put`/`atomic_put` honour [`WriteOptions::ttl`](crate::WriteOptions::ttl).
    pub ttl: bool,
    /// [`WriteOptions::keep_alive`](crate::WriteOptions::keep_alive) is honoured.
    pub keep_alive: bool,
    /// Shortest TTL the backend honours; shorter ones are raised to it.
    pub min_ttl: Duration,
    /// Longest TTL the backend honours, when it is shorter than the library-wide
    /// [`MAX_TTL`](crate::kv::MAX_TTL); a longer TTL (on a write, a transaction's put or a
    /// lock) is [`Error::InvalidConfiguration`](crate::Error::InvalidConfiguration) naming
    /// `ttl` and the key, before anything is sent. `None`: only [`MAX_TTL`](crate::kv::MAX_TTL).
    pub max_ttl: Option<Duration>,
    /// Largest value the backend accepts, in bytes; `None` when only memory limits it.
    pub max_value_size: Option<usize>,
    /// [`ReadOptions::consistent`](crate::ReadOptions::consistent) changes how reads are served.
    pub consistent_reads: bool,
    /// Data survives the end of the process.
    pub persistent: bool,
    /// [`Store::commit`](crate::Store::commit) and the fenced writes
    /// ([`Store::put_if_held`](crate::Store::put_if_held)) built on it.
    pub transactions: bool,
    /// Most compares plus operations one transaction may have; a larger one is
    /// [`Error::InvalidTransaction`](crate::Error::InvalidTransaction) before anything is
    /// sent. `None` when only the request size limits it.
    pub max_transaction_ops: Option<usize>,
    /// [`Store::get_many`](crate::Store::get_many) reads every key from one snapshot (one
    /// atomic multi-key read), rather than key by key; for keys within
    /// [`atomic_scope`](Self::atomic_scope).
    pub atomic_get_many: bool,
    /// Which keys one transaction and one atomic `get_many` may span.
    pub atomic_scope: AtomicScope,
    /// [`Store::list_stream`](crate::Store::list_stream) reads each page as one ordered
    /// range request; otherwise it lists the keys first and reads values page by page.
    pub native_list_paging: bool,
    /// [`Store::watch_from`](crate::Store::watch_from) replays the changes after an index
    /// from the store's history (while it has them); otherwise it starts with a snapshot.
    pub watch_replay: bool,
}

impl Capabilities {
    /// Every call and option supported, no minimum TTL, no value limit, not persistent.
    pub fn all() -> Self {
        Capabilities {
            watch: true,
            watch_tree: true,
            lock: true,
            lock_ttl: true,
            ttl: true,
            keep_alive: true,
            min_ttl: Duration::ZERO,
            max_ttl: None,
            max_value_size: None,
            consistent_reads: false,
            persistent: false,
            transactions: true,
            max_transaction_ops: None,
            atomic_get_many: false,
            atomic_scope: AtomicScope::AnyKeys,
            native_list_paging: false,
            watch_replay: false,
        }
    }
}

/// Which keys one atomic multi-key call (a transaction, `put_many`, `delete_many`, an atomic
/// `get_many`) may span.
///
/// ```
/// use valkeyrie_core::{AtomicScope, Capabilities};
///
/// assert_eq!(Capabilities::all().atomic_scope, AtomicScope::AnyKeys);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AtomicScope {
    /// Any keys of the store.
    #[default]
    AnyKeys,
    /// Keys of one hash slot of a Redis Cluster. A hash tag puts keys in one slot: `{app}/a`
    /// and `{app}/b` share the slot of `app`. A transaction whose keys span slots is refused
    /// before anything is sent (`InvalidTransaction`, naming a key); a `get_many` across
    /// slots reads slot by slot, each slot's keys from one snapshot.
    OneHashSlot,
}
