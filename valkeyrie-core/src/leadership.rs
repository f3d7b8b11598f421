//! Leader election on any store with locks and watch: [`Candidate`] and [`Follower`].
//!
//! A candidate campaigns with a lock on the election key whose value is its node name
//! (`delete_on_unlock`, so the name goes when the leader steps down). The lock's lost signal
//! ends a term at once; the lock's fencing token numbers the terms, so a leader can stamp
//! its writes and a deposed leader's late writes can be refused. A follower watches the key
//! and reports each new leader's name.
//!
//! What `docker/leadership` got wrong, and this does not: resigning twice (or after a
//! failure) cannot panic; a store error is a stream item and the campaign or the follow
//! goes on with backoff, never stuck; a follower behaves the same on every store when no
//! leader exists yet (it waits); a candidate stops believing it leads *before* it lets go
//! of the lock, so two candidates never both report themselves elected.
//!
//! ```
//! # async fn demo() -> valkeyrie_core::Result<()> {
//! use std::time::Duration;
//! use futures_util::StreamExt;
//! use valkeyrie_core::leadership::{Candidate, Follower, Leadership};
//!
//! let kv = valkeyrie_core::open("memory://").await?;
//! let candidate = Candidate::new(kv.clone(), "service/leader", "node-a", Duration::from_secs(15));
//! let mut terms = candidate.campaign();
//! assert_eq!(terms.next().await.transpose()?, Some(Leadership::NotElected));
//! assert!(matches!(terms.next().await.transpose()?, Some(Leadership::Elected { .. })));
//!
//! let mut leaders = Follower::new(kv, "service/leader").follow();
//! assert_eq!(leaders.next().await.transpose()?.as_deref(), Some("node-a"));
//! candidate.stop().await;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::Result;
use crate::handle::Kv;
use crate::kv::LockOptions;
use crate::raw::backoff::Backoff;
use crate::watch::WatchEvent;

/// Where a candidate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// This candidate leads; its writes can carry the term's fencing token.
    Elected {
        /// The lock's fencing token: it strictly increases from one term to the next.
        fencing_token: u64,
    },
    /// This candidate does not lead (it campaigns, unless stopped).
    NotElected,
}

/// The terms of a campaign: `NotElected` first, then every change, and errors (the
/// campaign goes on after them).
pub type LeadershipStream = Pin<Box<dyn Stream<Item = Result<Leadership>> + Send>>;

/// The names of successive leaders, never the same twice in a row, and errors (the follow
/// goes on after them).
pub type LeaderStream = Pin<Box<dyn Stream<Item = Result<String>> + Send>>;

/// First and longest pause after a failed store call.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

enum Command {
    Resign(oneshot::Sender<()>),
    Stop,
}

struct Campaign {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

/// One node running for leader on a key.
pub struct Candidate {
    kv: Kv,
    key: String,
    node: String,
    ttl: Duration,
    campaign: Mutex<Option<Campaign>>,
    /// The fencing token of the current term, 0 when not elected.
    token: Arc<AtomicU64>,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("store", &self.kv.name())
            .field("key", &self.key)
            .field("node", &self.node)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Candidate {
    /// A candidate named `node_name` for the election on `key`. A leader that cannot renew
    /// its lock ends its term `ttl` later; others take over then too where
    /// [`Capabilities::lock_ttl`](crate::Capabilities::lock_ttl) holds, and once the server
    /// ends its session elsewhere (ZooKeeper).
    pub fn new(kv: impl Into<Kv>, key: impl Into<String>, node_name: impl Into<String>, ttl: Duration) -> Self {
        Candidate {
            kv: kv.into(),
            key: key.into(),
            node: node_name.into(),
            ttl,
            campaign: Mutex::new(None),
            token: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts campaigning (a campaign already running is stopped) and returns its terms.
    /// Dropping the stream stops the campaign. Must be called within a Tokio runtime.
    pub fn campaign(&self) -> LeadershipStream {
        let (events, received) = mpsc::unbounded_channel();
        let (commands, orders) = mpsc::unbounded_channel();
        let run = Run {
            kv: self.kv.clone(),
            key: self.key.clone(),
            opts: LockOptions::with_value(self.node.clone())
                .ttl(self.ttl)
                .delete_on_unlock(true),
            node: self.node.clone(),
            patience: self.ttl,
            events,
            orders,
            token: Arc::clone(&self.token),
        };
        let task = tokio::spawn(run.campaign());
        let previous = self
            .campaign
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Campaign { commands, task });
        if let Some(previous) = previous {
            let _ = previous.commands.send(Command::Stop);
        }
        Box::pin(UnboundedReceiverStream::new(received))
    }

    /// The fencing token of the current term, while elected.
    pub fn fencing_token(&self) -> Option<u64> {
        Some(self.token.load(Ordering::Acquire)).filter(|token| *token > 0)
    }

    /// Gives up leadership, if held, and campaigns again once another candidate took over
    /// (or after the TTL, if none does). Returns when the lock is released.
    pub async fn resign(&self) {
        let commands = self
            .campaign
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|c| c.commands.clone());
        let Some(commands) = commands else { return };
        let (done, resigned) = oneshot::channel();
        if commands.send(Command::Resign(done)).is_ok() {
            let _ = resigned.await;
        }
    }

    /// Gives up leadership, if held, and ends the campaign: its stream ends and its task
    /// is gone when this returns.
    pub async fn stop(&self) {
        let campaign = self.campaign.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(campaign) = campaign {
            let _ = campaign.commands.send(Command::Stop);
            let _ = campaign.task.await;
        }
    }
}

/// The campaign task's state.
struct Run {
    kv: Kv,
    key: String,
    opts: LockOptions,
    node: String,
    /// How long a resigned candidate waits for a successor before it runs again.
    patience: Duration,
    events: mpsc::UnboundedSender<Result<Leadership>>,
    orders: mpsc::UnboundedReceiver<Command>,
    token: Arc<AtomicU64>,
}

/// What ended a wait.
enum Next {
    Go,
    Stop,
}

impl Run {
    fn tell(&self, item: Result<Leadership>) -> Next {
        match self.events.send(item) {
            Ok(()) => Next::Go,
            // Nobody listens: the campaign is over.
            Err(_) => Next::Stop,
        }
    }

    /// Sleeps `pause` unless stopped meanwhile (a resign while not leading is a no-op).
    async fn pause(&mut self, pause: Duration) -> Next {
        let sleep = tokio::time::sleep(pause);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                order = self.orders.recv() => match order {
                    Some(Command::Resign(done)) => { let _ = done.send(()); }
                    Some(Command::Stop) | None => return Next::Stop,
                },
                () = self.events.closed() => return Next::Stop,
                () = &mut sleep => return Next::Go,
            }
        }
    }

    /// Reports a failed store call, then waits `backoff`'s next delay.
    async fn setback(&mut self, err: crate::error::Error, backoff: &mut Backoff) -> Next {
        if let Next::Stop = self.tell(Err(err)) {
            return Next::Stop;
        }
        self.pause(backoff.next_delay()).await
    }

    async fn campaign(mut self) {
        if let Next::Stop = self.tell(Ok(Leadership::NotElected)) {
            return;
        }
        let mut backoff = Backoff::new(BACKOFF.0, BACKOFF.1);
        loop {
            let locker = match self.kv.lock(&self.key).options(self.opts.clone()).locker().await {
                Ok(locker) => locker,
                Err(err) => match self.setback(err, &mut backoff).await {
                    Next::Go => continue,
                    Next::Stop => return,
                },
            };
            let acquired = tokio::select! {
                biased;
                order = self.orders.recv() => match order {
                    Some(Command::Resign(done)) => { let _ = done.send(()); continue; }
                    Some(Command::Stop) | None => return,
                },
                () = self.events.closed() => return,
                acquired = locker.lock() => acquired,
            };
            let guard = match acquired {
                Ok(guard) => guard,
                Err(err) => match self.setback(err, &mut backoff).await {
                    Next::Go => continue,
                    Next::Stop => return,
                },
            };
            backoff.reset();
            let fencing_token = guard.fencing_token();
            self.token.store(fencing_token, Ordering::Release);
            let mut next = self.tell(Ok(Leadership::Elected { fencing_token }));
            let mut resigned = None;
            let lost = guard.lost_signal();
            if let Next::Go = next {
                tokio::select! {
                    biased;
                    _ = lost.lost() => {}
                    order = self.orders.recv() => match order {
                        Some(Command::Resign(done)) => resigned = Some(done),
                        Some(Command::Stop) | None => next = Next::Stop,
                    },
                    () = self.events.closed() => next = Next::Stop,
                }
            }
            // Stop believing before letting go: no two candidates report themselves elected.
            self.token.store(0, Ordering::Release);
            if let Next::Stop = self.tell(Ok(Leadership::NotElected)) {
                next = Next::Stop;
            }
            if let Err(err) = guard.unlock().await {
                // A lost lock fails to release; that is the loss already reported.
                tracing::debug!(key = self.key, error = %err, "releasing the election lock");
            }
            if let Some(done) = resigned {
                let _ = done.send(());
                if let Next::Go = next {
                    next = self.wait_for_successor().await;
                }
            }
            if let Next::Stop = next {
                return;
            }
        }
    }

    /// After resigning: waits until another candidate leads, at most `patience`, so the
    /// resigning candidate does not simply win again.
    async fn wait_for_successor(&mut self) -> Next {
        let deadline = tokio::time::sleep(self.patience);
        tokio::pin!(deadline);
        let mut watch = self.kv.watch(&self.key).await.ok();
        loop {
            let event = async {
                match watch.as_mut() {
                    Some(stream) => stream.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                order = self.orders.recv() => match order {
                    Some(Command::Resign(done)) => { let _ = done.send(()); }
                    Some(Command::Stop) | None => return Next::Stop,
                },
                () = self.events.closed() => return Next::Stop,
                () = &mut deadline => return Next::Go,
                event = event => match event {
                    Some(Ok(event)) if leader_in(&event).is_some_and(|name| name != self.node) => return Next::Go,
                    Some(Ok(_)) => {}
                    // The watch failed: wait out the patience instead.
                    Some(Err(_)) | None => watch = None,
                },
            }
        }
    }
}

/// The leader's name an event shows, if any.
fn leader_in(event: &WatchEvent) -> Option<String> {
    let pair = match event {
        WatchEvent::Snapshot(pairs) => pairs.first(),
        WatchEvent::Put(pair) => Some(pair),
        WatchEvent::Delete { .. } => None,
    }?;
    Some(String::from_utf8_lossy(&pair.value).into_owned())
}

/// Reports who leads the election on a key.
pub struct Follower {
    kv: Kv,
    key: String,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("store", &self.kv.name())
            .field("key", &self.key)
            .finish()
    }
}

impl Follower {
    /// A follower of the election on `key`.
    pub fn new(kv: impl Into<Kv>, key: impl Into<String>) -> Self {
        Follower {
            kv: kv.into(),
            key: key.into(),
        }
    }

    /// The current leader's name, or the first one's once elected, then every new leader's.
    /// A failed watch is reported and watched again; dropping the stream ends the follow.
    /// Must be called within a Tokio runtime.
    pub fn follow(&self) -> LeaderStream {
        let (names, received) = mpsc::unbounded_channel();
        tokio::spawn(follow(self.kv.clone(), self.key.clone(), names));
        Box::pin(UnboundedReceiverStream::new(received))
    }
}

async fn follow(kv: Kv, key: String, names: mpsc::UnboundedSender<Result<String>>) {
    let mut last: Option<String> = None;
    let mut backoff = Backoff::new(BACKOFF.0, BACKOFF.1);
    loop {
        let watched = tokio::select! {
            () = names.closed() => return,
            watched = kv.watch(&key) => watched,
        };
        match watched {
            Ok(mut events) => loop {
                let event = tokio::select! {
                    () = names.closed() => return,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(event)) => {
                        backoff.reset();
                        let Some(name) = leader_in(&event) else { continue };
                        if last.as_ref() != Some(&name) {
                            last = Some(name.clone());
                            if names.send(Ok(name)).is_err() {
                                return;
                            }
                        }
                    }
                    Some(Err(err)) => {
                        if names.send(Err(err)).is_err() {
                            return;
                        }
                        break;
                    }
                    None => break,
                }
            },
            Err(err) => {
                if names.send(Err(err)).is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            () = names.closed() => return,
            () = backoff.wait() => {}
        }
    }
}
