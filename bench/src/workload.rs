//! The workloads, each run the same way against both sides of a comparison, and what one
//! run measures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;

use crate::driver::{BenchResult, Driver};
use crate::memory;

/// How long one watch notification may take before the run fails.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a workload does.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Kind {
    /// `put` of `size`-byte values from `concurrency` tasks.
    Put { size: usize, concurrency: usize },
    /// `get` of `size`-byte values from `concurrency` tasks.
    Get { size: usize, concurrency: usize },
    /// Read-then-compare-and-set increments of one key from `tasks` tasks, retried on conflict.
    Increment { tasks: usize },
    /// `list` of a directory of `keys` keys of `size` bytes each.
    List { keys: usize, size: usize },
    /// Time from a `put` returning to a watcher of the key receiving the value.
    WatchLatency,
    /// Lock acquire-release cycles on one key from `contenders` tasks.
    Lock { contenders: usize },
}

impl Kind {
    /// How many tasks run operations at once: a run never has more operations in flight.
    pub(crate) fn tasks(self) -> usize {
        match self {
            Kind::Put { concurrency, .. } | Kind::Get { concurrency, .. } => concurrency,
            Kind::Increment { tasks } => tasks,
            Kind::Lock { contenders } => contenders,
            Kind::List { .. } | Kind::WatchLatency => 1,
        }
    }
}

/// One workload: a name for the table and what it does.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Workload {
    /// The row name.
    pub(crate) name: &'static str,
    /// What it does.
    pub(crate) kind: Kind,
}

/// The workloads of every run, in table order.
pub(crate) const WORKLOADS: [Workload; 13] = [
    Workload {
        name: "put 100 B, c1",
        kind: Kind::Put {
            size: 100,
            concurrency: 1,
        },
    },
    Workload {
        name: "put 100 B, c64",
        kind: Kind::Put {
            size: 100,
            concurrency: 64,
        },
    },
    Workload {
        name: "put 10 KiB, c1",
        kind: Kind::Put {
            size: 10 * 1024,
            concurrency: 1,
        },
    },
    Workload {
        name: "put 10 KiB, c64",
        kind: Kind::Put {
            size: 10 * 1024,
            concurrency: 64,
        },
    },
    Workload {
        name: "get 100 B, c1",
        kind: Kind::Get {
            size: 100,
            concurrency: 1,
        },
    },
    Workload {
        name: "get 100 B, c64",
        kind: Kind::Get {
            size: 100,
            concurrency: 64,
        },
    },
    Workload {
        name: "get 10 KiB, c1",
        kind: Kind::Get {
            size: 10 * 1024,
            concurrency: 1,
        },
    },
    Workload {
        name: "get 10 KiB, c64",
        kind: Kind::Get {
            size: 10 * 1024,
            concurrency: 64,
        },
    },
    Workload {
        name: "atomic_put increments, 16 tasks",
        kind: Kind::Increment { tasks: 16 },
    },
    Workload {
        name: "list 10 000 keys",
        kind: Kind::List {
            keys: 10_000,
            size: 1024,
        },
    },
    Workload {
        name: "watch latency",
        kind: Kind::WatchLatency,
    },
    Workload {
        name: "lock cycles, uncontended",
        kind: Kind::Lock { contenders: 1 },
    },
    Workload {
        name: "lock cycles, 8 contenders",
        kind: Kind::Lock { contenders: 8 },
    },
];

/// How much work one measured run does; `--quick` divides it.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Scale {
    /// Operations of a put or get run, across its tasks.
    pub(crate) ops: usize,
    /// Increments per task.
    pub(crate) increments: usize,
    /// Lists per run.
    pub(crate) lists: usize,
    /// Notifications per watch run.
    pub(crate) notifications: usize,
    /// Lock cycles per run, across its contenders (a multiple of 8, so that 8 contenders
    /// share it evenly). Uncontended cycles take a few round trips each: fewer than a
    /// couple of hundred measure mostly noise.
    pub(crate) lock_cycles: usize,
}

impl Scale {
    /// The full run.
    pub(crate) const FULL: Scale = Scale {
        ops: 4000,
        increments: 25,
        lists: 5,
        notifications: 100,
        lock_cycles: 200,
    };
    /// `--quick`.
    pub(crate) const QUICK: Scale = Scale {
        ops: 640,
        increments: 8,
        lists: 1,
        notifications: 25,
        lock_cycles: 48,
    };

    /// A much smaller run, to warm connections, caches and the server up.
    pub(crate) fn warm_up(self) -> Scale {
        Scale {
            ops: (self.ops / 8).max(64),
            increments: 2,
            lists: 1,
            notifications: 3,
            lock_cycles: 8,
        }
    }
}

/// What one run of one workload on one side measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// Operations completed.
    pub(crate) ops: usize,
    /// Wall time of the run.
    pub(crate) elapsed: Duration,
    /// Each operation's latency, sorted.
    #[serde(skip)]
    pub(crate) latencies: Vec<Duration>,
    /// Peak resident memory of the process during the run, in KiB.
    pub(crate) peak_rss_kib: u64,
    /// Resident memory when the run started, in KiB.
    pub(crate) start_rss_kib: u64,
    /// For `list`: the most heap bytes one listing held above the level at its start.
    pub(crate) peak_heap_growth: u64,
}

impl Sample {
    /// Operations per second.
    pub(crate) fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0..=1).
    pub(crate) fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }
}

/// Where a workload's keys live, shared by both sides (they use the same layout).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The directory of this workload's keys.
    pub(crate) dir: String,
}

impl Keys {
    fn key(&self, name: impl std::fmt::Display) -> String {
        format!("{}/{name}", self.dir)
    }

    /// The key a `put` task writes its `i`th value to.
    pub(crate) fn put_key(&self, task: usize, i: usize) -> String {
        self.key(format!("put-{task}-{}", i % 8))
    }

    /// The `n`th key a `get` reads.
    pub(crate) fn get_key(&self, n: usize) -> String {
        self.key(format!("get-{}", n % 64))
    }

    /// The contended counter.
    pub(crate) fn counter(&self) -> String {
        self.key("counter")
    }

    /// The listed directory.
    pub(crate) fn list_dir(&self) -> String {
        self.key("list")
    }

    /// The `n`th key of the listed directory.
    pub(crate) fn list_key(&self, n: usize) -> String {
        format!("{}/{n:05}", self.list_dir())
    }

    /// The watched key.
    pub(crate) fn watched(&self) -> String {
        self.key("watched")
    }

    /// The lock's key.
    pub(crate) fn lock(&self) -> String {
        self.key("lock")
    }
}

/// A value of `size` bytes.
pub(crate) fn value(size: usize, seed: usize) -> Bytes {
    let byte = b'a' + (seed % 26) as u8;
    Bytes::from(vec![byte; size])
}

/// Writes what `workload` reads before it runs (through either side: the layout is the same).
pub(crate) async fn prepare(driver: &dyn Driver, workload: Workload, keys: &Keys) -> BenchResult<()> {
    match workload.kind {
        Kind::Get { size, .. } => {
            for n in 0..64 {
                driver.put(&keys.get_key(n), value(size, n)).await?;
            }
        }
        Kind::Increment { .. } => driver.put(&keys.counter(), Bytes::from_static(b"0")).await?,
        Kind::List { keys: count, size } => {
            let shared = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            // Written by 32 tasks: a 10 000-key directory takes long one at a time on stores
            // answering in milliseconds.
            for task in 0..32 {
                let (shared, keys) = (Arc::clone(&shared), keys.clone());
                tasks.push(async move {
                    loop {
                        let n = shared.fetch_add(1, Ordering::Relaxed) as usize;
                        if n >= count {
                            return Ok::<(), String>(());
                        }
                        driver.put(&keys.list_key(n), value(size, n + task)).await?;
                    }
                });
            }
            for result in futures_util::future::join_all(tasks).await {
                result?;
            }
        }
        Kind::WatchLatency => driver.put(&keys.watched(), Bytes::from_static(b"start")).await?,
        Kind::Put { .. } | Kind::Lock { .. } => {}
    }
    Ok(())
}

/// Runs `workload` once on `driver` at `scale`.
pub(crate) async fn run(
    driver: &dyn Driver,
    workload: Workload,
    keys: &Keys,
    scale: Scale,
    round: usize,
) -> BenchResult<Sample> {
    memory::reset_peak();
    let start_rss_kib = memory::current_kib();
    let mut peak_heap_growth = 0;
    let started = Instant::now();
    let latencies = match workload.kind {
        Kind::Put { size, concurrency } => {
            spread(concurrency, scale.ops, |task, i| {
                let key = keys.put_key(task, i);
                async move { driver.put(&key, value(size, i + round)).await }
            })
            .await?
        }
        Kind::Get { concurrency, .. } => {
            spread(concurrency, scale.ops, |task, i| {
                let key = keys.get_key(task * 7 + i);
                async move { driver.get(&key).await.map(drop) }
            })
            .await?
        }
        Kind::Increment { tasks } => increments(driver, keys, tasks, scale.increments).await?,
        Kind::List { keys: count, .. } => {
            let mut latencies = Vec::new();
            for _ in 0..scale.lists {
                let begun = Instant::now();
                let (listed, held) = memory::heap_peak_during(driver.list(&keys.list_dir())).await;
                latencies.push(begun.elapsed());
                peak_heap_growth = peak_heap_growth.max(held);
                let listed = listed?;
                if listed != count {
                    return Err(format!("listed {listed} keys, expected {count}"));
                }
            }
            latencies
        }
        Kind::WatchLatency => watch_latency(driver, keys, scale.notifications, round).await?,
        Kind::Lock { contenders } => {
            spread(contenders, scale.lock_cycles, |_, _| {
                let key = keys.lock();
                async move { driver.lock_cycle(&key).await }
            })
            .await?
        }
    };
    let elapsed = started.elapsed();
    let mut latencies = latencies;
    latencies.sort_unstable();
    Ok(Sample {
        ops: latencies.len(),
        elapsed,
        latencies,
        peak_rss_kib: memory::peak_kib(),
        start_rss_kib,
        peak_heap_growth,
    })
}

/// Runs `total` operations from `tasks` concurrent tasks (operation `i` of task `t` is
/// `op(t, i)`); each operation's latency.
async fn spread<'a, F, Fut>(tasks: usize, total: usize, op: F) -> BenchResult<Vec<Duration>>
where
    F: Fn(usize, usize) -> Fut + Sync + 'a,
    Fut: std::future::Future<Output = BenchResult<()>> + Send + 'a,
{
    let next = AtomicU64::new(0);
    let op = &op;
    let next = &next;
    let runs = (0..tasks).map(|task| async move {
        let mut latencies = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
            if i >= total {
                return Ok::<_, String>(latencies);
            }
            let begun = Instant::now();
            op(task, i).await?;
            latencies.push(begun.elapsed());
        }
    });
    let mut all = Vec::with_capacity(total);
    for result in futures_util::future::join_all(runs).await {
        all.extend(result?);
    }
    Ok(all)
}

/// `tasks` tasks each increment the counter `per_task` times; each increment's latency,
/// retries included. Checks that no increment was lost.
async fn increments(driver: &dyn Driver, keys: &Keys, tasks: usize, per_task: usize) -> BenchResult<Vec<Duration>> {
    let counter = keys.counter();
    let (start, _) = driver.get_indexed(&counter).await?;
    let start: u64 = parse_counter(&start)?;
    let latencies = spread(tasks, tasks * per_task, |_, _| {
        let counter = counter.clone();
        async move {
            loop {
                let (current, index) = driver.get_indexed(&counter).await?;
                let next = parse_counter(&current)? + 1;
                if driver
                    .compare_and_set(&counter, Bytes::from(next.to_string()), index)
                    .await?
                {
                    return Ok(());
                }
            }
        }
    })
    .await?;
    let (end, _) = driver.get_indexed(&counter).await?;
    let end = parse_counter(&end)?;
    let expected = start + (tasks * per_task) as u64;
    if end != expected {
        return Err(format!("counter at {end}, expected {expected}: increments were lost"));
    }
    Ok(latencies)
}

fn parse_counter(value: &[u8]) -> BenchResult<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("counter holds {:?}", String::from_utf8_lossy(value)))
}

/// Puts `n` values one after the other, each once the watcher has the previous one; the
/// time from each put returning to the watcher receiving its value.
async fn watch_latency(driver: &dyn Driver, keys: &Keys, n: usize, round: usize) -> BenchResult<Vec<Duration>> {
    let key = keys.watched();
    let mut values = driver.watch(&key).await?;
    // The current value comes first.
    tokio::time::timeout(NOTIFY_TIMEOUT, values.next())
        .await
        .map_err(|_| "the watch sent no current value".to_owned())?
        .ok_or("the watch ended")??;
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let expected = Bytes::from(format!("round-{round}-{i}"));
        driver.put(&key, expected.clone()).await?;
        let returned = Instant::now();
        loop {
            let got = tokio::time::timeout(NOTIFY_TIMEOUT, values.next())
                .await
                .map_err(|_| format!("no notification for write {i} within {NOTIFY_TIMEOUT:?}"))?
                .ok_or("the watch ended")??;
            if got == expected {
                break;
            }
        }
        latencies.push(returned.elapsed());
    }
    Ok(latencies)
}
