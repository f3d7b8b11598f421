//! Watches: etcd's watch is created first, then the snapshot is read, and changes the
//! snapshot already holds are skipped, so none is missed or repeated. In that order the
//! watch starts at the server's current revision, which etcd serves as changes happen; a
//! watch that starts at a past revision is caught up by etcd's background pass, every
//! 100 ms, so a write right after the snapshot would reach the watcher up to 100 ms late.
//! A dropped connection is resumed from the last revision delivered (a past revision, then);
//! a revision the server has compacted away is resynced with a fresh snapshot.

use async_trait::async_trait;
use etcd_client::{EventType, WatchOptions};
use valkeyrie_core::raw::feed::{self, Batch, Feed};
use valkeyrie_core::raw::{Backend, Key};
use valkeyrie_core::{Error, KvPair, ReadOptions, Result, WatchEvent, WatchStream};

use crate::client::EtcdClient;
use crate::lock::is_bookkeeping;
use crate::store::{get_at, list_at, pair, EtcdStore};
use crate::ETCD;

/// A watch on `key`, or with `tree` on everything below it.
pub(crate) async fn watch(store: &EtcdStore, key: &Key, tree: bool, opts: &ReadOptions) -> Result<WatchStream> {
    let mut feeder = Feeder::new(store, key, tree, opts, 0);
    let live = store
        .client
        .request(key.as_str(), feeder.open(None))
        .await?
        .map_err(|reason| feeder.refusal(reason))?;
    let (snapshot, revision) = read(&store.client, feeder.page_size, key, tree, opts).await?;
    feeder.next = revision.saturating_add(1);
    feeder.in_snapshot = revision;
    feeder.stream = Some(live);
    let retry_for = store.config.watch_retry_for;
    Ok(feed::start(
        &store.background().spawner(),
        Some(snapshot),
        feeder,
        retry_for,
    ))
}

/// A watch on `key` (or below it) that replays from the revision after `index`, with no
/// snapshot first; a compacted revision makes the feeder resync with a snapshot.
pub(crate) fn watch_from(store: &EtcdStore, key: &Key, tree: bool, index: u64, opts: &ReadOptions) -> WatchStream {
    // etcd revisions are i64: an index at or past i64::MAX watches from i64::MAX, a
    // revision no store reaches, so the watch waits (it used to overflow here).
    let next = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1);
    let feeder = Feeder::new(store, key, tree, opts, next);
    let retry_for = store.config.watch_retry_for;
    feed::start(&store.background().spawner(), None, feeder, retry_for)
}

/// What is watched, read at one revision.
async fn read(
    client: &EtcdClient,
    page_size: u32,
    key: &Key,
    tree: bool,
    opts: &ReadOptions,
) -> Result<(Vec<KvPair>, i64)> {
    if tree {
        list_at(client, page_size, key, opts).await
    } else {
        get_at(client, key).await
    }
}

/// A watch the server confirmed, or its reason for refusing it.
type Opened = std::result::Result<etcd_client::WatchStream, String>;

/// One watch's position in etcd's history, and the watch stream that follows it.
struct Feeder {
    client: EtcdClient,
    key: Key,
    tree: bool,
    page_size: u32,
    consistent: bool,
    /// The revision to resume from.
    next: i64,
    /// The first snapshot's revision: changes up to it are in the snapshot.
    in_snapshot: i64,
    /// The open watch; `None` after a failure, until the next attempt opens it again.
    stream: Option<etcd_client::WatchStream>,
}

impl Feeder {
    fn new(store: &EtcdStore, key: &Key, tree: bool, opts: &ReadOptions, next: i64) -> Self {
        Feeder {
            client: store.client.clone(),
            key: key.clone(),
            tree,
            page_size: store.config.list_page_size,
            consistent: opts.consistent,
            next,
            in_snapshot: 0,
            stream: None,
        }
    }

    /// The server refused the watch: retrying the same watch cannot help.
    fn refusal(&self, reason: String) -> Error {
        let reason = format!("the server cancelled the watch: {reason}");
        Error::backend(ETCD, self.key.as_str(), false, reason)
    }

    fn interrupted(&self, reason: impl Into<valkeyrie_core::BoxError>) -> Error {
        Error::backend(ETCD, self.key.as_str(), true, reason)
    }

    /// Creates etcd's watch, from revision `start` or else from the server's current one, and
    /// waits for the server to confirm it; the inner error is the server's reason for
    /// refusing it.
    async fn open(&self, start: Option<i64>) -> std::result::Result<Opened, etcd_client::Error> {
        let watched = if self.tree {
            self.key.dir_prefix()
        } else {
            self.key.to_string()
        };
        let mut options = WatchOptions::new().with_progress_notify();
        if let Some(start) = start {
            options = options.with_start_revision(start);
        }
        if self.tree {
            options = options.with_prefix();
        }
        let mut stream = self.client.raw().watch(watched, Some(options)).await?;
        match stream.message().await? {
            Some(created) if created.canceled() => Ok(Err(created.cancel_reason().to_owned())),
            Some(created) if created.created() => Ok(Ok(stream)),
            _ => Err(etcd_client::Error::WatchError(
                "the server did not confirm the watch".to_owned(),
            )),
        }
    }

    /// The open watch, opened from the resume revision if there is none.
    async fn stream(&mut self) -> Result<&mut etcd_client::WatchStream> {
        if self.stream.is_none() {
            let opened = self.open(Some(self.next)).await.map_err(|e| self.interrupted(e))?;
            self.stream = Some(opened.map_err(|reason| self.refusal(reason))?);
        }
        // Set just above when it was not.
        self.stream
            .as_mut()
            .ok_or_else(|| Error::backend(ETCD, self.key.as_str(), true, "no watch stream"))
    }

    /// The events of one answer, moving the resume revision past them.
    fn events(&mut self, response: &etcd_client::WatchResponse) -> Vec<WatchEvent> {
        let in_snapshot = self.in_snapshot;
        // Bookkeeping, or a change the snapshot already holds.
        let wanted = |kv: &&etcd_client::KeyValue| !is_bookkeeping(kv.key()) && kv.mod_revision() > in_snapshot;
        let mut events = Vec::new();
        for event in response.events() {
            let Some(kv) = event.kv().filter(wanted) else {
                continue;
            };
            events.push(match event.event_type() {
                EventType::Put => WatchEvent::Put(pair(kv)),
                EventType::Delete => WatchEvent::Delete {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    last_index: u64::try_from(kv.mod_revision()).unwrap_or(0),
                },
            });
            self.next = self.next.max(kv.mod_revision().saturating_add(1));
        }
        // Every change up to the header's revision has been delivered (a progress notice or
        // events): resume after it, so an idle watch does not fall behind the compaction
        // point. (The creation answer, whose header is the current revision while older
        // events may still come, was read by `open`.)
        if let Some(header) = response.header() {
            self.next = self.next.max(header.revision().saturating_add(1));
        }
        events
    }
}

#[async_trait]
impl Feed for Feeder {
    async fn next(&mut self) -> Result<Batch> {
        let message = self.stream().await?.message().await;
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                self.stream = None;
                return Err(self.interrupted("the watch stream ended"));
            }
            Err(err) => {
                self.stream = None;
                return Err(self.interrupted(err));
            }
        };
        if response.compact_revision() > 0 {
            // Revisions from `next` on are gone: changes may have been missed. Read the
            // current state and go on from there with a fresh snapshot.
            self.stream = None;
            let opts = ReadOptions::default().consistent(self.consistent);
            let (pairs, revision) = read(&self.client, self.page_size, &self.key, self.tree, &opts).await?;
            tracing::debug!(
                store = ETCD,
                key = self.key.as_str(),
                next = self.next,
                "watch revision compacted; resynced"
            );
            self.next = revision.saturating_add(1);
            return Ok(Batch::Resync(pairs));
        }
        if response.canceled() {
            self.stream = None;
            return Err(self.refusal(response.cancel_reason().to_owned()));
        }
        Ok(Batch::Events(self.events(&response)))
    }
}
