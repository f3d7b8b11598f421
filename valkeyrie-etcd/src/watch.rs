//! Watches: etcd's watch is created first, then the snapshot is read, and changes the
//! snapshot already holds are skipped, so none is missed or repeated. In that order the
//! watch starts at the server's current revision, which etcd serves as changes happen; a
//! watch that starts at a past revision is caught up by etcd's background pass, every
//! 100 ms, so a write right after the snapshot would reach the watcher up to 100 ms late.
//! A dropped connection is resumed from the last revision delivered (a past revision, then);
//! a revision the server has compacted away is resynced with a fresh snapshot.

use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use valkeyrie_core::{Backend, Error, Key, KvPair, ReadOptions, Result, WatchEvent, WatchStream};

use crate::client::EtcdClient;
use crate::lock::is_bookkeeping;
use crate::store::{get_at, list_at, pair, EtcdStore};
use crate::ETCD;

/// Items buffered between the feeder task and a slow consumer.
const BUFFER: usize = 64;

/// A watch on `key`, or with `tree` on everything below it.
pub(crate) async fn watch(store: &EtcdStore, key: &Key, tree: bool, opts: &ReadOptions) -> Result<WatchStream> {
    let feeder = Feeder::new(store, key, tree, opts);
    let live = store
        .client
        .request("watch", key.as_str(), feeder.open(None))
        .await?
        .map_err(|reason| feeder.error(reason, false))?;
    let (snapshot, revision) = read(&store.client, feeder.page_size, key, tree, opts).await?;
    let (sender, receiver) = mpsc::channel(BUFFER);
    // The channel is new and empty: the snapshot always fits.
    let _ = sender.try_send(Ok(WatchEvent::Snapshot(snapshot)));
    let first = FirstStream {
        stream: live,
        in_snapshot: revision,
    };
    store
        .background()
        .spawn(feeder.run(revision.saturating_add(1), Some(first), sender));
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// A watch on `key` (or below it) that replays from the revision after `index`, with no
/// snapshot first; a compacted revision makes the feeder resync with a snapshot.
pub(crate) fn watch_from(store: &EtcdStore, key: &Key, tree: bool, index: u64, opts: &ReadOptions) -> WatchStream {
    let (sender, receiver) = mpsc::channel(BUFFER);
    // etcd revisions are i64: an index at or past i64::MAX watches from i64::MAX, a
    // revision no store reaches, so the watch waits (it used to overflow here).
    let next = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1);
    store
        .background()
        .spawn(Feeder::new(store, key, tree, opts).run(next, None, sender));
    Box::pin(ReceiverStream::new(receiver))
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

struct Feeder {
    client: EtcdClient,
    key: Key,
    tree: bool,
    page_size: u32,
    consistent: bool,
    retry_for: Duration,
}

type Sender = mpsc::Sender<Result<WatchEvent>>;

/// A watch the server confirmed, or its reason for refusing it.
type Opened = std::result::Result<etcd_client::WatchStream, String>;

fn refused(reason: &str) -> String {
    format!("the server cancelled the watch: {reason}")
}

/// The watch [`watch`] created before reading its snapshot.
struct FirstStream {
    stream: etcd_client::WatchStream,
    /// The snapshot's revision: changes up to it are in the snapshot.
    in_snapshot: i64,
}

impl Feeder {
    fn new(store: &EtcdStore, key: &Key, tree: bool, opts: &ReadOptions) -> Self {
        Feeder {
            client: store.client.clone(),
            key: key.clone(),
            tree,
            page_size: store.config.list_page_size,
            consistent: opts.consistent,
            retry_for: store.config.watch_retry_for,
        }
    }

    fn error(&self, reason: String, temporary: bool) -> Error {
        Error::backend(ETCD, "watch", self.key.as_str(), temporary, reason)
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
            Some(created) if created.canceled() => Ok(Err(refused(created.cancel_reason()))),
            Some(created) if created.created() => Ok(Ok(stream)),
            _ => Err(etcd_client::Error::WatchError(
                "the server did not confirm the watch".to_owned(),
            )),
        }
    }

    /// Watches from revision `next` (on `first`, the watch already open, if given) until the
    /// consumer goes away, resuming after failures.
    async fn run(self, mut next: i64, first: Option<FirstStream>, sender: Sender) {
        let in_snapshot = first.as_ref().map_or(0, |first| first.in_snapshot);
        let mut first = first.map(|first| first.stream);
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let opened = match first.take() {
                Some(stream) => Ok(Ok(stream)),
                None => tokio::select! {
                    () = sender.closed() => return,
                    opened = self.open(Some(next)) => opened,
                },
            };
            let failure = match opened {
                Ok(Err(reason)) => {
                    let _ = sender.send(Err(self.error(reason, true))).await;
                    return;
                }
                Ok(Ok(mut stream)) => loop {
                    let message = tokio::select! {
                        () = sender.closed() => return,
                        message = stream.message() => message,
                    };
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) => break "the watch stream ended".to_owned(),
                        Err(err) => break err.to_string(),
                    };
                    failing_since = None;
                    backoff = Duration::from_millis(100);
                    if response.compact_revision() > 0 {
                        // Revisions from `next` on are gone: changes may have been missed.
                        // Read the current state and go on from there with a fresh snapshot.
                        let opts = ReadOptions {
                            consistent: self.consistent,
                        };
                        match read(&self.client, self.page_size, &self.key, self.tree, &opts).await {
                            Ok((pairs, revision)) => {
                                tracing::debug!(
                                    store = ETCD,
                                    key = self.key.as_str(),
                                    next,
                                    "watch revision compacted; resynced"
                                );
                                if sender.send(Ok(WatchEvent::Snapshot(pairs))).await.is_err() {
                                    return;
                                }
                                next = revision.saturating_add(1);
                                break "resynced after a compaction".to_owned();
                            }
                            Err(err) => break err.to_string(),
                        }
                    }
                    if response.canceled() {
                        let reason = refused(response.cancel_reason());
                        let _ = sender.send(Err(self.error(reason, true))).await;
                        return;
                    }
                    for event in response.events() {
                        // Bookkeeping, or a change the snapshot already holds.
                        let wanted =
                            |kv: &&etcd_client::KeyValue| !is_bookkeeping(kv.key()) && kv.mod_revision() > in_snapshot;
                        let Some(kv) = event.kv().filter(wanted) else {
                            continue;
                        };
                        let item = match event.event_type() {
                            EventType::Put => WatchEvent::Put(pair(kv)),
                            EventType::Delete => WatchEvent::Delete {
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                last_index: u64::try_from(kv.mod_revision()).unwrap_or(0),
                            },
                        };
                        if sender.send(Ok(item)).await.is_err() {
                            return;
                        }
                        next = next.max(kv.mod_revision().saturating_add(1));
                    }
                    // Every change up to the header's revision has been delivered (a progress
                    // notice or events): resume after it, so an idle watch does not fall
                    // behind the compaction point. (The creation answer, whose header is the
                    // current revision while older events may still come, was read by `open`.)
                    if let Some(header) = response.header() {
                        next = next.max(header.revision().saturating_add(1));
                    }
                },
                Err(err) => err.to_string(),
            };
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > self.retry_for {
                let reason = format!("could not resume the watch for {:?}: {failure}", self.retry_for);
                let _ = sender.send(Err(Error::gave_up(ETCD, "watch", self.key.as_str(), reason))).await;
                return;
            }
            tracing::debug!(
                store = ETCD,
                key = self.key.as_str(),
                next,
                failure,
                "watch interrupted; resuming"
            );
            tokio::select! {
                () = sender.closed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
