//! What only the embedded store has: a database directory that survives reopening, is
//! shared within a process, and is refused to a second process.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use valkeyrie_boltlike::BoltlikeConfig;
use valkeyrie_core::{ErrorKind, LockOptions, ReadOptions, Store, WriteOptions};

const CHILD_DB: &str = "VALKEYRIE_BOLTLIKE_CHILD_DB";

#[tokio::test]
async fn data_indexes_ttls_and_fencing_tokens_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let (index, token) = {
        let store = BoltlikeConfig {
            sync_writes: true,
            ..BoltlikeConfig::at(&path)
        }
        .open()
        .await
        .unwrap();
        store
            .put("app/a", Bytes::from_static(b"1"), &WriteOptions::default())
            .await
            .unwrap();
        store
            .put("app/b", Bytes::from_static(&[0, 255]), &WriteOptions::default())
            .await
            .unwrap();
        store
            .put(
                "app/short",
                Bytes::from_static(b"x"),
                &WriteOptions::with_ttl(Duration::from_millis(300)),
            )
            .await
            .unwrap();
        let locker = store.new_lock("app/lock", LockOptions::with_value("me")).await.unwrap();
        let guard = locker.lock().await.unwrap();
        let token = guard.fencing_token();
        guard.unlock().await.unwrap();
        let index = store.get("app/b", &ReadOptions::default()).await.unwrap().last_index;
        store.close().await.unwrap();
        (index, token)
    };
    tokio::time::sleep(Duration::from_millis(400)).await;

    let store = BoltlikeConfig::at(&path).open().await.unwrap();
    let listed = store.list("app", &ReadOptions::default()).await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["app/a", "app/b", "app/lock"],
        "the TTL key expired while closed, the rest survived"
    );
    assert_eq!(listed[1].value, Bytes::from_static(&[0, 255]));
    assert_eq!(listed[1].last_index, index);
    store
        .put("app/c", Bytes::from_static(b"3"), &WriteOptions::default())
        .await
        .unwrap();
    let next = store.get("app/c", &ReadOptions::default()).await.unwrap().last_index;
    assert!(
        next > index,
        "indexes keep growing across reopen ({next} after {index})"
    );
    let locker = store.new_lock("app/lock", LockOptions::default()).await.unwrap();
    let guard = locker.lock().await.unwrap();
    assert!(
        guard.fencing_token() > token,
        "fencing tokens keep growing across reopen"
    );
    guard.unlock().await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test]
async fn handles_on_one_path_share_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let first = BoltlikeConfig::at(&path).open().await.unwrap();
    let second = valkeyrie_core::open(&format!("boltlike://{}", path.display()))
        .await
        .unwrap();
    first
        .put("k", Bytes::from_static(b"v"), &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(second.get("k").await.unwrap().unwrap().value, "v");
    let other_bucket = BoltlikeConfig {
        bucket: "other".into(),
        ..BoltlikeConfig::at(&path)
    }
    .open()
    .await
    .unwrap();
    let err = other_bucket.get("k", &ReadOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyNotFound, "buckets are separate namespaces");
}

#[tokio::test]
async fn a_second_process_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let store = BoltlikeConfig::at(&path).open().await.unwrap();
    store
        .put("k", Bytes::from_static(b"v"), &WriteOptions::default())
        .await
        .unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_opens_the_database",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("CHILD-REFUSED: "), "child output:\n{stdout}");
    assert!(
        stdout.contains("open in another process"),
        "the error says why:\n{stdout}"
    );
    assert_eq!(
        store.get("k", &ReadOptions::default()).await.unwrap().value,
        "v",
        "the database is intact"
    );
}

/// Run by `a_second_process_gets_a_clear_error` in a child process.
#[tokio::test]
#[ignore = "run in a child process by a_second_process_gets_a_clear_error"]
async fn child_opens_the_database() {
    let path = std::env::var(CHILD_DB).expect("run by a_second_process_gets_a_clear_error");
    let err = BoltlikeConfig::at(path)
        .open()
        .await
        .expect_err("the database is held by the parent");
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.is_temporary(), "retrying after the other process exits can work");
    println!("CHILD-REFUSED: {err}");
}

#[tokio::test]
async fn temporary_databases_are_private_and_vanish() {
    let first = BoltlikeConfig::temporary().open().await.unwrap();
    let second = valkeyrie_core::open("boltlike://?temporary=true").await.unwrap();
    first
        .put("k", Bytes::from_static(b"v"), &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(second.get("k").await.unwrap(), None);
    assert!(!first.capabilities().persistent);
    let shared = first.handle();
    assert_eq!(
        shared.get("k", &ReadOptions::default()).await.unwrap().value,
        "v",
        "handle() shares it"
    );
}

#[tokio::test]
async fn bad_configuration_names_the_field() {
    let err = valkeyrie_core::open("boltlike://").await.err().unwrap();
    assert!(
        matches!(&err, valkeyrie_core::Error::InvalidConfiguration { field, .. } if field == "path"),
        "{err}"
    );
    let err = valkeyrie_core::open("boltlike://host:1/x").await.err().unwrap();
    assert!(
        matches!(&err, valkeyrie_core::Error::InvalidConfiguration { field, .. } if field == "endpoints"),
        "{err}"
    );
    let err = valkeyrie_core::open("boltlike:///tmp/x?sync_writes=maybe")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, valkeyrie_core::Error::InvalidConfiguration { field, .. } if field == "sync_writes"),
        "{err}"
    );
    let err = valkeyrie_core::new_store(
        "boltlike",
        Vec::<String>::new(),
        valkeyrie_core::MemoryConfig::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("MemoryConfig"), "{err}");
}

#[tokio::test]
async fn keys_expiring_after_reopen_are_deleted_with_an_event() {
    use futures_util::StreamExt;
    use valkeyrie_core::WatchEvent;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let store = BoltlikeConfig::at(&path).open().await.unwrap();
    let ttl = WriteOptions::with_ttl(Duration::from_millis(800));
    store.put("soon", Bytes::from_static(b"v"), &ttl).await.unwrap();
    store.close().await.unwrap();
    drop(store);

    let store = BoltlikeConfig::at(&path).open().await.unwrap();
    let mut events = store.watch("soon", &ReadOptions::default()).await.unwrap();
    let first = events.next().await.unwrap().unwrap();
    assert!(
        matches!(first, WatchEvent::Snapshot(ref pairs) if pairs.len() == 1),
        "{first:?}"
    );
    let next = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an expiry event");
    assert!(
        matches!(next, Some(Ok(WatchEvent::Delete { ref key, .. })) if key == "soon"),
        "{next:?}"
    );
}

#[tokio::test]
async fn reopening_an_open_database_with_other_limits_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let _first = BoltlikeConfig::at(&path).open().await.unwrap();
    let other = BoltlikeConfig {
        max_value_size: Some(4),
        ..BoltlikeConfig::at(&path)
    };
    let err = other.open().await.unwrap_err();
    assert!(
        matches!(&err, valkeyrie_core::Error::InvalidConfiguration { field, .. } if field == "max_value_size"),
        "{err}"
    );
    let temporary_with_path = valkeyrie_core::open(&format!("boltlike://{}?temporary=true", path.display())).await;
    assert!(
        temporary_with_path.is_err(),
        "a temporary database never takes (and deletes) a real path"
    );
    assert!(path.exists());
}
