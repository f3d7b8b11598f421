//! The lock-holding driver: one task per store handle keeps every acquisition of that handle
//! held, so a backend writes only what is its own — one renewal request, and optionally a
//! way to notice a loss between renewals — and never the loop around it.
//!
//! A backend describes an acquisition as a [`Hold`]: its [`Renew`] step, the time the
//! acquisition was confirmed, the TTL it is held for, and optionally a future that resolves
//! when the backend sees the lock go (a deleted record, an ended session). It hands the
//! `Hold` to [`Spawner::hold`](crate::raw::Spawner::hold) and gets back a [`Held`], which becomes
//! part of the [`LockGuard`](crate::LockGuard). From then on the driver:
//!
//! - renews every `period` (a third of the TTL unless the backend says otherwise), each
//!   renewal bounded by one period so a hung request cannot outlast the lease;
//! - keeps the held-until deadline on tokio's monotonic clock: a confirmed renewal moves it
//!   to `sent + held`, measured from when the request was *sent*; a renewal answered after
//!   the deadline does not count (the lock is lost and [`Renew::give_up`] runs), so a
//!   wall-clock step or a paused process never makes a holder believe it holds a lock that
//!   someone else may have taken;
//! - reports the first loss on the guard's lost signal, unless the guard's release began;
//! - when the handle closes, reports [`LostReason::StoreClosed`] and runs
//!   [`Renew::release_on_close`] for every acquisition still held (bounded by one period),
//!   so other contenders do not wait out the TTL of a holder that is gone.
//!
//! The same driver renews `keep_alive` writes ([`Spawner::keep_alive`](crate::raw::Spawner::keep_alive)):
//! a keep-alive is an acquisition nobody releases, renewed until its key is rewritten or
//! deleted (the renewal answers [`Renewal::Lost`]) or the handle closes, and without a
//! deadline of its own.
//!
//! One task serves every acquisition and keep-alive of the handle, however many: each costs
//! an entry in that task, not a task of its own. The task starts with the first `hold` and
//! ends when the handle closes; [`Background::len`](crate::raw::Background::len) counts the
//! locks held and the keys kept alive, not the task.
//!
//! Handing an acquisition over is cheap, so a lock held briefly costs little: it waits in a
//! queue, and the task adopts it only when it wakes anyway (for a renewal due, or because
//! the new acquisition's first renewal is due before that). A release before then takes it
//! back out of the queue; the task never hears of it. A future that watches for a loss
//! starts when the task adopts the acquisition, at the latest when its first renewal is
//! due; until then, the first renewal finds a loss.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::{join_all, BoxFuture, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{LostReason, Result};
use crate::kv::MAX_TTL;
use crate::lock::{lost_signal, LostNotifier, LostSignal};
use crate::raw::background::{Spawner, TrackedWork};

/// What one renewal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The server confirmed the hold for this long, counted from when the request was sent.
    Held(Duration),
    /// The lock is gone on the server, for this reason; no later renewal can bring it back.
    Lost(LostReason),
}

/// A backend's steps for keeping one acquisition held; the driver decides when each runs.
#[async_trait]
pub trait Renew: Send + Sync + 'static {
    /// One renewal request. `Err` means the outcome is unknown (a network error, say): the
    /// driver tries again at the next period, and the lock is lost only if its deadline
    /// passes first — or at once when the error is not [temporary](crate::Error::is_temporary)
    /// (a revoked permission cannot heal by waiting). Cancel-safe: the driver drops the call
    /// after one period.
    async fn renew(&self) -> Result<Renewal>;

    /// Runs once after the lock was lost through its deadline (no renewal confirmed in time)
    /// or a permanent renewal error: undo whatever a late server could still keep for a
    /// holder that has let go (a session it may revive, a record it may keep). Nothing by
    /// default. Dropped, unfinished, if the handle closes meanwhile.
    async fn give_up(&self) {}

    /// Runs when the handle closes while the lock is held: release it, so the next contender
    /// does not wait out the TTL. Bounded by one period. Nothing by default (the lock then
    /// expires by itself).
    async fn release_on_close(&self) {}
}

/// One acquisition to keep held; built by the backend, handed to
/// [`Spawner::hold`](crate::raw::Spawner::hold).
pub struct Hold {
    renew: Arc<dyn Renew>,
    since: Instant,
    ttl: Duration,
    period: Duration,
    loss: Option<BoxFuture<'static, LostReason>>,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("ttl", &self.ttl)
            .field("period", &self.period)
            .field("watches_for_loss", &self.loss.is_some())
            .finish_non_exhaustive()
    }
}

impl Hold {
    /// An acquisition the server confirmed for `ttl` from `since` (taken *before* the
    /// acquiring request was sent), renewed by `renew` every third of the TTL.
    pub fn new(renew: impl Renew, since: Instant, ttl: Duration) -> Self {
        // `Store::new_lock` refuses TTLs over `MAX_TTL`; the bound keeps a direct
        // `Backend::new_lock` call with a huge TTL from overflowing an `Instant`.
        let ttl = ttl.min(MAX_TTL);
        Hold {
            renew: Arc::new(renew),
            since,
            ttl,
            period: ttl / 3,
            loss: None,
        }
    }

    /// Renews every `period` instead of every third of the TTL (never more often than every
    /// millisecond).
    pub fn every(mut self, period: Duration) -> Self {
        self.period = period.min(MAX_TTL);
        self
    }

    /// Also watches `loss`, which resolves when the backend sees the lock go between
    /// renewals (its record deleted, its session ended). It is dropped when the lock is
    /// released, lost otherwise, or the handle closes.
    pub fn watching(mut self, loss: impl Future<Output = LostReason> + Send + 'static) -> Self {
        self.loss = Some(loss.boxed());
        self
    }
}

/// A lock the handle's driver now holds: the guard's lost signal and the means to stop
/// holding it. Part of a [`LockGuard`](crate::LockGuard); dropping it without a guard (an
/// attempt abandoned after all) stops the renewals.
#[derive(Debug)]
pub struct Held {
    pub(crate) signal: LostSignal,
    pub(crate) releasing: Releasing,
    pub(crate) spawner: Spawner,
}

impl Held {
    /// A lock held by another store handle that this one passes on under its own name (a
    /// wrapper over another store, such as the template's stand-in server): the guard's lost
    /// signal is that lock's, and nothing is renewed here. `spawner` runs the guard's
    /// release when it is dropped.
    pub fn mirroring(signal: LostSignal, spawner: Spawner) -> Self {
        Held {
            signal,
            releasing: Releasing {
                releasing: Arc::new(AtomicBool::new(false)),
                stop: CancellationToken::new(),
                queued: None,
                _work: None,
            },
            spawner,
        }
    }

    /// The lost signal of this acquisition, for a backend that must notice a loss while it
    /// is still finishing the acquisition (waiting for its turn, say).
    pub fn lost_signal(&self) -> &LostSignal {
        &self.signal
    }
}

/// The release side of one acquisition: beginning the release (or dropping this) stops the
/// renewals and silences their loss reports, so a release is never mistaken for a loss.
#[derive(Debug)]
pub(crate) struct Releasing {
    releasing: Arc<AtomicBool>,
    stop: CancellationToken,
    /// The driver and the acquisition's id, to take it back out of the queue.
    queued: Option<(Arc<Shared>, u64)>,
    /// Counts the acquisition in `Background::len` until the release begins or the lock is
    /// lost, whichever comes first.
    _work: Option<Counted>,
}

/// Counts one lock or keep-alive in [`Background::len`](crate::raw::Background::len) until the
/// first of its holders (the guard's release side, the driver's entry) lets go of it.
#[derive(Debug, Clone)]
struct Counted(Arc<Mutex<Option<TrackedWork>>>);

impl Counted {
    fn new(work: TrackedWork) -> Self {
        Counted(Arc::new(Mutex::new(Some(work))))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // The lock guards one `take`: a panic cannot leave it half-done.
        let work = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(work);
    }
}

impl Releasing {
    /// Begins the release: from now on nothing reports a loss, and the renewals stop.
    pub(crate) fn begin(self) {
        self.releasing.store(true, Ordering::Release);
    }
}

impl Drop for Releasing {
    fn drop(&mut self) {
        if let Some((shared, id)) = self.queued.take() {
            // Still queued: the driver never hears of it (dropping it reports `Released`).
            let queued = shared.lock_pending().queue.remove(&id);
            drop(queued);
        }
        self.stop.cancel();
    }
}

/// One acquisition (or keep-alive) as the driver keeps it.
struct Entry {
    renew: Arc<dyn Renew>,
    lost: LostNotifier,
    releasing: Arc<AtomicBool>,
    stop: CancellationToken,
    period: Duration,
    /// Counts it in `Background::len` while the driver holds it.
    _work: Counted,
}

impl Entry {
    /// Reports the loss, unless a release has begun.
    fn lose(&self, reason: LostReason) {
        if !self.releasing.load(Ordering::Acquire) {
            self.lost.notify(reason);
        }
    }

    /// Whether the release began (or the acquisition was abandoned).
    fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }
}

/// An acquisition waiting in the queue for the driver to adopt it.
struct Registration {
    entry: Entry,
    /// When its first renewal is due.
    due: Instant,
    loss: Option<BoxFuture<'static, LostReason>>,
}

impl Registration {
    /// The entry `hold` becomes, due for its first renewal one period after `hold.since`.
    fn new(hold: Hold, lost: LostNotifier, releasing: Arc<AtomicBool>, stop: CancellationToken, work: Counted) -> Self {
        let entry = Entry {
            renew: hold.renew,
            lost,
            releasing,
            stop,
            period: hold.period.max(Duration::from_millis(1)),
            _work: work,
        };
        Registration {
            due: after(hold.since, entry.period),
            entry,
            loss: hold.loss,
        }
    }
}

/// What the driver and the handle's spawners share.
#[derive(Debug)]
pub(crate) struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the driver for a registration due before it would wake anyway.
    wake: Notify,
    /// When the driver wakes next at the latest, in nanoseconds after `base`.
    next_wake: AtomicU64,
    base: Instant,
}

/// The queue of acquisitions not adopted yet; closed when the driver ends.
#[derive(Default)]
struct Pending {
    queue: HashMap<u64, Registration>,
    next_id: u64,
    closed: bool,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("queued", &self.queue.len())
            .field("closed", &self.closed)
            .finish()
    }
}

impl Shared {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The lock guards plain inserts and removals: a panic cannot leave it half-done.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A handle's driver, as its spawners reach it.
#[derive(Debug)]
pub(crate) struct Driver {
    shared: Arc<Shared>,
}

impl Driver {
    /// Starts the driver task of a handle through `spawner`.
    pub(crate) fn start(spawner: &Spawner) -> Driver {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            next_wake: AtomicU64::new(u64::MAX),
            base: Instant::now(),
        });
        spawner.spawn_service(run(Arc::clone(&shared), spawner.token()));
        Driver { shared }
    }

    /// Queues `registration`; its id, or the registration back when the driver ended.
    fn register(&self, registration: Registration) -> std::result::Result<u64, Registration> {
        let due = self.shared.nanos(registration.due);
        let id = {
            let mut pending = self.shared.lock_pending();
            if pending.closed {
                return Err(registration);
            }
            pending.next_id += 1;
            let id = pending.next_id;
            pending.queue.insert(id, registration);
            id
        };
        // Wake the driver only if it would not wake before this one's first renewal.
        if self.shared.next_wake.fetch_min(due, Ordering::AcqRel) > due {
            self.shared.wake.notify_one();
        }
        Ok(id)
    }
}

/// Hands `hold` to the handle's driver; see [`Spawner::hold`](crate::raw::Spawner::hold).
pub(crate) fn start_holding(spawner: &Spawner, driver: &Driver, hold: Hold) -> Held {
    let (lost, signal) = lost_signal(hold.since, hold.ttl);
    let releasing = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let counted = Counted::new(spawner.track());
    let registration = Registration::new(hold, lost, Arc::clone(&releasing), stop.clone(), counted.clone());
    let queued = match driver.register(registration) {
        Ok(id) => Some((Arc::clone(&driver.shared), id)),
        Err(refused) => {
            // The driver ended: the handle closed.
            refused.entry.lose(LostReason::StoreClosed);
            None
        }
    };
    Held {
        signal,
        releasing: Releasing {
            releasing,
            stop,
            queued,
            _work: Some(counted),
        },
        spawner: spawner.clone(),
    }
}

/// Hands a keep-alive to the handle's driver; see
/// [`Spawner::keep_alive`](crate::raw::Spawner::keep_alive).
pub(crate) fn start_keeping(spawner: &Spawner, driver: &Driver, hold: Hold) {
    // A keep-alive has no deadline of its own: it is renewed until its key is gone (the
    // renewal says `Lost`), a renewal fails for good, or the handle closes.
    let (lost, _signal) = lost_signal(hold.since, MAX_TTL);
    let releasing = Arc::new(AtomicBool::new(false));
    let registration = Registration::new(
        hold,
        lost,
        releasing,
        CancellationToken::new(),
        Counted::new(spawner.track()),
    );
    // Refused only when the driver ended with the handle: nothing to keep alive then.
    let _ = driver.register(registration);
}

/// What happened to one acquisition, as its futures report it.
enum Event {
    /// A renewal sent at `sent` answered (or timed out: `None`).
    Renewed {
        sent: Instant,
        outcome: Option<Result<Renewal>>,
    },
    /// The backend saw the lock go.
    Lost(LostReason),
    /// The release began.
    Stopped,
    /// A `give_up` finished; nothing more to do.
    GaveUp,
}

type Work = FuturesUnordered<BoxFuture<'static, (u64, Event)>>;

/// The acquisitions the driver holds, and when each one's next renewal is due.
#[derive(Default)]
struct Holding {
    entries: HashMap<u64, Entry>,
    due: BTreeSet<(Instant, u64)>,
}

/// `future`, ended early (as [`Event::Stopped`]) when `stop` is cancelled.
fn stoppable(
    id: u64,
    stop: &CancellationToken,
    future: impl Future<Output = Event> + Send + 'static,
) -> BoxFuture<'static, (u64, Event)> {
    let stop = stop.clone();
    async move {
        tokio::select! {
            biased;
            () = stop.cancelled() => (id, Event::Stopped),
            event = future => (id, event),
        }
    }
    .boxed()
}

/// The time `period` after `from`, or far in the future if that cannot be represented.
fn after(from: Instant, period: Duration) -> Instant {
    from.checked_add(period)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365 * 30))
}

/// How soon after adopting acquisitions the driver looks at its queue again at the latest:
/// while acquisitions come and go, queuing one wakes the driver only if its first renewal
/// is due before that.
const QUEUE_CHECK: Duration = Duration::from_secs(1);

/// The driver task: adopts queued acquisitions, renews each when due, follows their loss
/// futures, until the handle closes.
async fn run(shared: Arc<Shared>, closing: CancellationToken) {
    let mut held = Holding::default();
    let mut work = Work::new();
    let mut check_queue: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if adopt(&shared, &mut held, &mut work) > 0 {
            check_queue = Some(now + QUEUE_CHECK);
        } else if check_queue.is_some_and(|at| at <= now) {
            check_queue = None;
        }
        let wake_at = held.due.first().map(|(at, _)| *at).into_iter().chain(check_queue).min();
        if let Some(at) = wake_at {
            shared.next_wake.fetch_min(shared.nanos(at), Ordering::AcqRel);
        }
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = closing.cancelled() => break,
            () = shared.wake.notified() => {}
            () = sleep => renew_due(&mut held, &mut work),
            Some((id, event)) = work.next(), if !work.is_empty() => handle(id, event, &mut held, &mut work),
        }
    }
    close(&shared, held).await;
}

/// Takes the queued acquisitions in, dropping those already released; how many it took.
fn adopt(shared: &Shared, held: &mut Holding, work: &mut Work) -> usize {
    // Reset before taking the queue: a registration queued after this wakes the driver.
    shared.next_wake.store(u64::MAX, Ordering::Release);
    let queued = std::mem::take(&mut shared.lock_pending().queue);
    let taken = queued.len();
    for (id, Registration { entry, due, loss }) in queued {
        if entry.stopped() {
            continue;
        }
        if let Some(loss) = loss {
            work.push(stoppable(id, &entry.stop, loss.map(Event::Lost)));
        }
        held.due.insert((due, id));
        held.entries.insert(id, entry);
    }
    taken
}

/// Sends the renewals that are due.
fn renew_due(held: &mut Holding, work: &mut Work) {
    let now = Instant::now();
    while let Some(&(at, id)) = held.due.first() {
        if at > now {
            break;
        }
        held.due.remove(&(at, id));
        let Some(entry) = held.entries.get(&id) else {
            continue;
        };
        if entry.stopped() {
            held.entries.remove(&id);
            continue;
        }
        // A starved process may wake past the deadline: the lock is lost then, and no
        // renewal is sent for a holder that has already let go.
        if entry.lost.past_deadline() {
            entry.lose(LostReason::Expired);
            give_up(id, held, work);
            continue;
        }
        let renew = Arc::clone(&entry.renew);
        let period = entry.period;
        work.push(stoppable(id, &entry.stop, async move {
            let sent = Instant::now();
            // One event per renewal sent: what `cargo xtask bench` counts.
            tracing::trace!(target: "valkeyrie::renewal", "renewal sent");
            let outcome = tokio::time::timeout(period, renew.renew()).await.ok();
            Event::Renewed { sent, outcome }
        }));
    }
}

/// Takes one event of acquisition `id` into account.
fn handle(id: u64, event: Event, held: &mut Holding, work: &mut Work) {
    let Some(entry) = held.entries.get(&id) else {
        return;
    };
    match event {
        Event::GaveUp => {}
        Event::Stopped => drop(held.entries.remove(&id)),
        Event::Lost(reason) => {
            entry.lose(reason);
            drop_entry(id, held);
        }
        Event::Renewed { sent, outcome } => match outcome {
            Some(Ok(Renewal::Held(confirmed))) => {
                // A renewal answered after the deadline does not count: the lock is lost.
                if entry.lost.extend(sent, confirmed) {
                    held.due.insert((after(sent, entry.period), id));
                } else {
                    entry.lose(LostReason::Expired);
                    give_up(id, held, work);
                }
            }
            Some(Ok(Renewal::Lost(reason))) => {
                entry.lose(reason);
                drop_entry(id, held);
            }
            Some(Err(err)) if !err.is_temporary() => {
                entry.lose(LostReason::RenewalFailed(err.in_call("renew", "").to_string()));
                give_up(id, held, work);
            }
            Some(Err(err)) => {
                tracing::debug!(error = %err, "lock renewal failed; retrying");
                held.due.insert((after(sent, entry.period), id));
            }
            None => {
                tracing::debug!(period = ?entry.period, "lock renewal timed out; retrying");
                held.due.insert((Instant::now(), id));
            }
        },
    }
}

/// Stops holding `id`: its other pending work ends as `Stopped`, which finds no entry.
fn drop_entry(id: u64, held: &mut Holding) {
    if let Some(entry) = held.entries.remove(&id) {
        entry.stop.cancel();
    }
}

/// Stops holding `id` after a loss and runs its `give_up`.
fn give_up(id: u64, held: &mut Holding, work: &mut Work) {
    if let Some(entry) = held.entries.remove(&id) {
        entry.stop.cancel();
        let renew = Arc::clone(&entry.renew);
        work.push(
            async move {
                renew.give_up().await;
                (id, Event::GaveUp)
            }
            .boxed(),
        );
    }
}

/// The handle is closing: the queue closes, and every acquisition still held is lost
/// (`StoreClosed`) and released on the server, each bounded by one period, all at once.
async fn close(shared: &Shared, held: Holding) {
    let queued = {
        let mut pending = shared.lock_pending();
        pending.closed = true;
        std::mem::take(&mut pending.queue)
    };
    let entries = held
        .entries
        .into_values()
        .chain(queued.into_values().map(|registration| registration.entry));
    let releases = entries
        .filter(|entry| !entry.releasing.load(Ordering::Acquire) && !entry.stopped())
        .map(|entry| {
            entry.lose(LostReason::StoreClosed);
            async move {
                let _ = tokio::time::timeout(entry.period, entry.renew.release_on_close()).await;
                drop(entry);
            }
        });
    join_all(releases).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::error::Error;
    use crate::raw::background::Background;

    /// Counts its calls; renews while `healthy`, else fails with a temporary error.
    #[derive(Clone, Default)]
    struct Probe {
        healthy: Arc<AtomicBool>,
        renewals: Arc<AtomicUsize>,
        give_ups: Arc<AtomicUsize>,
        releases: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Renew for Probe {
        async fn renew(&self) -> Result<Renewal> {
            self.renewals.fetch_add(1, Ordering::SeqCst);
            if self.healthy.load(Ordering::SeqCst) {
                Ok(Renewal::Held(Duration::from_secs(3)))
            } else {
                Err(Error::backend("test", "k", true, "server away"))
            }
        }

        async fn give_up(&self) {
            self.give_ups.fetch_add(1, Ordering::SeqCst);
        }

        async fn release_on_close(&self) {
            self.releases.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn healthy_probe() -> Probe {
        let probe = Probe::default();
        probe.healthy.store(true, Ordering::SeqCst);
        probe
    }

    /// With tokio's clock paused, the lock is renewed every third of its TTL and stays held;
    /// once renewals fail it is lost exactly at its deadline (the last confirmed renewal plus
    /// the TTL), whatever the wall clock does, and `give_up` runs.
    #[tokio::test(start_paused = true)]
    async fn renewals_keep_the_lock_until_they_fail_then_the_deadline_loses_it() {
        let background = Background::new();
        let probe = healthy_probe();
        let held = background
            .spawner()
            .hold(Hold::new(probe.clone(), Instant::now(), Duration::from_secs(3)));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(probe.renewals.load(Ordering::SeqCst) >= 9, "renewed every second");
        assert_eq!(held.lost_signal().reason(), None, "held while renewals succeed");
        assert_eq!(background.len(), 1, "the held lock counts as background work");

        probe.healthy.store(false, Ordering::SeqCst);
        let failing_since = Instant::now();
        assert_eq!(held.lost_signal().lost().await, LostReason::Expired);
        let lost_after = failing_since.elapsed();
        assert!(
            lost_after <= Duration::from_secs(3),
            "lost within one TTL: {lost_after:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(probe.give_ups.load(Ordering::SeqCst), 1, "gave up once");
        assert_eq!(background.len(), 0, "a lost lock leaves nothing behind");
        drop(held);
        assert_eq!(background.len(), 0);
    }

    /// Releasing stops the renewals and reports `Released`, never a loss.
    #[tokio::test(start_paused = true)]
    async fn a_release_stops_the_renewals() {
        let background = Background::new();
        let probe = healthy_probe();
        let held = background
            .spawner()
            .hold(Hold::new(probe.clone(), Instant::now(), Duration::from_secs(3)));
        let signal = held.lost_signal().clone();
        held.releasing.begin();
        assert_eq!(signal.lost().await, LostReason::Released);
        let renewals = probe.renewals.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            probe.renewals.load(Ordering::SeqCst),
            renewals,
            "no renewal after the release"
        );
        assert_eq!(background.len(), 0);
    }

    /// Closing the handle reports `StoreClosed` and releases every lock still held.
    #[tokio::test(start_paused = true)]
    async fn closing_the_handle_releases_what_it_holds() {
        let background = Background::new();
        let probe = healthy_probe();
        let held: Vec<Held> = (0..3)
            .map(|_| {
                background
                    .spawner()
                    .hold(Hold::new(probe.clone(), Instant::now(), Duration::from_secs(3)))
            })
            .collect();
        tokio::task::yield_now().await;
        background.shutdown().await;
        for held in &held {
            assert_eq!(held.lost_signal().reason(), Some(LostReason::StoreClosed));
        }
        assert_eq!(probe.releases.load(Ordering::SeqCst), 3);
    }

    /// A lock taken on a closed handle is lost at once.
    #[tokio::test]
    async fn holding_on_a_closed_handle_is_lost_at_once() {
        let background = Background::new();
        background.shutdown().await;
        let held = background
            .spawner()
            .hold(Hold::new(healthy_probe(), Instant::now(), Duration::from_secs(3)));
        assert_eq!(held.lost_signal().lost().await, LostReason::StoreClosed);
    }

    /// Locks taken and released in quick succession never reach the driver: it wakes once,
    /// not once per lock.
    #[tokio::test(start_paused = true)]
    async fn brief_locks_stay_in_the_queue() {
        let background = Background::new();
        let probe = healthy_probe();
        for _ in 0..1_000 {
            let held = background
                .spawner()
                .hold(Hold::new(probe.clone(), Instant::now(), Duration::from_secs(3)));
            held.releasing.begin();
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(probe.renewals.load(Ordering::SeqCst), 0, "nothing to renew");
        assert_eq!(background.len(), 0);
    }

    /// Ten thousand keep-alives on one handle run on one task, renewed on schedule.
    #[tokio::test(start_paused = true)]
    async fn keep_alives_share_one_task() {
        let background = Background::new();
        let probe = healthy_probe();
        let tasks_before = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        for _ in 0..10_000 {
            background
                .spawner()
                .keep_alive(Hold::new(probe.clone(), Instant::now(), Duration::from_secs(3)));
        }
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks() - tasks_before;
        assert_eq!(tasks, 1, "one driver task for every keep-alive of the handle");
        assert_eq!(background.len(), 10_000, "each keep-alive counts as background work");
        assert_eq!(
            probe.renewals.load(Ordering::SeqCst),
            30_000,
            "three renewals each in 3.5 s"
        );
    }
}
