//! Paginated, streaming lists: [`Store::list_stream`](crate::Store::list_stream).
//!
//! `list` returns a whole directory at once, which is what most callers want and what a
//! directory of a million keys cannot afford. `list_stream` returns the same pairs, sorted by
//! key, as a stream read page by page, so at most one page of values is in memory, and it
//! can resume after any key ([`ListOptions::start_after`]).
//!
//! Two ways to page, chosen by [`Capabilities::native_list_paging`](crate::Capabilities):
//!
//! * stores that keep keys ordered (etcd, the local engine) read each page as one range
//!   request starting after the last key seen;
//! * the others list the directory's keys first (keys only, no values), sort them, and
//!   read the values page by page with [`get_many`](crate::Store::get_many); a key deleted
//!   in between is skipped. Their backend docs say how keys are listed.
//!
//! Pages are read one after the other as the stream is polled; a page is not one snapshot
//! with the next (a key written meanwhile may or may not appear). An empty or missing
//! directory is an empty stream.
//!
//! ```
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use futures_util::TryStreamExt;
//!
//! let kv = valkeyrie_core::open("memory://").await?;
//! for n in 0..10 {
//!     kv.put(&format!("jobs/{n:03}"), "queued").await?;
//! }
//! let pages = kv.list("jobs").page_size(4).start_after("jobs/006").stream();
//! let rest: Vec<_> = pages.try_collect().await?;
//! let keys: Vec<_> = rest.iter().map(|pair| pair.key.as_str()).collect();
//! assert_eq!(keys, ["jobs/007", "jobs/008", "jobs/009"]);
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;
use futures_util::{stream, TryStreamExt};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::kv::{KvPair, ReadOptions};
use crate::store::Backend;

/// The stream [`Store::list_stream`](crate::Store::list_stream) returns. It owns a share of
/// the store handle, so it can be moved into a task; once the handle is closed, the next
/// page is [`Error::Closed`] and the stream ends.
pub type ListStream = Pin<Box<dyn Stream<Item = Result<KvPair>> + Send>>;

/// Options of [`Store::list_stream`](crate::Store::list_stream), built with chained setters;
/// `#[non_exhaustive]`, as more may come.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListOptions {
    /// Pairs per page read from the store (at least 1); default 500.
    pub page_size: usize,
    /// Start after this key (a full key, as `list` returns them): the stream holds only
    /// keys greater than it. `None` starts at the beginning.
    pub start_after: Option<String>,
    /// How each page is read.
    pub read: ReadOptions,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            page_size: 500,
            start_after: None,
            read: ReadOptions::default(),
        }
    }
}

impl ListOptions {
    /// These options with [`page_size`](ListOptions::page_size) set.
    #[must_use]
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size;
        self
    }

    /// These options with [`start_after`](ListOptions::start_after) set.
    #[must_use]
    pub fn start_after(mut self, key: impl Into<Option<String>>) -> Self {
        self.start_after = key.into();
        self
    }

    /// These options with [`read`](ListOptions::read) set.
    #[must_use]
    pub fn read(mut self, read: ReadOptions) -> Self {
        self.read = read;
        self
    }
}

/// Where a paging stream is: after which key, or finished.
enum Cursor {
    After(Option<String>),
    Done,
}

/// Refuses to read a page on a closed handle: a stream may outlive its handle's `close`.
fn ensure_open<B: Backend>(backend: &B, dir: &Key) -> Result<()> {
    if backend.background().is_closed() {
        return Err(Error::Closed {
            store: backend.name(),
            call: "list_stream",
            key: dir.to_string(),
        });
    }
    Ok(())
}

/// Pages through `dir` with the backend's ordered range reads.
pub(crate) fn native_pages<B: Backend>(backend: Arc<B>, dir: Key, opts: ListOptions) -> ListStream {
    let page_size = opts.page_size.max(1);
    let read = opts.read;
    let pages = stream::try_unfold(Cursor::After(opts.start_after), move |cursor| {
        let (backend, dir, read) = (Arc::clone(&backend), dir.clone(), read.clone());
        async move {
            let Cursor::After(after) = cursor else {
                return Ok(None);
            };
            ensure_open(&*backend, &dir)?;
            let page = Backend::list_page(&*backend, &dir, after.as_deref(), page_size, &read).await?;
            let next = match page.last() {
                Some(last) if page.len() >= page_size => Cursor::After(Some(last.key.clone())),
                _ => Cursor::Done,
            };
            Ok(Some((stream::iter(page.into_iter().map(Ok)), next)))
        }
    });
    Box::pin(pages.try_flatten())
}

/// Lists the keys of `dir` once, then reads their values page by page.
pub(crate) fn key_pages<B: Backend>(backend: Arc<B>, dir: Key, opts: ListOptions) -> ListStream {
    let page_size = opts.page_size.max(1);
    let read = opts.read;
    let start_after = opts.start_after;
    let keys = async move {
        ensure_open(&*backend, &dir)?;
        let mut keys: Vec<Key> = Backend::list_keys(&*backend, &dir, &read)
            .await?
            .into_iter()
            .filter(|key| dir.contains(key) && start_after.as_ref().is_none_or(|after| key > after))
            // A key the store holds but the key rules refuse cannot be read by key; `list`
            // still returns it.
            .filter_map(|key| Key::parse(Backend::name(&*backend), &key).ok())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let pages = stream::unfold(keys.into_iter(), move |mut keys| {
            let (backend, dir, read) = (Arc::clone(&backend), dir.clone(), read.clone());
            async move {
                let chunk: Vec<Key> = keys.by_ref().take(page_size).collect();
                if chunk.is_empty() {
                    return None;
                }
                // A key deleted since it was listed is skipped.
                let page = match ensure_open(&*backend, &dir) {
                    Ok(()) => Backend::get_many(&*backend, &chunk, &read).await,
                    Err(err) => Err(err),
                }
                .map(|pairs| stream::iter(pairs.into_iter().flatten().map(Ok)));
                Some((page, keys))
            }
        });
        Ok::<_, crate::Error>(pages.try_flatten())
    };
    Box::pin(stream::once(keys).try_flatten())
}
