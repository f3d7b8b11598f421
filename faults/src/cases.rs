//! The fault cases, each written once and run on every backend where its fault applies
//! (`tests/faults.rs` instantiates them). Each case bounds its own time: it fails with what
//! it saw rather than hang, and it leaves the server running.

use std::collections::BTreeSet;
use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use valkeyrie::layers::{Call, Intercept, Next, RetryLayer, TimeoutLayer};
use valkeyrie::{
    Error, ErrorKind, ErrorStatus, Fence, Kv, KvPair, LockGuard, LockOptions, ReadOptions, Store, Transaction,
    TxnOutcome, WatchEvent, WatchStream, WriteOptions,
};

use crate::proxy::Proxy;
use crate::server;
use crate::target::{Target, CONNECT_TIMEOUT, FAILOVER_BOUND, REQUEST_TIMEOUT, SLACK};
use xtask::servers::cluster::{Cluster, Member};
use xtask::servers::Managed;

/// How long a store may take to work again once its server is back.
const RECOVERY: Duration = Duration::from_secs(30);

/// How many times as long as the first half of the contended increments the second half
/// (the one with the outage) may take, beyond [`RECOVERY`].
const SECOND_HALF_FACTOR: u32 = 4;

/// How long a watcher may take to deliver the last write of a sequence.
const WATCH_CATCH_UP: Duration = Duration::from_secs(45);

/// Whether `err` is what a call may answer while its server is unreachable.
fn is_outage(err: &Error) -> bool {
    matches!(err.kind(), ErrorKind::NotReachable | ErrorKind::Timeout) || err.is_temporary()
}

/// Runs `call` until it succeeds, retrying outage errors (the server restarting) for up to
/// [`RECOVERY`]; panics on any other error or when the server stays away.
async fn until_ok<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = valkeyrie::Result<T>>,
{
    let deadline = Instant::now() + RECOVERY;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(err) if is_outage(&err) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("{what}: {err}"),
        }
    }
}

/// What a watcher saw of a numbered sequence of keys `seq-000`, `seq-001`, … below a
/// directory.
#[derive(Debug, Default)]
struct Seen {
    /// Every sequence number delivered, by a `Put` or in a `Snapshot`.
    numbers: BTreeSet<usize>,
    /// The `Put` numbers in delivery order, a `None` where a `Snapshot` came.
    order: Vec<Option<usize>>,
    snapshots: usize,
}

fn number(dir: &str, key: &str) -> Option<usize> {
    key.strip_prefix(dir)?.strip_prefix("/seq-")?.parse().ok()
}

impl Seen {
    fn record(&mut self, dir: &str, event: WatchEvent) {
        match event {
            WatchEvent::Snapshot(pairs) => {
                self.snapshots += 1;
                self.order.push(None);
                self.numbers.extend(pairs.iter().filter_map(|p| number(dir, &p.key)));
            }
            WatchEvent::Put(pair) => {
                if let Some(n) = number(dir, &pair.key) {
                    self.numbers.insert(n);
                    self.order.push(Some(n));
                }
            }
            // Nothing deletes below the directory.
            _ => {}
        }
    }

    /// Panics unless every number below `count` was delivered and, between snapshots,
    /// puts came in write order (a repeat after a resync is allowed: delivery is at least
    /// once; so is a number twice in a row, a write retried after its outcome was hidden).
    fn check(&self, backend: &str, count: usize) {
        let missing: Vec<usize> = (0..count).filter(|n| !self.numbers.contains(n)).collect();
        assert!(
            missing.is_empty(),
            "{backend}: the watcher never saw writes {missing:?} (and no snapshot covered them); saw {:?}",
            self.order
        );
        let mut last = None;
        for item in &self.order {
            match (item, last) {
                (None, _) => last = None,
                // The same number twice: a write retried after a timeout landed twice.
                (Some(n), Some(previous)) => {
                    assert!(
                        *n >= previous,
                        "{backend}: put {n} came after put {previous}: {:?}",
                        self.order
                    );
                    last = Some(*n);
                }
                (Some(n), None) => last = Some(*n),
            }
        }
    }
}

/// Reads `events` until the watcher has seen `seq-{last}`, failing after [`WATCH_CATCH_UP`]
/// without an event; a stream error or end is a failure (a watch must survive outages).
fn collect(dir: String, mut events: WatchStream, last: usize) -> tokio::task::JoinHandle<Result<Seen, String>> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        while !seen.numbers.contains(&last) {
            match tokio::time::timeout(WATCH_CATCH_UP, events.next()).await {
                Err(_) => return Err(format!("no event for {WATCH_CATCH_UP:?}; saw {:?}", seen.order)),
                Ok(None) => return Err(format!("the watch ended; saw {:?}", seen.order)),
                Ok(Some(Err(err))) => return Err(format!("the watch failed: {err}; saw {:?}", seen.order)),
                Ok(Some(Ok(event))) => seen.record(&dir, event),
            }
        }
        Ok(seen)
    })
}

async fn write_sequence(store: &dyn Store, dir: &str, numbers: std::ops::Range<usize>) {
    for n in numbers {
        let key = format!("{dir}/seq-{n:03}");
        until_ok(&format!("put {key}"), || async {
            store
                .put(&key, Bytes::from(n.to_string()), &WriteOptions::default())
                .await
        })
        .await;
    }
}

/// Opens a tree watch and takes its first snapshot.
async fn watch_tree(store: &dyn Store, dir: &str) -> WatchStream {
    let mut events = store
        .watch_tree(dir, &ReadOptions::default())
        .await
        .unwrap_or_else(|e| panic!("watch_tree {dir}: {e}"));
    match tokio::time::timeout(REQUEST_TIMEOUT + SLACK, events.next()).await {
        Ok(Some(Ok(WatchEvent::Snapshot(_)))) => events,
        other => panic!("watch_tree {dir}: the first item was {other:?}, not a snapshot"),
    }
}

/// Waits for the collector and checks what it saw of `count` writes across `fault`.
async fn judge(target: &Target, seen: tokio::task::JoinHandle<Result<Seen, String>>, count: usize, fault: &str) {
    let name = target.name();
    let seen = seen
        .await
        .unwrap_or_else(|e| panic!("the collector panicked: {e}"))
        .unwrap_or_else(|e| panic!("{name}: watch across {fault}: {e}"));
    seen.check(name, count);
    println!(
        "{name}: watch across {fault}: {count} writes seen, {} snapshot(s)",
        seen.snapshots
    );
}

/// Numbered writes before, during and after a restart of the server: a tree watcher on
/// another handle sees every one, in order, or a snapshot covering what it could not replay.
pub async fn watch_across_restart(target: &Target) {
    const COUNT: usize = 20;
    let (watcher, writer) = (target.open().await, target.open().await);
    let dir = target.unique("watch-restart");
    let events = watch_tree(watcher.as_ref(), &dir).await;
    let seen = collect(dir.clone(), events, COUNT - 1);
    write_sequence(writer.as_ref(), &dir, 0..COUNT / 2).await;
    let down = server::restart(target.server()).await;
    write_sequence(writer.as_ref(), &dir, COUNT / 2..COUNT).await;
    judge(target, seen, COUNT, &format!("a restart ({down:.1?} down)")).await;
    let _ = writer.delete_tree(&dir).await;
}

/// The same check when only the watcher's connection drops (a proxy cuts it for a few
/// seconds, during which the writer, on its own connection, goes on writing).
pub async fn watch_across_dropped_connection(target: &Target) {
    const COUNT: usize = 21;
    let proxy = target.proxy().await;
    let watcher = target.open_via(&proxy.address()).await;
    let writer = target.open().await;
    let dir = target.unique("watch-cut");
    let events = watch_tree(watcher.as_ref(), &dir).await;
    let seen = collect(dir.clone(), events, COUNT - 1);
    write_sequence(writer.as_ref(), &dir, 0..COUNT / 3).await;
    proxy.cut();
    write_sequence(writer.as_ref(), &dir, COUNT / 3..2 * COUNT / 3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    write_sequence(writer.as_ref(), &dir, 2 * COUNT / 3..COUNT).await;
    judge(target, seen, COUNT, "a 3 s cut").await;
    let _ = writer.delete_tree(&dir).await;
}

/// Each error status on a real server, through a proxy that can cut the connection: a
/// missing key is permanent; a call while the connection is cut is temporary; a watch that
/// cannot resume for its `watch_retry_for` ends with a persistent error (retried already:
/// an outer loop should not simply retry it). For the backends with `watch_retry_for`.
pub async fn error_statuses(target: &Target) {
    const RETRY_FOR: Duration = Duration::from_secs(2);
    let name = target.name();
    let proxy = target.proxy().await;
    let store = target
        .open_via_with(
            &proxy.address(),
            &format!("watch_retry_for={}ms", RETRY_FOR.as_millis()),
        )
        .await;
    let dir = target.unique("statuses");

    let missing = store
        .atomic_delete(
            &format!("{dir}/missing"),
            &KvPair::new(format!("{dir}/missing"), "v", 1),
        )
        .await
        .expect_err("an atomic delete of a missing key");
    assert_eq!(missing.status(), ErrorStatus::Permanent, "{name}: {missing}");

    let mut events = store
        .watch_tree(&dir, &ReadOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{name}: watch_tree: {e}"));
    match tokio::time::timeout(SLACK, events.next()).await {
        Ok(Some(Ok(WatchEvent::Snapshot(_)))) => {}
        other => panic!("{name}: expected the first snapshot, got {other:?}"),
    }
    proxy.cut();
    let cut_at = Instant::now();
    let during = store
        .get(&format!("{dir}/k"), &ReadOptions::default())
        .await
        .expect_err("a read while the connection is cut");
    assert_eq!(during.status(), ErrorStatus::Temporary, "{name}: {during}");

    let ended = loop {
        match tokio::time::timeout(RETRY_FOR + REQUEST_TIMEOUT + SLACK, events.next()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(err))) => break err,
            Ok(None) => panic!("{name}: the watch ended without an error"),
            Err(_) => panic!("{name}: the watch went on {:.1?} into a cut", cut_at.elapsed()),
        }
    };
    assert_eq!(ended.status(), ErrorStatus::Persistent, "{name}: {ended}");
    assert!(!ended.is_temporary(), "{name}: a given-up error is not temporary");
    proxy.restore();
}

/// The server freezes (SIGSTOP) for longer than the lock's TTL: the holder's lost signal
/// fires within TTL + [`SLACK`] though nothing answers; once the server runs again another
/// contender acquires with a larger fencing token, and the old guard still says lost.
pub async fn lock_across_pause(target: &Target) {
    let name = target.name();
    let holder = target.open().await;
    // What the backend makes of the suite's TTL (Consul raises it to twice its shortest session).
    let ttl = target.backend.lock_ttl().max(holder.capabilities().min_ttl);
    let key = format!("{}/lock", target.unique("lock-pause"));
    let options = LockOptions::with_value("old holder").ttl(ttl);
    let guard = lock(holder.as_ref(), &key, options)
        .await
        .unwrap_or_else(|e| panic!("{name}: lock {key}: {e}"));
    let first_token = guard.fencing_token();
    // Let at least one renewal land, so the deadline counts from a renewal, not the acquisition.
    tokio::time::sleep(ttl / 2).await;
    let paused = server::pause(target.server()).await;
    let frozen_at = Instant::now();
    let lost = tokio::time::timeout(ttl + SLACK, guard.lost()).await;
    let lost_after = frozen_at.elapsed();
    // Past the TTL on the server's clock too before it runs again.
    tokio::time::sleep((ttl + Duration::from_secs(1)).saturating_sub(lost_after)).await;
    paused.resume().await;
    let reason = lost.unwrap_or_else(|_| panic!("{name}: no lost signal {:?} into a pause (TTL {ttl:?})", ttl + SLACK));
    assert!(
        guard.ensure_held().is_err(),
        "{name}: the guard says held after its loss ({reason:?})"
    );

    let contender = target.open().await;
    let resumed_at = Instant::now();
    let wait = ttl * 3 + RECOVERY;
    let taken = tokio::time::timeout(wait, async {
        let locker = until_ok("new_lock", || {
            contender.new_lock(&key, LockOptions::with_value("new holder"))
        })
        .await;
        loop {
            match locker.lock_timeout(wait).await {
                Ok(guard) => return guard,
                Err(err) if is_outage(&err) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(err) => panic!("{name}: the contender's lock: {err}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name}: nobody acquired {key} within {wait:?} after the server resumed"));
    let taken_after = resumed_at.elapsed();
    assert!(
        taken.fencing_token() > first_token,
        "{name}: fencing token {} after {first_token}",
        taken.fencing_token()
    );
    assert!(
        guard.ensure_held().is_err(),
        "{name}: the old guard believes it holds the lock again"
    );
    let value = until_ok("get the lock value", || async {
        contender.get(&key, &ReadOptions::default()).await
    })
    .await;
    assert_eq!(
        value.value, "new holder",
        "{name}: the lock record is not the new holder's"
    );
    assert_fence_refused(name, holder.as_ref(), &guard.fence(), &key).await;
    taken
        .ensure_held()
        .unwrap_or_else(|e| panic!("{name}: the new holder lost the lock: {e}"));
    let fresh = Transaction::new()
        .when_held(&taken.fence())
        .put(format!("{key}/fenced"), "current");
    let outcome = until_ok("a commit fenced by the new lock", || contender.commit(fresh.clone())).await;
    assert!(
        outcome.is_committed(),
        "{name}: the new holder's fenced write was refused"
    );
    println!(
        "{name}: lock across a pause (TTL {ttl:?}): lost signal after {lost_after:.1?} ({reason:?}), \
         taken over {taken_after:.1?} after resume, tokens {first_token} -> {}",
        taken.fencing_token()
    );
    let _ = taken.unlock().await;
    drop(guard);
    let _ = contender.delete_tree(&key).await;
}

/// The store itself refuses a write to `key/fenced` fenced by `fence`, a lock another
/// holder has taken since, whatever the deposed holder believes.
async fn assert_fence_refused(name: &str, store: &dyn Store, fence: &Fence, key: &str) {
    let stale = Transaction::new()
        .when_held(fence)
        .put(format!("{key}/fenced"), "stale");
    let outcome = until_ok("a commit fenced by the deposed lock", || store.commit(stale.clone())).await;
    assert_eq!(
        outcome,
        TxnOutcome::Failed { compare: 0 },
        "{name}: the store accepted a write fenced by the deposed holder"
    );
}

/// Takes the lock on `key`, waiting for it.
async fn lock(store: &dyn Store, key: &str, options: LockOptions) -> valkeyrie::Result<LockGuard> {
    store.new_lock(key, options).await?.lock().await
}

/// How a case takes the server away from a handle: a stop of the server, (where a
/// restart loses the data) a proxy between them that refuses every connection, or (on a
/// cluster) a crash of the leader, restarted once the case has written through the
/// failover.
enum Outage {
    Stop(xtask::servers::Server, Option<server::Stopped>),
    Cut(Proxy),
    Failover {
        cluster: Cluster,
        /// The leader the outage killed.
        killed: Option<Member>,
        /// The killed leader until it is started again.
        down: Option<server::Stopped<Member>>,
    },
}

impl Outage {
    /// The outage `target` gets, and the handle that will suffer it.
    async fn prepare(target: &Target) -> (Outage, Arc<dyn Store>) {
        if let Some(cluster) = target.cluster_under_test() {
            let outage = Outage::Failover {
                cluster,
                killed: None,
                down: None,
            };
            (outage, target.open().await)
        } else if target.backend.restart_keeps_data() {
            (Outage::Stop(target.server(), None), target.open().await)
        } else {
            let proxy = target.proxy().await;
            let store = target.open_via(&proxy.address()).await;
            (Outage::Cut(proxy), store)
        }
    }

    /// A second handle on the same side of the outage as the one [`Outage::prepare`] gave.
    async fn open(&self, target: &Target) -> Arc<dyn Store> {
        match self {
            Outage::Stop(..) | Outage::Failover { .. } => target.open().await,
            Outage::Cut(proxy) => target.open_via(&proxy.address()).await,
        }
    }

    fn describe(&self) -> String {
        match self {
            Outage::Stop(..) => "server stopped".to_owned(),
            Outage::Cut(_) => "connection refused by a proxy".to_owned(),
            Outage::Failover {
                killed: Some(member), ..
            } => format!("leader {} killed", member.label()),
            Outage::Failover { cluster, .. } => format!("{} cluster", cluster.name()),
        }
    }

    async fn begin(&mut self) {
        match self {
            Outage::Stop(server, stopped) => *stopped = Some(server::stop(*server).await),
            Outage::Cut(proxy) => proxy.cut(),
            Outage::Failover { cluster, killed, down } => {
                let leader = server::leader(*cluster).await;
                *down = Some(server::kill(leader).await);
                *killed = Some(leader);
            }
        }
    }

    /// How long the outage lasts before [`Outage::end`]: none for a stop (the server comes
    /// back at once); a cut, or the cluster without its leader, for a few seconds.
    fn hold(&self) -> Duration {
        match self {
            Outage::Stop(..) => Duration::ZERO,
            Outage::Cut(_) => Duration::from_secs(3),
            Outage::Failover { .. } => Duration::from_secs(5),
        }
    }

    /// Ends the outage; how long the server (or the killed member, until the cluster is
    /// whole again) took to be healthy.
    async fn end(&mut self) -> Duration {
        match self {
            Outage::Stop(server, stopped) => match stopped.take() {
                Some(stopped) => stopped.start().await,
                None => panic!("{} was not stopped", server.name()),
            },
            Outage::Cut(proxy) => {
                proxy.restore();
                Duration::ZERO
            }
            Outage::Failover { cluster, down, .. } => match down.take() {
                Some(stopped) => stopped.rejoin().await.1,
                None => panic!("no member of the {} cluster was killed", cluster.name()),
            },
        }
    }
}

/// Every call on a handle whose server is stopped (or, where a restart loses the data,
/// cut off by a proxy) fails with `NotReachable` or `Timeout` within its deadline, none
/// hangs; the same handle works again once the server is back.
pub async fn calls_while_down(target: &Target) {
    let name = target.name();
    let (mut outage, store) = Outage::prepare(target).await;
    let dir = target.unique("down");
    let key = format!("{dir}/k");
    let stored = until_ok("put", || async {
        store.put(&key, "before".into(), &WriteOptions::default()).await?;
        store.get(&key, &ReadOptions::default()).await
    })
    .await;
    outage.begin().await;
    let bound = CONNECT_TIMEOUT + REQUEST_TIMEOUT + SLACK;
    let none = ReadOptions::default();
    let plain = WriteOptions::default();
    let lock_key = format!("{dir}/lock");
    // Every call at once, each timed on its own: the outage lasts as long as the slowest,
    // shorter than a ZooKeeper session, which the server would otherwise expire.
    type Call<'a> = std::pin::Pin<Box<dyn Future<Output = valkeyrie::Result<()>> + Send + 'a>>;
    let calls: Vec<(&str, Call<'_>)> = vec![
        ("put", Box::pin(store.put(&key, "during".into(), &plain))),
        ("get", Box::pin(async { store.get(&key, &none).await.map(drop) })),
        ("exists", Box::pin(async { store.exists(&key, &none).await.map(drop) })),
        ("list", Box::pin(async { store.list(&dir, &none).await.map(drop) })),
        ("delete", Box::pin(store.delete(&key))),
        ("delete_tree", Box::pin(store.delete_tree(&dir))),
        (
            "atomic_put",
            Box::pin(async {
                store
                    .atomic_put(&key, "cas".into(), Some(&stored), &plain)
                    .await
                    .map(drop)
            }),
        ),
        ("atomic_delete", Box::pin(store.atomic_delete(&key, &stored))),
        ("watch", Box::pin(async { store.watch(&key, &none).await.map(drop) })),
        (
            "try_lock",
            Box::pin(async {
                let locker = store.new_lock(&lock_key, LockOptions::default()).await?;
                locker.try_lock().await.map(drop)
            }),
        ),
    ];
    let timed = calls.into_iter().map(|(call, future)| async move {
        let begun = Instant::now();
        let outcome = tokio::time::timeout(bound * 2, future).await;
        (call, outcome, begun.elapsed())
    });
    let mut slowest = Duration::ZERO;
    let mut timed_out = Vec::new();
    for (call, outcome, took) in futures_util::future::join_all(timed).await {
        slowest = slowest.max(took);
        match outcome {
            Err(_) => panic!("{name}: {call} hung for {:?} ({})", bound * 2, outage.describe()),
            Ok(Ok(())) => panic!("{name}: {call} succeeded ({})", outage.describe()),
            Ok(Err(err)) => {
                assert!(
                    matches!(err.kind(), ErrorKind::NotReachable | ErrorKind::Timeout),
                    "{name}: {call} failed with {:?} ({err}), not NotReachable or Timeout",
                    err.kind()
                );
                assert!(
                    took <= bound,
                    "{name}: {call} took {took:?} to fail, more than {bound:?}"
                );
                if err.kind() == ErrorKind::Timeout {
                    timed_out.push(call);
                }
            }
        }
    }
    let downtime = Instant::now();
    let up_after = outage.end().await;
    let back = until_ok("exists after the restart", || store.exists(&key, &none)).await;
    let recovered = downtime.elapsed();
    // `NotReachable` means the call never reached the server; `Timeout` that its outcome is
    // unknown (a client may still send a queued request once the server is back).
    let value = match back {
        true => Some(until_ok("get after the restart", || store.get(&key, &none)).await.value),
        false => None,
    };
    if timed_out.is_empty() {
        assert_eq!(
            value.as_deref(),
            Some(&b"before"[..]),
            "{name}: a refused call changed the key"
        );
    }
    until_ok("put after the restart", || store.put(&key, "after".into(), &plain)).await;
    let changed = value.as_deref() != Some(&b"before"[..]);
    println!(
        "{name}: calls while down ({}): all failed within {slowest:.1?} (bound {bound:?}); \
         the handle worked again {recovered:.1?} after the outage ended ({up_after:.1?} to healthy); \
         timed out: {timed_out:?}{}",
        outage.describe(),
        if changed {
            ", and a timed-out write applied once the server was back"
        } else {
            ""
        }
    );
    let _ = store.delete_tree(&dir).await;
}

/// 16 tasks × 25 compare-and-set increments of one key, with a restart of the server in
/// the middle (where a restart loses the data: every connection cut for 3 s; on a
/// cluster: the leader killed for 5 s, then restarted): exactly 400 land. A call whose outcome the outage hid is settled by reading
/// the key again, which records every increment by name, so none counts twice or is lost.
///
/// The second half may take `SECOND_HALF_FACTOR` times as long as the first plus
/// `RECOVERY`: the bound follows the speed of the machine (a loaded CI runner serves
/// these 16 contenders several times slower than a quiet one) and still stops by itself.
pub async fn cas_across_restart(target: &Target) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 25;
    let name = target.name();
    let (mut outage, first) = Outage::prepare(target).await;
    let second = outage.open(target).await;
    let stores = [first, second];
    let key = format!("{}/counter", target.unique("cas-restart"));
    until_ok("create the counter", || async {
        stores[0].put(&key, Bytes::new(), &WriteOptions::default()).await
    })
    .await;
    let done = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(CasTally::default());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&stores[task % 2]);
        let (key, done, tally) = (key.clone(), Arc::clone(&done), Arc::clone(&tally));
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let mark = format!("t{task}.{i}");
                increment(store.as_ref(), &key, &mark, &tally).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let half_bound = Duration::from_secs(120);
    while done.load(Ordering::Relaxed) < TASKS * PER_TASK / 2 {
        assert!(
            started.elapsed() < half_bound,
            "{name}: half the increments took over {half_bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_restart = done.load(Ordering::Relaxed);
    let first_half = started.elapsed();
    let begun = Instant::now();
    outage.begin().await;
    tokio::time::sleep(outage.hold()).await;
    outage.end().await;
    let down = begun.elapsed();
    // Counted from the end of the outage: a cluster's rejoin takes what it takes.
    let deadline = Instant::now() + first_half * SECOND_HALF_FACTOR + RECOVERY;
    for task in tasks {
        tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), task)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{name}: the increments did not finish: {}/400 after {:.1?} (the first half took \
                     {first_half:.1?}; {tally})",
                    done.load(Ordering::Relaxed),
                    started.elapsed()
                )
            })
            .unwrap_or_else(|e| panic!("{name}: an increment task panicked: {e}"));
    }
    let end = until_ok("read the counter", || async {
        stores[0].get(&key, &ReadOptions::default()).await
    })
    .await;
    let marks: Vec<&str> = std::str::from_utf8(&end.value)
        .unwrap_or_else(|_| panic!("{name}: the counter is not text"))
        .split_terminator(';')
        .collect();
    let distinct: BTreeSet<&str> = marks.iter().copied().collect();
    assert_eq!(distinct.len(), marks.len(), "{name}: some increment landed twice");
    assert_eq!(
        marks.len(),
        TASKS * PER_TASK,
        "{name}: {} increments landed, not 400",
        marks.len()
    );
    println!(
        "{name}: contended CAS across an outage ({}, {down:.1?}, at {at_restart}/400): exactly 400 \
         in {:.1?} ({tally})",
        outage.describe(),
        started.elapsed(),
    );
    let _ = stores[0].delete(&key).await;
}

/// What the contended increments met, reported whether they finish or not.
#[derive(Debug, Default)]
struct CasTally {
    /// Compare-and-sets sent.
    attempts: AtomicUsize,
    /// Of those, lost races (`KeyModified`).
    conflicts: AtomicUsize,
    /// Of those, outcomes hidden by the outage (`NotReachable`, `Timeout`, temporary).
    hidden: AtomicUsize,
}

impl std::fmt::Display for CasTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} compare-and-sets: {} lost races, {} outcomes hidden by the outage",
            self.attempts.load(Ordering::Relaxed),
            self.conflicts.load(Ordering::Relaxed),
            self.hidden.load(Ordering::Relaxed)
        )
    }
}

/// Appends `mark;` to the counter at `key` unless the mark is there already.
///
/// A lost race waits a jittered, growing moment before reading again, as a careful client
/// would: 16 contenders retrying at once spend most of the server's time on writes that
/// cannot win.
async fn increment(store: &dyn Store, key: &str, mark: &str, tally: &CasTally) {
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut lost = 0;
    loop {
        assert!(Instant::now() < deadline, "increment {mark} did not land within 240 s");
        let current: KvPair = until_ok("read the counter", || async {
            store.get(key, &ReadOptions::default()).await
        })
        .await;
        if contains_mark(&current.value, mark) {
            return;
        }
        let mut next = current.value.to_vec();
        next.extend_from_slice(mark.as_bytes());
        next.push(b';');
        tally.attempts.fetch_add(1, Ordering::Relaxed);
        match store
            .atomic_put(key, Bytes::from(next), Some(&current), &WriteOptions::default())
            .await
        {
            Ok(_) => return,
            Err(err) if err.kind() == ErrorKind::KeyModified => {
                tally.conflicts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(conflict_backoff(mark, lost)).await;
                lost += 1;
            }
            // The outcome is unknown: the next read settles it.
            Err(err) if is_outage(&err) => {
                tally.hidden.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("atomic_put {key}: {err}"),
        }
    }
}

/// How long `mark`'s lost race number `lost` (from 0) waits: a random share of a window
/// that doubles from 4 ms up to 64 ms.
fn conflict_backoff(mark: &str, lost: u32) -> Duration {
    use std::hash::BuildHasher;
    let window_us = 4000u64 << lost.min(4);
    // A fresh `RandomState` is randomly keyed: its hash is a random number.
    let random = std::collections::hash_map::RandomState::new().hash_one((mark, lost));
    Duration::from_micros(random % window_us)
}

/// Whether the counter `value` (`mark;mark;…`) holds `mark`.
fn contains_mark(value: &[u8], mark: &str) -> bool {
    value.split(|b| *b == b';').any(|m| m == mark.as_bytes())
}

/// The cluster of a cluster target.
fn cluster_of(target: &Target) -> Cluster {
    target
        .cluster_under_test()
        .unwrap_or_else(|| panic!("{}: a failover case needs `Target::cluster`", target.name()))
}

/// How many numbered writes a watch case makes: a third before its fault, a third while
/// it lasts, a third after.
const WATCHED_WRITES: usize = 30;

/// The numbered writes of a watch case on `dir`, a tree watcher on another handle judging
/// them: the first third, then `begin` starts the fault, the second third (each followed
/// by `pause`), then `end` ends it and describes it (given how long the second third
/// took), the last third.
async fn watched_writes<S>(
    target: &Target,
    dir: &str,
    pause: Duration,
    begin: impl AsyncFnOnce() -> S,
    end: impl AsyncFnOnce(S, Duration) -> String,
) {
    const COUNT: usize = WATCHED_WRITES;
    let (watcher, writer) = (target.open().await, target.open().await);
    let events = watch_tree(watcher.as_ref(), dir).await;
    let seen = collect(dir.to_owned(), events, COUNT - 1);
    write_sequence(writer.as_ref(), dir, 0..COUNT / 3).await;
    let fault = begin().await;
    let begun = Instant::now();
    for n in COUNT / 3..2 * COUNT / 3 {
        write_sequence(writer.as_ref(), dir, n..n + 1).await;
        tokio::time::sleep(pause).await;
    }
    let fault = end(fault, begun.elapsed()).await;
    write_sequence(writer.as_ref(), dir, 2 * COUNT / 3..COUNT).await;
    judge(target, seen, COUNT, &fault).await;
    let _ = writer.delete_tree(dir).await;
}

/// Numbered writes before, while and after the leader is down (killed, then restarted
/// once the rest have elected a new one): a tree watcher on another handle sees every one,
/// in order, or a snapshot covering what it could not replay.
pub async fn watch_across_failover(target: &Target) {
    let cluster = cluster_of(target);
    let dir = target.unique("watch-failover");
    let begin = async || {
        let leader = server::leader(cluster).await;
        (leader, server::kill(leader).await)
    };
    let end = async |(leader, killed): (Member, server::Stopped<Member>), without: Duration| {
        killed.rejoin().await;
        format!(
            "a killed leader ({}; {} writes without it took {without:.1?})",
            leader.label(),
            WATCHED_WRITES / 3
        )
    };
    watched_writes(target, &dir, Duration::ZERO, begin, end).await;
}

/// How many hash slots the reshard cases move: the leader's lowest, slot 0 (the case's
/// keys) first.
const MOVED_SLOTS: u32 = 200;

/// [`MOVED_SLOTS`] slots moving from one Redis Cluster primary to another in the background,
/// while a watch case writes.
struct SlotsMoving {
    from: Member,
    to: Member,
    begun: Instant,
    moving: tokio::task::JoinHandle<()>,
}

impl SlotsMoving {
    /// Starts moving the slots from `from` to `to`.
    fn start(from: Member, to: Member) -> SlotsMoving {
        let moving = tokio::spawn(server::reshard(from, to, MOVED_SLOTS));
        SlotsMoving {
            from,
            to,
            begun: Instant::now(),
            moving,
        }
    }

    /// Waits until the slots have moved; what happened, for `target`'s report, given how
    /// long the writes meanwhile took.
    async fn finish(self, target: &Target, writing: Duration) -> String {
        self.moving
            .await
            .unwrap_or_else(|e| panic!("{}: the reshard panicked: {e}", target.name()));
        format!(
            "{MOVED_SLOTS} slots moving from {} to {} ({:.1?}; {} writes in the first {writing:.1?})",
            self.from.label(),
            self.to.label(),
            self.begun.elapsed(),
            WATCHED_WRITES / 3
        )
    }
}

/// Numbered writes before, while and after the leader's hash slots (the case's keys among
/// them) move to another primary of a Redis Cluster (`redis-cli --cluster reshard`, key by
/// key with `MIGRATE`): every write lands, and a tree watcher on another handle sees every
/// one, in order, or a snapshot covering what it could not replay.
pub async fn watch_across_reshard(target: &Target) {
    // Keys beside the case's in slot 0, so that moving the slot takes a while.
    const BALLAST: usize = 3000;
    let cluster = cluster_of(target);
    let dir = target.unique("watch-reshard");
    let ballast = target.unique("reshard-ballast");
    let store = target.open().await;
    let pairs: Vec<(String, Bytes)> = (0..BALLAST).map(|n| (format!("{ballast}/{n}"), Bytes::new())).collect();
    let plain = WriteOptions::default();
    for chunk in pairs.chunks(500) {
        until_ok("put the ballast", || store.put_many(chunk.to_vec(), &plain)).await;
    }
    let begin = async || {
        let from = server::leader(cluster).await;
        SlotsMoving::start(from, server::primary_other_than(from).await)
    };
    let end = async |moving: SlotsMoving, writing: Duration| moving.finish(target, writing).await;
    // Paced, so that writes land while slot 0 migrates.
    watched_writes(target, &dir, Duration::from_millis(10), begin, end).await;
    let _ = store.delete_tree(&ballast).await;
}

/// Numbered writes before, while and after the leader's lowest hash slots (the case's keys
/// among them) move to a node added to the Redis Cluster meanwhile: a tree watcher on
/// another handle sees every write, in order, or a snapshot covering what it could not
/// replay (the watch must subscribe on the new primary). The node is taken out after.
pub async fn watch_across_node_added(target: &Target) {
    let cluster = cluster_of(target);
    let dir = target.unique("watch-node-added");
    let from = server::leader(cluster).await;
    let begin = async || SlotsMoving::start(from, server::add_spare_node().await);
    let end = async |moving: SlotsMoving, writing: Duration| moving.finish(target, writing).await;
    watched_writes(target, &dir, Duration::from_millis(10), begin, end).await;
    server::remove_spare_node(from).await;
}

/// The leader is killed: calls on a handle that knows every member fail over to the new
/// leader within [`FAILOVER_BOUND`]; until then each call fails (`NotReachable`,
/// `Timeout`, a temporary error) within its deadline, none hangs; the handle needs no
/// reconstruction.
pub async fn calls_across_failover(target: &Target) {
    let name = target.name();
    let cluster = cluster_of(target);
    let store = target.open().await;
    let dir = target.unique("failover-calls");
    let key = format!("{dir}/k");
    let (read, write) = (ReadOptions::default(), WriteOptions::default());
    until_ok("put before the failover", || store.put(&key, "before".into(), &write)).await;
    let leader = server::leader(cluster).await;
    let killed = server::kill(leader).await;
    let down = Instant::now();
    let bound = CONNECT_TIMEOUT + REQUEST_TIMEOUT + SLACK;
    let (mut failures, mut slowest) = (0, Duration::ZERO);
    for attempt in 0.. {
        let value = Bytes::from(format!("after-{attempt}"));
        let call = Instant::now();
        let outcome = tokio::time::timeout(bound * 2, async {
            store.put(&key, value.clone(), &write).await?;
            store.get(&key, &read).await
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{name}: a put and a get hung for {:?} after {} was killed",
                bound * 2,
                leader.label()
            )
        });
        slowest = slowest.max(call.elapsed());
        match outcome {
            Ok(pair) => {
                assert_eq!(
                    pair.value, value,
                    "{name}: the get after the failover read another value"
                );
                break;
            }
            Err(err) if is_outage(&err) => {
                failures += 1;
                assert!(
                    down.elapsed() < FAILOVER_BOUND,
                    "{name}: calls still failing {FAILOVER_BOUND:?} after {} was killed: {err}",
                    leader.label()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("{name}: a call during the failover failed with {err}"),
        }
    }
    let failed_over = down.elapsed();
    assert!(
        failed_over < FAILOVER_BOUND,
        "{name}: the first call that worked ended {failed_over:.1?} after {} was killed",
        leader.label()
    );
    // Every kind of call works on the same handle.
    until_ok("exists after the failover", || store.exists(&key, &read)).await;
    until_ok("list after the failover", || store.list(&dir, &read)).await;
    let current = until_ok("get after the failover", || store.get(&key, &read)).await;
    until_ok("atomic_delete after the failover", || {
        store.atomic_delete(&key, &current)
    })
    .await;
    let (_, rejoined) = killed.rejoin().await;
    println!(
        "{name}: calls across a failover (leader {} killed): working again after {failed_over:.1?} \
         ({failures} failed attempts, the slowest {slowest:.1?}; bound {FAILOVER_BOUND:?}); the killed member \
         rejoined in {rejoined:.1?}",
        leader.label()
    );
}

/// The leader is killed while a lock is held and a contender waits for it: the lock
/// either survives (the holder keeps it, its fenced write commits, the contender gets
/// it only after the unlock) or is reported lost (the contender may take it, and the store
/// then refuses the old holder's fence). Never two holders; fencing tokens increase.
pub async fn lock_across_failover(target: &Target) {
    let name = target.name();
    let cluster = cluster_of(target);
    let (holder, contender) = (target.open().await, target.open().await);
    let ttl = target.backend.lock_ttl().max(holder.capabilities().min_ttl);
    let key = format!("{}/lock", target.unique("lock-failover"));
    let options = |value: &'static str| LockOptions::with_value(value).ttl(ttl);
    let guard = lock(holder.as_ref(), &key, options("first holder"))
        .await
        .unwrap_or_else(|e| panic!("{name}: lock {key}: {e}"));
    let first_token = guard.fencing_token();
    let waiter = {
        let (contender, key, options) = (Arc::clone(&contender), key.clone(), options("second holder"));
        tokio::spawn(async move {
            loop {
                let attempt = async { contender.new_lock(&key, options.clone()).await?.lock().await };
                match attempt.await {
                    Ok(guard) => return guard,
                    // The failover can also end the waiter's own session (etcd's lease,
                    // when its keep-alives miss the TTL): a new attempt starts a new one.
                    Err(err) if is_outage(&err) || err.kind() == ErrorKind::LockLost => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(err) => panic!("the contender's lock: {err}"),
                }
            }
        })
    };
    // Let a renewal land before the fault.
    tokio::time::sleep(ttl / 2).await;
    let leader = server::leader(cluster).await;
    let killed = server::kill(leader).await;
    // Past the TTL, so a lock that did not survive has expired and been reported.
    tokio::time::sleep(ttl + SLACK).await;
    let (_, rejoined) = killed.rejoin().await;
    let first_fence = guard.fence();
    let outcome = match guard.ensure_held() {
        Ok(()) => {
            assert!(
                !waiter.is_finished(),
                "{name}: the contender's attempt ended (it acquired, or panicked) while the first holder \
                 still holds the lock"
            );
            let fenced = Transaction::new()
                .when_held(&first_fence)
                .put(format!("{key}/fenced"), "first");
            let committed = until_ok("a commit fenced by the surviving lock", || {
                holder.commit(fenced.clone())
            })
            .await;
            assert!(
                committed.is_committed() || guard.ensure_held().is_err(),
                "{name}: the store refused the fence of a lock its holder still holds"
            );
            // A failed unlock leaves the lock to expire: the contender still gets it.
            if let Err(err) = guard.unlock().await {
                assert!(is_outage(&err), "{name}: unlock after the failover: {err}");
            }
            "survived"
        }
        Err(_) => {
            drop(guard);
            "reported lost"
        }
    };
    let wait = ttl * 3 + RECOVERY;
    let taken = tokio::time::timeout(wait, waiter)
        .await
        .unwrap_or_else(|_| panic!("{name}: the contender did not acquire within {wait:?} ({outcome})"))
        .unwrap_or_else(|e| panic!("{name}: the contender panicked: {e}"));
    assert!(
        taken.fencing_token() > first_token,
        "{name}: fencing token {} after {first_token} ({outcome})",
        taken.fencing_token()
    );
    assert_fence_refused(name, holder.as_ref(), &first_fence, &key).await;
    println!(
        "{name}: lock across a failover (leader {} killed, TTL {ttl:?}): the lock {outcome}; tokens \
         {first_token} -> {}; the killed member rejoined in {rejoined:.1?}",
        leader.label(),
        taken.fencing_token()
    );
    let _ = taken.unlock().await;
    let _ = contender.delete_tree(&key).await;
}

/// `close()` while watches stream, a lock is held (and renewed), a contender waits for it
/// and calls run: it returns promptly, every background task ends, the in-flight work ends,
/// and the lock is free at once for another handle (nothing left on the server holds it).
pub async fn close_under_load(target: &Target) {
    let name = target.name();
    let store = target.open().await;
    let dir = target.unique("close");
    let lock_key = format!("{dir}/lock");
    let ttl = target.backend.lock_ttl();
    let mut work = Vec::new();
    for watched in [format!("{dir}/watched"), dir.clone()] {
        let mut events = store
            .watch_tree(&watched, &ReadOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: watch {watched}: {e}"));
        work.push(tokio::spawn(
            async move { while let Some(Ok(_)) = events.next().await {} },
        ));
    }
    let options = LockOptions::default().ttl(ttl);
    let held = lock(store.as_ref(), &lock_key, options.clone())
        .await
        .unwrap_or_else(|e| panic!("{name}: lock: {e}"));
    let waiter = store
        .new_lock(&lock_key, options.clone())
        .await
        .unwrap_or_else(|e| panic!("{name}: a second locker: {e}"));
    work.push(tokio::spawn(async move {
        let _ = waiter.lock().await;
    }));
    for task in 0..8 {
        let (store, key) = (Arc::clone(&store), format!("{dir}/watched/k{task}"));
        work.push(tokio::spawn(async move {
            while store.put(&key, "v".into(), &WriteOptions::default()).await.is_ok() {
                let _ = store.get(&key, &ReadOptions::default()).await;
                // The embedded store answers without waiting: let the other tasks run.
                tokio::task::yield_now().await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let begun = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), store.close())
        .await
        .unwrap_or_else(|_| panic!("{name}: close() did not return within 10 s"))
        .unwrap_or_else(|e| panic!("{name}: close: {e}"));
    let closed_in = begun.elapsed();
    let drained = Instant::now() + Duration::from_secs(5);
    while store.background_tasks() > 0 {
        assert!(
            Instant::now() < drained,
            "{name}: {} background task(s) still alive 5 s after close",
            store.background_tasks()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in work {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap_or_else(|_| panic!("{name}: a watch, lock waiter or call still runs 5 s after close"))
            .unwrap_or_else(|e| panic!("{name}: in-flight work panicked: {e}"));
    }
    assert!(
        held.ensure_held().is_err(),
        "{name}: a lock of a closed handle says held"
    );
    drop(held);
    // Another handle takes the lock at once: close released it on the server rather than
    // leaving its session, lease or record to expire.
    let other = target.open().await;
    let locker = other
        .new_lock(&lock_key, options)
        .await
        .unwrap_or_else(|e| panic!("{name}: a locker on a new handle: {e}"));
    let taken = locker
        .try_lock()
        .await
        .unwrap_or_else(|e| panic!("{name}: try_lock after close: {e}"));
    assert!(
        taken.is_some(),
        "{name}: the closed handle's lock is still held on the server"
    );
    if let Some(guard) = taken {
        let _ = guard.unlock().await;
    }
    println!("{name}: close under load returned in {closed_in:.2?}; every task ended; the lock was free at once");
    let _ = other.delete_tree(&dir).await;
    let _ = other.close().await;
}

/// Attempts per call, counted below the retry layer: a layer written as an application
/// would write one.
#[derive(Debug, Clone, Default)]
struct Attempts(Arc<std::sync::Mutex<Vec<&'static str>>>);

impl Attempts {
    fn of(&self, call: &str) -> usize {
        let seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.iter().filter(|name| **name == call).count()
    }
}

impl Intercept for Attempts {
    async fn intercept<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: Next<'a, T>) -> valkeyrie::Result<T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(call.name);
        next.run().await
    }
}

/// The application's layers across outages. With a [`RetryLayer`] over a per-attempt
/// [`TimeoutLayer`]: a read made while the connection is cut fails its attempts, then
/// succeeds once the connection is back; a write made while the server is paused (sent,
/// never answered) comes back as `Timeout` after one attempt and is never sent again.
pub async fn retry_layer_across_outages(target: &Target) {
    let name = target.name();
    let proxy = target.proxy().await;
    let attempts = Attempts::default();
    let per_attempt = REQUEST_TIMEOUT + SLACK;
    let kv = Kv::from(target.open_via(&proxy.address()).await)
        .layer(attempts.clone())
        .layer(TimeoutLayer::new(per_attempt))
        .layer(
            RetryLayer::new()
                .max_attempts(100)
                .max_elapsed(RECOVERY)
                .delays(Duration::from_millis(100), Duration::from_secs(1)),
        );
    let key = format!("{}/k", target.unique("retry-layer"));
    until_ok("put", || kv.put(&key, "before").into_future()).await;

    proxy.cut();
    let reader = tokio::spawn({
        let (kv, key) = (kv.clone(), key.clone());
        async move { kv.get(&key).await }
    });
    // Long enough that every backend fails an attempt: the timeout layer ends one at the latest.
    tokio::time::sleep(per_attempt * 2).await;
    proxy.restore();
    let read = reader.await.expect("the reader task");
    let read = read.unwrap_or_else(|e| panic!("{name}: the read did not recover through retries: {e}"));
    assert_eq!(read.map(|pair| pair.value), Some(Bytes::from("before")), "{name}");
    assert!(
        attempts.of("get") >= 2,
        "{name}: the read was not retried ({} attempts)",
        attempts.of("get")
    );

    let puts_before = attempts.of("put");
    let paused = server::pause(target.server()).await;
    let started = Instant::now();
    let written = kv.put(&key, "during").await;
    let waited = started.elapsed();
    paused.resume().await;
    let err = written.expect_err("a write to a paused server");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{name}: {err}");
    assert_eq!(
        err.status(),
        ErrorStatus::Temporary,
        "{name}: returned as is, not given up on: {err}"
    );
    assert_eq!(
        attempts.of("put") - puts_before,
        1,
        "{name}: the write was sent again after it timed out"
    );
    assert!(waited <= per_attempt + SLACK, "{name}: the write took {waited:?}");
    // Sent, so possibly applied: either value is right; the caller settles it by reading.
    let after = until_ok("get", || kv.get(&key).into_future())
        .await
        .map(|pair| pair.value);
    assert!(
        after == Some(Bytes::from("before")) || after == Some(Bytes::from("during")),
        "{name}: {after:?}"
    );
    until_ok("close", || kv.close()).await;
}
