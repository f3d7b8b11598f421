//! [`SledStorage`]: the local engine's [`Storage`] on a sled database, and the per-process
//! table of open databases.
//!
//! Layout, in the tree named by the config's `bucket`: key → 8-byte little-endian index
//! followed by the value, as the Go BoltDB store writes it. Expiry times live in the tree
//! `<bucket>.__ttl` (key → 8-byte Unix milliseconds) and lock records in
//! `<bucket>.__locks` (key → owner, fencing token, expiry: 3 × 8 bytes), written together
//! with the value in one sled transaction, so `list` never sees bookkeeping and a crash
//! never splits a value from its expiry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use valkeyrie_core::local::{Engine, EngineOptions, LockRecord, Record, Storage};
use valkeyrie_core::{BoxError, Result};

use crate::config::BoltlikeConfig;
use crate::error::{corrupt, open_error, storage_error};
use crate::BOLTLIKE;

/// Records in a sled database.
#[derive(Debug)]
pub struct SledStorage {
    db: sled::Db,
    data: sled::Tree,
    ttl: sled::Tree,
    locks: sled::Tree,
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

fn decode_record(key: &str, value: &[u8], expires: Option<&[u8]>) -> Result<Record, BoxError> {
    let index = u64_at(value, 0).ok_or_else(|| corrupt("value", key))?;
    let expires_at = match expires {
        Some(raw) => Some(u64_at(raw, 0).ok_or_else(|| corrupt("ttl", key))?),
        None => None,
    };
    Ok(Record {
        index,
        expires_at,
        value: Bytes::copy_from_slice(&value[8..]),
    })
}

fn encode_value(record: &Record) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + record.value.len());
    bytes.extend_from_slice(&record.index.to_le_bytes());
    bytes.extend_from_slice(&record.value);
    bytes
}

fn transaction_error(err: TransactionError<BoxError>) -> BoxError {
    match err {
        TransactionError::Abort(err) => err,
        TransactionError::Storage(err) => storage_error(err),
    }
}

impl SledStorage {
    fn open(db: sled::Db, bucket: &str) -> Result<Self, sled::Error> {
        Ok(SledStorage {
            data: db.open_tree(bucket)?,
            ttl: db.open_tree(format!("{bucket}.__ttl"))?,
            locks: db.open_tree(format!("{bucket}.__locks"))?,
            db,
        })
    }
}

impl Storage for SledStorage {
    fn get(&self, key: &str) -> Result<Option<Record>, BoxError> {
        let Some(value) = self.data.get(key).map_err(storage_error)? else {
            return Ok(None);
        };
        let expires = self.ttl.get(key).map_err(storage_error)?;
        decode_record(key, &value, expires.as_deref()).map(Some)
    }

    fn insert(&self, key: &str, record: &Record) -> Result<(), BoxError> {
        let value = encode_value(record);
        (&self.data, &self.ttl)
            .transaction(|(data, ttl)| {
                data.insert(key, value.as_slice())?;
                match record.expires_at {
                    Some(at) => ttl.insert(key, &at.to_le_bytes())?,
                    None => ttl.remove(key)?,
                };
                Ok::<_, ConflictableTransactionError<BoxError>>(())
            })
            .map_err(transaction_error)
    }

    fn remove(&self, key: &str) -> Result<Option<Record>, BoxError> {
        let (value, expires) = (&self.data, &self.ttl)
            .transaction(|(data, ttl)| {
                Ok::<_, ConflictableTransactionError<BoxError>>((
                    data.remove(key)?,
                    ttl.remove(key)?,
                ))
            })
            .map_err(transaction_error)?;
        value
            .map(|value| decode_record(key, &value, expires.as_deref()))
            .transpose()
    }

    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Record)>, BoxError> {
        let mut records = Vec::new();
        for entry in self.data.scan_prefix(prefix) {
            let (key, value) = entry.map_err(storage_error)?;
            let key = String::from_utf8(key.to_vec()).map_err(|_| corrupt("key", prefix))?;
            let expires = self.ttl.get(&key).map_err(storage_error)?;
            let record = decode_record(&key, &value, expires.as_deref())?;
            records.push((key, record));
        }
        Ok(records)
    }

    fn get_lock(&self, key: &str) -> Result<Option<LockRecord>, BoxError> {
        let Some(raw) = self.locks.get(key).map_err(storage_error)? else {
            return Ok(None);
        };
        match (u64_at(&raw, 0), u64_at(&raw, 8), u64_at(&raw, 16)) {
            (Some(owner), Some(token), Some(expires_at)) => Ok(Some(LockRecord {
                owner,
                token,
                expires_at,
            })),
            _ => Err(corrupt("lock", key)),
        }
    }

    fn put_lock(&self, key: &str, record: &LockRecord) -> Result<(), BoxError> {
        let mut raw = [0u8; 24];
        raw[..8].copy_from_slice(&record.owner.to_le_bytes());
        raw[8..16].copy_from_slice(&record.token.to_le_bytes());
        raw[16..].copy_from_slice(&record.expires_at.to_le_bytes());
        self.locks
            .insert(key, &raw)
            .map(drop)
            .map_err(storage_error)
    }

    fn next_index(&self) -> Result<u64, BoxError> {
        // sled's ids are persistent and monotonic (they may skip after a crash); +1 keeps 0
        // free to mean "no index".
        self.db
            .generate_id()
            .map(|id| id + 1)
            .map_err(storage_error)
    }

    fn flush(&self) -> Result<(), BoxError> {
        self.db.flush().map(drop).map_err(storage_error)
    }
}

/// Open databases of this process by canonical path, one engine per bucket: opening a path
/// again shares its sled database instead of failing on sled's file lock.
type OpenDatabases = BTreeMap<PathBuf, BTreeMap<String, Weak<Engine<SledStorage>>>>;
static OPEN: Mutex<OpenDatabases> = Mutex::new(BTreeMap::new());

fn engine_options(config: &BoltlikeConfig) -> EngineOptions {
    EngineOptions {
        store: BOLTLIKE,
        max_value_size: config.max_value_size,
        persistent: !config.temporary,
    }
}

fn sled_config(config: &BoltlikeConfig) -> sled::Config {
    let mut sled_config = sled::Config::new().temporary(config.temporary);
    if let Some(path) = &config.path {
        sled_config = sled_config.path(path);
    }
    if let Some(capacity) = config.cache_capacity {
        sled_config = sled_config.cache_capacity(capacity);
    }
    sled_config
}

fn new_engine(
    db: sled::Db,
    path: &Path,
    config: &BoltlikeConfig,
) -> Result<Arc<Engine<SledStorage>>> {
    let storage = SledStorage::open(db, &config.bucket).map_err(|e| open_error(path, e))?;
    Engine::new(storage, engine_options(config))
}

/// The engine for `config`'s database and bucket, shared with other handles of this process.
pub(crate) fn engine(config: &BoltlikeConfig) -> Result<Arc<Engine<SledStorage>>> {
    let Some(path) = config.path.as_ref().filter(|_| !config.temporary) else {
        let path = Path::new("(temporary)");
        let db = sled_config(config)
            .open()
            .map_err(|e| open_error(path, e))?;
        return new_engine(db, path, config);
    };
    std::fs::create_dir_all(path).map_err(|e| open_error(path, sled::Error::Io(e)))?;
    let canonical =
        std::fs::canonicalize(path).map_err(|e| open_error(path, sled::Error::Io(e)))?;
    let mut open_databases = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open_databases.retain(|_, buckets| {
        buckets.retain(|_, engine| engine.strong_count() > 0);
        !buckets.is_empty()
    });
    let buckets = open_databases.entry(canonical).or_default();
    if let Some(engine) = buckets.get(&config.bucket).and_then(Weak::upgrade) {
        return Ok(engine);
    }
    let open_db = buckets
        .values()
        .find_map(Weak::upgrade)
        .map(|engine| engine.storage().db.clone());
    let db = match open_db {
        Some(db) => db,
        None => sled_config(config)
            .open()
            .map_err(|e| open_error(path, e))?,
    };
    let engine = new_engine(db, path, config)?;
    buckets.insert(config.bucket.clone(), Arc::downgrade(&engine));
    Ok(engine)
}
