//! Watches: the server's change feed as a [`WatchStream`].
//!
//! A real backend opens its server's watch here, starting from the revision of the initial
//! read so no change in between is missed, sends the snapshot first, resumes after a
//! reconnect from the last seen revision, and sends a fresh snapshot when it cannot. The
//! stand-in server's feed already does all that; only errors need mapping.
//!
//! Every live stream holds a [`TrackedWork`] of the store's background (or runs its feeder
//! task on it), so `background_tasks()` shows it and the conformance suite can check that a
//! dropped watch leaves nothing behind.

use futures_util::StreamExt;
use valkeyrie_core::{Key, TrackedWork, WatchStream};

use crate::error::map_error;

/// Maps a client watch stream's errors to ours; `tracked` lives as long as the stream.
pub(crate) fn map_stream(key: &Key, call: &'static str, stream: WatchStream, tracked: TrackedWork) -> WatchStream {
    let key = key.to_string();
    Box::pin(stream.map(move |item| {
        let _live = &tracked;
        item.map_err(|err| map_error(call, &key, err))
    }))
}
