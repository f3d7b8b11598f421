//! What the conformance suite cannot see: the on-server layout shared with the Go store,
//! glob characters in keys, foreign values, and the notifications check.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{Client, ClientLike, Config, ConfigInterface, KeysInterface};
use valkeyrie_core::{ErrorKind, LockOptions, ReadOptions, Store, WriteOptions};
use valkeyrie_redis::RedisConfig;

const URL: &str = "VALKEYRIE_REDIS_URL";

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
    let opts = LockOptions {
        value: Bytes::from_static(b"owner1"),
        ttl: Some(Duration::from_secs(6)),
        delete_on_unlock: true,
    };
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
    let raw = raw().await;
    let before: std::collections::HashMap<String, String> = raw.config_get("notify-keyspace-events").await.unwrap();
    let before = before.get("notify-keyspace-events").cloned().unwrap_or_default();
    // Other tests of this binary may watch concurrently: restore as soon as possible.
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
