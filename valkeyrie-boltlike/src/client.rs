//! [`SledStorage`]: the local engine's [`Storage`] on a sled database, and the per-process
//! table of open databases.
//!
//! Layout, in the tree named by the config's `bucket`: key → a 16-byte header (the index and
//! the expiry in Unix milliseconds, 0 for none, both little-endian `u64`) followed by the
//! value. The Go BoltDB store writes an 8-byte index before the value; the expiry joins it
//! here so that one read sees a value and its expiry together (the files are not
//! interchangeable anyway: sled is not bbolt). Lock records are not written: sled lets one
//! process open a database at a time, so the engine keeps them in memory (see
//! [`valkeyrie_core::raw::local`]); a lock's fencing token comes from sled's persistent id
//! generator, so tokens still grow across restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;
use valkeyrie_core::raw::local::{Engine, EngineOptions, Record, Storage};
use valkeyrie_core::{BoxError, Error, Result};

use crate::config::BoltlikeConfig;
use crate::error::{corrupt, open_error, storage_error};
use crate::BOLTLIKE;

/// Bytes before the value: index and expiry.
const HEADER: usize = 16;

/// Records in a sled database.
#[derive(Debug)]
pub struct SledStorage {
    db: sled::Db,
    data: sled::Tree,
    cache_capacity: Option<u64>,
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

fn decode_record(key: &str, raw: &sled::IVec) -> Result<Record, BoxError> {
    let (Some(index), Some(expires_at)) = (u64_at(raw, 0), u64_at(raw, 8)) else {
        return Err(corrupt("value", key));
    };
    let value = Bytes::copy_from_slice(&raw[HEADER..]);
    Ok(Record {
        index,
        expires_at: (expires_at != 0).then_some(expires_at),
        value,
    })
}

fn encode_record(record: &Record) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + record.value.len());
    bytes.extend_from_slice(&record.index.to_le_bytes());
    bytes.extend_from_slice(&record.expires_at.unwrap_or(0).to_le_bytes());
    bytes.extend_from_slice(&record.value);
    bytes
}

impl SledStorage {
    fn open(db: sled::Db, bucket: &str, cache_capacity: Option<u64>) -> Result<Self, sled::Error> {
        Ok(SledStorage {
            data: db.open_tree(bucket)?,
            db,
            cache_capacity,
        })
    }
}

impl Storage for SledStorage {
    fn get(&self, key: &str) -> Result<Option<Record>, BoxError> {
        let raw = self.data.get(key).map_err(storage_error)?;
        raw.map(|raw| decode_record(key, &raw)).transpose()
    }

    fn insert(&self, key: &str, record: &Record) -> Result<Option<u64>, BoxError> {
        // sled returns the replaced value anyway; only its expiry is decoded.
        let previous = self.data.insert(key, encode_record(record)).map_err(storage_error)?;
        Ok(previous.and_then(|raw| u64_at(&raw, 8)).filter(|&at| at != 0))
    }

    fn remove(&self, key: &str) -> Result<Option<Record>, BoxError> {
        let raw = self.data.remove(key).map_err(storage_error)?;
        raw.map(|raw| decode_record(key, &raw)).transpose()
    }

    fn apply(&self, writes: &[(&str, Option<&Record>)]) -> Result<(), BoxError> {
        // A sled batch is atomic: readers and crash recovery see all of it or none.
        let mut batch = sled::Batch::default();
        for (key, record) in writes {
            match record {
                Some(record) => batch.insert(*key, encode_record(record)),
                None => batch.remove(*key),
            }
        }
        self.data.apply_batch(batch).map_err(storage_error)
    }

    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Record)>, BoxError> {
        let mut records = Vec::new();
        for entry in self.data.scan_prefix(prefix) {
            let (key, raw) = entry.map_err(storage_error)?;
            let key = String::from_utf8(key.to_vec()).map_err(|_| corrupt("key", prefix))?;
            let record = decode_record(&key, &raw)?;
            records.push((key, record));
        }
        Ok(records)
    }

    fn scan_page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<(String, Record)>, BoxError> {
        let start = match after {
            Some(after) if after >= prefix => after,
            _ => prefix,
        };
        let mut records = Vec::with_capacity(limit.min(1024));
        for entry in self.data.range(start..) {
            let (key, raw) = entry.map_err(storage_error)?;
            if Some(key.as_ref()) == after.map(str::as_bytes) {
                continue;
            }
            if !key.starts_with(prefix.as_bytes()) || records.len() == limit {
                break;
            }
            let key = String::from_utf8(key.to_vec()).map_err(|_| corrupt("key", prefix))?;
            let record = decode_record(&key, &raw)?;
            records.push((key, record));
        }
        Ok(records)
    }

    fn next_index(&self) -> Result<u64, BoxError> {
        // sled's ids are persistent and monotonic, also across crashes (they may skip);
        // +1 keeps 0 free to mean "no index".
        self.db.generate_id().map(|id| id + 1).map_err(storage_error)
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

fn new_engine(db: sled::Db, path: &Path, config: &BoltlikeConfig) -> Result<Arc<Engine<SledStorage>>> {
    let storage = SledStorage::open(db, &config.bucket, config.cache_capacity).map_err(|e| open_error(path, e))?;
    Engine::new(storage, engine_options(config))
}

/// A database this process already has open must be opened again with the same settings:
/// a handle never runs silently with another opener's limits.
fn same_settings(engine: &Engine<SledStorage>, config: &BoltlikeConfig, bucket_open: bool) -> Result<()> {
    let already = "this database is already open in this process with";
    if bucket_open && engine.options().max_value_size != config.max_value_size {
        let reason = format!("{already} max_value_size {:?}", engine.options().max_value_size);
        return Err(Error::config(BOLTLIKE, "max_value_size", reason));
    }
    if engine.storage().cache_capacity != config.cache_capacity {
        let reason = format!("{already} cache_capacity {:?}", engine.storage().cache_capacity);
        return Err(Error::config(BOLTLIKE, "cache_capacity", reason));
    }
    Ok(())
}

/// The engine for `config`'s database and bucket, shared with other handles of this process.
pub(crate) fn engine(config: &BoltlikeConfig) -> Result<Arc<Engine<SledStorage>>> {
    let Some(path) = &config.path else {
        let path = Path::new("(temporary)");
        let db = sled_config(config).open().map_err(|e| open_error(path, e))?;
        return new_engine(db, path, config);
    };
    std::fs::create_dir_all(path).map_err(|e| open_error(path, sled::Error::Io(e)))?;
    let canonical = std::fs::canonicalize(path).map_err(|e| open_error(path, sled::Error::Io(e)))?;
    let mut open_databases = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open_databases.retain(|_, buckets| {
        buckets.retain(|_, engine| engine.strong_count() > 0);
        !buckets.is_empty()
    });
    let buckets = open_databases.entry(canonical).or_default();
    if let Some(engine) = buckets.get(&config.bucket).and_then(Weak::upgrade) {
        same_settings(&engine, config, true)?;
        return Ok(engine);
    }
    let db = match buckets.values().find_map(Weak::upgrade) {
        Some(engine) => {
            same_settings(&engine, config, false)?;
            engine.storage().db.clone()
        }
        None => sled_config(config).open().map_err(|e| open_error(path, e))?,
    };
    let engine = new_engine(db, path, config)?;
    buckets.insert(config.bucket.clone(), Arc::downgrade(&engine));
    Ok(engine)
}
