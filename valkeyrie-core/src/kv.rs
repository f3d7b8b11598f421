//! The data types every call exchanges: [`KvPair`] and the per-call options.

use std::time::Duration;

use bytes::Bytes;

/// A key, its value and the backend's modification index for it. Built with
/// [`KvPair::new`]; more fields may come, so it is `#[non_exhaustive]`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvPair {
    /// The normalized key (no leading or trailing `/`).
    pub key: String,
    /// The value, possibly empty.
    pub value: Bytes,
    /// The backend's modification index of this key (etcd mod revision, Consul
    /// ModifyIndex, ZooKeeper version, a stored counter elsewhere). It changes on every
    /// write and is never 0 for a key that exists, so it can be fed back to
    /// [`atomic_put`](crate::Store::atomic_put) and [`atomic_delete`](crate::Store::atomic_delete).
    pub last_index: u64,
}

impl KvPair {
    /// Builds a pair.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>, last_index: u64) -> Self {
        KvPair {
            key: key.into(),
            value: value.into(),
            last_index,
        }
    }
}

/// The longest TTL any backend accepts, on a write or a lock: 100 years (of 365 days).
///
/// A longer one (`Duration::MAX`, `u64::MAX` milliseconds) is refused with
/// [`Error::InvalidConfiguration`](crate::Error::InvalidConfiguration) naming `ttl` and the
/// key, before anything is sent. Why a bound: expiry times are computed as "now + TTL" in
/// clocks that overflow (`Instant`, `SystemTime`, Unix seconds or milliseconds on the
/// servers), and etcd refuses leases over about 285 years; 100 years fits every backend
/// with room to spare and is longer than any key needs. A backend with a shorter limit
/// states it in [`Capabilities::max_ttl`](crate::Capabilities::max_ttl).
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Options of [`put`](crate::Store::put) and [`atomic_put`](crate::Store::atomic_put).
/// Built from [`Default`] or a constructor, then by setting fields: more may come, so it is
/// `#[non_exhaustive]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteOptions {
    /// The key disappears this long after the write. `None` writes a key without expiry
    /// (and clears an earlier TTL on that key). Backends round up to their granularity
    /// and raise it to their minimum ([`Capabilities::min_ttl`](crate::Capabilities::min_ttl));
    /// one over [`MAX_TTL`] (or the backend's [`Capabilities::max_ttl`](crate::Capabilities::max_ttl))
    /// is [`Error::InvalidConfiguration`](crate::Error::InvalidConfiguration).
    pub ttl: Option<Duration>,
    /// Keep a TTL key alive in the background for as long as the store handle that wrote
    /// it lives; it then expires one TTL after the handle is closed or dropped.
    pub keep_alive: bool,
}

impl WriteOptions {
    /// Options for a write that expires after `ttl`.
    pub fn with_ttl(ttl: Duration) -> Self {
        WriteOptions {
            ttl: Some(ttl),
            keep_alive: false,
        }
    }

    /// Options for a write that expires after `ttl` unless this handle keeps it alive.
    pub fn keep_alive(ttl: Duration) -> Self {
        WriteOptions {
            ttl: Some(ttl),
            keep_alive: true,
        }
    }
}

/// Options of the read calls; `#[non_exhaustive]`, as more may come.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadOptions {
    /// Read through the consensus leader (linearizable) rather than from any replica.
    /// Defaults to `true`, the safe choice; `false` trades freshness for latency on
    /// backends with replicas and changes nothing elsewhere.
    pub consistent: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { consistent: true }
    }
}

impl ReadOptions {
    /// A possibly stale read, served by any replica.
    pub fn stale() -> Self {
        ReadOptions { consistent: false }
    }

    /// These options with [`consistent`](ReadOptions::consistent) set.
    #[must_use]
    pub fn consistent(mut self, consistent: bool) -> Self {
        self.consistent = consistent;
        self
    }
}

/// Options of [`new_lock`](crate::Store::new_lock), built with chained setters:
/// `LockOptions::with_value("node-a").ttl(Duration::from_secs(10)).delete_on_unlock(true)`.
/// More may come, so it is `#[non_exhaustive]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockOptions {
    /// Written to the lock's key when the lock is taken, so others can read who holds it
    /// (leader election reads the leader's name this way).
    pub value: Bytes,
    /// How long the lock outlives a holder that stops renewing it (crash, partition).
    /// `None` uses the backend's default (20 s, as in the Go library). One over [`MAX_TTL`]
    /// (or the backend's [`Capabilities::max_ttl`](crate::Capabilities::max_ttl)) is
    /// [`Error::InvalidConfiguration`](crate::Error::InvalidConfiguration).
    ///
    /// Every store with locks accepts it, and a holder that cannot renew learns of its loss
    /// within it. Where [`Capabilities::lock_ttl`](crate::Capabilities::lock_ttl) is false
    /// (ZooKeeper), the lock lives as long as the holder's session: others take over once
    /// the server expires the session, however short the TTL.
    pub ttl: Option<Duration>,
    /// Delete the lock's key (and so its value) on unlock instead of leaving it in place.
    pub delete_on_unlock: bool,
}

impl LockOptions {
    /// The lock TTL used when none is given.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(20);

    /// Options with `value` written to the key while held.
    pub fn with_value(value: impl Into<Bytes>) -> Self {
        LockOptions {
            value: value.into(),
            ..LockOptions::default()
        }
    }

    /// These options with `value` written to the key while held.
    #[must_use]
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = value.into();
        self
    }

    /// These options with [`ttl`](LockOptions::ttl) set (`None`: the backend's default).
    #[must_use]
    pub fn ttl(mut self, ttl: impl Into<Option<Duration>>) -> Self {
        self.ttl = ttl.into();
        self
    }

    /// These options with [`delete_on_unlock`](LockOptions::delete_on_unlock) set.
    #[must_use]
    pub fn delete_on_unlock(mut self, delete: bool) -> Self {
        self.delete_on_unlock = delete;
        self
    }

    /// The TTL to use: the given one or [`LockOptions::DEFAULT_TTL`].
    pub fn ttl_or_default(&self) -> Duration {
        self.ttl.unwrap_or(Self::DEFAULT_TTL)
    }
}

/// What a single-key write expects to find on the server: anything (`put`), no key
/// (`atomic_put` without a previous pair) or the pair it was given (`atomic_put` with one);
/// for backends that build conditional requests from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing: a plain put.
    Anything,
    /// No key (create only).
    Absent,
    /// The key at this [`last_index`](KvPair::last_index) (compare-and-set).
    Index(u64),
}

impl Expect {
    /// What `atomic_put` (or `atomic_delete`) given `previous` expects.
    pub fn previous(previous: Option<&KvPair>) -> Self {
        previous.map_or(Expect::Absent, |pair| Expect::Index(pair.last_index))
    }
}
