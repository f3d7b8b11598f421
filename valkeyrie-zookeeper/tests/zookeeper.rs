//! What the conformance suite cannot see: the znode layout shared with the Go store,
//! directory nodes, the chroot, and keys with keys below them.

use bytes::Bytes;
use valkeyrie_core::{ErrorKind, LockOptions, ReadOptions, Store, WriteOptions};
use valkeyrie_zookeeper::ZookeeperConfig;

const ENDPOINTS: &str = "VALKEYRIE_ZOOKEEPER_ENDPOINTS";

fn endpoints() -> Vec<String> {
    let value = std::env::var(ENDPOINTS)
        .unwrap_or_else(|_| panic!("{ENDPOINTS} is not set: run `cargo xtask test --backend zookeeper`"));
    value.split(',').map(str::to_owned).collect()
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    format!("vk-zk/{name}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn locks_use_the_go_layout() {
    let store = ZookeeperConfig::default().connect(endpoints()).await.unwrap();
    let client = store.client().unwrap();
    let key = unique("lock");
    let guard = store
        .new_lock(&key, LockOptions::with_value("owner1"))
        .await
        .unwrap()
        .lock()
        .await
        .unwrap();
    let (value, _) = client.get_data(&format!("/{key}")).await.unwrap();
    assert_eq!(value, b"owner1", "the lock value is the key's data");
    let children = client.list_children(&format!("/{key}")).await.unwrap();
    assert_eq!(children.len(), 1);
    let name = &children[0];
    let (prefix, sequence) = name.split_once("-lock-").expect("`-lock-` in the contender's name");
    assert!(
        prefix.starts_with("_c_") && prefix.len() == 3 + 32,
        "_c_<32 hex>: {name}"
    );
    assert!(prefix[3..].chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    assert_eq!(sequence.len(), 10, "a 10-digit sequence: {name}");
    let (_, stat) = client.get_data(&format!("/{key}/{name}")).await.unwrap();
    assert_eq!(
        stat.ephemeral_owner,
        client.session_id().0,
        "the contender is ephemeral, owned by the session"
    );
    assert_eq!(
        guard.fencing_token(),
        u64::try_from(stat.czxid).unwrap(),
        "token = the contender's creation zxid"
    );
    guard.unlock().await.unwrap();
    assert!(
        client
            .list_children(&format!("/{key}"))
            .await
            .unwrap_or_default()
            .is_empty(),
        "unlock deletes it"
    );
    let listed = store.list(&key, &ReadOptions::default()).await.unwrap();
    assert!(
        listed.is_empty(),
        "the key keeps its value and lists empty: lock nodes are never listed"
    );
    store.delete(&key).await.unwrap();
}

/// An unlock is one round trip while the key still holds the lock value; a key deleted
/// while its lock was held stays a directory node for the contender, and the unlock then
/// removes it with the contender, leaving no bare directory behind.
#[tokio::test]
async fn an_unlock_removes_a_key_deleted_while_the_lock_was_held() {
    let store = ZookeeperConfig::default().connect(endpoints()).await.unwrap();
    let client = store.client().unwrap();
    let dir = unique("unlock-cleanup");
    let key = format!("{dir}/job");
    let locker = store.new_lock(&key, LockOptions::with_value("me")).await.unwrap();

    locker.lock().await.unwrap().unlock().await.unwrap();
    let (value, _) = client.get_data(&format!("/{key}")).await.unwrap();
    assert_eq!(value, b"me", "an untouched key keeps the lock value");
    assert!(client.list_children(&format!("/{key}")).await.unwrap().is_empty());

    let guard = locker.lock().await.unwrap();
    store.delete(&key).await.unwrap();
    let (marker, _) = client.get_data(&format!("/{key}")).await.unwrap();
    assert_eq!(
        marker,
        [0x01],
        "the contender keeps the deleted key's node as a directory"
    );
    guard.unlock().await.unwrap();
    assert!(
        client.get_data(&format!("/{key}")).await.is_err(),
        "the unlock removes the bare directory node"
    );
    assert!(
        client.get_data(&format!("/{dir}")).await.is_err(),
        "and the directories left empty above it"
    );
}

#[tokio::test]
async fn directories_are_not_keys_and_vanish_with_their_last_child() {
    let store = ZookeeperConfig::default().connect(endpoints()).await.unwrap();
    let client = store.client().unwrap();
    let dir = unique("dirs");
    store
        .put(
            &format!("{dir}/a/b"),
            Bytes::from_static(b"leaf"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let (marker, _) = client.get_data(&format!("/{dir}/a")).await.unwrap();
    assert_eq!(marker, [0x01], "a parent made for its child holds the directory marker");
    assert_eq!(
        store
            .get(&format!("{dir}/a"), &ReadOptions::default())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::KeyNotFound
    );
    assert!(!store
        .exists(&format!("{dir}/a"), &ReadOptions::default())
        .await
        .unwrap());

    store
        .put(
            &format!("{dir}/a"),
            Bytes::from_static(b"\x01"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let (stored, _) = client.get_data(&format!("/{dir}/a")).await.unwrap();
    assert_eq!(stored, [0x01, 0x01], "a value starting with 0x01 is escaped");
    assert_eq!(
        store
            .get(&format!("{dir}/a"), &ReadOptions::default())
            .await
            .unwrap()
            .value,
        "\x01"
    );

    store.delete(&format!("{dir}/a")).await.unwrap();
    assert!(
        !store
            .exists(&format!("{dir}/a"), &ReadOptions::default())
            .await
            .unwrap(),
        "deleting a key with children"
    );
    assert_eq!(
        store
            .get(&format!("{dir}/a/b"), &ReadOptions::default())
            .await
            .unwrap()
            .value,
        "leaf",
        "keeps them"
    );
    store.delete(&format!("{dir}/a/b")).await.unwrap();
    assert!(
        client.get_data(&format!("/{dir}")).await.is_err(),
        "empty directory nodes go with their last child"
    );
}

#[tokio::test]
async fn a_chroot_confines_every_key() {
    let root = unique("chroot");
    let config = ZookeeperConfig {
        chroot: Some(root.clone()),
        ..Default::default()
    };
    let confined = config.connect(endpoints()).await.unwrap();
    confined
        .put("inside", Bytes::from_static(b"v"), &WriteOptions::default())
        .await
        .unwrap();
    let plain = ZookeeperConfig::default().connect(endpoints()).await.unwrap();
    let seen = plain
        .get(&format!("{root}/inside"), &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(seen.value, "v");
    plain.delete_tree(&root).await.unwrap();
}

#[tokio::test]
async fn an_expired_session_is_replaced_and_the_handle_works_again() {
    use std::time::Duration;

    let store = ZookeeperConfig::default().connect(endpoints()).await.unwrap();
    let dir = unique("expiry");
    let (key, ephemeral) = (format!("{dir}/k"), format!("{dir}/ephemeral"));
    store
        .put(&key, "before".into(), &WriteOptions::default())
        .await
        .unwrap();
    store
        .put(
            &ephemeral,
            "session-bound".into(),
            &WriteOptions::keep_alive(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let guard = store
        .new_lock(&format!("{dir}/lock"), LockOptions::with_value("old session"))
        .await
        .unwrap()
        .lock()
        .await
        .unwrap();

    // Expire the session as the ensemble would: another client takes it over and closes it.
    // The store's client reconnects at once and can win the session back before the close
    // reaches the server; the close then fails and the takeover is tried again. On a loaded
    // machine a connect can miss the client's default deadline: allow a generous one.
    let session = store.client().unwrap().session().clone();
    let lost = guard.lost_signal();
    let mut attempts = 0;
    let reason = loop {
        attempts += 1;
        assert!(attempts <= 5, "the session survived {} takeovers", attempts - 1);
        let connected = zookeeper_client::Client::connector()
            .with_session(session.clone())
            .with_connection_timeout(Duration::from_secs(5))
            .connect(&endpoints().join(","))
            .await;
        match connected {
            Ok(thief) => {
                let mut state = thief.state_watcher();
                // Dropping the last handle sends the close; the state says how the session ended.
                drop(thief);
                let ended = tokio::time::timeout(Duration::from_secs(5), async {
                    loop {
                        let now = state.changed().await;
                        if now.is_terminated() {
                            break now;
                        }
                    }
                });
                println!("takeover {attempts}: the thief's session ended {:?}", ended.await);
            }
            Err(err) => {
                println!("taking the session over failed ({err}); again");
                continue;
            }
        }
        if let Ok(reason) = tokio::time::timeout(Duration::from_secs(10), lost.lost()).await {
            break reason;
        }
    };
    println!("lost because {reason}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match store.get(&key, &ReadOptions::default()).await {
            Ok(pair) => {
                assert_eq!(pair.value, "before");
                break;
            }
            Err(err) => {
                assert!(tokio::time::Instant::now() < deadline, "no new session: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    store.put(&key, "after".into(), &WriteOptions::default()).await.unwrap();
    assert_eq!(store.get(&key, &ReadOptions::default()).await.unwrap().value, "after");
    let gone = store.get(&ephemeral, &ReadOptions::default()).await.unwrap_err();
    assert_eq!(
        gone.kind(),
        ErrorKind::KeyNotFound,
        "a keep-alive key goes with its session"
    );
    let next = store
        .new_lock(&format!("{dir}/lock"), LockOptions::with_value("new session"))
        .await
        .unwrap()
        .lock_timeout(Duration::from_secs(10))
        .await
        .unwrap();
    next.unlock().await.unwrap();
    drop(guard);
    store.delete_tree(&dir).await.unwrap();
    store.close().await.unwrap();
}
