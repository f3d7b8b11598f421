//! The conformance cases, one public function each; see the module docs of
//! [`testsuite`](super) for how they are run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use futures_util::StreamExt;

use super::support::{
    eventually, fails, get, get_opt, next_change, next_change_within, next_event, ok, put, relative_keys, Case,
    EVENT_TIMEOUT,
};
use super::TestTarget;
use crate::error::{ErrorKind, LostReason};
use crate::kv::{KvPair, LockOptions, ReadOptions, WriteOptions};
use crate::raw::local::LockRevocation;
use crate::watch::WatchEvent;

fn read() -> ReadOptions {
    ReadOptions::default()
}

fn write() -> WriteOptions {
    WriteOptions::default()
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Go `testPutGetDeleteExists`: put, get, exists and delete on plain, trailing-slash and
/// nested keys; `last_index` is never 0.
pub async fn put_get_delete_exists(target: &dyn TestTarget) {
    let case = Case::start(target, "put_get_delete_exists").await;
    let store = case.store.as_ref();
    for relative in ["k", "k/", "k/testbar/", "k/testbar/testfoobar"] {
        let key = case.key(relative);
        put(store, &key, "bar").await;
        let pair = get(store, &key).await;
        assert_eq!(pair.value, "bar", "{key}");
        assert_eq!(pair.key, key.trim_end_matches('/'), "get returns the normalized key");
        assert_ne!(pair.last_index, 0, "{key}: last_index of an existing key is never 0");
        assert!(
            ok(store.exists(&key, &read()).await, "exists"),
            "{key} exists after put"
        );
        ok(store.delete(&key).await, &format!("delete {key}"));
        fails(
            store.get(&key, &read()).await,
            ErrorKind::KeyNotFound,
            "get after delete",
        );
        assert!(
            !ok(store.exists(&key, &read()).await, "exists"),
            "{key} is gone after delete"
        );
    }
    case.finish().await;
}

/// Reading a missing key is `KeyNotFound`, naming the store and the key.
pub async fn get_missing_key(target: &dyn TestTarget) {
    let case = Case::start(target, "get_missing_key").await;
    let key = case.key("not_exist_key");
    let err = case.store.get(&key, &read()).await.expect_err("get of a missing key");
    assert_eq!(err.kind(), ErrorKind::KeyNotFound, "{err}");
    assert_eq!(err.store(), case.store.name(), "{err}");
    assert_eq!(err.key(), Some(key.as_str()), "{err}");
    assert!(!ok(case.store.exists(&key, &read()).await, "exists"));
    case.finish().await;
}

/// Deleting a missing key is `KeyNotFound`.
pub async fn delete_missing_key(target: &dyn TestTarget) {
    let case = Case::start(target, "delete_missing_key").await;
    fails(
        case.store.delete(&case.key("never_written")).await,
        ErrorKind::KeyNotFound,
        "delete of a missing key",
    );
    case.finish().await;
}

/// Every write gives the key a larger `last_index`, and what `put` stored is what `get` and
/// `atomic_put` report; for small and 4 KiB values alike, with and without a TTL (a backend
/// may write large values another way: Redis puts the index into them in place).
pub async fn index_changes_on_every_write(target: &dyn TestTarget) {
    let case = Case::start(target, "index_changes_on_every_write").await;
    let store = case.store.as_ref();
    let key = case.key("counter");
    let value = |round: usize| match round % 2 {
        0 => Bytes::from(format!("v{round}")),
        _ => Bytes::from((0..4096).map(|i: usize| ((i + round) % 251) as u8).collect::<Vec<u8>>()),
    };
    let mut last = 0;
    for round in 0..6 {
        // Rounds 2 and 3 expire (one small value, one large); the rest, and so the value
        // the compare-and-sets below start from, do not.
        let options = match round {
            2 | 3 if store.capabilities().ttl => WriteOptions::with_ttl(Duration::from_secs(60)),
            _ => write(),
        };
        ok(
            store.put(&key, value(round), &options).await,
            &format!("put round {round}"),
        );
        let pair = get(store, &key).await;
        assert_eq!(pair.value, value(round), "round {round}: get reads what put wrote");
        assert!(
            pair.last_index > last,
            "round {round}: index {} not above {last}",
            pair.last_index
        );
        last = pair.last_index;
    }
    for round in 6..8 {
        let current = get(store, &key).await;
        let written = ok(
            store.atomic_put(&key, value(round), Some(&current), &write()).await,
            "atomic_put",
        );
        assert!(written.last_index > last, "atomic_put returns the new, larger index");
        assert_eq!(get(store, &key).await, written, "atomic_put returns what get reads");
        last = written.last_index;
    }
    case.finish().await;
}

/// Go `testList`: recursive, `dir` and `dir/` alike, the directory key excluded, a leaf lists
/// empty, a missing directory is `KeyNotFound`; plus sorted keys and values.
pub async fn list(target: &dyn TestTarget) {
    let case = Case::start(target, "list").await;
    let store = case.store.as_ref();
    let dir = case.key("testList");
    put(store, &dir, "").await;
    put(store, &case.key("testList/child"), "first").await;
    put(store, &case.key("testList/subfolder"), "second").await;
    for name in ["key3", "key1", "key2"] {
        put(store, &case.key(&format!("testList/subfolder/{name}")), "value").await;
    }
    for parent in [dir.clone(), format!("{dir}/"), format!("/{dir}")] {
        let pairs = ok(store.list(&parent, &read()).await, &format!("list {parent}"));
        let keys = relative_keys(&case, &pairs);
        assert_eq!(
            keys,
            [
                "testList/child",
                "testList/subfolder",
                "testList/subfolder/key1",
                "testList/subfolder/key2",
                "testList/subfolder/key3"
            ],
            "list {parent}: recursive, sorted, without the directory itself"
        );
        assert_eq!(pairs[0].value, "first");
        assert!(
            pairs.iter().all(|p| p.last_index != 0),
            "every listed pair has an index"
        );
    }
    let leaf = ok(store.list(&case.key("testList/child"), &read()).await, "list of a leaf");
    assert!(leaf.is_empty(), "a leaf lists empty, got {leaf:?}");
    let sub = ok(
        store.list(&case.key("testList/subfolder"), &read()).await,
        "list subfolder",
    );
    assert_eq!(
        relative_keys(&case, &sub),
        [
            "testList/subfolder/key1",
            "testList/subfolder/key2",
            "testList/subfolder/key3"
        ]
    );
    fails(
        store.list(&case.key("idontexist"), &read()).await,
        ErrorKind::KeyNotFound,
        "list of a missing directory",
    );
    let implicit = ok(
        store.list(&case.key(""), &read()).await,
        "list of a directory that only exists as a prefix",
    );
    assert_eq!(
        implicit.len(),
        6,
        "a directory with no key of its own still lists what is below it"
    );
    case.finish().await;
}

/// `list("dir")` never returns `dir2/x` or `dirx`: directories end at a `/`.
pub async fn list_excludes_sibling_prefixes(target: &dyn TestTarget) {
    let case = Case::start(target, "list_excludes_sibling_prefixes").await;
    let store = case.store.as_ref();
    for key in ["dir/a", "dir2/b", "dirx", "di"] {
        put(store, &case.key(key), "v").await;
    }
    let pairs = ok(store.list(&case.key("dir"), &read()).await, "list dir");
    assert_eq!(relative_keys(&case, &pairs), ["dir/a"]);
    ok(store.delete_tree(&case.key("dir")).await, "delete_tree dir");
    assert!(
        get_opt(store, &case.key("dir2/b")).await.is_some(),
        "delete_tree spares sibling prefixes"
    );
    assert!(
        get_opt(store, &case.key("dirx")).await.is_some(),
        "delete_tree spares sibling prefixes"
    );
    case.finish().await;
}

/// Go `testListLockKey`: keys held by locks list with their lock values, and no lock
/// bookkeeping (side keys, lock nodes, records) ever shows.
pub async fn list_excludes_lock_bookkeeping(target: &dyn TestTarget) {
    let case = Case::start(target, "list_excludes_lock_bookkeeping").await;
    let store = case.store.as_ref();
    if !store.capabilities().lock {
        fails(
            store.new_lock(&case.key("x"), LockOptions::default()).await.map(drop),
            ErrorKind::CallNotSupported,
            "new_lock",
        );
        return case.finish().await;
    }
    put(store, &case.key("side"), "val").await;
    put(store, &case.key("side/subfolder"), "val").await;
    let mut guards = Vec::new();
    for i in 1..=3 {
        let key = case.key(&format!("side/subfolder/key{i}"));
        put(store, &key, "val").await;
        let opts = LockOptions {
            value: bytes("locked"),
            ttl: Some(case.ttl() * 2),
            delete_on_unlock: false,
        };
        let locker = ok(store.new_lock(&key, opts).await, "new_lock");
        guards.push(ok(locker.lock().await, "lock"));
    }
    let pairs = ok(store.list(&case.key("side"), &read()).await, "list side");
    assert_eq!(
        relative_keys(&case, &pairs),
        [
            "side/subfolder",
            "side/subfolder/key1",
            "side/subfolder/key2",
            "side/subfolder/key3"
        ],
        "exactly the data keys, no lock bookkeeping"
    );
    assert!(
        pairs[1..].iter().all(|p| p.value == "locked"),
        "locked keys carry the lock value"
    );
    for guard in guards {
        ok(guard.unlock().await, "unlock");
    }
    case.finish().await;
}

/// Go `testDeleteTree`, plus: the directory key itself goes too, and a missing directory is
/// `KeyNotFound`.
pub async fn delete_tree(target: &dyn TestTarget) {
    let case = Case::start(target, "delete_tree").await;
    let store = case.store.as_ref();
    let dir = case.key("testDeleteTree");
    put(store, &dir, "dir").await;
    put(store, &case.key("testDeleteTree/first"), "first").await;
    put(store, &case.key("testDeleteTree/second"), "second").await;
    put(store, &case.key("testDeleteTree/deep/er/third"), "third").await;
    assert_eq!(get(store, &case.key("testDeleteTree/first")).await.value, "first");
    ok(store.delete_tree(&dir).await, "delete_tree");
    for key in [
        "testDeleteTree",
        "testDeleteTree/first",
        "testDeleteTree/second",
        "testDeleteTree/deep/er/third",
    ] {
        assert!(
            get_opt(store, &case.key(key)).await.is_none(),
            "{key} survived delete_tree"
        );
    }
    fails(
        store.list(&dir, &read()).await,
        ErrorKind::KeyNotFound,
        "list after delete_tree",
    );
    fails(
        store.delete_tree(&dir).await,
        ErrorKind::KeyNotFound,
        "delete_tree of a missing directory",
    );
    case.finish().await;
}

/// Go `testAtomicPut`: create-only on an existing key is `KeyExists`, an update with the
/// current pair succeeds, a stale index is `KeyModified`.
pub async fn atomic_put(target: &dyn TestTarget) {
    let case = Case::start(target, "atomic_put").await;
    let store = case.store.as_ref();
    let key = case.key("testAtomicPut");
    put(store, &key, "world").await;
    let pair = get(store, &key).await;
    assert_eq!(pair.value, "world");
    fails(
        store.atomic_put(&key, bytes("WORLD"), None, &write()).await,
        ErrorKind::KeyExists,
        "create-only on an existing key",
    );
    let updated = ok(
        store.atomic_put(&key, bytes("WORLD"), Some(&pair), &write()).await,
        "atomic_put with the current pair",
    );
    assert_eq!(updated.value, "WORLD");
    assert_eq!(get(store, &key).await.value, "WORLD");
    let stale = KvPair {
        last_index: pair.last_index + 1000,
        ..pair.clone()
    };
    fails(
        store
            .atomic_put(&key, bytes("WORLDWORLD"), Some(&stale), &write())
            .await,
        ErrorKind::KeyModified,
        "stale index",
    );
    fails(
        store.atomic_put(&key, bytes("WORLDWORLD"), Some(&pair), &write()).await,
        ErrorKind::KeyModified,
        "pair read before the update",
    );
    assert_eq!(
        get(store, &key).await.value,
        "WORLD",
        "failed atomic puts write nothing"
    );
    case.finish().await;
}

/// Go `testAtomicPutCreate`: create-only in a directory that does not exist yet, then
/// `KeyExists`, then an update.
pub async fn atomic_put_create(target: &dyn TestTarget) {
    let case = Case::start(target, "atomic_put_create").await;
    let store = case.store.as_ref();
    let key = case.key("testAtomicPutCreate/create");
    let created = ok(
        store.atomic_put(&key, bytes("putcreate"), None, &write()).await,
        "create-only",
    );
    assert_eq!(created.value, "putcreate");
    assert_ne!(created.last_index, 0);
    let pair = get(store, &key).await;
    assert_eq!(pair.value, "putcreate");
    fails(
        store.atomic_put(&key, bytes("putcreate"), None, &write()).await,
        ErrorKind::KeyExists,
        "second create-only",
    );
    ok(
        store.atomic_put(&key, bytes("PUTCREATE"), Some(&pair), &write()).await,
        "update after create",
    );
    assert_eq!(get(store, &key).await.value, "PUTCREATE");
    case.finish().await;
}

/// Go `testAtomicPutWithSlashSuffixKey`: an empty value at a slash-suffixed key whose
/// parent does not exist.
pub async fn atomic_put_slash_suffix_key(target: &dyn TestTarget) {
    let case = Case::start(target, "atomic_put_slash_suffix_key").await;
    let store = case.store.as_ref();
    let key = case.key("testAtomicPutWithSlashSuffixKey/key/");
    let created = ok(
        store.atomic_put(&key, Bytes::new(), None, &write()).await,
        "create-only with a trailing slash",
    );
    assert!(created.value.is_empty());
    assert!(get(store, &key).await.value.is_empty());
    case.finish().await;
}

/// `atomic_put` with a previous pair on a key that is gone is `KeyNotFound`.
pub async fn atomic_put_missing_key_with_previous(target: &dyn TestTarget) {
    let case = Case::start(target, "atomic_put_missing_key_with_previous").await;
    let store = case.store.as_ref();
    let key = case.key("gone");
    put(store, &key, "v").await;
    let pair = get(store, &key).await;
    ok(store.delete(&key).await, "delete");
    fails(
        store.atomic_put(&key, bytes("w"), Some(&pair), &write()).await,
        ErrorKind::KeyNotFound,
        "atomic_put on a deleted key",
    );
    assert!(get_opt(store, &key).await.is_none(), "nothing was written");
    case.finish().await;
}

/// Go `testAtomicDelete`, with the errors pinned: a stale index is `KeyModified`, a second
/// delete `KeyNotFound`.
pub async fn atomic_delete(target: &dyn TestTarget) {
    let case = Case::start(target, "atomic_delete").await;
    let store = case.store.as_ref();
    let key = case.key("testAtomicDelete");
    put(store, &key, "world").await;
    let pair = get(store, &key).await;
    let stale = KvPair {
        last_index: pair.last_index + 1000,
        ..pair.clone()
    };
    fails(
        store.atomic_delete(&key, &stale).await,
        ErrorKind::KeyModified,
        "atomic_delete with a stale index",
    );
    assert!(
        get_opt(store, &key).await.is_some(),
        "a failed atomic_delete deletes nothing"
    );
    ok(
        store.atomic_delete(&key, &pair).await,
        "atomic_delete with the current pair",
    );
    assert!(get_opt(store, &key).await.is_none());
    fails(
        store.atomic_delete(&key, &pair).await,
        ErrorKind::KeyNotFound,
        "second atomic_delete",
    );
    case.finish().await;
}

/// A previous pair with `last_index == 0` (not read from the store) is
/// `PreviousNotSpecified` for both atomic calls.
pub async fn atomic_calls_need_an_index(target: &dyn TestTarget) {
    let case = Case::start(target, "atomic_calls_need_an_index").await;
    let store = case.store.as_ref();
    let key = case.key("k");
    put(store, &key, "v").await;
    let handmade = KvPair::new(key.clone(), "v", 0);
    fails(
        store.atomic_put(&key, bytes("w"), Some(&handmade), &write()).await,
        ErrorKind::PreviousNotSpecified,
        "atomic_put",
    );
    fails(
        store.atomic_delete(&key, &handmade).await,
        ErrorKind::PreviousNotSpecified,
        "atomic_delete",
    );
    assert_eq!(get(store, &key).await.value, "v");
    case.finish().await;
}

/// Go `testWatch`: the current value first, then one `Put` per write, in order, with
/// increasing indexes.
pub async fn watch(target: &dyn TestTarget) {
    let case = Case::start(target, "watch").await;
    let store = case.store.as_ref();
    let key = case.key("testWatch");
    if !store.capabilities().watch {
        fails(
            store.watch(&key, &read()).await.map(drop),
            ErrorKind::CallNotSupported,
            "watch",
        );
        return case.finish().await;
    }
    put(store, &key, "world").await;
    let mut events = ok(store.watch(&key, &read()).await, "watch");
    match next_event(&mut events, "first event").await {
        WatchEvent::Snapshot(pairs) => {
            assert_eq!(pairs.len(), 1, "the snapshot holds the key");
            assert_eq!(pairs[0].key, key);
            assert_eq!(pairs[0].value, "world");
        }
        other => panic!("the first event must be a snapshot, got {other:?}"),
    }
    let writer = case.target.open().await;
    let mut last = 0;
    for round in 1..=4 {
        let value = format!("world{}", "!".repeat(round));
        put(writer.as_ref(), &key, &value).await;
        match next_change(&mut events, "change").await {
            WatchEvent::Put(pair) => {
                assert_eq!(pair.key, key);
                assert_eq!(pair.value, value.as_str(), "changes arrive in order");
                assert!(pair.last_index > last, "indexes increase");
                last = pair.last_index;
            }
            other => panic!("expected a put, got {other:?}"),
        }
    }
    ok(writer.close().await, "close writer");
    case.finish().await;
}

/// Watching a key that does not exist yet gives an empty snapshot, then its creation.
pub async fn watch_missing_key_waits(target: &dyn TestTarget) {
    let case = Case::start(target, "watch_missing_key_waits").await;
    let store = case.store.as_ref();
    if !store.capabilities().watch {
        return case.finish().await;
    }
    let key = case.key("later");
    let mut events = ok(store.watch(&key, &read()).await, "watch");
    assert_eq!(
        next_event(&mut events, "first event").await,
        WatchEvent::Snapshot(vec![]),
        "empty snapshot"
    );
    put(store, &key, "now").await;
    match next_change(&mut events, "creation").await {
        WatchEvent::Put(pair) => assert_eq!(
            (pair.key.as_str(), pair.value.as_ref()),
            (key.as_str(), b"now".as_ref())
        ),
        other => panic!("expected a put, got {other:?}"),
    }
    case.finish().await;
}

/// A watched key's deletion is a `Delete` event, and a re-creation is seen after it.
pub async fn watch_reports_delete(target: &dyn TestTarget) {
    let case = Case::start(target, "watch_reports_delete").await;
    let store = case.store.as_ref();
    if !store.capabilities().watch {
        return case.finish().await;
    }
    let key = case.key("doomed");
    put(store, &key, "v").await;
    let mut events = ok(store.watch(&key, &read()).await, "watch");
    next_event(&mut events, "snapshot").await;
    ok(store.delete(&key).await, "delete");
    match next_change(&mut events, "deletion").await {
        WatchEvent::Delete { key: deleted, .. } => assert_eq!(deleted, key),
        other => panic!("expected a delete, got {other:?}"),
    }
    put(store, &key, "again").await;
    match next_change(&mut events, "re-creation").await {
        WatchEvent::Put(pair) => assert_eq!(pair.value, "again"),
        other => panic!("expected a put, got {other:?}"),
    }
    case.finish().await;
}

/// Go `testWatchTree`, with content: the snapshot holds the children (not the directory),
/// then a delete, a create and an update below it are reported one by one.
pub async fn watch_tree(target: &dyn TestTarget) {
    let case = Case::start(target, "watch_tree").await;
    let store = case.store.as_ref();
    let dir = case.key("testWatchTree");
    if !store.capabilities().watch_tree {
        fails(
            store.watch_tree(&dir, &read()).await.map(drop),
            ErrorKind::CallNotSupported,
            "watch_tree",
        );
        return case.finish().await;
    }
    put(store, &dir, "dir").await;
    for node in ["node1", "node2", "node3"] {
        put(store, &case.key(&format!("testWatchTree/{node}")), node).await;
    }
    let mut events = ok(store.watch_tree(&dir, &read()).await, "watch_tree");
    match next_event(&mut events, "snapshot").await {
        WatchEvent::Snapshot(pairs) => {
            assert_eq!(
                relative_keys(&case, &pairs),
                ["testWatchTree/node1", "testWatchTree/node2", "testWatchTree/node3"]
            );
            assert_eq!(pairs[2].value, "node3");
        }
        other => panic!("the first event must be a snapshot, got {other:?}"),
    }
    ok(store.delete(&case.key("testWatchTree/node3")).await, "delete node3");
    match next_change(&mut events, "delete").await {
        WatchEvent::Delete { key, .. } => assert_eq!(key, case.key("testWatchTree/node3")),
        other => panic!("expected the delete of node3, got {other:?}"),
    }
    put(store, &dir, "dir changed").await;
    put(store, &case.key("testWatchTree/sub/node4"), "node4").await;
    match next_change(&mut events, "create").await {
        WatchEvent::Put(pair) => assert_eq!(
            (pair.key, pair.value),
            (case.key("testWatchTree/sub/node4"), bytes("node4"))
        ),
        other => panic!("expected node4 (the directory key itself is not reported), got {other:?}"),
    }
    put(store, &case.key("testWatchTree/node1"), "node1 changed").await;
    match next_change(&mut events, "update").await {
        WatchEvent::Put(pair) => assert_eq!(
            (pair.key, pair.value),
            (case.key("testWatchTree/node1"), bytes("node1 changed"))
        ),
        other => panic!("expected the update of node1, got {other:?}"),
    }
    case.finish().await;
}

/// Watching a directory that does not exist yet gives an empty snapshot, then what appears.
pub async fn watch_tree_missing_dir_waits(target: &dyn TestTarget) {
    let case = Case::start(target, "watch_tree_missing_dir_waits").await;
    let store = case.store.as_ref();
    if !store.capabilities().watch_tree {
        return case.finish().await;
    }
    let mut events = ok(store.watch_tree(&case.key("future"), &read()).await, "watch_tree");
    assert_eq!(next_event(&mut events, "snapshot").await, WatchEvent::Snapshot(vec![]));
    put(store, &case.key("future/child"), "c").await;
    match next_change(&mut events, "creation").await {
        WatchEvent::Put(pair) => assert_eq!(pair.key, case.key("future/child")),
        other => panic!("expected a put, got {other:?}"),
    }
    case.finish().await;
}

/// A key that expires is reported as a `Delete` by `watch` and `watch_tree`.
pub async fn watch_reports_expiry(target: &dyn TestTarget) {
    let case = Case::start(target, "watch_reports_expiry").await;
    let store = case.store.as_ref();
    let caps = store.capabilities();
    if !(caps.watch && caps.watch_tree && caps.ttl) {
        return case.finish().await;
    }
    let key = case.key("dir/ephemeral");
    let mut key_events = ok(store.watch(&key, &read()).await, "watch");
    let mut tree_events = ok(store.watch_tree(&case.key("dir"), &read()).await, "watch_tree");
    next_event(&mut key_events, "snapshot").await;
    next_event(&mut tree_events, "snapshot").await;
    ok(
        store
            .put(&key, bytes("short-lived"), &WriteOptions::with_ttl(case.ttl()))
            .await,
        "put with ttl",
    );
    let expiry_within = case.ttl() + case.target.expiry_slack() + EVENT_TIMEOUT;
    for (events, what) in [(&mut key_events, "watch"), (&mut tree_events, "watch_tree")] {
        assert!(
            matches!(next_change(events, what).await, WatchEvent::Put(_)),
            "{what}: the put comes first"
        );
        match next_change_within(events, what, expiry_within).await {
            WatchEvent::Delete { key: expired, .. } => assert_eq!(expired, key, "{what}"),
            other => panic!("{what}: expected the expiry as a delete, got {other:?}"),
        }
    }
    case.finish().await;
}

/// Dropping a watch stream ends it: a live watch counts in `background_tasks`, the count
/// goes back to where it was once the streams are dropped, and the store keeps working.
pub async fn watch_drop_stops(target: &dyn TestTarget) {
    let case = Case::start(target, "watch_drop_stops").await;
    let store = case.store.as_ref();
    if !store.capabilities().watch {
        return case.finish().await;
    }
    let baseline = store.background_tasks();
    let key = case.key("watched");
    put(store, &key, "v").await;
    let mut single = ok(store.watch(&key, &read()).await, "watch");
    let mut tree = ok(store.watch_tree(&case.key(""), &read()).await, "watch_tree");
    next_event(&mut single, "snapshot").await;
    next_event(&mut tree, "snapshot").await;
    let live = store.background_tasks();
    assert!(
        live >= baseline + 2,
        "each live watch counts as background work ({live} with two, {baseline} before)"
    );
    drop(single);
    drop(tree);
    eventually(
        Duration::from_secs(10),
        "background tasks back to the baseline after dropping watches",
        || async { store.background_tasks() <= baseline },
    )
    .await;
    put(store, &key, "after").await;
    assert_eq!(get(store, &key).await.value, "after");
    case.finish().await;
}

/// Go `testLockUnlock`: lock, the value is visible through `get`, unlock, lock again with
/// the same locker; with `delete_on_unlock` the value is gone after unlock.
pub async fn lock_unlock(target: &dyn TestTarget) {
    let case = Case::start(target, "lock_unlock").await;
    let store = case.store.as_ref();
    let key = case.key("testLockUnlock");
    if !store.capabilities().lock {
        fails(
            store.new_lock(&key, LockOptions::default()).await.map(drop),
            ErrorKind::CallNotSupported,
            "new_lock",
        );
        return case.finish().await;
    }
    let opts = LockOptions {
        value: bytes("bar"),
        ttl: Some(case.ttl() * 2),
        delete_on_unlock: true,
    };
    let locker = ok(store.new_lock(&key, opts).await, "new_lock");
    assert_eq!(locker.key(), key);
    for round in 1..=2 {
        let guard = ok(locker.lock().await, &format!("lock, round {round}"));
        assert_eq!(guard.key(), key);
        let pair = get(store, &key).await;
        assert_eq!(pair.value, "bar", "round {round}: the lock value is visible");
        assert_ne!(pair.last_index, 0);
        ok(guard.ensure_held(), "held");
        ok(guard.unlock().await, &format!("unlock, round {round}"));
        assert!(
            get_opt(store, &key).await.is_none(),
            "round {round}: delete_on_unlock removed the value"
        );
    }
    case.finish().await;
}

/// Without `delete_on_unlock`, the lock value stays after unlock (the Go default).
pub async fn lock_keeps_value_without_delete_on_unlock(target: &dyn TestTarget) {
    let case = Case::start(target, "lock_keeps_value_without_delete_on_unlock").await;
    let store = case.store.as_ref();
    if !store.capabilities().lock {
        return case.finish().await;
    }
    let key = case.key("lock");
    let locker = ok(
        store.new_lock(&key, LockOptions::with_value("holder-1")).await,
        "new_lock",
    );
    let guard = ok(locker.lock().await, "lock");
    ok(guard.unlock().await, "unlock");
    assert_eq!(get(store, &key).await.value, "holder-1");
    case.finish().await;
}

/// `try_lock` does not wait, `lock_timeout` gives up with `Timeout`, and both succeed once
/// the holder unlocks.
pub async fn try_lock_and_timeout(target: &dyn TestTarget) {
    let case = Case::start(target, "try_lock_and_timeout").await;
    let store = case.store.as_ref();
    if !store.capabilities().lock {
        return case.finish().await;
    }
    let key = case.key("lock");
    let other = case.target.open().await;
    let holder = ok(store.new_lock(&key, LockOptions::with_value("a")).await, "new_lock");
    let contender = ok(other.new_lock(&key, LockOptions::with_value("b")).await, "new_lock");
    let guard = ok(holder.lock().await, "lock");
    assert!(
        ok(contender.try_lock().await, "try_lock").is_none(),
        "try_lock of a held lock"
    );
    fails(
        contender.lock_timeout(Duration::from_millis(500)).await,
        ErrorKind::Timeout,
        "lock_timeout of a held lock",
    );
    ok(guard.unlock().await, "unlock");
    let taken = ok(contender.try_lock().await, "try_lock").expect("try_lock of a free lock");
    assert_eq!(get(store, &key).await.value, "b");
    ok(taken.unlock().await, "unlock");
    ok(other.close().await, "close");
    case.finish().await;
}

/// Go `testLockTTL`: a holder keeps its lock past the TTL by renewing (or, without lock
/// TTLs, for as long as its session lives); a contender gives up on timeout; once the
/// holder's store is closed (renewal stops, the guard reports `StoreClosed`), the contender
/// gets the lock within TTL plus slack.
pub async fn lock_ttl(target: &dyn TestTarget) {
    let case = Case::start(target, "lock_ttl").await;
    let store = case.store.as_ref();
    let caps = store.capabilities();
    if !caps.lock {
        return case.finish().await;
    }
    let key = case.key("testLockTTL");
    let ttl = case.ttl() * 2;
    let other = case.target.open().await;
    let holder = ok(
        other
            .new_lock(
                &key,
                LockOptions {
                    value: bytes("bar"),
                    ttl: Some(ttl),
                    delete_on_unlock: false,
                },
            )
            .await,
        "new_lock",
    );
    let guard = ok(holder.lock().await, "lock");
    assert_eq!(get(other.as_ref(), &key).await.value, "bar");
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    ok(guard.ensure_held(), "the lock is renewed past its TTL");
    let contender = ok(
        store
            .new_lock(
                &key,
                LockOptions {
                    value: bytes("foobar"),
                    ttl: Some(ttl),
                    delete_on_unlock: false,
                },
            )
            .await,
        "new_lock",
    );
    fails(
        contender.lock_timeout(ttl).await,
        ErrorKind::Timeout,
        "lock of a renewed lock",
    );
    let lost = guard.lost_signal();
    ok(other.close().await, "close the holder's store");
    let reason = tokio::time::timeout(Duration::from_secs(5), lost.lost())
        .await
        .expect("the lost signal fires on close");
    assert!(
        matches!(reason, LostReason::StoreClosed | LostReason::Expired),
        "lost because {reason}"
    );
    let wait = ttl + case.target.expiry_slack();
    let taken = ok(
        contender.lock_timeout(wait).await,
        "the lock of a closed holder is free after its TTL",
    );
    assert_eq!(get(store, &key).await.value, "foobar");
    ok(taken.unlock().await, "unlock");
    drop(guard);
    case.finish().await;
}

/// 8 tasks on two store handles take one lock 10 times each: never two holders at once,
/// and fencing tokens strictly increase.
pub async fn lock_mutual_exclusion(target: &dyn TestTarget) {
    let case = Case::start(target, "lock_mutual_exclusion").await;
    if !case.store.capabilities().lock {
        return case.finish().await;
    }
    let key = case.key("mutex");
    let handles = [Arc::clone(&case.store), case.target.open().await];
    let inside = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = Arc::clone(&handles[task % handles.len()]);
        let (key, inside, tokens) = (key.clone(), Arc::clone(&inside), Arc::clone(&tokens));
        tasks.push(tokio::spawn(async move {
            let locker = ok(
                store
                    .new_lock(&key, LockOptions::with_value(format!("task-{task}")))
                    .await,
                "new_lock",
            );
            for _ in 0..10 {
                let guard = ok(locker.lock().await, "lock");
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                tokens
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(guard.fencing_token());
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                ok(guard.unlock().await, "unlock");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("contender panicked: {e}"));
    }
    let tokens = tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    assert_eq!(tokens.len(), 80);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens strictly increase: {tokens:?}"
    );
    ok(handles[1].close().await, "close");
    case.finish().await;
}

async fn lock_lost_when(target: &dyn TestTarget, name: &str, how: LockRevocation) {
    let case = Case::start(target, name).await;
    let store = case.store.as_ref();
    if !store.capabilities().lock {
        return case.finish().await;
    }
    let key = case.key("lock");
    let ttl = case.ttl() * 2;
    let locker = ok(
        store
            .new_lock(
                &key,
                LockOptions {
                    value: bytes("v"),
                    ttl: Some(ttl),
                    delete_on_unlock: false,
                },
            )
            .await,
        "new_lock",
    );
    let guard = ok(locker.lock().await, "lock");
    let first_token = guard.fencing_token();
    case.target.revoke_lock(&key, how).await;
    let within = ttl + case.target.expiry_slack();
    let reason = tokio::time::timeout(within, guard.lost())
        .await
        .unwrap_or_else(|_| panic!("no lost signal within {within:?}"));
    assert!(
        matches!(
            reason,
            LostReason::RecordDeleted | LostReason::Expired | LostReason::RenewalFailed(_)
        ),
        "lost because {reason}"
    );
    fails(guard.ensure_held(), ErrorKind::LockLost, "ensure_held after the loss");
    let other = case.target.open().await;
    let contender = ok(other.new_lock(&key, LockOptions::with_value("next")).await, "new_lock");
    let next = ok(contender.lock_timeout(within).await, "the revoked lock can be taken");
    assert!(
        next.fencing_token() > first_token,
        "the next holder's fencing token is larger"
    );
    fails(guard.unlock().await, ErrorKind::LockLost, "unlock of a lost lock");
    ok(
        next.ensure_held(),
        "unlocking a lost guard does not release the new holder",
    );
    ok(next.unlock().await, "unlock");
    ok(other.close().await, "close");
    case.finish().await;
}

/// The lost signal fires when the lock's record is deleted behind the holder's back, the
/// next holder gets a larger fencing token, and the old guard's unlock is `LockLost`.
pub async fn lock_lost_when_record_deleted(target: &dyn TestTarget) {
    lock_lost_when(target, "lock_lost_when_record_deleted", LockRevocation::DeleteRecord).await;
}

/// The lost signal fires when the holder's session, lease or TTL expires.
pub async fn lock_lost_when_session_expires(target: &dyn TestTarget) {
    lock_lost_when(target, "lock_lost_when_session_expires", LockRevocation::Expire).await;
}

/// Go `testPutTTL`: keys written with a TTL by a store that is then closed are gone after
/// the TTL.
pub async fn put_ttl(target: &dyn TestTarget) {
    let case = Case::start(target, "put_ttl").await;
    let store = case.store.as_ref();
    let key = case.key("testPutTTL");
    let ttl = case.ttl();
    if !store.capabilities().ttl {
        fails(
            store.put(&key, bytes("foo"), &WriteOptions::with_ttl(ttl)).await,
            ErrorKind::CallNotSupported,
            "put with ttl",
        );
        return case.finish().await;
    }
    let other = case.target.open().await;
    let second = case.key("second");
    ok(
        other.put(&key, bytes("foo"), &WriteOptions::with_ttl(ttl)).await,
        "put with ttl",
    );
    ok(
        other.put(&second, bytes("bar"), &WriteOptions::with_ttl(ttl)).await,
        "put with ttl",
    );
    assert_eq!(get(store, &key).await.value, "foo");
    assert_eq!(get(store, &second).await.value, "bar");
    ok(other.close().await, "close the writer");
    eventually(ttl + case.target.expiry_slack(), "TTL keys expire", || async {
        get_opt(store, &key).await.is_none() && get_opt(store, &second).await.is_none()
    })
    .await;
    fails(
        store.list(&case.key(""), &read()).await,
        ErrorKind::KeyNotFound,
        "expired keys are not listed",
    );
    case.finish().await;
}

/// A `keep_alive` key outlives its TTL while its handle lives, and expires once the handle
/// is closed; a plain TTL key next to it expires on time.
pub async fn put_ttl_keep_alive(target: &dyn TestTarget) {
    let case = Case::start(target, "put_ttl_keep_alive").await;
    let store = case.store.as_ref();
    let key = case.key("kept");
    let ttl = case.ttl();
    if !store.capabilities().keep_alive {
        fails(
            store.put(&key, bytes("v"), &WriteOptions::keep_alive(ttl)).await,
            ErrorKind::CallNotSupported,
            "keep_alive",
        );
        return case.finish().await;
    }
    let other = case.target.open().await;
    let plain = case.key("plain");
    ok(
        other.put(&key, bytes("kept"), &WriteOptions::keep_alive(ttl)).await,
        "put with keep_alive",
    );
    ok(
        other.put(&plain, bytes("plain"), &WriteOptions::with_ttl(ttl)).await,
        "put with ttl",
    );
    tokio::time::sleep(ttl * 2 + case.target.expiry_slack()).await;
    assert_eq!(get(store, &key).await.value, "kept", "kept alive past twice its TTL");
    assert!(get_opt(store, &plain).await.is_none(), "the plain TTL key expired");
    ok(other.close().await, "close the writer");
    eventually(
        ttl + case.target.expiry_slack(),
        "the key expires once its handle is closed",
        || async { get_opt(store, &key).await.is_none() },
    )
    .await;
    case.finish().await;
}

/// Writing a TTL key again without a TTL makes it permanent.
pub async fn put_without_ttl_clears_ttl(target: &dyn TestTarget) {
    let case = Case::start(target, "put_without_ttl_clears_ttl").await;
    let store = case.store.as_ref();
    if !store.capabilities().ttl {
        return case.finish().await;
    }
    let key = case.key("k");
    let ttl = case.ttl();
    ok(
        store.put(&key, bytes("temporary"), &WriteOptions::with_ttl(ttl)).await,
        "put with ttl",
    );
    put(store, &key, "permanent").await;
    tokio::time::sleep(ttl + case.target.expiry_slack()).await;
    assert_eq!(
        get(store, &key).await.value,
        "permanent",
        "a put without TTL clears the TTL"
    );
    case.finish().await;
}

/// Every call rejects a bad key with `InvalidKey` before any I/O: even on a closed handle,
/// which would otherwise answer `Closed`.
pub async fn invalid_keys_rejected_before_io(target: &dyn TestTarget) {
    let case = Case::start(target, "invalid_keys_rejected_before_io").await;
    let closed = case.target.open().await;
    ok(closed.close().await, "close");
    for store in [case.store.as_ref(), closed.as_ref()] {
        for bad in ["", "/", "a//b", "a/./b", "a/../b", "..", "a\u{0}b", "tab\there"] {
            let what = format!("key {bad:?}");
            let pair = KvPair::new(bad, "v", 1);
            fails(
                store.put(bad, bytes("v"), &write()).await,
                ErrorKind::InvalidKey,
                &format!("put {what}"),
            );
            fails(
                store.get(bad, &read()).await,
                ErrorKind::InvalidKey,
                &format!("get {what}"),
            );
            fails(
                store.delete(bad).await,
                ErrorKind::InvalidKey,
                &format!("delete {what}"),
            );
            fails(
                store.exists(bad, &read()).await,
                ErrorKind::InvalidKey,
                &format!("exists {what}"),
            );
            fails(
                store.list(bad, &read()).await,
                ErrorKind::InvalidKey,
                &format!("list {what}"),
            );
            fails(
                store.delete_tree(bad).await,
                ErrorKind::InvalidKey,
                &format!("delete_tree {what}"),
            );
            fails(
                store.watch(bad, &read()).await.map(drop),
                ErrorKind::InvalidKey,
                &format!("watch {what}"),
            );
            fails(
                store.watch_tree(bad, &read()).await.map(drop),
                ErrorKind::InvalidKey,
                &format!("watch_tree {what}"),
            );
            fails(
                store.new_lock(bad, LockOptions::default()).await.map(drop),
                ErrorKind::InvalidKey,
                &format!("new_lock {what}"),
            );
            fails(
                store.atomic_put(bad, bytes("v"), None, &write()).await,
                ErrorKind::InvalidKey,
                &format!("atomic_put {what}"),
            );
            fails(
                store.atomic_delete(bad, &pair).await,
                ErrorKind::InvalidKey,
                &format!("atomic_delete {what}"),
            );
        }
    }
    let err = case.store.get("a//b", &read()).await.expect_err("invalid key");
    assert_eq!(err.key(), Some("a//b"), "the error names the key as given");
    assert_eq!(err.store(), case.store.name());
    fails(
        closed.get(&case.key("fine"), &read()).await,
        ErrorKind::Closed,
        "a valid key on a closed handle",
    );
    case.finish().await;
}

/// Empty values and every byte value round-trip through put, get, list, atomic_put and watch.
pub async fn empty_and_binary_values(target: &dyn TestTarget) {
    let case = Case::start(target, "empty_and_binary_values").await;
    let store = case.store.as_ref();
    let all_bytes: Bytes = (0..=255u8).chain((0..=255u8).rev()).collect();
    let empty = case.key("empty");
    let binary = case.key("binary");
    ok(store.put(&empty, Bytes::new(), &write()).await, "put empty");
    ok(store.put(&binary, all_bytes.clone(), &write()).await, "put binary");
    assert!(get(store, &empty).await.value.is_empty());
    assert_eq!(get(store, &binary).await.value, all_bytes);
    let listed = ok(store.list(&case.key(""), &read()).await, "list");
    assert_eq!(listed.len(), 2, "the empty value is listed too");
    assert_eq!(listed[0].value, all_bytes);
    assert!(listed[1].value.is_empty());
    put(store, &empty, "not empty").await;
    ok(
        store.put(&empty, Bytes::new(), &write()).await,
        "put empty over a value",
    );
    assert!(
        get(store, &empty).await.value.is_empty(),
        "an empty value replaces the old one"
    );
    let pair = get(store, &binary).await;
    let zeros = Bytes::from(vec![0u8; 1000]);
    ok(
        store.atomic_put(&binary, zeros.clone(), Some(&pair), &write()).await,
        "atomic_put binary",
    );
    assert_eq!(get(store, &binary).await.value, zeros);
    if store.capabilities().watch {
        let mut events = ok(store.watch(&binary, &read()).await, "watch");
        match next_event(&mut events, "snapshot").await {
            WatchEvent::Snapshot(pairs) => assert_eq!(pairs.first().map(|p| p.value.clone()), Some(zeros)),
            other => panic!("expected a snapshot, got {other:?}"),
        }
        for value in [all_bytes, Bytes::new()] {
            ok(store.put(&binary, value.clone(), &write()).await, "put");
            match next_change(&mut events, "binary change").await {
                WatchEvent::Put(pair) => assert_eq!(pair.value, value, "watch delivers the exact bytes"),
                other => panic!("expected a put, got {other:?}"),
            }
        }
    }
    case.finish().await;
}

/// A value over the backend's limit is `ValueTooLarge` and writes nothing; without a limit,
/// a 2 MiB value round-trips.
pub async fn value_too_large(target: &dyn TestTarget) {
    let case = Case::start(target, "value_too_large").await;
    let store = case.store.as_ref();
    let key = case.key("big");
    match store.capabilities().max_value_size {
        Some(limit) => {
            let value = Bytes::from(vec![7u8; limit + 1]);
            let err = store
                .put(&key, value.clone(), &write())
                .await
                .expect_err("a value over the limit");
            assert_eq!(err.kind(), ErrorKind::ValueTooLarge, "{err}");
            assert_eq!(err.key(), Some(key.as_str()));
            fails(
                store.atomic_put(&key, value.clone(), None, &write()).await,
                ErrorKind::ValueTooLarge,
                "atomic_put",
            );
            assert!(get_opt(store, &key).await.is_none(), "nothing was written");
            put(store, &key, "small").await;
            let pair = get(store, &key).await;
            fails(
                store.atomic_put(&key, value, Some(&pair), &write()).await,
                ErrorKind::ValueTooLarge,
                "atomic_put update",
            );
            assert_eq!(get(store, &key).await.value, "small", "the old value is intact");
        }
        None => {
            let value = Bytes::from((0..2 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect::<Vec<u8>>());
            ok(store.put(&key, value.clone(), &write()).await, "put 2 MiB");
            assert_eq!(get(store, &key).await.value, value);
        }
    }
    case.finish().await;
}

/// Non-ASCII keys work in every call (a key outside the BMP may be refused as `InvalidKey`).
pub async fn non_ascii_keys(target: &dyn TestTarget) {
    let case = Case::start(target, "non_ascii_keys").await;
    let store = case.store.as_ref();
    // A character outside the BMP round-trips, or is refused as InvalidKey before any I/O
    // by a store that cannot hold it (ZooKeeper's Java paths).
    let emoji = case.key("emoji-🦀");
    match store.put(&emoji, bytes("crab"), &write()).await {
        Ok(()) => assert_eq!(get(store, &emoji).await.value, "crab"),
        Err(err) => assert_eq!(
            err.kind(),
            ErrorKind::InvalidKey,
            "an emoji key either works or is InvalidKey: {err}"
        ),
    }
    let keys = [
        "répertoire/clé",
        "répertoire/日本語",
        "répertoire/ünïcödé-ĳ",
        "répertoire/space and +plus%",
    ];
    for relative in keys {
        put(store, &case.key(relative), relative).await;
        assert_eq!(get(store, &case.key(relative)).await.value, relative.as_bytes());
    }
    let listed = ok(store.list(&case.key("répertoire"), &read()).await, "list");
    let mut expected: Vec<&str> = keys.to_vec();
    expected.sort_unstable();
    assert_eq!(relative_keys(&case, &listed), expected);
    let pair = get(store, &case.key(keys[1])).await;
    ok(store.atomic_delete(&case.key(keys[1]), &pair).await, "atomic_delete");
    ok(store.delete_tree(&case.key("répertoire")).await, "delete_tree");
    fails(
        store.list(&case.key("répertoire"), &read()).await,
        ErrorKind::KeyNotFound,
        "list after delete_tree",
    );
    case.finish().await;
}

/// Leading and trailing slashes are normalized the same way in every call.
pub async fn slashes_are_normalized(target: &dyn TestTarget) {
    let case = Case::start(target, "slashes_are_normalized").await;
    let store = case.store.as_ref();
    let key = case.key("a/b");
    put(store, &format!("/{key}/"), "v").await;
    for form in [key.clone(), format!("/{key}"), format!("{key}/")] {
        let pair = get(store, &form).await;
        assert_eq!(pair.key, key, "{form}");
    }
    let listed = ok(store.list(&format!("/{}/", case.key("a")), &read()).await, "list");
    assert_eq!(relative_keys(&case, &listed), ["a/b"]);
    ok(store.delete(&format!("{key}/")).await, "delete");
    assert!(get_opt(store, &key).await.is_none());
    case.finish().await;
}

/// 16 tasks each do 25 read-modify-`atomic_put` increments of one counter, retrying on
/// `KeyModified`: the counter ends at exactly 400.
pub async fn contention_atomic_counter(target: &dyn TestTarget) {
    let case = Case::start(target, "contention_atomic_counter").await;
    let key = case.key("counter");
    ok(
        case.store.atomic_put(&key, bytes("0"), None, &write()).await,
        "create the counter",
    );
    let handles = [Arc::clone(&case.store), case.target.open().await];
    let mut tasks = Vec::new();
    for task in 0..16 {
        let store = Arc::clone(&handles[task % handles.len()]);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                loop {
                    let current = ok(store.get(&key, &ReadOptions::default()).await, "get counter");
                    let n: u64 = std::str::from_utf8(&current.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .expect("a number");
                    match store
                        .atomic_put(
                            &key,
                            Bytes::from((n + 1).to_string()),
                            Some(&current),
                            &WriteOptions::default(),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(err) if err.kind() == ErrorKind::KeyModified => continue,
                        Err(err) => panic!("increment failed: {err}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("incrementer panicked: {e}"));
    }
    assert_eq!(get(case.store.as_ref(), &key).await.value, "400");
    ok(handles[1].close().await, "close");
    case.finish().await;
}

/// After `close`, a handle refuses calls with `Closed` (twice closing is fine); other
/// handles keep working.
pub async fn closed_handle_refuses_calls(target: &dyn TestTarget) {
    let case = Case::start(target, "closed_handle_refuses_calls").await;
    let key = case.key("k");
    put(case.store.as_ref(), &key, "v").await;
    let other = case.target.open().await;
    ok(other.close().await, "close");
    ok(other.close().await, "close again");
    fails(other.get(&key, &read()).await, ErrorKind::Closed, "get");
    fails(other.put(&key, bytes("w"), &write()).await, ErrorKind::Closed, "put");
    fails(other.list(&key, &read()).await, ErrorKind::Closed, "list");
    fails(
        other.commit(crate::Transaction::new().put(&key, "w")).await,
        ErrorKind::Closed,
        "commit",
    );
    fails(
        other.get_many(&[key.as_str()], &read()).await,
        ErrorKind::Closed,
        "get_many",
    );
    fails(
        Arc::clone(&other)
            .list_stream(&key, crate::ListOptions::default())
            .map(drop),
        ErrorKind::Closed,
        "list_stream",
    );
    assert_eq!(
        get(case.store.as_ref(), &key).await.value,
        "v",
        "other handles keep working"
    );

    // What a handle started ends with it: watches end (with an error item or just ending),
    // held locks report the loss.
    let third = case.target.open().await;
    let caps = third.capabilities();
    let mut events = if caps.watch {
        let mut events = ok(third.watch(&key, &read()).await, "watch");
        next_event(&mut events, "snapshot").await;
        Some(events)
    } else {
        None
    };
    let guard = if caps.lock {
        let locker = ok(
            third.new_lock(&case.key("lock"), LockOptions::with_value("x")).await,
            "new_lock",
        );
        Some(ok(locker.lock().await, "lock"))
    } else {
        None
    };
    ok(third.close().await, "close");
    if let Some(events) = events.as_mut() {
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.next().await {
                    None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await;
        assert!(end.is_ok(), "a watch of a closed handle ends");
    }
    if let Some(guard) = guard {
        let reason = tokio::time::timeout(Duration::from_secs(10), guard.lost()).await;
        assert!(
            matches!(reason, Ok(LostReason::StoreClosed | LostReason::Expired)),
            "a lock of a closed handle reports the loss: {reason:?}"
        );
        drop(guard);
    }
    case.finish().await;
}

/// TTLs below the backend's minimum are raised to it: a 1 ms key is readable right after
/// the write, then expires; a lock with a zero TTL still excludes a contender while held.
pub async fn tiny_ttls_are_raised_to_the_minimum(target: &dyn TestTarget) {
    let case = Case::start(target, "tiny_ttls_are_raised_to_the_minimum").await;
    let store = case.store.as_ref();
    let caps = store.capabilities();
    if caps.ttl {
        let key = case.key("blink");
        ok(
            store
                .put(&key, bytes("v"), &WriteOptions::with_ttl(Duration::from_millis(1)))
                .await,
            "put 1 ms",
        );
        assert!(
            caps.min_ttl >= Duration::from_millis(50),
            "a minimum TTL that renewals can keep up with"
        );
        assert_eq!(
            get(store, &key).await.value,
            "v",
            "raised to the minimum, so still there right after"
        );
        eventually(
            caps.min_ttl + case.target.expiry_slack(),
            "the tiny TTL key expires",
            || async { get_opt(store, &key).await.is_none() },
        )
        .await;
    }
    if caps.lock {
        let key = case.key("lock");
        let other = case.target.open().await;
        let zero = LockOptions {
            value: bytes("a"),
            ttl: Some(Duration::ZERO),
            delete_on_unlock: false,
        };
        let holder = ok(store.new_lock(&key, zero.clone()).await, "new_lock");
        let contender = ok(other.new_lock(&key, zero).await, "new_lock");
        let guard = ok(holder.lock().await, "lock");
        tokio::time::sleep(caps.min_ttl * 3).await;
        assert!(
            ok(contender.try_lock().await, "try_lock").is_none(),
            "a zero-TTL lock is renewed, not free"
        );
        ok(guard.ensure_held(), "still held");
        ok(guard.unlock().await, "unlock");
        ok(other.close().await, "close");
    }
    case.finish().await;
}

/// What `capabilities()` claims works, and what it does not claim is `CallNotSupported`.
pub async fn unsupported_calls_match_capabilities(target: &dyn TestTarget) {
    let case = Case::start(target, "unsupported_calls_match_capabilities").await;
    let store = case.store.as_ref();
    let caps = store.capabilities();
    let key = case.key("k");
    let ttl = case.ttl();
    let checks = [
        ("watch", caps.watch, store.watch(&key, &read()).await.map(drop)),
        (
            "watch_tree",
            caps.watch_tree,
            store.watch_tree(&key, &read()).await.map(drop),
        ),
        (
            "new_lock",
            caps.lock,
            store.new_lock(&key, LockOptions::default()).await.map(drop),
        ),
        (
            "put with ttl",
            caps.ttl,
            store.put(&key, bytes("v"), &WriteOptions::with_ttl(ttl * 10)).await,
        ),
        (
            "put with keep_alive",
            caps.keep_alive,
            store.put(&key, bytes("v"), &WriteOptions::keep_alive(ttl * 10)).await,
        ),
        (
            "new_lock with a ttl",
            caps.lock,
            store
                .new_lock(
                    &key,
                    LockOptions {
                        ttl: Some(ttl * 10),
                        ..LockOptions::default()
                    },
                )
                .await
                .map(drop),
        ),
    ];
    for (call, claimed, result) in checks {
        match (claimed, result) {
            (true, Ok(())) => {}
            (true, Err(err)) => panic!("{call} is claimed but failed: {err}"),
            (false, result) => fails(result, ErrorKind::CallNotSupported, call),
        }
    }
    if let Some(limit) = caps.max_value_size {
        assert!(limit > 0, "a value limit of 0 bytes is not a limit");
    }
    case.finish().await;
}

/// `ReadOptions::stale()` reads are served (possibly from a replica) and see a completed
/// write soon after.
pub async fn stale_reads(target: &dyn TestTarget) {
    let case = Case::start(target, "stale_reads").await;
    let store = case.store.as_ref();
    let key = case.key("k");
    put(store, &key, "v").await;
    eventually(Duration::from_secs(5), "a stale read sees the write", || async {
        matches!(store.get(&key, &ReadOptions::stale()).await, Ok(pair) if pair.value == "v")
    })
    .await;
    assert!(ok(store.exists(&key, &ReadOptions::stale()).await, "exists"));
    assert_eq!(
        ok(store.list(&case.key(""), &ReadOptions::stale()).await, "list").len(),
        1
    );
    case.finish().await;
}

/// The backend registered itself under its name, so `open`/`new_store` find it.
pub async fn registered_in_registry(target: &dyn TestTarget) {
    let case = Case::start(target, "registered_in_registry").await;
    let name = case.store.name();
    assert!(
        crate::registry::constructors().contains(&name),
        "{name} is not in the registry: {:?}",
        crate::registry::constructors()
    );
    case.finish().await;
}
