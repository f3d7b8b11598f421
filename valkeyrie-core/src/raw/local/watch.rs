//! Watch streams of the local engine: a broadcast receiver turned into events, with a fresh
//! snapshot when the watcher fell behind. No task is spawned: dropping the stream drops the
//! receiver and that is all.

use std::sync::Arc;

use futures_util::stream;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::engine::{Change, Engine};
use super::Storage;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::raw::background::{Background, TrackedWork};
use crate::watch::{WatchEvent, WatchStream};

struct WatchState<S: Storage> {
    engine: Arc<Engine<S>>,
    key: Key,
    tree: bool,
    receiver: tokio::sync::broadcast::Receiver<Change>,
    pending: Option<WatchEvent>,
    closed: CancellationToken,
    done: bool,
    /// Counts this stream in the handle's background work while it lives.
    _tracked: TrackedWork,
}

impl<S: Storage> WatchState<S> {
    fn concerns(&self, change: &Change) -> bool {
        change.key == self.key.as_str() || (self.tree && self.key.contains(&change.key))
    }

    fn event(change: Change) -> WatchEvent {
        match change.pair {
            Some(pair) => WatchEvent::Put(pair),
            None => WatchEvent::Delete {
                key: change.key,
                last_index: change.index,
            },
        }
    }

    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        if self.done {
            return None;
        }
        if let Some(event) = self.pending.take() {
            return Some(Ok(event));
        }
        loop {
            let received = tokio::select! {
                biased;
                () = self.closed.cancelled() => {
                    self.done = true;
                    let store = self.engine.store();
                    return Some(Err(Error::closed(store, self.key.as_str()).in_call("watch", "")));
                }
                received = self.receiver.recv() => received,
            };
            match received {
                Ok(change) if self.concerns(&change) => return Some(Ok(Self::event(change))),
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    // Changes were dropped for this slow watcher: say so with a new snapshot.
                    return match self.engine.subscribe(&self.key, self.tree) {
                        Ok((receiver, snapshot)) => {
                            self.receiver = receiver;
                            Some(Ok(WatchEvent::Snapshot(snapshot)))
                        }
                        Err(err) => {
                            self.done = true;
                            Some(Err(err))
                        }
                    };
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// A watch on `key` (or, with `tree`, on everything below it).
pub(crate) fn watch<S: Storage>(
    engine: &Arc<Engine<S>>,
    key: &Key,
    tree: bool,
    background: &Background,
) -> Result<WatchStream> {
    let (receiver, snapshot) = engine.subscribe(key, tree)?;
    let state = WatchState {
        engine: Arc::clone(engine),
        key: key.clone(),
        tree,
        receiver,
        pending: Some(WatchEvent::Snapshot(snapshot)),
        closed: background.token(),
        done: false,
        _tracked: background.spawner().track(),
    };
    Ok(Box::pin(stream::unfold(state, |mut state| async move {
        state.next().await.map(|item| (item, state))
    })))
}
