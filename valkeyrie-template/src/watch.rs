//! Watches: the server's change feed as a [`WatchStream`].
//!
//! A real backend opens its server's watch here, starting from the revision of the initial
//! read so no change in between is missed, sends the snapshot first, resumes after a
//! reconnect from the last seen revision, and sends a fresh snapshot when it cannot. The
//! stand-in server's feed already does all that; only errors need mapping.

use futures_util::StreamExt;
use valkeyrie_core::{Key, WatchStream};

use crate::error::map_error;

/// Maps a client watch stream's errors to ours.
pub(crate) fn map_stream(key: &Key, call: &'static str, stream: WatchStream) -> WatchStream {
    let key = key.to_string();
    Box::pin(stream.map(move |item| item.map_err(|err| map_error(call, &key, err))))
}
