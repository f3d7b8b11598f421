//! Watches: an initial read, then etcd's watch from the next revision, so no change between
//! the two is missed. A dropped connection is resumed from the last revision delivered; a
//! revision the server has compacted away ends the stream with an error item.

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
    let page_size = store.config.list_page_size;
    let (snapshot, revision) = read(&store.client, page_size, key, tree, opts).await?;
    let (sender, receiver) = mpsc::channel(BUFFER);
    // The channel is new and empty: the snapshot always fits.
    let _ = sender.try_send(Ok(WatchEvent::Snapshot(snapshot)));
    store
        .background()
        .spawn(Feeder::new(store, key, tree, opts).run(revision + 1, sender));
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// A watch on `key` (or below it) that replays from the revision after `index`, with no
/// snapshot first; a compacted revision makes the feeder resync with a snapshot.
pub(crate) fn watch_from(store: &EtcdStore, key: &Key, tree: bool, index: u64, opts: &ReadOptions) -> WatchStream {
    let (sender, receiver) = mpsc::channel(BUFFER);
    let next = i64::try_from(index).unwrap_or(i64::MAX - 1) + 1;
    store
        .background()
        .spawn(Feeder::new(store, key, tree, opts).run(next, sender));
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

    /// Watches from revision `next` until the consumer goes away, resuming after failures.
    async fn run(self, mut next: i64, sender: Sender) {
        let watched = if self.tree {
            self.key.dir_prefix()
        } else {
            self.key.to_string()
        };
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut options = WatchOptions::new().with_start_revision(next).with_progress_notify();
            if self.tree {
                options = options.with_prefix();
            }
            let mut client = self.client.raw();
            let opened = tokio::select! {
                () = sender.closed() => return,
                opened = client.watch(watched.clone(), Some(options)) => opened,
            };
            let failure = match opened {
                Ok(mut stream) => loop {
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
                                next = revision + 1;
                                break "resynced after a compaction".to_owned();
                            }
                            Err(err) => break err.to_string(),
                        }
                    }
                    if response.canceled() {
                        let reason = format!("the server cancelled the watch: {}", response.cancel_reason());
                        let _ = sender.send(Err(self.error(reason, true))).await;
                        return;
                    }
                    for event in response.events() {
                        let Some(kv) = event.kv().filter(|kv| !is_bookkeeping(kv.key())) else {
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
                        next = next.max(kv.mod_revision() + 1);
                    }
                    // Every change up to the header's revision has been delivered (a progress
                    // notice or events): resume after it, so an idle watch does not fall
                    // behind the compaction point. Not so for the creation answer, whose
                    // header is the current revision while older events are still to come.
                    if let Some(header) = response.header().filter(|_| !response.created()) {
                        next = next.max(header.revision() + 1);
                    }
                },
                Err(err) => err.to_string(),
            };
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > self.retry_for {
                let reason = format!("could not resume the watch for {:?}: {failure}", self.retry_for);
                let _ = sender.send(Err(self.error(reason, true))).await;
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
