//! Watches: the server's change feed as a [`Feed`], which core's feed driver turns into a
//! [`WatchStream`].
//!
//! A real backend opens its server's watch here, starting from the revision of the initial
//! read so no change in between is missed, reads the snapshot, and implements
//! [`Feed::next`]: wait for the changes after its position and move the position past them,
//! or [`Batch::Resync`] when a gap cannot be ruled out. The driver does the rest (buffering,
//! retries for `watch_retry_for`, cancellation, counting the feeder in
//! `background_tasks()`). The stand-in server's feed already resumes by itself: the feed
//! relays it and maps its errors.

use async_trait::async_trait;
use futures_util::StreamExt;
use valkeyrie_core::raw::feed::{self, Batch, Feed};
use valkeyrie_core::raw::{Key, Spawner};
use valkeyrie_core::{Error, Result, WatchEvent, WatchStream};

use crate::error::map_error;
use crate::TEMPLATE;

/// Starts a watch on the stand-in server's `stream` on `key`: its first item is the
/// snapshot, the rest is fed through core's feed driver.
pub(crate) async fn start(spawner: &Spawner, key: &Key, mut stream: WatchStream) -> Result<WatchStream> {
    let snapshot = match stream.next().await {
        Some(Ok(WatchEvent::Snapshot(pairs))) => pairs,
        Some(Ok(_)) | None => {
            let reason = "the server's feed did not start with a snapshot";
            return Err(Error::backend(TEMPLATE, key.as_str(), false, reason));
        }
        Some(Err(err)) => return Err(map_error(key.as_str(), err)),
    };
    let relay = Relay {
        key: key.clone(),
        stream,
    };
    // The stand-in server resumes by itself: its errors are final.
    Ok(feed::start(spawner, Some(snapshot), relay, std::time::Duration::ZERO))
}

/// The stand-in server's change feed, relayed.
struct Relay {
    key: Key,
    stream: WatchStream,
}

#[async_trait]
impl Feed for Relay {
    async fn next(&mut self) -> Result<Batch> {
        match self.stream.next().await {
            Some(Ok(WatchEvent::Snapshot(pairs))) => Ok(Batch::Resync(pairs)),
            Some(Ok(event)) => Ok(Batch::Events(vec![event])),
            Some(Err(err)) => Err(map_error(self.key.as_str(), err)),
            None => {
                let reason = "the server ended the watch";
                Err(Error::backend(TEMPLATE, self.key.as_str(), false, reason))
            }
        }
    }

    fn retryable(&self, _err: &Error) -> bool {
        false
    }
}
