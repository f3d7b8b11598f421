//! Watches through the table's DynamoDB Stream (new and old images), which the Go store
//! does not have.
//!
//! A watch opens an iterator at the tip (`LATEST`) of every open shard *before* it reads the
//! current state for its `Snapshot` (always a consistent read, whatever the options say: an
//! eventually consistent one could miss a write for good), so nothing written after it is missed; records
//! written between the two are recognized by their `version` and skipped. Then it polls the
//! shards: an insert or update with a newer version is a `Put`, a removal a `Delete`, and an
//! update that keeps the version (a lock heartbeat, a keep-alive) only moves the expiry.
//! Because DynamoDB removes expired items lazily, the watch reports an expiry itself when
//! `expiration_time` passes, and skips the removal record that comes later.
//!
//! A closed shard hands over to its children (split or rollover), read from their start.
//! An iterator that expired or points at trimmed data cannot be resumed exactly: the watch
//! starts over at the tips and sends a fresh `Snapshot`. Core's feed driver retries other
//! failures with backoff; after `watch_retry_for` the stream ends with a persistent error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{
    AttributeValue as StreamValue, OperationType, Record as StreamRecord, ShardIteratorType,
};
use tokio::time::Instant;
use valkeyrie_core::raw::feed::{self, Batch, Feed};
use valkeyrie_core::raw::{Backend, Key};
use valkeyrie_core::{Error, KvPair, Result, WatchEvent, WatchStream};

use crate::client::DynamoClient;
use crate::item::{now_secs, Record, ID};
use crate::store::DynamoDbStore;
use crate::DYNAMODB;

/// Records in a full `GetRecords` page: more are waiting.
const PAGE: usize = 1000;

/// A watch on `key`, or with `tree` on everything below it.
pub(crate) async fn watch(store: &DynamoDbStore, key: &Key, tree: bool) -> Result<WatchStream> {
    let Some(stream_arn) = store.client.stream_arn.clone() else {
        return Err(Error::CallNotSupported {
            store: DYNAMODB,
            call: if tree { "watch_tree" } else { "watch" },
            key: key.to_string(),
        });
    };
    let feeder = Feeder {
        client: store.client.clone(),
        stream_arn,
        key: key.clone(),
        tree,
        poll: store.config.watch_poll_interval,
    };
    let (shards, seen, snapshot) = feeder.start().await?;
    let follower = Follower {
        feeder,
        position: Position::new(shards),
        seen,
        rest: false,
        failure: None,
    };
    let retry_for = store.config.watch_retry_for;
    Ok(feed::start(
        &store.background().spawner(),
        Some(snapshot),
        follower,
        retry_for,
    ))
}

/// What the watcher has been told about one key that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    version: u64,
    expires_at: Option<u64>,
}

/// Every key the watcher has been told exists, by key.
#[derive(Debug, Default)]
struct Seen(BTreeMap<String, Known>);

impl Seen {
    fn from_records(records: &[Record]) -> Self {
        Seen(
            records
                .iter()
                .map(|r| {
                    let known = Known {
                        version: r.version,
                        expires_at: r.expires_at,
                    };
                    (r.key.clone(), known)
                })
                .collect(),
        )
    }

    /// The event an item's new image means, if any.
    fn written(&mut self, record: Record, now: u64) -> Option<WatchEvent> {
        let live = record.is_live(now);
        match self.0.get_mut(&record.key) {
            // Replayed from before the snapshot.
            Some(known) if record.version < known.version => None,
            Some(known) if record.version == known.version => {
                // Same write, or a heartbeat that only moved the expiry.
                known.expires_at = record.expires_at;
                if live {
                    None
                } else {
                    self.0.remove(&record.key);
                    Some(delete(record.key, record.version))
                }
            }
            Some(_) if !live => {
                self.0.remove(&record.key);
                Some(delete(record.key, record.version))
            }
            _ if !live => None,
            _ => {
                let entry = Known {
                    version: record.version,
                    expires_at: record.expires_at,
                };
                self.0.insert(record.key.clone(), entry);
                Some(WatchEvent::Put(record.into_pair()))
            }
        }
    }

    /// The event an item's removal means, if any: none for a removal older than what the
    /// watcher knows, or of an item it already reported gone (an expiry). A key reported
    /// gone is forgotten: whatever comes next for it is news, in stream order, even with a
    /// smaller version (the Go store counts from 1 again).
    fn removed(&mut self, key: &str, version: Option<u64>) -> Option<WatchEvent> {
        let known = self.0.get(key)?;
        if version.is_some_and(|v| v < known.version) {
            return None;
        }
        let version = version.unwrap_or(known.version);
        self.0.remove(key);
        Some(delete(key.to_owned(), version))
    }

    /// Deletes for what expired by `now`, forgotten from then on.
    fn expire(&mut self, now: u64) -> Vec<WatchEvent> {
        let mut events = Vec::new();
        self.0.retain(|key, known| {
            let expired = known.expires_at.is_some_and(|at| at <= now);
            if expired {
                events.push(delete(key.clone(), known.version));
            }
            !expired
        });
        events
    }

    /// When the next item expires (Unix seconds).
    fn next_expiry(&self) -> Option<u64> {
        self.0.values().filter_map(|k| k.expires_at).min()
    }
}

fn delete(key: String, last_index: u64) -> WatchEvent {
    WatchEvent::Delete { key, last_index }
}

/// The event one stream record means, read at `now`, for a watch of the keys `watches`
/// accepts; `None` for a record of another key, one that is no news, or one that does not
/// decode (a foreign item).
fn record_event(
    watches: impl Fn(&str) -> bool,
    seen: &mut Seen,
    record: &StreamRecord,
    now: u64,
) -> Option<WatchEvent> {
    let change = record.dynamodb()?;
    let key = match change.keys().and_then(|keys| keys.get(ID)) {
        Some(StreamValue::S(key)) => key.clone(),
        _ => return None,
    };
    if !watches(&key) {
        return None;
    }
    match record.event_name()? {
        OperationType::Remove => {
            let version = change
                .old_image()
                .and_then(|old| Record::decode(&image(old)).ok())
                .map(|old| old.version);
            seen.removed(&key, version)
        }
        _ => {
            let new = Record::decode(&image(change.new_image()?)).ok()?;
            // The watch checked the record's key, so an image naming another key (which
            // DynamoDB never sends, and the fuzz target does) is no news of it.
            (new.key == key).then(|| seen.written(new, now))?
        }
    }
}

/// The events a watch of `key` (with `tree`, of everything below it) that starts knowing
/// nothing reports for `records` read at `now`, then the deletes of what expired by then:
/// the stream decoding without a stream, for the fuzz targets.
#[cfg(feature = "fuzzing")]
pub(crate) fn replay(key: &Key, tree: bool, records: &[StreamRecord], now: u64) -> Vec<WatchEvent> {
    let watches = |candidate: &str| candidate == key.as_str() || (tree && key.contains(candidate));
    let mut seen = Seen::default();
    let mut events: Vec<WatchEvent> = records
        .iter()
        .filter_map(|record| record_event(watches, &mut seen, record, now))
        .collect();
    events.extend(seen.expire(now));
    events
}

/// A stream image in the table's attribute type (strings and numbers are all it uses).
fn image(stream: &HashMap<String, StreamValue>) -> HashMap<String, AttributeValue> {
    stream
        .iter()
        .filter_map(|(name, value)| {
            let value = match value {
                StreamValue::S(s) => AttributeValue::S(s.clone()),
                StreamValue::N(n) => AttributeValue::N(n.clone()),
                _ => return None,
            };
            Some((name.clone(), value))
        })
        .collect()
}

/// One shard being read.
struct Shard {
    id: String,
    iterator: Option<String>,
}

/// Where a watch is in the stream: the shards it reads, and closed shards whose children
/// it has not found yet (looked for again until they show up).
struct Position {
    shards: Vec<Shard>,
    orphans: HashSet<String>,
    looked_at: Option<Instant>,
}

impl Position {
    fn new(shards: Vec<Shard>) -> Self {
        Position {
            shards,
            orphans: HashSet::new(),
            looked_at: None,
        }
    }

    /// Starts reading the children of closed shards, looking at most once a second.
    async fn adopt_children(&mut self, feeder: &Feeder) -> Result<()> {
        if self.orphans.is_empty() || self.looked_at.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return Ok(());
        }
        self.looked_at = Some(Instant::now());
        for (id, parent, _) in feeder.shards().await? {
            let Some(parent) = parent.filter(|p| self.orphans.contains(p)) else {
                continue;
            };
            if !self.shards.iter().any(|s| s.id == id) {
                let iterator = feeder.iterator(&id, ShardIteratorType::TrimHorizon).await?;
                self.shards.push(Shard { id, iterator });
            }
            self.orphans.remove(&parent);
        }
        Ok(())
    }
}

struct Feeder {
    client: DynamoClient,
    stream_arn: String,
    key: Key,
    tree: bool,
    poll: Duration,
}

/// Why reading the stream stopped.
enum Interruption {
    /// Cannot resume where it was: start over with a snapshot.
    Resync(String),
    /// May work on a later try.
    Failed(Error),
}

impl Feeder {
    fn watches(&self, key: &str) -> bool {
        key == self.key.as_str() || (self.tree && self.key.contains(key))
    }

    /// Iterators at the tip of every open shard, then the current state.
    async fn start(&self) -> Result<(Vec<Shard>, Seen, Vec<KvPair>)> {
        let shards = self.open_shards().await?;
        let records = self.read_state().await?;
        let seen = Seen::from_records(&records);
        let snapshot = records.into_iter().map(Record::into_pair).collect();
        Ok((shards, seen, snapshot))
    }

    async fn read_state(&self) -> Result<Vec<Record>> {
        let client = &self.client;
        if self.tree {
            return DynamoDbStore::scan_prefix(client, &self.key, true, false).await;
        }
        let read = client
            .sdk
            .get_item()
            .table_name(&client.table)
            .key(ID, AttributeValue::S(self.key.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| client.error(self.key.as_str(), e))?;
        Ok(read
            .item()
            .map(|item| Record::decode_live(item, now_secs()))
            .transpose()?
            .flatten()
            .into_iter()
            .collect())
    }

    /// Every shard of the stream, as `(id, parent, open)`.
    async fn shards(&self) -> Result<Vec<(String, Option<String>, bool)>> {
        let client = &self.client;
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let described = client
                .streams
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| client.error(self.key.as_str(), e))?;
            let Some(description) = described.stream_description() else {
                return Ok(shards);
            };
            for shard in description.shards() {
                if let Some(id) = shard.shard_id() {
                    let open = shard
                        .sequence_number_range()
                        .is_none_or(|range| range.ending_sequence_number().is_none());
                    shards.push((id.to_owned(), shard.parent_shard_id().map(str::to_owned), open));
                }
            }
            match description.last_evaluated_shard_id() {
                Some(last) => start = Some(last.to_owned()),
                None => return Ok(shards),
            }
        }
    }

    async fn iterator(&self, shard: &str, kind: ShardIteratorType) -> Result<Option<String>> {
        let client = &self.client;
        let got = client
            .streams
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard)
            .shard_iterator_type(kind)
            .send()
            .await
            .map_err(|e| client.error(self.key.as_str(), e))?;
        Ok(got.shard_iterator().map(str::to_owned))
    }

    /// Iterators at the tip of every open shard.
    async fn open_shards(&self) -> Result<Vec<Shard>> {
        let mut shards = Vec::new();
        for (id, _, open) in self.shards().await? {
            if open {
                let iterator = self.iterator(&id, ShardIteratorType::Latest).await?;
                shards.push(Shard { id, iterator });
            }
        }
        Ok(shards)
    }

    /// The events of one stream record.
    fn events(&self, seen: &mut Seen, record: &StreamRecord) -> Option<WatchEvent> {
        record_event(|key| self.watches(key), seen, record, now_secs())
    }

    /// Reads every shard once, adding what the records mean to `events`; whether a shard
    /// has more records waiting (a full page).
    async fn poll_shards(
        &self,
        position: &mut Position,
        seen: &mut Seen,
        events: &mut Vec<WatchEvent>,
    ) -> std::result::Result<bool, Interruption> {
        let client = &self.client;
        let mut backlog = false;
        for shard in &mut position.shards {
            let Some(iterator) = shard.iterator.clone() else {
                continue;
            };
            let got = match client.streams.get_records().shard_iterator(iterator).send().await {
                Ok(got) => got,
                Err(err) => {
                    let lost = err
                        .as_service_error()
                        .is_some_and(|e| e.is_expired_iterator_exception() || e.is_trimmed_data_access_exception());
                    let err = client.error(self.key.as_str(), err);
                    // Otherwise the iterator stays valid (15 minutes) for the next try.
                    return Err(if lost {
                        Interruption::Resync(err.to_string())
                    } else {
                        Interruption::Failed(err)
                    });
                }
            };
            backlog |= got.records().len() >= PAGE;
            events.extend(got.records().iter().filter_map(|record| self.events(seen, record)));
            shard.iterator = got.next_shard_iterator().map(str::to_owned);
            if shard.iterator.is_none() {
                position.orphans.insert(shard.id.clone());
            }
        }
        position.shards.retain(|shard| shard.iterator.is_some());
        position.adopt_children(self).await.map_err(Interruption::Failed)?;
        Ok(backlog)
    }
}

/// A watch's place in the stream and what it has reported, fed by core's feed driver.
struct Follower {
    feeder: Feeder,
    position: Position,
    seen: Seen,
    /// Caught up: wait for the poll interval (or the next expiry) before reading again.
    rest: bool,
    /// A failure met after some records were read: reported at the next call, once those
    /// records' events are out.
    failure: Option<Error>,
}

#[async_trait]
impl Feed for Follower {
    async fn next(&mut self) -> Result<Batch> {
        if let Some(err) = self.failure.take() {
            return Err(err);
        }
        if self.rest {
            let now = now_secs();
            let until_expiry = self
                .seen
                .next_expiry()
                .map_or(self.feeder.poll, |at| Duration::from_secs(at.saturating_sub(now)));
            tokio::time::sleep(self.feeder.poll.min(until_expiry)).await;
        }
        let mut events = Vec::new();
        let polled = self
            .feeder
            .poll_shards(&mut self.position, &mut self.seen, &mut events)
            .await;
        match polled {
            // Records are waiting: read on, and judge expiries once caught up (a heartbeat
            // may be among them).
            Ok(true) => self.rest = false,
            Ok(false) => {
                self.rest = true;
                events.extend(self.seen.expire(now_secs()));
            }
            Err(Interruption::Resync(reason)) => {
                tracing::debug!(
                    store = DYNAMODB,
                    key = self.feeder.key.as_str(),
                    reason,
                    "stream position lost; resyncing"
                );
                self.rest = false;
                let (fresh, known, snapshot) = self.feeder.start().await?;
                (self.position, self.seen) = (Position::new(fresh), known);
                self.rest = true;
                return Ok(Batch::Resync(snapshot));
            }
            Err(Interruption::Failed(err)) => {
                self.rest = false;
                if events.is_empty() {
                    return Err(err);
                }
                self.failure = Some(err);
            }
        }
        Ok(Batch::Events(events))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record(key: &str, version: u64, expires_at: Option<u64>) -> Record {
        Record {
            key: key.into(),
            value: Bytes::from(format!("{key}@{version}")),
            version,
            expires_at,
        }
    }

    fn describe(event: Option<WatchEvent>) -> String {
        match event {
            Some(WatchEvent::Put(pair)) => format!("put {}@{}", pair.key, pair.last_index),
            Some(WatchEvent::Delete { key, last_index }) => format!("delete {key}@{last_index}"),
            Some(other) => format!("{other:?}"),
            None => "-".into(),
        }
    }

    #[test]
    fn versions_decide_what_is_news() {
        let mut seen = Seen::from_records(&[record("a", 5, None)]);
        assert_eq!(
            describe(seen.written(record("a", 4, None), 100)),
            "-",
            "older than the snapshot"
        );
        assert_eq!(
            describe(seen.written(record("a", 5, None), 100)),
            "-",
            "the snapshot's own write"
        );
        assert_eq!(describe(seen.written(record("a", 6, None), 100)), "put a@6");
        assert_eq!(
            describe(seen.removed("a", Some(5))),
            "-",
            "a removal older than what is known"
        );
        assert_eq!(describe(seen.removed("a", Some(6))), "delete a@6");
        assert_eq!(describe(seen.removed("a", Some(6))), "-", "reported once");
        assert_eq!(
            describe(seen.written(record("b", 1, Some(50)), 100)),
            "-",
            "born expired"
        );
        // The Go store creates a key again from version 1: after its removal, that is news.
        assert_eq!(describe(seen.written(record("a", 1, None), 100)), "put a@1");
        assert_eq!(describe(seen.written(record("a", 2, None), 100)), "put a@2");
    }

    #[test]
    fn expiry_is_reported_once_and_heartbeats_move_it() {
        let mut seen = Seen::default();
        assert_eq!(describe(seen.written(record("k", 1, Some(110)), 100)), "put k@1");
        assert_eq!(
            describe(seen.written(record("k", 1, Some(120)), 105)),
            "-",
            "a heartbeat"
        );
        assert!(seen.expire(115).is_empty());
        assert_eq!(seen.next_expiry(), Some(120));
        let expired: Vec<String> = seen.expire(120).into_iter().map(|e| describe(Some(e))).collect();
        assert_eq!(expired, ["delete k@1"]);
        assert_eq!(describe(seen.removed("k", Some(1))), "-", "DynamoDB's late removal");
        assert_eq!(seen.next_expiry(), None);
    }
}
