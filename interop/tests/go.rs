//! A Go service (the Go library through `valkeyrie-go`) and a Rust service on one real
//! store: they read each other's data, compare-and-set with each other's indexes, exclude
//! each other through one lock, see each other's writes through watches, and see each
//! other's TTL keys expire. Run by `cargo xtask test --backend interop`, which starts the
//! servers and builds the Go program.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use valkeyrie::{ErrorKind, Kv, KvPair, LockOptions, WatchEvent};
use valkeyrie_interop::{duration_flag, Backend, GoPair, GoService};

/// How long a step that only waits on the server may take.
const STEP: Duration = Duration::from_secs(20);

fn unique(backend: Backend, name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("interop/{}/{name}-{}-{nanos}", backend.go_store(), std::process::id())
}

async fn sides(backend: Backend) -> (GoService, Kv) {
    let go = backend.go().unwrap_or_else(|e| panic!("{e}"));
    let rust = backend.open_rust().await.unwrap_or_else(|e| panic!("{e}"));
    (go, rust)
}

/// A tree with a binary value, an empty one, a 10 KiB one (which Redis scripts write in
/// place, `store()` in `valkeyrie-redis/src/scripts.rs`), non-ASCII keys and a nested key.
fn tree(dir: &str) -> BTreeMap<String, Vec<u8>> {
    [
        ("binary", vec![0, 1, 0x7f, 0x80, 0xfe, 0xff, b'\n', b'"']),
        ("large", (0..10 * 1024).map(|i| (i % 251) as u8).collect()),
        ("empty", vec![]),
        ("ünïcødé/ключ", "значение ✓".as_bytes().to_vec()),
        ("nested/deeper/leaf", b"leaf".to_vec()),
    ]
    .into_iter()
    .map(|(name, value)| (format!("{dir}/{name}"), value))
    .collect()
}

/// Whether a Rust index and a Go index name the same write. ZooKeeper's Rust index carries
/// the node's incarnation above the data version, which is Go's whole index.
fn same_index(backend: Backend, rust: u64, go: u64) -> bool {
    match backend {
        Backend::ZooKeeper => rust & 0xffff_ffff == go,
        // Go's raw codec reports index 0 for every value: it keeps none.
        Backend::RedisRaw => go == 0,
        _ => rust == go,
    }
}

fn as_map(pairs: impl IntoIterator<Item = (String, Vec<u8>)>) -> BTreeMap<String, Vec<u8>> {
    pairs.into_iter().collect()
}

fn go_map(pairs: &[GoPair]) -> BTreeMap<String, Vec<u8>> {
    as_map(
        pairs
            .iter()
            .map(|p| (p.key.trim_start_matches('/').to_owned(), p.value.clone())),
    )
}

fn rust_map(pairs: &[KvPair]) -> BTreeMap<String, Vec<u8>> {
    as_map(pairs.iter().map(|p| (p.key.clone(), p.value.to_vec())))
}

/// Checks that both sides list `dir` alike and that it holds `tree`. On ZooKeeper the
/// directory nodes a writer created list too (Go makes them empty, Rust holds the legacy
/// 0x01 marker in them, which Rust does not list as keys), so there the check is that
/// every key of the tree is listed as written.
async fn check_listing(backend: Backend, go: &GoService, rust: &Kv, dir: &str, tree: &BTreeMap<String, Vec<u8>>) {
    let go_listed = go_map(&go.list(dir).await.expect("Go lists the tree"));
    let rust_listed = rust_map(&rust.list(dir).await.expect("Rust lists the tree"));
    if backend == Backend::ZooKeeper {
        for (key, value) in tree {
            assert_eq!(go_listed.get(key), Some(value), "Go lists {key}");
            assert_eq!(rust_listed.get(key), Some(value), "Rust lists {key}");
        }
    } else if backend == Backend::RedisRaw {
        // The Go store's List skips empty replies of its MGET, so with the raw codec an
        // empty value is missing from Go's listing (its Get reads it).
        let non_empty: BTreeMap<_, _> = tree
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(go_listed, non_empty, "Go lists the tree but its empty value");
        assert_eq!(&rust_listed, tree, "Rust lists exactly the tree");
    } else {
        assert_eq!(&go_listed, tree, "Go lists exactly the tree");
        assert_eq!(&rust_listed, tree, "Rust lists exactly the tree");
    }
}

async fn go_writes_rust_reads(backend: Backend) {
    let (go, rust) = sides(backend).await;
    let dir = unique(backend, "go-tree");
    let tree = tree(&dir);
    for (key, value) in &tree {
        go.put(key, value, None).await.expect("Go puts");
    }
    for (key, value) in &tree {
        let from_go = go.get(key).await.expect("Go gets");
        let from_rust = rust.get(key).await.expect("Rust gets").expect("Rust finds the key");
        assert_eq!(from_rust.value, Bytes::from(value.clone()), "{key}");
        assert!(
            same_index(backend, from_rust.last_index, from_go.index),
            "{key}: Rust index {} is Go index {}",
            from_rust.last_index,
            from_go.index
        );
    }
    check_listing(backend, &go, &rust, &dir, &tree).await;
    assert!(
        rust.delete_tree(&dir).await.expect("clean up"),
        "{dir} was there to clean up"
    );
}

async fn rust_writes_go_reads(backend: Backend) {
    let (go, rust) = sides(backend).await;
    let dir = unique(backend, "rust-tree");
    let tree = tree(&dir);
    for (key, value) in &tree {
        rust.put(key, value.clone()).await.expect("Rust puts");
    }
    for (key, value) in &tree {
        let from_rust = rust.get(key).await.expect("Rust gets").expect("Rust finds the key");
        let from_go = go.get(key).await.expect("Go gets");
        assert_eq!(&from_go.value, value, "{key}");
        assert!(
            same_index(backend, from_rust.last_index, from_go.index),
            "{key}: Go index {} is Rust index {}",
            from_go.index,
            from_rust.last_index
        );
    }
    check_listing(backend, &go, &rust, &dir, &tree).await;
    assert!(
        rust.delete_tree(&dir).await.expect("clean up"),
        "{dir} was there to clean up"
    );
}

async fn atomic_put_across_languages(backend: Backend) {
    let (go, rust) = sides(backend).await;
    let key = unique(backend, "cas");
    let first = rust.put(&key, "rust-0").if_absent().await.expect("Rust creates");
    let go_index = go
        .atomic_put(&key, b"go-1", Some(first.last_index))
        .await
        .expect("Go updates over the index Rust returned");
    let seen = rust.get(&key).await.expect("Rust reads").expect("Rust finds the key");
    assert_eq!(seen.value, "go-1");
    assert!(same_index(backend, seen.last_index, go_index));

    let second = rust
        .put(&key, "rust-2")
        .if_index(go_index)
        .await
        .expect("Rust updates over the index Go returned");

    let stale = go.atomic_put(&key, b"go-stale", Some(go_index)).await;
    assert_eq!(
        stale.as_ref().err().and_then(|e| e.kind()),
        Some("key_modified"),
        "Go with a stale index: {stale:?}"
    );
    let stale = rust.put(&key, "rust-stale").if_index(first.last_index).await;
    assert_eq!(
        stale.as_ref().map_err(valkeyrie::Error::kind).err(),
        Some(ErrorKind::KeyModified),
        "Rust with a stale index: {stale:?}"
    );
    go.atomic_put(&key, b"go-3", Some(second.last_index))
        .await
        .expect("Go updates over Rust's latest index");
    assert_eq!(go.get(&key).await.expect("Go reads").value, b"go-3");
    assert!(
        rust.delete(&key).await.expect("clean up"),
        "{key} was there to clean up"
    );
}

/// Lock options both sides use. Redis: Go waiters take a lock only once its key is gone,
/// so Rust deletes it on unlock there (as the Go store always does).
fn rust_lock_options(backend: Backend, value: &'static str) -> LockOptions {
    let mut options = LockOptions::with_value(value);
    options.delete_on_unlock = backend == Backend::Redis;
    options
}

/// The Go lock's TTL: Consul's sessions need at least 10 s, and the Go store makes them
/// half the lock's TTL.
const GO_LOCK_TTL: Duration = Duration::from_secs(20);

async fn go_lock_excludes_rust(backend: Backend) {
    let (go, rust) = sides(backend).await;
    let key = unique(backend, "go-holds");
    let mut holder = go
        .spawn(
            &duration_flag("-ttl", GO_LOCK_TTL),
            &["lock-hold", &key, "676f2d686f6c646572"],
        )
        .expect("Go starts");
    holder.expect_event("locked", STEP).await.expect("Go locks");
    let seen = rust
        .get(&key)
        .await
        .expect("Rust reads the lock value")
        .expect("Rust finds the lock key");
    assert_eq!(seen.value, "go-holder");

    let locker = rust
        .lock(&key)
        .options(rust_lock_options(backend, "rust-holder"))
        .locker()
        .await
        .expect("new_lock");
    assert!(
        locker.try_lock().await.expect("try_lock").is_none(),
        "Rust's try_lock fails while Go holds the lock"
    );
    let waiting = tokio::spawn(async move {
        let guard = locker.lock().await;
        (guard, Instant::now(), locker)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "Rust's lock waits while Go holds it");
    let released_at = Instant::now();
    holder.release().await.expect("tell Go to unlock");
    holder.expect_event("unlocked", STEP).await.expect("Go unlocks");
    holder.finish(STEP).await.expect("Go ends");
    let (guard, acquired_at, _locker) = tokio::time::timeout(STEP, waiting)
        .await
        .expect("Rust acquires soon after Go unlocks")
        .expect("the waiting task");
    let guard = guard.expect("Rust locks");
    assert!(acquired_at >= released_at);
    assert_eq!(go.get(&key).await.expect("Go reads").value, b"rust-holder");
    guard.unlock().await.expect("Rust unlocks");
    let _ = rust.delete(&key).await;
}

async fn rust_lock_excludes_go(backend: Backend) {
    let (go, rust) = sides(backend).await;
    let key = unique(backend, "rust-holds");
    let locker = rust
        .lock(&key)
        .options(rust_lock_options(backend, "rust-holder"))
        .locker()
        .await
        .expect("new_lock");
    let guard = locker.lock().await.expect("Rust locks");
    assert_eq!(
        go.get(&key).await.expect("Go reads the lock value").value,
        b"rust-holder"
    );
    assert!(
        !go.try_lock(&key, b"go-holder", Duration::from_secs(2))
            .await
            .expect("Go tries"),
        "Go's lock stays busy while Rust holds it"
    );
    let mut waiter = go
        .spawn(
            &duration_flag("-ttl", GO_LOCK_TTL),
            &["lock-hold", &key, "676f2d686f6c646572"],
        )
        .expect("Go starts");
    let early = waiter.next(Duration::from_secs(2)).await;
    assert!(early.is_err(), "Go's lock waits while Rust holds it: {early:?}");
    guard.unlock().await.expect("Rust unlocks");
    waiter
        .expect_event("locked", STEP)
        .await
        .expect("Go locks after Rust unlocked");
    let seen = rust
        .get(&key)
        .await
        .expect("Rust reads")
        .expect("Rust finds the lock key");
    assert_eq!(seen.value, "go-holder");
    assert!(
        locker.try_lock().await.expect("try_lock").is_none(),
        "Rust's try_lock fails while Go holds the lock"
    );
    waiter.release().await.expect("tell Go to unlock");
    waiter.expect_event("unlocked", STEP).await.expect("Go unlocks");
    waiter.finish(STEP).await.expect("Go ends");
    let _ = rust.delete(&key).await;
}

/// The values a watch case writes, one at a time.
fn sequence(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("value-{i}")).collect()
}

async fn rust_watch_sees_go_writes(backend: Backend) {
    let (go, rust) = sides(backend).await;
    let key = unique(backend, "go-writes");
    rust.put(&key, "value-0").await.expect("Rust puts");
    let mut events = rust.watch(&key).await.expect("Rust watches");
    let mut seen = Vec::new();
    let expected = sequence(5);
    let writer = {
        let (go, key, expected) = (go.clone(), key.clone(), expected.clone());
        tokio::spawn(async move {
            for value in &expected {
                go.put(&key, value.as_bytes(), None).await.expect("Go puts");
            }
        })
    };
    let deadline = Instant::now() + STEP * 2;
    while seen.last() != expected.last() {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.next())
            .await
            .unwrap_or_else(|_| panic!("Rust saw only {seen:?} of Go's writes"))
            .expect("the watch goes on")
            .expect("a watch event");
        let value = match event {
            WatchEvent::Put(pair) => pair.value,
            WatchEvent::Snapshot(pairs) => match pairs.into_iter().next() {
                Some(pair) => pair.value,
                None => continue,
            },
            other => panic!("nothing deletes {key}: {other:?}"),
        };
        let value = String::from_utf8_lossy(&value).into_owned();
        if seen.last() != Some(&value) {
            seen.push(value);
        }
    }
    writer.await.expect("the Go writer");
    let mut all = vec!["value-0".to_owned()];
    all.extend(expected);
    assert_eq!(seen, all, "Rust sees every Go write, in order");
    assert!(
        rust.delete(&key).await.expect("clean up"),
        "{key} was there to clean up"
    );
}

async fn go_watch_sees_rust_writes(backend: Backend) {
    let (go, rust) = sides(backend).await;
    let key = unique(backend, "rust-writes");
    rust.put(&key, "value-0").await.expect("Rust puts");
    let expected = sequence(5);
    let flags = vec!["-count".to_owned(), (expected.len() + 1).to_string()];
    let mut watcher = go.spawn(&flags, &["watch", &key]).expect("Go starts");
    watcher.expect_event("ready", STEP).await.expect("Go watches");
    let first = watcher.next_pair(STEP).await.expect("Go's first event");
    assert_eq!(first.value, b"value-0", "Go's watch starts with the current value");
    for value in &expected {
        rust.put(&key, value.clone()).await.expect("Rust puts");
        let seen = watcher.next_pair(STEP).await.expect("Go sees the write");
        assert_eq!(
            String::from_utf8_lossy(&seen.value),
            *value,
            "Go sees every Rust write, in order"
        );
    }
    watcher.finish(STEP).await.expect("Go ends");
    assert!(
        rust.delete(&key).await.expect("clean up"),
        "{key} was there to clean up"
    );
}

async fn wait_until_gone<F, Fut>(what: &str, within: Duration, mut present: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while present().await {
        assert!(Instant::now() < deadline, "{what} still there after {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn ttl_keys_expire_for_the_other_side(backend: Backend) {
    let (go, rust) = sides(backend).await;
    let rust_key = unique(backend, "rust-ttl");
    let go_key = unique(backend, "go-ttl");
    let caps = rust.capabilities();
    // Go makes Consul TTL sessions half the TTL, and Consul needs 10 s at least.
    let ttl = match backend {
        Backend::Consul => Duration::from_secs(20),
        _ => Duration::from_secs(2),
    }
    .max(caps.min_ttl);
    // How long a server may take past the TTL: Consul ends sessions up to twice their TTL
    // late; ZooKeeper's TTL nodes wait for its container sweep.
    let grace = ttl * 2 + Duration::from_secs(15);

    rust.put(&rust_key, "from-rust")
        .ttl(ttl)
        .await
        .expect("Rust puts with a TTL");
    // ZooKeeper: the Go store makes TTL keys ephemeral, gone when its session ends; the
    // writer keeps its session for a while, then exits.
    let hold = if backend == Backend::ZooKeeper {
        ttl
    } else {
        Duration::ZERO
    };
    let mut flags = duration_flag("-ttl", ttl);
    flags.extend(duration_flag("-hold", hold));
    let mut writer = go
        .spawn(&flags, &["put", &go_key, &valkeyrie_interop::to_hex(b"from-go")])
        .expect("Go starts");
    writer.expect_event("written", STEP).await.expect("Go puts with a TTL");

    assert_eq!(
        go.get(&rust_key).await.expect("Go reads Rust's TTL key").value,
        b"from-rust"
    );
    let seen = rust
        .get(&go_key)
        .await
        .expect("Rust reads Go's TTL key")
        .expect("Rust finds Go's TTL key");
    assert_eq!(seen.value, "from-go");
    writer.finish(hold + STEP).await.expect("the Go writer ends");

    let go_side = go.clone();
    wait_until_gone("Rust's TTL key, for Go", grace, || {
        let (go, key) = (go_side.clone(), rust_key.clone());
        async move {
            match go.get(&key).await {
                Ok(_) => true,
                Err(err) if err.kind() == Some("key_not_found") => false,
                Err(err) => panic!("Go get: {err}"),
            }
        }
    })
    .await;
    wait_until_gone("Go's TTL key, for Rust", grace, || {
        let (rust, key) = (rust.clone(), go_key.clone());
        async move {
            rust.get(&key)
                .await
                .unwrap_or_else(|err| panic!("Rust get: {err}"))
                .is_some()
        }
    })
    .await;
}

/// The cases of plain data, which hold on every pairing.
macro_rules! data_cases {
    ($backend:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn go_writes_rust_reads() {
            super::go_writes_rust_reads($backend).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rust_writes_go_reads() {
            super::rust_writes_go_reads($backend).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rust_watch_sees_go_writes() {
            super::rust_watch_sees_go_writes($backend).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn go_watch_sees_rust_writes() {
            super::go_watch_sees_rust_writes($backend).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ttl_keys_expire_for_the_other_side() {
            super::ttl_keys_expire_for_the_other_side($backend).await;
        }
    };
}

macro_rules! interop_cases {
    ($($module:ident => $backend:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            data_cases!($backend);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn atomic_put_across_languages() {
                super::atomic_put_across_languages($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn go_lock_excludes_rust() {
                super::go_lock_excludes_rust($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rust_lock_excludes_go() {
                super::rust_lock_excludes_go($backend).await;
            }
        }
    )*};
}

interop_cases! {
    etcd => Backend::Etcd,
    redis => Backend::Redis,
    zookeeper => Backend::ZooKeeper,
    consul => Backend::Consul,
}

/// Plain values on Redis: a Go service on `valkeyrie.NewStore` (the raw codec) and a Rust
/// one on `value_encoding=raw`. Only the data cases: the Go raw codec's compare-and-set and
/// lock renewal fail on its own values (`valkeyrie-redis`'s docs list what works).
mod redis_raw {
    data_cases!(valkeyrie_interop::Backend::RedisRaw);
}
