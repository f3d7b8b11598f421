//! What the conformance suite cannot see: the on-server layout shared with the Go store,
//! paged lists, and leases.

use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, GetOptions, LeaseTimeToLiveOptions};
use valkeyrie_core::{LockOptions, ReadOptions, Store, WriteOptions};
use valkeyrie_etcd::EtcdConfig;

const ENDPOINTS: &str = "VALKEYRIE_ETCD_ENDPOINTS";

fn endpoints() -> Vec<String> {
    let value = std::env::var(ENDPOINTS)
        .unwrap_or_else(|_| panic!("{ENDPOINTS} is not set: run `cargo xtask test --backend etcd`"));
    value.split(',').map(str::to_owned).collect()
}

async fn raw() -> Client {
    let urls: Vec<String> = endpoints().iter().map(|e| format!("http://{e}")).collect();
    Client::connect(&urls, None).await.expect("a raw etcd client")
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    format!("vk-etcd/{name}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn locks_use_the_go_layout() {
    let store = EtcdConfig::default().connect(endpoints()).await.unwrap();
    let key = unique("lock");
    let mut raw = raw().await;
    let mut released_lease = None;
    for delete_on_unlock in [false, true] {
        let opts = LockOptions::with_value("owner1")
            .ttl(Duration::from_secs(6))
            .delete_on_unlock(delete_on_unlock);
        let locker = store.new_lock(&key, opts).await.unwrap();
        let guard = locker.lock().await.unwrap();

        let contenders = raw
            .get(format!("{key}___lock/"), Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(contenders.kvs().len(), 1, "one contender key");
        let contender = &contenders.kvs()[0];
        let lease = contender.lease();
        assert_eq!(
            contender.key_str().unwrap(),
            format!("{key}___lock/{lease:x}"),
            "<key>___lock/<lease id in hex>"
        );
        assert!(contender.value().is_empty());
        assert_eq!(
            guard.fencing_token(),
            u64::try_from(contender.create_revision()).unwrap(),
            "token = create revision"
        );
        let ttl = raw.lease_time_to_live(lease, None).await.unwrap();
        assert!(
            (1..=6).contains(&ttl.ttl()),
            "the contender is bound to a lease of the lock TTL: {}",
            ttl.ttl()
        );
        if let Some(released) = released_lease {
            assert_eq!(
                lease, released,
                "the next acquisition of that TTL takes the released lease"
            );
        }

        let value = raw.get(key.as_str(), None).await.unwrap();
        let value = &value.kvs()[0];
        assert_eq!(value.value(), b"owner1", "the lock value is at <key>");
        let expected_lease = if delete_on_unlock { lease } else { 0 };
        assert_eq!(
            value.lease(),
            expected_lease,
            "the value is lease-bound exactly with delete_on_unlock"
        );

        guard.unlock().await.unwrap();
        let contenders = raw
            .get(format!("{key}___lock/"), Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert!(contenders.kvs().is_empty(), "unlock removes the contender key");
        let idle = raw
            .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        assert!(idle.ttl() > 0, "the released lease is kept for the next acquisition");
        assert!(idle.keys().is_empty(), "nothing is bound to an idle lease");
        released_lease = Some(lease);
        let value = raw.get(key.as_str(), None).await.unwrap();
        assert_eq!(
            value.kvs().is_empty(),
            delete_on_unlock,
            "the value stays unless delete_on_unlock"
        );
    }

    // An idle lease revoked behind the handle's back: the next acquisition takes a new one.
    let gone = released_lease.expect("two cycles ran");
    raw.lease_revoke(gone).await.unwrap();
    let opts = LockOptions::with_value("owner2").ttl(Duration::from_secs(6));
    let guard = store.new_lock(&key, opts).await.unwrap().lock().await.unwrap();
    let contenders = raw
        .get(format!("{key}___lock/"), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let lease = contenders.kvs()[0].lease();
    assert_ne!(lease, gone, "a revoked idle lease is not used again");
    guard.unlock().await.unwrap();

    store.close().await.unwrap();
    until_revoked(&mut raw, lease, Duration::from_secs(5), "close revokes the idle leases").await;
    raw.delete(key.as_str(), None).await.unwrap();
}

#[tokio::test]
async fn large_directories_are_listed_in_pages_at_one_revision() {
    let config = EtcdConfig {
        list_page_size: 3,
        ..Default::default()
    };
    let store = config.connect(endpoints()).await.unwrap();
    let dir = unique("paged");
    for i in 0..10 {
        store
            .put(
                &format!("{dir}/k{i:02}"),
                Bytes::from(i.to_string()),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
    }
    let listed = store.list(&dir, &ReadOptions::default()).await.unwrap();
    let keys: Vec<String> = listed
        .iter()
        .map(|p| p.key.rsplit('/').next().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("k{i:02}")).collect();
    assert_eq!(keys, expected, "every page, in order, no duplicates");
    store.delete_tree(&dir).await.unwrap();
}

#[tokio::test]
async fn each_ttl_write_gets_its_own_lease_and_a_plain_put_detaches_it() {
    let store = EtcdConfig::default().connect(endpoints()).await.unwrap();
    let key = unique("ttl");
    let mut raw = raw().await;
    store
        .put(
            &key,
            Bytes::from_static(b"a"),
            &WriteOptions::with_ttl(Duration::from_millis(2500)),
        )
        .await
        .unwrap();
    let first = raw.get(key.as_str(), None).await.unwrap().kvs()[0].lease();
    let granted = raw.lease_time_to_live(first, None).await.unwrap();
    assert_eq!(granted.granted_ttl(), 3, "TTLs are rounded up to whole seconds");
    store
        .put(
            &key,
            Bytes::from_static(b"b"),
            &WriteOptions::with_ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let second = raw.get(key.as_str(), None).await.unwrap().kvs()[0].lease();
    assert_ne!(first, second, "one lease per TTL write");
    store
        .put(&key, Bytes::from_static(b"c"), &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        raw.get(key.as_str(), None).await.unwrap().kvs()[0].lease(),
        0,
        "a put without TTL is permanent"
    );
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_cluster_is_not_reachable_within_the_connect_timeout() {
    let config = EtcdConfig {
        connect_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let err = config.connect(["127.0.0.1:1"]).await.unwrap_err();
    assert_eq!(err.kind(), valkeyrie_core::ErrorKind::NotReachable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the connect timeout"
    );
    // One line a person can act on, about no key, without tonic's debug dump; the
    // client's error stays reachable as the source.
    let message = err.to_string();
    println!("{message}");
    assert!(
        message.starts_with("etcd: server not reachable during connect: "),
        "{message}"
    );
    assert!(!message.contains('\n') && !message.contains("MetadataMap"), "{message}");
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn a_watch_resumed_past_the_compaction_starts_with_a_snapshot() {
    use futures_util::StreamExt;
    use valkeyrie_core::WatchEvent;

    let store = EtcdConfig::default().connect(endpoints()).await.unwrap();
    let dir = unique("resume-compacted");
    let key = format!("{dir}/a");
    store.put(&key, "1".into(), &WriteOptions::default()).await.unwrap();
    let seen = store.get(&key, &ReadOptions::default()).await.unwrap().last_index;
    store.put(&key, "2".into(), &WriteOptions::default()).await.unwrap();
    // A later write, so that compacting at its revision removes every revision after `seen`.
    store
        .put(&format!("{dir}/b"), "x".into(), &WriteOptions::default())
        .await
        .unwrap();
    let current = store.list(&dir, &ReadOptions::default()).await.unwrap();
    let revision = current.iter().map(|pair| pair.last_index).max().unwrap();
    // Only revisions up to our last write go: watches of other tests start later.
    raw()
        .await
        .compact(i64::try_from(revision).unwrap(), None)
        .await
        .unwrap();

    let mut events = store
        .watch_tree_from(&dir, seen, &ReadOptions::default())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("the watch goes on")
        .unwrap();
    assert_eq!(
        first,
        WatchEvent::Snapshot(current),
        "a compacted start is a snapshot, not a gap"
    );
    store.put(&key, "3".into(), &WriteOptions::default()).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("the watch goes on")
        .unwrap();
    assert!(matches!(&next, WatchEvent::Put(pair) if pair.value == "3"), "{next:?}");
    store.delete_tree(&dir).await.unwrap();
}

/// Waits until `lease` is gone, failing with `what` after `within`.
async fn until_revoked(raw: &mut Client, lease: i64, within: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    while raw.lease_time_to_live(lease, None).await.expect("read the lease").ttl() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn lease_of(raw: &mut Client, key: &str) -> i64 {
    raw.get(key, None).await.expect("read the key").kvs()[0].lease()
}

#[tokio::test]
async fn keep_alive_writes_of_one_ttl_share_one_lease_until_no_key_uses_it() {
    let store = EtcdConfig::default().connect(endpoints()).await.unwrap();
    let mut raw = raw().await;
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|name| unique(&format!("shared-{name}")));
    let three = WriteOptions::keep_alive(Duration::from_secs(3));
    let four = WriteOptions::keep_alive(Duration::from_secs(4));
    store.put(&a, Bytes::from_static(b"a"), &three).await.unwrap();
    store.put(&b, Bytes::from_static(b"b"), &three).await.unwrap();
    store.put(&c, Bytes::from_static(b"c"), &four).await.unwrap();
    let shared = lease_of(&mut raw, &a).await;
    assert_eq!(
        lease_of(&mut raw, &b).await,
        shared,
        "one lease for the keys of one TTL"
    );
    let other = lease_of(&mut raw, &c).await;
    assert_ne!(other, shared, "another TTL, another lease");

    // Once no key is attached any more, the next renewal revokes the lease.
    store
        .put(&a, Bytes::from_static(b"plain"), &WriteOptions::default())
        .await
        .unwrap();
    store.delete(&b).await.unwrap();
    until_revoked(
        &mut raw,
        shared,
        Duration::from_secs(10),
        "the unused lease was not revoked",
    )
    .await;

    // A shared lease gone behind the handle's back (it expired while the server was away)
    // is replaced by the next write of its TTL, which does not fail.
    raw.lease_revoke(other).await.unwrap();
    store.put(&d, Bytes::from_static(b"d"), &four).await.unwrap();
    let replaced = lease_of(&mut raw, &d).await;
    assert_ne!(replaced, other, "a new lease");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let options = LeaseTimeToLiveOptions::new().with_keys();
    let live = raw.lease_time_to_live(replaced, Some(options)).await.unwrap();
    assert!(live.ttl() > 0, "the new lease is kept alive past its TTL");
    assert_eq!(live.keys(), [d.as_bytes().to_vec()], "the key is attached to it");
    store.delete(&a).await.unwrap();
    store.delete(&d).await.unwrap();
    store.close().await.unwrap();
}
