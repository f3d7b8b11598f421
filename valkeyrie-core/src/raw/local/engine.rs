//! The engine: one writer at a time over a [`Storage`], with expiry, change broadcast and
//! lock records.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{broadcast, Notify};

use super::{Record, Storage};
use crate::error::{BoxError, Error, LostReason, Result};
use crate::key::Key;
use crate::kv::KvPair;
use crate::txn::{Check, Fence, Txn, TxnOp, TxnOutcome};

/// How many changes a watcher may fall behind before it is resynced with a snapshot. The
/// buffer is shared: an idle watcher keeps up to this many recent changes in memory.
const CHANGE_BUFFER: usize = 1024;

/// Settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The store name used in errors and spans.
    pub store: &'static str,
    /// Largest value accepted, in bytes.
    pub max_value_size: Option<usize>,
    /// Whether the storage survives the process.
    pub persistent: bool,
}

/// One change, broadcast to watchers.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) key: String,
    /// The new value and index; `None` for a delete.
    pub(crate) pair: Option<KvPair>,
    pub(crate) index: u64,
}

/// The outcome of a lock acquisition attempt.
pub(crate) enum Acquire {
    /// Acquired with this fencing token, which also names the acquisition.
    Acquired(u64),
    /// Held by someone else until (at the latest) this Unix time in milliseconds.
    Busy(u64),
}

/// Writer-side state, guarded by the writer mutex.
#[derive(Default)]
struct Writer {
    /// (expiry in Unix ms, key) of every record with a TTL.
    expiries: BTreeSet<(u64, String)>,
    /// The locks held, or held until an expiry that may have passed, by key. They live in
    /// memory only: every handle on a storage shares this engine, so every holder is in
    /// this process (sled lets one process open a database at a time), and a lock record
    /// that outlived its process would only make the next one wait out the TTL of a holder
    /// known to be gone. What must survive, the fencing tokens' order, comes from the
    /// storage's persistent index.
    locks: HashMap<String, LockRecord>,
}

/// One held lock.
#[derive(Debug, Clone, Copy)]
struct LockRecord {
    /// The fencing token of the acquisition, which also names it.
    token: u64,
    /// When the holder's TTL runs out, as Unix time in milliseconds.
    expires_at: u64,
}

impl Writer {
    /// The lock record of `key`, if a holder has not released it.
    fn lock(&self, key: &str) -> Option<LockRecord> {
        self.locks.get(key).copied()
    }
}

/// The shared state of every handle on one store.
pub struct Engine<S: Storage> {
    options: EngineOptions,
    pub(crate) storage: S,
    writer: Mutex<Writer>,
    changes: broadcast::Sender<Change>,
    /// Woken on every lock release, takeover or revocation.
    pub(crate) lock_changed: Notify,
    /// Woken when a new, earlier expiry is scheduled.
    expiry_scheduled: Arc<Notify>,
    sweeper_running: Arc<AtomicBool>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn ms_after(duration: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

fn live(record: Record, now: u64) -> Option<Record> {
    match record.expires_at {
        Some(at) if at <= now => None,
        _ => Some(record),
    }
}

/// [`live`] now; the clock is read only for a record that expires, since a read of the
/// clock costs as much as the rest of a cached read's bookkeeping.
fn live_now(record: Record) -> Option<Record> {
    match record.expires_at {
        Some(_) => live(record, now_ms()),
        None => Some(record),
    }
}

impl<S: Storage> Engine<S> {
    /// An engine over `storage`; the expiry index is rebuilt from what the storage holds.
    ///
    /// # Errors
    /// The storage's error when it cannot be scanned.
    pub fn new(storage: S, options: EngineOptions) -> Result<Arc<Self>> {
        let mut writer = Writer::default();
        let all = storage
            .scan_prefix("")
            .map_err(|e| Error::backend(options.store, "", false, e))?;
        for (key, record) in all {
            if let Some(at) = record.expires_at {
                writer.expiries.insert((at, key));
            }
        }
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Ok(Arc::new(Engine {
            options,
            storage,
            writer: Mutex::new(writer),
            changes,
            lock_changed: Notify::new(),
            expiry_scheduled: Arc::new(Notify::new()),
            sweeper_running: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// The storage under the engine.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The settings.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    pub(crate) fn store(&self) -> &'static str {
        self.options.store
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // Writer state is updated only after the storage call it mirrors succeeded, so a
        // panic elsewhere cannot leave it half-written: recover from poisoning.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, key: &str, err: BoxError) -> Error {
        Error::backend(self.options.store, key, false, err)
    }

    fn read(&self, key: &str) -> Result<Option<Record>> {
        let record = self.storage.get(key).map_err(|e| self.fail(key, e))?;
        Ok(record.and_then(live_now))
    }

    fn next_index(&self, key: &str) -> Result<u64> {
        self.storage.next_index().map_err(|e| self.fail(key, e))
    }

    /// Callers hold the writer lock, as `subscribe` does: a watcher subscribing later reads
    /// its snapshot after this change, so skipping the send when nobody watches loses nothing.
    fn publish(&self, key: &str, pair: Option<&KvPair>, index: u64) {
        if self.changes.receiver_count() == 0 {
            return;
        }
        // A receiver dropped since the count is fine too.
        let _ = self.changes.send(Change {
            key: key.to_owned(),
            pair: pair.cloned(),
            index,
        });
    }

    /// Reads `key`.
    pub(crate) fn get(&self, key: &Key) -> Result<KvPair> {
        match self.read(key.as_str())? {
            Some(record) => Ok(KvPair::new(key.as_str(), record.value, record.index)),
            None => Err(Error::not_found(self.store(), key.as_str())),
        }
    }

    /// Reads `keys` under the writer lock: one snapshot, as no write can run in between.
    pub(crate) fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<KvPair>>> {
        let _writer = self.writer();
        keys.iter()
            .map(|key| {
                let record = self.read(key.as_str())?;
                Ok(record.map(|r| KvPair::new(key.as_str(), r.value, r.index)))
            })
            .collect()
    }

    /// Whether `key` exists.
    pub(crate) fn exists(&self, key: &Key) -> Result<bool> {
        Ok(self.read(key.as_str())?.is_some())
    }

    /// `dir` and every live record below it.
    pub(crate) fn list(&self, dir: &Key) -> Result<Vec<KvPair>> {
        let now = now_ms();
        let mut pairs = Vec::new();
        if let Some(record) = self.read(dir.as_str())? {
            pairs.push(KvPair::new(dir.as_str(), record.value, record.index));
        }
        let below = self
            .storage
            .scan_prefix(&dir.dir_prefix())
            .map_err(|e| self.fail(dir.as_str(), e))?;
        pairs.extend(
            below
                .into_iter()
                .filter_map(|(key, record)| live(record, now).map(|r| KvPair::new(key, r.value, r.index))),
        );
        Ok(pairs)
    }

    /// Up to `limit` live records strictly below `dir` after `after`, sorted; expired records
    /// are skipped without shortening the page.
    pub(crate) fn list_page(&self, dir: &Key, after: Option<&str>, limit: usize) -> Result<Vec<KvPair>> {
        let now = now_ms();
        let prefix = dir.dir_prefix();
        let mut after = after.map(str::to_owned);
        let mut pairs = Vec::with_capacity(limit.min(1024));
        while pairs.len() < limit {
            let wanted = limit - pairs.len();
            let scanned = self
                .storage
                .scan_page(&prefix, after.as_deref(), wanted)
                .map_err(|e| self.fail(dir.as_str(), e))?;
            let exhausted = scanned.len() < wanted;
            after = scanned.last().map(|(key, _)| key.clone());
            pairs.extend(
                scanned
                    .into_iter()
                    .filter_map(|(key, record)| live(record, now).map(|r| KvPair::new(key, r.value, r.index))),
            );
            if exhausted {
                break;
            }
        }
        Ok(pairs)
    }

    fn write(&self, writer: &mut Writer, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<KvPair> {
        let index = self.next_index(key)?;
        let expires_at = ttl.map(ms_after);
        let record = Record {
            index,
            expires_at,
            value,
        };
        let previous_expiry = self.storage.insert(key, &record).map_err(|e| self.fail(key, e))?;
        if let Some(at) = previous_expiry {
            writer.expiries.remove(&(at, key.to_owned()));
        }
        if let Some(at) = expires_at {
            writer.expiries.insert((at, key.to_owned()));
            self.expiry_scheduled.notify_one();
        }
        let pair = KvPair::new(key, record.value, index);
        self.publish(key, Some(&pair), index);
        Ok(pair)
    }

    fn remove(&self, writer: &mut Writer, key: &str) -> Result<bool> {
        let removed = self.storage.remove(key).map_err(|e| self.fail(key, e))?;
        let Some(record) = removed else {
            return Ok(false);
        };
        if let Some(at) = record.expires_at {
            writer.expiries.remove(&(at, key.to_owned()));
        }
        let was_live = live_now(record).is_some();
        let index = self.next_index(key)?;
        self.publish(key, None, index);
        Ok(was_live)
    }

    /// Writes `key`.
    pub(crate) fn put(&self, key: &Key, value: Bytes, ttl: Option<Duration>) -> Result<KvPair> {
        let mut writer = self.writer();
        self.write(&mut writer, key.as_str(), value, ttl)
    }

    /// Deletes `key`.
    pub(crate) fn delete(&self, key: &Key) -> Result<()> {
        let mut writer = self.writer();
        if self.remove(&mut writer, key.as_str())? {
            Ok(())
        } else {
            Err(Error::not_found(self.store(), key.as_str()))
        }
    }

    /// Deletes `dir` and everything below it.
    pub(crate) fn delete_tree(&self, dir: &Key) -> Result<()> {
        let mut writer = self.writer();
        let below = self
            .storage
            .scan_prefix(&dir.dir_prefix())
            .map_err(|e| self.fail(dir.as_str(), e))?;
        let mut any = self.remove(&mut writer, dir.as_str())?;
        for (key, _) in below {
            any |= self.remove(&mut writer, &key)?;
        }
        if any {
            Ok(())
        } else {
            Err(Error::not_found(self.store(), dir.as_str()))
        }
    }

    /// Compare-and-set; see [`crate::Store::atomic_put`].
    pub(crate) fn atomic_put(
        &self,
        key: &Key,
        value: Bytes,
        previous: Option<&KvPair>,
        ttl: Option<Duration>,
    ) -> Result<KvPair> {
        let mut writer = self.writer();
        let current = self.read(key.as_str())?;
        match (previous, current) {
            (None, Some(_)) => return Err(Error::exists(self.store(), key.as_str())),
            (Some(_), None) => return Err(Error::not_found(self.store(), key.as_str())),
            (Some(previous), Some(current)) if current.index != previous.last_index => {
                return Err(Error::modified(self.store(), key.as_str()))
            }
            _ => {}
        }
        self.write(&mut writer, key.as_str(), value, ttl)
    }

    /// Compare-and-delete; see [`crate::Store::atomic_delete`].
    pub(crate) fn atomic_delete(&self, key: &Key, previous: &KvPair) -> Result<()> {
        let mut writer = self.writer();
        match self.read(key.as_str())? {
            None => Err(Error::not_found(self.store(), key.as_str())),
            Some(current) if current.index != previous.last_index => Err(Error::modified(self.store(), key.as_str())),
            Some(_) => self.remove(&mut writer, key.as_str()).map(drop),
        }
    }

    /// Commits a transaction in one writer step: the compares are read under the writer
    /// lock and the writes go to the storage in one [`Storage::apply`].
    pub(crate) fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        let mut writer = self.writer();
        let now = now_ms();
        let mut current = Vec::with_capacity(txn.compares.len());
        for compare in &txn.compares {
            let pair = self
                .read(compare.key.as_str())?
                .map(|r| KvPair::new(compare.key.as_str(), r.value, r.index));
            current.push((compare.key.clone(), pair));
        }
        let mut held = Vec::new();
        for compare in &txn.compares {
            if let Check::HeldBy(fence) = &compare.check {
                let record = writer.lock(fence.key());
                let holds = record.is_some_and(|r| r.token == fence.token() && r.expires_at > now);
                held.push((fence.token(), holds));
            }
        }
        let state = |key: &Key| {
            current
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, pair)| pair.as_ref())
        };
        let holds = |fence: &Fence| held.iter().any(|&(token, holds)| token == fence.token() && holds);
        if let Some(compare) = txn.first_failed(state, holds) {
            return Ok(TxnOutcome::Failed { compare });
        }

        let mut records = Vec::with_capacity(txn.ops.len());
        for op in &txn.ops {
            let record = match op {
                TxnOp::Put { key, value, opts } => Some(Record {
                    index: self.next_index(key.as_str())?,
                    expires_at: opts.ttl.map(ms_after),
                    value: value.clone(),
                }),
                TxnOp::Delete { .. } => None,
            };
            let previous = self
                .storage
                .get(op.key().as_str())
                .map_err(|e| self.fail(op.key().as_str(), e))?;
            records.push((op.key(), previous, record));
        }
        let writes: Vec<(&str, Option<&Record>)> = records
            .iter()
            .filter(|(_, previous, record)| record.is_some() || previous.is_some())
            .map(|(key, _, record)| (key.as_str(), record.as_ref()))
            .collect();
        let first = txn.ops.first().map_or("", |op| op.key().as_str());
        self.storage.apply(&writes).map_err(|e| self.fail(first, e))?;

        for (key, previous, record) in records {
            let key = key.as_str();
            if let Some(at) = previous.as_ref().and_then(|r| r.expires_at) {
                writer.expiries.remove(&(at, key.to_owned()));
            }
            match record {
                Some(record) => {
                    if let Some(at) = record.expires_at {
                        writer.expiries.insert((at, key.to_owned()));
                        self.expiry_scheduled.notify_one();
                    }
                    let pair = KvPair::new(key, record.value, record.index);
                    self.publish(key, Some(&pair), record.index);
                }
                None if previous.is_some() => {
                    let index = self.next_index(key)?;
                    self.publish(key, None, index);
                }
                None => {}
            }
        }
        Ok(TxnOutcome::Committed)
    }

    /// Pushes the expiry of `key` out by `ttl` if it still holds the write with `index`.
    /// Returns `false` once the key was rewritten, deleted or expired.
    pub(crate) fn refresh(&self, key: &str, index: u64, ttl: Duration) -> Result<bool> {
        let mut writer = self.writer();
        match self.read(key)? {
            Some(mut record) if record.index == index => {
                let old = record.expires_at;
                record.expires_at = Some(ms_after(ttl));
                self.storage.insert(key, &record).map_err(|e| self.fail(key, e))?;
                if let Some(at) = old {
                    writer.expiries.remove(&(at, key.to_owned()));
                }
                if let Some(at) = record.expires_at {
                    writer.expiries.insert((at, key.to_owned()));
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Subscribes to changes and reads what is below `dir` (or `key` alone when `tree` is
    /// false) under the writer lock, so the snapshot and the first change cannot overlap.
    pub(crate) fn subscribe(&self, key: &Key, tree: bool) -> Result<(broadcast::Receiver<Change>, Vec<KvPair>)> {
        let _writer = self.writer();
        let receiver = self.changes.subscribe();
        let snapshot = if tree {
            self.list(key)?
        } else {
            self.read(key.as_str())?
                .map(|r| KvPair::new(key.as_str(), r.value, r.index))
                .into_iter()
                .collect()
        };
        Ok((receiver, snapshot))
    }

    /// Deletes every record whose TTL ran out, publishing a delete for each. Returns the next
    /// expiry, if any.
    pub(crate) fn sweep(&self) -> Result<Option<u64>> {
        let mut writer = self.writer();
        let now = now_ms();
        while let Some((at, key)) = writer.expiries.first().cloned() {
            if at > now {
                return Ok(Some(at));
            }
            writer.expiries.pop_first();
            let record = self.storage.get(&key).map_err(|e| self.fail(&key, e))?;
            if record.as_ref().is_some_and(|r| r.expires_at.is_some_and(|e| e <= now)) {
                self.storage.remove(&key).map_err(|e| self.fail(&key, e))?;
                let index = self.next_index(&key)?;
                self.publish(&key, None, index);
            }
        }
        Ok(None)
    }

    /// Starts the task that deletes expired records, unless one runs. It holds only a weak
    /// reference, so it ends with the engine (or with the runtime, and the next TTL write
    /// starts a new one).
    pub(crate) fn ensure_sweeper(self: &Arc<Self>) {
        if self.sweeper_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeper_running.store(false, Ordering::Release);
            return;
        };
        let engine = Arc::downgrade(self);
        let scheduled = Arc::clone(&self.expiry_scheduled);
        let running = SweeperFlag(Arc::clone(&self.sweeper_running));
        runtime.spawn(sweep_loop(engine, scheduled, running));
    }

    /// Tries to take the lock on `key`, writing `value` to the key when taken. The fencing
    /// token comes from the storage's persistent index, so it grows across acquisitions,
    /// releases and restarts alike; being unique, it also names the acquisition.
    pub(crate) fn acquire(&self, key: &Key, ttl: Duration, value: &Bytes) -> Result<Acquire> {
        let mut writer = self.writer();
        if let Some(current) = writer.lock(key.as_str()).filter(|r| r.expires_at > now_ms()) {
            return Ok(Acquire::Busy(current.expires_at));
        }
        let token = self.next_index(key.as_str())?;
        self.write(&mut writer, key.as_str(), value.clone(), None)?;
        let record = LockRecord {
            token,
            expires_at: ms_after(ttl),
        };
        writer.locks.insert(key.as_str().to_owned(), record);
        Ok(Acquire::Acquired(token))
    }

    /// Whether the acquisition `token` still holds `key`, without extending it.
    pub(crate) fn check(&self, key: &Key, token: u64) -> Result<(), LostReason> {
        held_by(&self.writer(), key, token).map(drop)
    }

    /// Extends the hold of acquisition `token` on `key`, or says why it is gone.
    pub(crate) fn renew(&self, key: &Key, token: u64, ttl: Duration) -> Result<(), LostReason> {
        let mut writer = self.writer();
        held_by(&writer, key, token)?;
        let record = LockRecord {
            token,
            expires_at: ms_after(ttl),
        };
        writer.locks.insert(key.as_str().to_owned(), record);
        Ok(())
    }

    /// Releases the hold of acquisition `token` on `key`, deleting the key's value when asked.
    pub(crate) fn release(&self, key: &Key, token: u64, delete_value: bool) -> Result<Result<(), LostReason>> {
        let mut writer = self.writer();
        let Some(record) = writer.lock(key.as_str()).filter(|r| r.token == token) else {
            return Ok(Err(LostReason::RecordDeleted));
        };
        let expired = record.expires_at <= now_ms();
        if delete_value && !expired {
            self.remove(&mut writer, key.as_str())?;
        }
        writer.locks.remove(key.as_str());
        drop(writer);
        self.lock_changed.notify_waiters();
        Ok(if expired { Err(LostReason::Expired) } else { Ok(()) })
    }

    /// Takes the lock on `key` away from its holder: `expire` ends its TTL now, otherwise
    /// the record is deleted. Returns whether a holder lost it.
    pub(crate) fn revoke(&self, key: &Key, expire: bool) -> bool {
        let mut writer = self.writer();
        let revoked = match writer.locks.get_mut(key.as_str()) {
            Some(record) if expire => {
                record.expires_at = now_ms();
                true
            }
            Some(_) => {
                writer.locks.remove(key.as_str());
                true
            }
            None => false,
        };
        drop(writer);
        if revoked {
            self.lock_changed.notify_waiters();
        }
        revoked
    }

    pub(crate) fn flush(&self, key: &str) -> Result<()> {
        self.storage.flush().map_err(|e| self.fail(key, e))
    }
}

/// The record by which acquisition `token` holds `key`, or why it does not (any more).
fn held_by(writer: &Writer, key: &Key, token: u64) -> Result<LockRecord, LostReason> {
    match writer.lock(key.as_str()).filter(|r| r.token == token) {
        None => Err(LostReason::RecordDeleted),
        Some(record) if record.expires_at <= now_ms() => Err(LostReason::Expired),
        Some(record) => Ok(record),
    }
}

/// Clears the "sweeper running" flag when the sweeper ends, however it ends.
struct SweeperFlag(Arc<AtomicBool>);

impl Drop for SweeperFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn sweep_loop<S: Storage>(engine: Weak<Engine<S>>, scheduled: Arc<Notify>, _running: SweeperFlag) {
    /// How long the sweeper sleeps with nothing scheduled; it ends if the engine is gone by then.
    const IDLE: Duration = Duration::from_secs(1);
    loop {
        let notified = scheduled.notified();
        let next = {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            match engine.sweep() {
                Ok(next) => next,
                Err(err) => {
                    tracing::warn!(store = engine.store(), error = %err, "expiring keys failed; retrying");
                    Some(now_ms() + 1000)
                }
            }
        };
        let wait = next.map_or(IDLE, |at| Duration::from_millis(at.saturating_sub(now_ms())).min(IDLE));
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
