//! What the conformance suite cannot see: the on-server layout shared with the Go store,
//! glob characters in keys, foreign values, the notifications check, and transactions on
//! all of those.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{Client, ClientLike, Config, ConfigInterface, KeysInterface};
use futures_util::StreamExt;
use valkeyrie_core::{
    ErrorKind, LockOptions, ReadOptions, Store, Transaction, TxnOutcome, WatchEvent, WatchStream, WriteOptions,
};
use valkeyrie_redis::{RedisConfig, ValueEncoding};

const URL: &str = "VALKEYRIE_REDIS_URL";

/// Held for writing while a test turns keyspace notifications off, for reading by tests that
/// watch: the tests of this binary run concurrently.
static NOTIFICATIONS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn url() -> String {
    std::env::var(URL).unwrap_or_else(|_| panic!("{URL} is not set: run `cargo xtask test --backend redis`"))
}

fn endpoint() -> String {
    url().trim_start_matches("redis://").trim_end_matches('/').to_owned()
}

async fn raw() -> Client {
    let client = Client::new(Config::from_url(&url()).expect("a redis URL"), None, None, None);
    client.init().await.expect("a raw redis client");
    client
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    format!("vk-redis/{name}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn values_and_locks_use_the_go_json_envelope() {
    let store = RedisConfig::default().connect([endpoint()]).await.unwrap();
    let raw = raw().await;
    let key = unique("layout");
    store
        .put(
            &format!("/{key}"),
            Bytes::from_static(b"hello2"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let stored: String = raw.get(key.as_str()).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(json["Key"], key.as_str(), "the normalized key");
    assert_eq!(json["Value"], "aGVsbG8y", "base64 of the value");
    let index = json["LastIndex"].as_u64().expect("an integer LastIndex");
    assert_eq!(
        store.get(&key, &ReadOptions::default()).await.unwrap().last_index,
        index
    );
    let ttl: i64 = raw.pttl(key.as_str()).await.unwrap();
    assert_eq!(ttl, -1, "no expiry without a TTL");

    let lock_key = unique("lock");
    let opts = LockOptions::with_value("owner1")
        .ttl(Duration::from_secs(6))
        .delete_on_unlock(true);
    let guard = store.new_lock(&lock_key, opts).await.unwrap().lock().await.unwrap();
    let stored: String = raw.get(lock_key.as_str()).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(json["Value"], "b3duZXIx", "the lock is the key, holding the lock value");
    assert_eq!(
        json["LastIndex"].as_u64(),
        Some(guard.fencing_token()),
        "the fencing token is the holder's index"
    );
    let ttl: i64 = raw.pttl(lock_key.as_str()).await.unwrap();
    assert!(
        (1..=6000).contains(&ttl),
        "the lock key expires with the lock TTL: {ttl}"
    );
    guard.unlock().await.unwrap();
    assert_eq!(
        raw.exists::<i64, _>(lock_key.as_str()).await.unwrap(),
        0,
        "delete_on_unlock deletes the key"
    );
    raw.del::<i64, _>(key.as_str()).await.unwrap();
}

#[tokio::test]
async fn go_written_envelopes_and_foreign_values_read_back() {
    let store = RedisConfig::default().connect([endpoint()]).await.unwrap();
    let raw = raw().await;
    let dir = unique("foreign");
    let go = r#"{"Key":"x","Value":"aGVsbG8y","LastIndex":51840166}"#;
    raw.set::<(), _, _>(format!("{dir}/go"), go, None, None, false)
        .await
        .unwrap();
    raw.set::<(), _, _>(format!("{dir}/plain"), "written by redis-cli", None, None, false)
        .await
        .unwrap();
    let go_pair = store.get(&format!("{dir}/go"), &ReadOptions::default()).await.unwrap();
    assert_eq!(
        (go_pair.value.as_ref(), go_pair.last_index),
        (b"hello2".as_ref(), 51_840_166)
    );
    let updated = store
        .atomic_put(
            &format!("{dir}/go"),
            Bytes::from_static(b"from rust"),
            Some(&go_pair),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        updated.last_index > 51_840_166,
        "a CAS on a Go value works and moves the index forward"
    );
    let plain = store
        .get(&format!("{dir}/plain"), &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (plain.value.as_ref(), plain.last_index),
        (b"written by redis-cli".as_ref(), 0)
    );
    store.delete_tree(&dir).await.unwrap();
}

#[tokio::test]
async fn glob_characters_in_keys_are_listed_literally() {
    let store = RedisConfig::default().connect([endpoint()]).await.unwrap();
    let base = unique("glob");
    for key in ["d[1]/a", "d[1]/b", "d1/c", "d*/x"] {
        store
            .put(
                &format!("{base}/{key}"),
                Bytes::from_static(b"v"),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
    }
    let listed = store
        .list(&format!("{base}/d[1]"), &ReadOptions::default())
        .await
        .unwrap();
    let keys: Vec<&str> = listed.iter().map(|p| p.key.rsplit('/').next().unwrap()).collect();
    assert_eq!(keys, ["a", "b"], "`[1]` is not a character class");
    let listed = store
        .list(&format!("{base}/d*"), &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "`*` is not a wildcard");
    store.delete_tree(&base).await.unwrap();
}

#[tokio::test]
async fn watches_name_the_setting_when_notifications_are_off() {
    let _off = NOTIFICATIONS.write().await;
    let raw = raw().await;
    let before: std::collections::HashMap<String, String> = raw.config_get("notify-keyspace-events").await.unwrap();
    let before = before.get("notify-keyspace-events").cloned().unwrap_or_default();
    raw.config_set::<_, _>("notify-keyspace-events", "").await.unwrap();
    let store = RedisConfig::default().connect([endpoint()]).await.unwrap();
    let refused = store.watch(&unique("off"), &ReadOptions::default()).await.err();
    let enabling = RedisConfig {
        enable_keyspace_events: true,
        ..Default::default()
    }
    .connect([endpoint()])
    .await
    .unwrap();
    let enabled = enabling.watch(&unique("on"), &ReadOptions::default()).await.map(drop);
    raw.config_set::<_, _>("notify-keyspace-events", before.as_str())
        .await
        .unwrap();
    let err = refused.expect("a watch with notifications off fails");
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().contains("notify-keyspace-events"), "{err}");
    assert!(enabled.is_ok(), "enable_keyspace_events turns them on: {enabled:?}");
}

#[tokio::test]
async fn a_committed_put_writes_what_put_writes() {
    let store = RedisConfig::default().connect([endpoint()]).await.unwrap();
    let raw = raw().await;
    let dir = unique("txn-layout");
    let (by_put, by_txn) = (format!("{dir}/put"), format!("{dir}/txn"));
    let ttl = WriteOptions::with_ttl(Duration::from_secs(60));
    store.put(&by_put, "hello2".into(), &ttl).await.unwrap();
    store.put(&by_txn, "earlier".into(), &ttl).await.unwrap();
    let earlier = store.get(&by_txn, &ReadOptions::default()).await.unwrap();
    let txn = Transaction::new().put(&by_txn, "hello2");
    assert_eq!(store.commit(txn).await.unwrap(), TxnOutcome::Committed);

    let envelope = |stored: String| -> serde_json::Value { serde_json::from_str(&stored).unwrap() };
    let put_json = envelope(raw.get(by_put.as_str()).await.unwrap());
    let txn_json = envelope(raw.get(by_txn.as_str()).await.unwrap());
    assert_eq!(txn_json["Key"], by_txn.as_str());
    assert_eq!(txn_json["Value"], put_json["Value"], "the same envelope encoding");
    let index = txn_json["LastIndex"].as_u64().expect("an integer LastIndex");
    assert!(index > earlier.last_index, "a fresh index");
    assert!(index < 1 << 53, "below 2^53, for the Go store");
    assert_eq!(
        raw.pttl::<i64, _>(by_txn.as_str()).await.unwrap(),
        -1,
        "no TTL clears the old one"
    );

    let txn = Transaction::new().put_with(&by_txn, "short", WriteOptions::with_ttl(Duration::from_secs(5)));
    assert_eq!(store.commit(txn).await.unwrap(), TxnOutcome::Committed);
    let left: i64 = raw.pttl(by_txn.as_str()).await.unwrap();
    assert!((1..=5000).contains(&left), "the TTL is a PX expiry: {left}");
    store.delete_tree(&dir).await.unwrap();
}

#[tokio::test]
async fn compares_read_go_envelopes_and_foreign_values() {
    let store = RedisConfig::default().connect([endpoint()]).await.unwrap();
    let raw = raw().await;
    let dir = unique("txn-foreign");
    let (go, plain, out) = (format!("{dir}/go"), format!("{dir}/plain"), format!("{dir}/out"));
    let envelope = r#"{"Key":"x","Value":"aGVsbG8y","LastIndex":51840166}"#;
    raw.set::<(), _, _>(go.as_str(), envelope, None, None, false)
        .await
        .unwrap();
    raw.set::<(), _, _>(plain.as_str(), "written by redis-cli", None, None, false)
        .await
        .unwrap();
    let holding = Transaction::new()
        .when_index(&go, 51_840_166)
        .when_value(&go, "hello2")
        .when_value(&plain, "written by redis-cli")
        .when_exists(&plain);
    let failing = [
        (
            holding.clone().when_value(&go, envelope),
            "an envelope is compared by its value",
        ),
        (holding.clone().when_value(&plain, "other"), "a different foreign value"),
        (holding.clone().when_index(&plain, 1), "a foreign value has no index"),
    ];
    for (txn, what) in failing {
        let outcome = store.commit(txn.put(&out, "x")).await.unwrap();
        assert_eq!(outcome, TxnOutcome::Failed { compare: 4 }, "{what}");
    }
    assert!(
        !store.exists(&out, &ReadOptions::default()).await.unwrap(),
        "nothing written"
    );
    let outcome = store.commit(holding.put(&out, "x").delete(&plain)).await.unwrap();
    assert_eq!(outcome, TxnOutcome::Committed);
    assert_eq!(
        raw.exists::<i64, _>(plain.as_str()).await.unwrap(),
        0,
        "the delete was applied"
    );
    store.delete_tree(&dir).await.unwrap();
}

#[tokio::test]
async fn a_fence_ends_with_a_release_that_keeps_the_value() {
    let store = RedisConfig::default().connect([endpoint()]).await.unwrap();
    let raw = raw().await;
    let (lock_key, data) = (unique("txn-lock"), unique("txn-data"));
    let guard = store
        .new_lock(&lock_key, LockOptions::with_value("a"))
        .await
        .unwrap()
        .lock()
        .await
        .unwrap();
    let fence = guard.fence();
    let fenced = || Transaction::new().when_held(&fence).put(&data, "fenced");
    assert_eq!(store.commit(fenced()).await.unwrap(), TxnOutcome::Committed);
    guard.unlock().await.unwrap();
    let left = store.get(&lock_key, &ReadOptions::default()).await.unwrap();
    assert_eq!(
        left.last_index,
        fence.token(),
        "the value stays with the holder's index"
    );
    assert_eq!(
        store.commit(fenced()).await.unwrap(),
        TxnOutcome::Failed { compare: 0 },
        "without an expiry the key is no longer a held lock"
    );
    raw.del::<i64, _>(vec![lock_key.as_str(), data.as_str()]).await.unwrap();
}

async fn next_change(watch: &mut WatchStream) -> WatchEvent {
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
    event
        .expect("an event in time")
        .expect("an open watch")
        .expect("no watch error")
}

#[tokio::test]
async fn watches_see_committed_puts_and_deletes() {
    let _on = NOTIFICATIONS.read().await;
    let store = RedisConfig::default().connect([endpoint()]).await.unwrap();
    let dir = unique("txn-watch");
    let (a, b) = (format!("{dir}/a"), format!("{dir}/b"));
    store.put(&b, "old".into(), &WriteOptions::default()).await.unwrap();
    let mut watch = store.watch_tree(&dir, &ReadOptions::default()).await.unwrap();
    assert!(matches!(next_change(&mut watch).await, WatchEvent::Snapshot(_)));
    let txn = Transaction::new().put(&a, "new").delete(&b);
    assert_eq!(store.commit(txn).await.unwrap(), TxnOutcome::Committed);
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(match next_change(&mut watch).await {
            WatchEvent::Put(pair) => (pair.key, Some(pair.value)),
            WatchEvent::Delete { key, .. } => (key, None),
            other => panic!("an unexpected {other:?}"),
        });
    }
    seen.sort();
    assert_eq!(seen, [(a, Some(Bytes::from_static(b"new"))), (b, None)]);
    drop(watch);
    store.delete_tree(&dir).await.unwrap();
}

fn raw_values() -> RedisConfig {
    RedisConfig {
        value_encoding: ValueEncoding::Raw,
        ..Default::default()
    }
}

/// The raw layout's index key of a key without a hash tag.
fn index_key(key: &str) -> String {
    format!("{{{key}}}\0valkeyrie-index")
}

#[tokio::test]
async fn raw_values_are_plain_strings_with_the_index_beside_them() {
    let store = raw_values().connect([endpoint()]).await.unwrap();
    let raw = raw().await;
    let dir = unique("raw-layout");
    let key = format!("{dir}/a");
    let value = Bytes::from_static(b"\x00binary \xff value");
    store
        .put(&key, value.clone(), &WriteOptions::with_ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let stored: Bytes = raw.get(key.as_str()).await.unwrap();
    assert_eq!(stored, value, "a plain GET reads the value as written");
    let index: String = raw.get(index_key(&key)).await.unwrap();
    let pair = store.get(&key, &ReadOptions::default()).await.unwrap();
    assert_eq!(index, pair.last_index.to_string(), "the index key holds the index");
    for name in [key.clone(), index_key(&key)] {
        let ttl: i64 = raw.pttl(name.as_str()).await.unwrap();
        assert!((1..=30_000).contains(&ttl), "{name:?} expires with the TTL: {ttl}");
    }
    // A hash-tagged key keeps its tag: its index key is the key plus the suffix.
    let tagged = format!("{{{dir}}}/b");
    store.put(&tagged, "t".into(), &WriteOptions::default()).await.unwrap();
    let tagged_index: Option<String> = raw.get(format!("{tagged}\0valkeyrie-index")).await.unwrap();
    assert!(tagged_index.is_some(), "the tagged key's index key");

    // Another client's value reads with index 0; the next write through the store gives it
    // one, which compare-and-set then takes, once.
    let foreign = format!("{dir}/foreign");
    raw.set::<(), _, _>(foreign.as_str(), "from redis-cli", None, None, false)
        .await
        .unwrap();
    let read = store.get(&foreign, &ReadOptions::default()).await.unwrap();
    assert_eq!((read.value.as_ref(), read.last_index), (b"from redis-cli".as_ref(), 0));
    store
        .put(&foreign, "mine".into(), &WriteOptions::default())
        .await
        .unwrap();
    let read = store.get(&foreign, &ReadOptions::default()).await.unwrap();
    assert!(read.last_index > 0);
    store
        .atomic_put(&foreign, "again".into(), Some(&read), &WriteOptions::default())
        .await
        .unwrap();
    let stale = store
        .atomic_put(&foreign, "late".into(), Some(&read), &WriteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::KeyModified, "{stale}");

    // Index keys are bookkeeping: never listed, and deleted with their keys.
    let listed: Vec<String> = store
        .list(&dir, &ReadOptions::default())
        .await
        .unwrap()
        .into_iter()
        .map(|pair| pair.key)
        .collect();
    assert_eq!(listed, [key.clone(), foreign.clone()]);
    store.delete(&key).await.unwrap();
    assert_eq!(
        raw.exists::<i64, _>(index_key(&key)).await.unwrap(),
        0,
        "delete takes the index key"
    );
    store.delete_tree(&dir).await.unwrap();
    assert_eq!(
        raw.exists::<i64, _>(index_key(&foreign)).await.unwrap(),
        0,
        "so does delete_tree"
    );
    store.delete(&tagged).await.unwrap();

    // A `}` without a hash tag cannot go in braces: the index key is the key plus the suffix.
    let odd = format!("{dir}-odd}}key");
    store.put(&odd, "o".into(), &WriteOptions::default()).await.unwrap();
    let odd_index: Option<String> = raw.get(format!("{odd}\0valkeyrie-index")).await.unwrap();
    let pair = store.get(&odd, &ReadOptions::default()).await.unwrap();
    assert_eq!(odd_index, Some(pair.last_index.to_string()));
    store.delete(&odd).await.unwrap();
}

#[tokio::test]
async fn raw_watches_report_keys_not_their_index_keys() {
    let _on = NOTIFICATIONS.read().await;
    let store = raw_values().connect([endpoint()]).await.unwrap();
    let dir = unique("raw-watch");
    // Tagged, so that the index keys fall under the watched prefix too.
    let dir = format!("{{{dir}}}");
    let key = format!("{dir}/a");
    let mut watch = store.watch_tree(&dir, &ReadOptions::default()).await.unwrap();
    assert!(matches!(next_change(&mut watch).await, WatchEvent::Snapshot(_)));
    for value in ["one", "two"] {
        store.put(&key, value.into(), &WriteOptions::default()).await.unwrap();
        match next_change(&mut watch).await {
            WatchEvent::Put(pair) => assert_eq!(
                (pair.key.as_str(), pair.value.as_ref()),
                (key.as_str(), value.as_bytes())
            ),
            other => panic!("expected the put of {value}, got {other:?}"),
        }
    }
    // Another client's SET leaves the index key as it was; the watch still reports it.
    let raw = raw().await;
    raw.set::<(), _, _>(key.as_str(), "foreign", None, None, false)
        .await
        .unwrap();
    match next_change(&mut watch).await {
        WatchEvent::Put(pair) => assert_eq!(pair.value.as_ref(), b"foreign"),
        other => panic!("expected the foreign write, got {other:?}"),
    }
    store.delete(&key).await.unwrap();
    assert!(matches!(next_change(&mut watch).await, WatchEvent::Delete { key: deleted, .. } if deleted == key));
    let quiet = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(quiet.is_err(), "nothing more: {quiet:?}");
}

#[tokio::test]
async fn raw_locks_exclude_a_go_raw_codec_lock() {
    let store = raw_values().connect([endpoint()]).await.unwrap();
    let raw = raw().await;
    let key = unique("raw-lock");
    // What the Go store's raw codec does to lock: SET key value EX ttl NX; whether it took.
    let go_lock = || async {
        let taken: Option<String> = raw
            .set(
                key.as_str(),
                "go-owner",
                Some(fred::types::Expiration::EX(6)),
                Some(fred::types::SetOptions::NX),
                false,
            )
            .await
            .unwrap();
        taken.is_some()
    };
    assert!(go_lock().await, "Go takes the free lock");
    let opts = LockOptions::with_value("rust-owner").ttl(Duration::from_secs(6));
    let locker = store.new_lock(&key, opts).await.unwrap();
    assert!(locker.try_lock().await.unwrap().is_none(), "Go holds it");
    raw.del::<i64, _>(key.as_str()).await.unwrap();
    let guard = locker.try_lock().await.unwrap().expect("free once Go let go");
    let stored: Bytes = raw.get(key.as_str()).await.unwrap();
    assert_eq!(stored.as_ref(), b"rust-owner", "the lock key holds the raw lock value");
    assert!(!go_lock().await, "Go's SET NX fails while Rust holds it");
    guard.unlock().await.unwrap();
    let ttl: i64 = raw.pttl(key.as_str()).await.unwrap();
    assert_eq!(ttl, -1, "released: the value stays, without its expiry");
    raw.del::<i64, _>(vec![key.clone(), index_key(&key)]).await.unwrap();
}
