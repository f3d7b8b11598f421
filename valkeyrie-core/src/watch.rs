//! Watch streams: what `watch` and `watch_tree` return.
//!
//! A watch is a [`Stream`] of `Result<WatchEvent>`. The first item is
//! always a [`WatchEvent::Snapshot`] of the current state (empty when nothing exists yet:
//! watching a missing key waits for it). Then one [`WatchEvent::Put`] or
//! [`WatchEvent::Delete`] per change, in order. When a backend cannot prove it missed
//! nothing (a reconnect past a compaction, a lagging consumer), it sends a fresh
//! `Snapshot` instead of skipping silently. Delivery is at-least-once, and for one key a
//! consumer never sees an older index after a newer one.
//!
//! Errors are items: a watch that cannot continue yields `Err` and then ends. Dropping the
//! stream cancels the watch and frees what it holds on the server.
//!
//! ```
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use futures_util::StreamExt;
//! use valkeyrie_core::WatchEvent;
//!
//! let kv = valkeyrie_core::open("memory://").await?;
//! let mut events = kv.watch("config/mode").await?;
//! assert_eq!(events.next().await.transpose()?, Some(WatchEvent::Snapshot(vec![])));
//! kv.put("config/mode", "blue").await?;
//! match events.next().await.transpose()? {
//!     Some(WatchEvent::Put(pair)) => assert_eq!(pair.value, "blue"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

use std::pin::Pin;

use futures_core::Stream;
use futures_util::StreamExt;

use crate::error::Result;
use crate::key::Key;
use crate::kv::KvPair;

/// One item of a watch stream. More kinds of event may come (a match needs a `_` arm), so
/// it is `#[non_exhaustive]`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// The current state, sorted by key: the first item, and again after a resync.
    /// For `watch` it holds zero or one pair; for `watch_tree`, every key below the directory.
    Snapshot(Vec<KvPair>),
    /// A key was created or updated.
    Put(KvPair),
    /// A key was deleted or expired.
    Delete {
        /// The deleted key.
        key: String,
        /// The index of the deletion when the backend has one, else the key's last index.
        last_index: u64,
    },
}

impl WatchEvent {
    /// The key of a `Put` or `Delete`; `None` for a `Snapshot`.
    pub fn key(&self) -> Option<&str> {
        match self {
            WatchEvent::Snapshot(_) => None,
            WatchEvent::Put(pair) => Some(&pair.key),
            WatchEvent::Delete { key, .. } => Some(key),
        }
    }
}

/// The stream returned by `watch` and `watch_tree`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// Applies the shared `watch_tree` rules to a backend's stream: the directory key itself is
/// never reported (as in `list`) and snapshots are sorted by key.
pub(crate) fn tree_view(dir: Key, stream: WatchStream) -> WatchStream {
    Box::pin(stream.filter_map(move |item| {
        let item = match item {
            Ok(WatchEvent::Snapshot(mut pairs)) => {
                pairs.retain(|pair| dir.contains(&pair.key));
                pairs.sort_by(|a, b| a.key.cmp(&b.key));
                Some(Ok(WatchEvent::Snapshot(pairs)))
            }
            Ok(event) => event.key().is_some_and(|key| dir.contains(key)).then_some(Ok(event)),
            Err(err) => Some(Err(err)),
        };
        std::future::ready(item)
    }))
}
