use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};

use super::Kv;
use crate::error::ErrorKind;
use crate::raw::local::MemoryStore;
use crate::watch::WatchEvent;

fn kv() -> Kv {
    Kv::new(MemoryStore::new())
}

#[tokio::test]
async fn absence_is_answered_in_the_types() {
    let kv = kv();
    assert_eq!(kv.get("a").await.unwrap(), None);
    assert!(!kv.exists("a").await.unwrap());
    assert!(!kv.delete("a").await.unwrap());
    assert!(!kv.delete_tree("a").await.unwrap());
    assert_eq!(kv.list("a").await.unwrap(), Vec::new());
    kv.put("a", "1").await.unwrap();
    let pair = kv.get("a").stale().await.unwrap().unwrap();
    assert_eq!((pair.key.as_str(), &pair.value[..]), ("a", &b"1"[..]));
    assert!(kv.exists("a").await.unwrap());
    assert!(kv.delete("a").await.unwrap());
    assert_eq!(kv.get("a").await.unwrap(), None);
}

#[tokio::test]
async fn conditional_writes_compare_the_index() {
    let kv = kv();
    let created = kv.put("n", "1").if_absent().await.unwrap();
    let refused = kv.put("n", "x").if_absent().await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::KeyExists);
    let updated = kv.put("n", "2").if_index(created.last_index).await.unwrap();
    assert!(updated.last_index > created.last_index);
    let stale = kv.put("n", "3").if_index(created.last_index).await.unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::KeyModified);
    let stale = kv.delete("n").if_index(created.last_index).await.unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::KeyModified);
    assert!(kv.delete("n").if_index(updated.last_index).await.unwrap());
    assert!(!kv.delete("n").if_index(updated.last_index).await.unwrap());
    let bad = kv.get("bad//key").await.unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidKey);
}

#[tokio::test]
async fn a_put_with_a_ttl_expires() {
    let kv = kv();
    kv.put("t", "v").ttl(Duration::from_millis(50)).await.unwrap();
    assert!(kv.exists("t").await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(kv.get("t").await.unwrap(), None);
}

#[tokio::test]
async fn batches_and_transactions() {
    let kv = kv();
    kv.put_many([("b/1", "one"), ("b/2", "two")]).await.unwrap();
    let read = kv.get_many(&["b/1", "b/3", "b/2"]).await.unwrap();
    let values: Vec<_> = read.iter().map(|pair| pair.as_ref().map(|p| p.value.clone())).collect();
    assert_eq!(values, [Some("one".into()), None, Some("two".into())]);
    let outcome = kv
        .transaction()
        .when_absent("b/3")
        .put("b/3", "three")
        .delete("b/1")
        .commit()
        .await
        .unwrap();
    assert!(outcome.is_committed());
    let keys: Vec<_> = kv.list("b").await.unwrap().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["b/2", "b/3"]);
    kv.delete_many(&["b/2", "b/3"]).await.unwrap();
    assert_eq!(kv.list("b").await.unwrap(), Vec::new());
}

#[tokio::test]
async fn a_list_stream_outlives_the_call_that_made_it() {
    let kv = kv();
    for n in 0..10 {
        kv.put(&format!("d/{n}"), "v").await.unwrap();
    }
    let stream = kv.list("d").page_size(3).start_after("d/4").stream();
    let keys = tokio::spawn(stream.map_ok(|pair| pair.key).try_collect::<Vec<_>>())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(keys, ["d/5", "d/6", "d/7", "d/8", "d/9"]);
    let awaited: Vec<_> = kv.list("d").start_after("d/7").await.unwrap();
    assert_eq!(awaited.len(), 2);
    let mut invalid = kv.list("bad//dir").stream();
    let err = invalid.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey);
    assert!(invalid.next().await.is_none());
}

#[tokio::test]
async fn watches_resume_from_an_index() {
    let kv = kv();
    let first = kv.put("w/a", "1").if_absent().await.unwrap();
    kv.put("w/a", "2").await.unwrap();
    let mut events = kv.watch_tree("w").from(first.last_index).await.unwrap();
    // The memory store keeps no history: it resumes with a snapshot of the current state.
    assert!(!kv.capabilities().watch_replay);
    match events.next().await.unwrap().unwrap() {
        WatchEvent::Snapshot(pairs) => assert_eq!(pairs[0].value, "2"),
        other => panic!("expected a snapshot, got {other:?}"),
    }
    let mut one = kv.watch("w/a").await.unwrap();
    assert!(matches!(one.next().await.unwrap().unwrap(), WatchEvent::Snapshot(pairs) if pairs.len() == 1));
}

#[tokio::test]
async fn locks_through_the_handle() {
    let kv = kv();
    let guard = kv.lock("l").value("node-a").ttl(Duration::from_secs(5)).await.unwrap();
    assert_eq!(kv.get("l").await.unwrap().unwrap().value, "node-a");
    assert!(kv.lock("l").try_lock().await.unwrap().is_none());
    let waited = kv.lock("l").timeout(Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(waited.kind(), ErrorKind::Timeout);
    kv.put("fenced", "yes").if_held(&guard).await.unwrap();
    assert!(kv.delete("fenced").if_held(&guard).await.unwrap());
    guard.unlock().await.unwrap();
    let again = kv.lock("l").delete_on_unlock().try_lock().await.unwrap().unwrap();
    again.unlock().await.unwrap();
    assert_eq!(kv.get("l").await.unwrap(), None);
    let locker = kv.lock("l").locker().await.unwrap();
    locker.lock().await.unwrap().unlock().await.unwrap();
}

#[tokio::test]
async fn close_closes_every_clone() {
    let kv = kv();
    let clone = kv.clone();
    assert_eq!(format!("{clone:?}"), "Kv { store: \"memory\" }");
    kv.close().await.unwrap();
    assert_eq!(clone.get("a").await.unwrap_err().kind(), ErrorKind::Closed);
    clone.close().await.unwrap();
}
