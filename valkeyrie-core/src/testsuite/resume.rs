//! Conformance case of resumable watches: `watch_from` and `watch_tree_from`.

use super::support::{fails, get, next_change, next_event, ok, put, Case};
use super::TestTarget;
use crate::error::ErrorKind;
use crate::kv::{KvPair, ReadOptions};
use crate::watch::WatchEvent;

fn value_of(event: &WatchEvent) -> Option<(&str, &[u8])> {
    match event {
        WatchEvent::Put(KvPair { key, value, .. }) => Some((key.as_str(), value.as_ref())),
        _ => None,
    }
}

/// A watch resumed after an index delivers exactly the changes after it, in order, where
/// the store replays (`watch_replay`); elsewhere it starts with a snapshot of the current
/// state. Either way, what follows is every new change.
pub async fn watch_resumes_from_an_index(target: &dyn TestTarget) {
    let case = Case::start(target, "watch_resumes_from_an_index").await;
    let store = case.store.as_ref();
    let caps = store.capabilities();
    let (dir, a, b, c) = (case.key("dir"), case.key("dir/a"), case.key("dir/b"), case.key("dir/c"));
    if !caps.watch_tree {
        fails(
            store.watch_tree_from(&dir, 1, &ReadOptions::default()).await.map(drop),
            ErrorKind::CallNotSupported,
            "watch_tree_from without watch_tree",
        );
        return case.finish().await;
    }
    put(store, &a, "1").await;
    let seen = get(store, &a).await.last_index;
    put(store, &b, "2").await;
    put(store, &a, "3").await;
    ok(store.delete(&b).await, "delete");
    let mut tree = ok(
        store.watch_tree_from(&dir, seen, &ReadOptions::default()).await,
        "watch_tree_from",
    );
    if caps.watch_replay {
        let first = next_event(&mut tree, "replayed put of b").await;
        assert_eq!(value_of(&first), Some((b.as_str(), b"2".as_slice())), "{first:?}");
        let second = next_event(&mut tree, "replayed put of a").await;
        assert_eq!(value_of(&second), Some((a.as_str(), b"3".as_slice())), "{second:?}");
        let third = next_event(&mut tree, "replayed delete of b").await;
        assert!(
            matches!(&third, WatchEvent::Delete { key, .. } if key == &b),
            "{third:?}"
        );
    } else {
        match next_event(&mut tree, "the snapshot a resumed watch starts with").await {
            WatchEvent::Snapshot(pairs) => {
                assert_eq!(pairs, vec![get(store, &a).await], "the current state")
            }
            other => panic!("without replay a resumed watch starts with a snapshot, got {other:?}"),
        }
    }
    put(store, &c, "4").await;
    let next = next_change(&mut tree, "a new change after resuming").await;
    assert_eq!(value_of(&next), Some((c.as_str(), b"4".as_slice())), "{next:?}");
    drop(tree);

    let current = get(store, &a).await;
    let mut one = ok(
        store.watch_from(&a, current.last_index, &ReadOptions::default()).await,
        "watch_from",
    );
    if !caps.watch_replay {
        match next_event(&mut one, "the snapshot").await {
            WatchEvent::Snapshot(pairs) => assert_eq!(pairs, vec![current.clone()]),
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }
    put(store, &a, "5").await;
    let next = next_change(&mut one, "the next change of a").await;
    assert_eq!(value_of(&next), Some((a.as_str(), b"5".as_slice())), "{next:?}");
    drop(one);
    case.finish().await;
}
