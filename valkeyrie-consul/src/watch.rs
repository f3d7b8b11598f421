//! Watches through blocking queries: read, then ask again with the index of the last
//! answer, and report the difference between the two answers.
//!
//! Consul keeps no event log, so changes that land between two answers are coalesced: the
//! watcher sees each key's latest state, in index order, never an older one after a newer.
//! An answer whose index went backwards (the cluster's state was reset or restored) cannot
//! be compared with the last one: a fresh `Snapshot` follows. Core's feed driver retries a
//! failed query with backoff from the last index, so nothing is skipped; after
//! `watch_retry_for` of failures the stream ends with a persistent error. Dropping the
//! stream aborts the query in flight.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use valkeyrie_core::raw::feed::{self, Batch, Feed};
use valkeyrie_core::raw::{Backend, Key};
use valkeyrie_core::{KvPair, ReadOptions, Result, WatchEvent, WatchStream};

use crate::api::{Blocking, Consistency, Entry};
use crate::client::ConsulClient;
use crate::store::{consistency, pair, ConsulStore};
use crate::CONSUL;

/// A watch on `key`, or with `tree` on everything below it.
pub(crate) async fn watch(store: &ConsulStore, key: &Key, tree: bool, opts: &ReadOptions) -> Result<WatchStream> {
    let mut feeder = Feeder {
        client: store.client.clone(),
        key: key.clone(),
        tree,
        consistency: consistency(opts),
        wait: store.config.watch_wait,
        seen: Seen::default(),
        index: 0,
    };
    let (entries, index) = feeder.read(None).await?;
    feeder.seen = Seen::from(&entries);
    feeder.index = index;
    let snapshot = entries.into_iter().map(pair).collect();
    let retry_for = store.config.watch_retry_for;
    Ok(feed::start(
        &store.background().spawner(),
        Some(snapshot),
        feeder,
        retry_for,
    ))
}

/// The modify index of every key the watcher has been told about.
#[derive(Default)]
struct Seen(BTreeMap<String, u64>);

impl From<&Vec<Entry>> for Seen {
    fn from(entries: &Vec<Entry>) -> Self {
        Seen(entries.iter().map(|e| (e.key.clone(), e.modify_index)).collect())
    }
}

impl Seen {
    /// The events that take the watcher from what it has seen to `entries` (read at
    /// `index`), in index order; deletions, whose index Consul does not keep, come last.
    fn advance(&mut self, entries: Vec<Entry>, index: u64) -> Vec<WatchEvent> {
        let mut puts: Vec<KvPair> = entries
            .iter()
            .filter(|e| self.0.get(&e.key) != Some(&e.modify_index))
            .cloned()
            .map(pair)
            .collect();
        puts.sort_by_key(|p| p.last_index);
        let now = Seen::from(&entries);
        let deletes = self
            .0
            .keys()
            .filter(|key| !now.0.contains_key(*key))
            .map(|key| WatchEvent::Delete {
                key: key.clone(),
                last_index: index,
            });
        let events = puts.into_iter().map(WatchEvent::Put).chain(deletes).collect();
        *self = now;
        events
    }
}

/// One watch's last answer: its index and what it held.
struct Feeder {
    client: ConsulClient,
    key: Key,
    tree: bool,
    consistency: Consistency,
    wait: Duration,
    seen: Seen,
    index: u64,
}

impl Feeder {
    /// What is watched, and the index of the answer.
    async fn read(&self, blocking: Option<Blocking>) -> Result<(Vec<Entry>, u64)> {
        let (mut entries, index) = self
            .client
            .kv_read(self.key.as_str(), self.tree, self.consistency, blocking)
            .await?;
        // A recursive read of `dir` also returns siblings such as `dir2/x`.
        entries.retain(|e| e.key == self.key.as_str() || (self.tree && self.key.contains(&e.key)));
        Ok((entries, index))
    }
}

#[async_trait]
impl Feed for Feeder {
    /// One blocking query from the last answer's index: the difference between the two
    /// answers, or a resync when the index went backwards.
    async fn next(&mut self) -> Result<Batch> {
        // Consul's advice: never block on index 0, which answers at once.
        let blocking = Blocking {
            index: self.index.max(1),
            wait: self.wait,
        };
        let (entries, index) = self.read(Some(blocking)).await?;
        let batch = if index < self.index {
            tracing::debug!(
                store = CONSUL,
                key = self.key.as_str(),
                index = self.index,
                new_index = index,
                "index went backwards; resyncing"
            );
            self.seen = Seen::from(&entries);
            Batch::Resync(entries.into_iter().map(pair).collect())
        } else {
            Batch::Events(self.seen.advance(entries, index))
        };
        self.index = index;
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entry(key: &str, index: u64) -> Entry {
        Entry {
            key: key.into(),
            value: Bytes::from(format!("{key}@{index}")),
            modify_index: index,
            session: None,
        }
    }

    #[test]
    fn differences_become_events_in_index_order() {
        let mut seen = Seen::from(&vec![entry("d/a", 3), entry("d/b", 4), entry("d/c", 5)]);
        let events = seen.advance(vec![entry("d/a", 9), entry("d/b", 4), entry("d/e", 7)], 10);
        let described: Vec<String> = events
            .iter()
            .map(|event| match event {
                WatchEvent::Put(pair) => format!("put {}@{}", pair.key, pair.last_index),
                WatchEvent::Delete { key, last_index } => format!("delete {key}@{last_index}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(described, ["put d/e@7", "put d/a@9", "delete d/c@10"]);
        assert!(seen
            .advance(vec![entry("d/a", 9), entry("d/b", 4), entry("d/e", 7)], 11)
            .is_empty());
    }
}
