//! sled called directly, in `valkeyrie-boltlike`'s layout: in the tree `valkeyrie` (the
//! default bucket), a key holds a 16-byte header, the index and the expiry in Unix
//! milliseconds (little-endian `u64`s; the expiry is 0, as nothing here has a TTL), then the
//! value. Indexes come from sled's persistent id generator, plus one, as in the backend.
//! Lock records live in the tree `valkeyrie.__locks`: owner, fencing token and expiry, 3 ×
//! 8 bytes little-endian; the owner is 0 when the lock is free.
//!
//! sled's calls are blocking but fast, and called directly from async code, as boltlike
//! does. Where boltlike's engine serializes writes behind one mutex, the raw side uses
//! sled's `compare_and_swap`: for a compare-and-set on the value record, and to take and
//! release a lock record. A directory `dir` is the keys starting with `dir/`
//! (`scan_prefix`); a watch is `watch_prefix` on the key, which delivers each new record;
//! a lock waiter waits on `watch_prefix` of the lock record (or the holder's expiry).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;
use sled::{Event, Subscriber};

use crate::driver::{BenchResult, Driver, ValueStream};
use crate::target::Target;

/// The tree of the values: boltlike's default bucket.
const BUCKET: &str = "valkeyrie";

/// The tree of the lock records.
const LOCKS: &str = "valkeyrie.__locks";

/// Bytes before a value: index and expiry.
const HEADER: usize = 16;

/// How long a lock outlives a holder that never releases it, in milliseconds (the
/// backend's default lock TTL).
const LOCK_TTL_MS: u64 = 20_000;

/// What the lock's key holds once taken.
const LOCK_VALUE: &[u8] = b"bench";

/// The longest a lock waiter waits for a change before looking again. A sled subscriber
/// polled for the first time just as an event arrives can miss its wake-up; this bounds
/// what such a miss costs.
const LOCK_RECHECK: Duration = Duration::from_millis(100);

/// Unix time in milliseconds.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Turns a sled error into text saying what failed on which key.
fn failed<'a>(what: &'a str, key: &'a str) -> impl FnOnce(sled::Error) -> String + 'a {
    move |err| format!("{what} {key}: {err}")
}

/// The little-endian `u64` at `at` in `bytes`.
fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

/// The stored form of `value` written with `index`, without expiry.
fn encode(index: u64, value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(HEADER + value.len());
    stored.extend_from_slice(&index.to_le_bytes());
    stored.extend_from_slice(&0u64.to_le_bytes());
    stored.extend_from_slice(value);
    stored
}

/// The value and index of the record `stored` at `key`.
fn decode(key: &str, stored: &[u8]) -> BenchResult<(Bytes, u64)> {
    match (u64_at(stored, 0), stored.get(HEADER..)) {
        (Some(index), Some(value)) => Ok((Bytes::copy_from_slice(value), index)),
        _ => Err(format!("corrupt record at {key}")),
    }
}

/// A lock record.
#[derive(Debug, Clone, Copy, Default)]
struct LockRecord {
    /// The acquisition holding the lock; 0 when free.
    owner: u64,
    /// The fencing token of the latest acquisition.
    token: u64,
    /// When the holder's TTL runs out, in Unix milliseconds.
    expires_at: u64,
}

impl LockRecord {
    /// The stored form.
    fn encode(self) -> [u8; 24] {
        let mut stored = [0u8; 24];
        stored[..8].copy_from_slice(&self.owner.to_le_bytes());
        stored[8..16].copy_from_slice(&self.token.to_le_bytes());
        stored[16..].copy_from_slice(&self.expires_at.to_le_bytes());
        stored
    }

    /// The record `stored` at `key`.
    fn decode(key: &str, stored: &[u8]) -> BenchResult<Self> {
        match (u64_at(stored, 0), u64_at(stored, 8), u64_at(stored, 16)) {
            (Some(owner), Some(token), Some(expires_at)) => Ok(LockRecord {
                owner,
                token,
                expires_at,
            }),
            _ => Err(format!("corrupt lock record at {key}")),
        }
    }
}

/// A sled database of its own, with boltlike's two trees.
pub(crate) struct RawSled {
    /// The database, for its id generator.
    db: sled::Db,
    /// The values.
    data: sled::Tree,
    /// The lock records.
    locks: sled::Tree,
}

impl RawSled {
    /// Opens a database in `target.data_dir/raw`.
    pub(crate) async fn connect(target: &Target) -> BenchResult<Self> {
        let path = target.data_dir.join("raw");
        Self::open(&path).map_err(|e| format!("open {}: {e}", path.display()))
    }

    /// Opens the database at `path` and its trees.
    fn open(path: &Path) -> Result<Self, sled::Error> {
        let db = sled::open(path)?;
        Ok(RawSled {
            data: db.open_tree(BUCKET)?,
            locks: db.open_tree(LOCKS)?,
            db,
        })
    }

    /// A new index, larger than every one before and never 0.
    fn next_index(&self, key: &str) -> BenchResult<u64> {
        self.db
            .generate_id()
            .map(|id| id + 1)
            .map_err(failed("an index for", key))
    }

    /// The value and index at `key`, which exists.
    fn read(&self, key: &str) -> BenchResult<(Bytes, u64)> {
        let stored = self.data.get(key).map_err(failed("get", key))?;
        decode(key, &stored.ok_or_else(|| format!("{key} not found"))?)
    }

    /// Takes the lock at `key` for `owner`, waiting while someone else holds it; the record
    /// written.
    async fn acquire(&self, key: &str, owner: u64) -> BenchResult<LockRecord> {
        // Subscribed after the first busy attempt, then kept: every change after it wakes us.
        let mut changes: Option<Subscriber> = None;
        loop {
            let current = self.locks.get(key).map_err(failed("lock", key))?;
            let record = match &current {
                Some(stored) => LockRecord::decode(key, stored)?,
                None => LockRecord::default(),
            };
            let now = now_ms();
            if record.owner != 0 && record.expires_at > now {
                match changes.as_mut() {
                    // Look again once subscribed, so a release in between is not missed.
                    None => changes = Some(self.locks.watch_prefix(key)),
                    Some(changes) => {
                        let expiry = Duration::from_millis(record.expires_at - now);
                        let _ = tokio::time::timeout(expiry.min(LOCK_RECHECK), changes).await;
                    }
                }
                continue;
            }
            let taken = LockRecord {
                owner,
                token: self.next_index(key)?,
                expires_at: now + LOCK_TTL_MS,
            };
            let swapped = self
                .locks
                .compare_and_swap(key, current, Some(&taken.encode()[..]))
                .map_err(failed("lock", key))?;
            if swapped.is_ok() {
                return Ok(taken);
            }
        }
    }
}

#[async_trait]
impl Driver for RawSled {
    async fn put(&self, key: &str, value: Bytes) -> BenchResult<()> {
        let stored = encode(self.next_index(key)?, &value);
        self.data.insert(key, stored).map(drop).map_err(failed("insert", key))
    }

    async fn get(&self, key: &str) -> BenchResult<Bytes> {
        Ok(self.read(key)?.0)
    }

    async fn get_indexed(&self, key: &str) -> BenchResult<(Bytes, u64)> {
        self.read(key)
    }

    async fn compare_and_set(&self, key: &str, value: Bytes, index: u64) -> BenchResult<bool> {
        let current = self
            .data
            .get(key)
            .map_err(failed("get", key))?
            .ok_or_else(|| format!("{key} not found"))?;
        if decode(key, &current)?.1 != index {
            return Ok(false);
        }
        let stored = encode(self.next_index(key)?, &value);
        let swapped = self
            .data
            .compare_and_swap(key, Some(current), Some(stored))
            .map_err(failed("compare-and-swap", key))?;
        Ok(swapped.is_ok())
    }

    async fn list(&self, dir: &str) -> BenchResult<usize> {
        let prefix = format!("{dir}/");
        let mut pairs = Vec::new();
        for entry in self.data.scan_prefix(&prefix) {
            let (key, stored) = entry.map_err(failed("scan", dir))?;
            let key = String::from_utf8(key.to_vec()).map_err(|_| format!("a key below {dir} is not UTF-8"))?;
            let (value, _) = decode(&key, &stored)?;
            pairs.push((key, value));
        }
        Ok(pairs.len())
    }

    async fn watch(&self, key: &str) -> BenchResult<ValueStream> {
        // Subscribe first, then read, so no change falls between the two.
        let changes = self.data.watch_prefix(key);
        let (current, index) = self.read(key)?;
        let watch = Watch {
            key: key.to_owned(),
            changes,
            last_index: index,
            current: Some(current),
        };
        Ok(Box::pin(stream::unfold(watch, |mut watch| async move {
            watch.next().await.map(|item| (item, watch))
        })))
    }

    async fn lock_cycle(&self, key: &str) -> BenchResult<()> {
        let owner = self.next_index(key)?;
        let held = self.acquire(key, owner).await?;
        let stored = encode(self.next_index(key)?, LOCK_VALUE);
        self.data.insert(key, stored).map_err(failed("lock", key))?;
        // Release: owner 0, keeping the token so the next one is larger.
        let free = LockRecord { owner: 0, ..held };
        let released = self
            .locks
            .compare_and_swap(key, Some(&held.encode()[..]), Some(&free.encode()[..]))
            .map_err(failed("unlock", key))?;
        released.map_err(|_| format!("the lock on {key} was lost before its release"))
    }

    /// Its own database: sled lets one process open a path once, and the valkeyrie side
    /// holds its own.
    fn shares_the_store(&self) -> bool {
        false
    }
}

/// The state of one watch stream.
struct Watch {
    /// The watched key (the subscription covers every key it prefixes).
    key: String,
    /// The changes below the key's prefix.
    changes: Subscriber,
    /// The index of the value last delivered.
    last_index: u64,
    /// The value read when the watch started, until delivered.
    current: Option<Bytes>,
}

impl Watch {
    /// The next value: the current one first, then each new one; `None` once the database
    /// is closed.
    async fn next(&mut self) -> Option<BenchResult<Bytes>> {
        if let Some(current) = self.current.take() {
            return Some(Ok(current));
        }
        loop {
            let Event::Insert { key, value } = (&mut self.changes).await? else {
                continue;
            };
            if key != self.key.as_bytes() {
                continue;
            }
            match decode(&self.key, &value) {
                Ok((value, index)) if index != self.last_index => {
                    self.last_index = index;
                    return Some(Ok(value));
                }
                Ok(_) => {}
                Err(err) => return Some(Err(err)),
            }
        }
    }
}
