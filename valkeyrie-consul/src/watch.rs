//! Watches through blocking queries: read, then ask again with the index of the last
//! answer, and report the difference between the two answers.
//!
//! Consul keeps no event log, so changes that land between two answers are coalesced: the
//! watcher sees each key's latest state, in index order, never an older one after a newer.
//! An answer whose index went backwards (the cluster's state was reset or restored) cannot
//! be compared with the last one: a fresh `Snapshot` follows. A failed query is retried with
//! backoff from the last index, so nothing is skipped; after `watch_retry_for` of failures
//! the stream ends with the error. Dropping the stream aborts the query in flight.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use valkeyrie_core::{Backend, Key, KvPair, ReadOptions, Result, WatchEvent, WatchStream};

use crate::api::{Blocking, Consistency, Entry};
use crate::client::ConsulClient;
use crate::store::{consistency, pair, ConsulStore};
use crate::CONSUL;

/// Items buffered between the feeder task and a slow consumer.
const BUFFER: usize = 64;

/// A watch on `key`, or with `tree` on everything below it.
pub(crate) async fn watch(store: &ConsulStore, key: &Key, tree: bool, opts: &ReadOptions) -> Result<WatchStream> {
    let feeder = Feeder {
        client: store.client.clone(),
        key: key.clone(),
        tree,
        consistency: consistency(opts),
        wait: store.config.watch_wait,
        retry_for: store.config.watch_retry_for,
    };
    let (entries, index) = feeder.read(None).await?;
    let (sender, receiver) = mpsc::channel(BUFFER);
    let seen = Seen::from(&entries);
    // The channel is new and empty: the snapshot always fits.
    let _ = sender.try_send(Ok(WatchEvent::Snapshot(entries.into_iter().map(pair).collect())));
    store.background().spawn(feeder.run(seen, index, sender));
    Ok(Box::pin(ReceiverStream::new(receiver)))
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

struct Feeder {
    client: ConsulClient,
    key: Key,
    tree: bool,
    consistency: Consistency,
    wait: Duration,
    retry_for: Duration,
}

type Sender = mpsc::Sender<Result<WatchEvent>>;

impl Feeder {
    /// What is watched, and the index of the answer.
    async fn read(&self, blocking: Option<Blocking>) -> Result<(Vec<Entry>, u64)> {
        let (mut entries, index) = self
            .client
            .kv_read("watch", self.key.as_str(), self.tree, self.consistency, blocking)
            .await?;
        // A recursive read of `dir` also returns siblings such as `dir2/x`.
        entries.retain(|e| e.key == self.key.as_str() || (self.tree && self.key.contains(&e.key)));
        Ok((entries, index))
    }

    /// Asks again and again from `index` until the consumer goes away.
    async fn run(self, mut seen: Seen, mut index: u64, sender: Sender) {
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            // Consul's advice: never block on index 0, which answers at once.
            let blocking = Blocking {
                index: index.max(1),
                wait: self.wait,
            };
            let answer = tokio::select! {
                () = sender.closed() => return,
                answer = self.read(Some(blocking)) => answer,
            };
            match answer {
                Ok((entries, new_index)) => {
                    failing_since = None;
                    backoff = Duration::from_millis(100);
                    let events = if new_index < index {
                        tracing::debug!(
                            store = CONSUL,
                            key = self.key.as_str(),
                            index,
                            new_index,
                            "index went backwards; resyncing"
                        );
                        seen = Seen::from(&entries);
                        vec![WatchEvent::Snapshot(entries.into_iter().map(pair).collect())]
                    } else {
                        seen.advance(entries, new_index)
                    };
                    for event in events {
                        if sender.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    index = new_index;
                }
                Err(err) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if !(err.is_temporary() || is_transport(&err)) {
                        let _ = sender.send(Err(err)).await;
                        return;
                    }
                    if since.elapsed() > self.retry_for {
                        let _ = sender.send(Err(err.persisted(self.retry_for))).await;
                        return;
                    }
                    tracing::debug!(store = CONSUL, key = self.key.as_str(), error = %err, "watch query failed; retrying");
                    tokio::select! {
                        () = sender.closed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Whether `err` is a lost connection or a deadline, which a later query may get past.
fn is_transport(err: &valkeyrie_core::Error) -> bool {
    matches!(
        err.kind(),
        valkeyrie_core::ErrorKind::NotReachable | valkeyrie_core::ErrorKind::Timeout
    )
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
                WatchEvent::Snapshot(_) => "snapshot".into(),
            })
            .collect();
        assert_eq!(described, ["put d/e@7", "put d/a@9", "delete d/c@10"]);
        assert!(seen
            .advance(vec![entry("d/a", 9), entry("d/b", 4), entry("d/e", 7)], 11)
            .is_empty());
    }
}
