//! The watch-feed driver: a backend says how to wait for the next changes of one watch
//! ([`Feed::next`]); core owns the rest — the buffer between the feeder task and a slow
//! consumer, retries with [`Backoff`] for as long as the backend's `watch_retry_for`
//! allows, resyncs, and cancellation when the consumer drops the stream.
//!
//! The feeder runs as a task of the handle's [`Background`](crate::raw::Background), so
//! `background_tasks()` counts it, closing the handle ends it, and dropping the stream ends
//! it at its next wait (an in-flight request is dropped with it).
//!
//! Failures follow one rule on every backend: an error the feed calls
//! [retryable](Feed::retryable) is retried (the feed resumes where it was: it keeps its
//! position), any other ends the stream with that error; once failures have lasted
//! `retry_for` without a success in between, the stream ends with the last error made
//! [persistent](crate::ErrorStatus::Persistent).

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{Error, Result};
use crate::kv::KvPair;
use crate::raw::background::Spawner;
use crate::raw::backoff::Backoff;
use crate::watch::{WatchEvent, WatchStream};

/// Items buffered between a feeder task and a slow consumer.
const BUFFER: usize = 64;

/// How long a watch keeps retrying a failing feed by default: the default of every
/// backend's `watch_retry_for` setting.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(60);

/// The first and the longest pause between two failed attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// What one wait for changes brought.
#[derive(Debug)]
pub enum Batch {
    /// Changes, in order (possibly none: a success that only proves the feed alive).
    Events(Vec<WatchEvent>),
    /// The current state, replacing the watcher's view: the feed could not rule out a gap
    /// (a compacted revision, a lost stream position, an index that went backwards).
    Resync(Vec<KvPair>),
}

/// A backend's source of changes for one watch. It keeps its own position (a revision, an
/// index, a stream iterator) and resumes from it after a failure.
#[async_trait]
pub trait Feed: Send + 'static {
    /// Waits for the next changes after the feed's position and moves the position past
    /// them. `Err` is a failed attempt; see [`Feed::retryable`]. Cancel-safe: the driver
    /// drops the call when the consumer goes away, and calls again after a failure.
    async fn next(&mut self) -> Result<Batch>;

    /// Whether a failed attempt may succeed later. By default, whether the error is
    /// [temporary](Error::is_temporary).
    fn retryable(&self, err: &Error) -> bool {
        err.is_temporary()
    }
}

/// Starts feeding a watch: `snapshot` (the state the feed's position starts after) comes
/// first, then whatever `feed` brings, until the consumer drops the stream, the handle
/// closes, or a failure ends it (see the [module docs](self)). Must be called from within
/// a runtime.
pub fn start(spawner: &Spawner, snapshot: Option<Vec<KvPair>>, feed: impl Feed, retry_for: Duration) -> WatchStream {
    let (sender, receiver) = mpsc::channel(BUFFER);
    if let Some(snapshot) = snapshot {
        // The channel is new and empty: the snapshot always fits.
        let _ = sender.try_send(Ok(WatchEvent::Snapshot(snapshot)));
    }
    spawner.spawn(run(feed, sender, retry_for));
    Box::pin(ReceiverStream::new(receiver))
}

type Sender = mpsc::Sender<Result<WatchEvent>>;

async fn run(mut feed: impl Feed, sender: Sender, retry_for: Duration) {
    let mut failing_since: Option<Instant> = None;
    let mut backoff = Backoff::new(BACKOFF.0, BACKOFF.1);
    loop {
        let batch = tokio::select! {
            () = sender.closed() => return,
            batch = feed.next() => batch,
        };
        let events = match batch {
            Ok(Batch::Events(events)) => events,
            Ok(Batch::Resync(pairs)) => vec![WatchEvent::Snapshot(pairs)],
            Err(err) if !feed.retryable(&err) => {
                let _ = sender.send(Err(err.in_call("watch", ""))).await;
                return;
            }
            Err(err) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > retry_for {
                    let _ = sender.send(Err(err.in_call("watch", "").persisted(retry_for))).await;
                    return;
                }
                tracing::debug!(store = err.store(), key = err.key(), error = %err, "watch interrupted; resuming");
                tokio::select! {
                    () = sender.closed() => return,
                    () = backoff.wait() => {}
                }
                continue;
            }
        };
        failing_since = None;
        backoff.reset();
        for event in events {
            if sender.send(Ok(event)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::background::Background;
    use futures_util::StreamExt;

    /// Fails `failures` times with `err`, then brings one put per call.
    struct Scripted {
        failures: usize,
        temporary: bool,
        next_index: u64,
    }

    #[async_trait]
    impl Feed for Scripted {
        async fn next(&mut self) -> Result<Batch> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(Error::backend("test", "k", self.temporary, "scripted failure"));
            }
            self.next_index += 1;
            Ok(Batch::Events(vec![WatchEvent::Put(KvPair::new(
                "k",
                "v",
                self.next_index,
            ))]))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_then_the_feed_resumes() {
        let background = Background::new();
        let feed = Scripted {
            failures: 3,
            temporary: true,
            next_index: 0,
        };
        let mut events = start(&background.spawner(), Some(vec![]), feed, Duration::from_secs(60));
        assert!(matches!(events.next().await, Some(Ok(WatchEvent::Snapshot(_)))));
        match events.next().await {
            Some(Ok(WatchEvent::Put(pair))) => assert_eq!(pair.last_index, 1),
            other => panic!("expected the first put after the retries, got {other:?}"),
        }
        assert_eq!(background.len(), 1, "the feeder is a task of the handle");
        drop(events);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(background.len(), 0, "dropping the stream ends the feeder");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_that_last_end_the_stream_with_a_persistent_error() {
        let background = Background::new();
        let feed = Scripted {
            failures: usize::MAX,
            temporary: true,
            next_index: 0,
        };
        let mut events = start(&background.spawner(), None, feed, Duration::from_secs(2));
        match events.next().await {
            Some(Err(err)) => assert_eq!(err.status(), crate::ErrorStatus::Persistent, "{err}"),
            other => panic!("expected a persistent error, got {other:?}"),
        }
        assert!(events.next().await.is_none(), "the stream ends after its error");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_ends_the_stream_at_once() {
        let background = Background::new();
        let feed = Scripted {
            failures: 1,
            temporary: false,
            next_index: 0,
        };
        let mut events = start(&background.spawner(), None, feed, Duration::from_secs(60));
        match events.next().await {
            Some(Err(err)) => assert_eq!(err.status(), crate::ErrorStatus::Permanent, "{err}"),
            other => panic!("expected the permanent error, got {other:?}"),
        }
        assert!(events.next().await.is_none());
    }
}
