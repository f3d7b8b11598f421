//! What only a Redis Cluster has, against a real one (`VALKEYRIE_REDIS_CLUSTER_URL`, set by
//! `cargo xtask test --backend redis-cluster`): calls whose keys span hash slots, and so
//! primaries. The conformance suite on the cluster is `conformance_cluster.rs`.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{ClientLike, ClusterInterface};
use fred::util::redis_keyslot;
use futures_util::StreamExt;
use valkeyrie_core::testsuite::TestTarget;
use valkeyrie_core::{
    AtomicScope, ErrorKind, ListOptions, ReadOptions, Store, Transaction, TxnOutcome, WatchEvent, WriteOptions,
};
// Opened by URL only: link the backend so it registers itself.
use valkeyrie_redis as _;

use support::{plain_client, url_from, with_raw_values, RedisTarget};

fn url() -> String {
    url_from("VALKEYRIE_REDIS_CLUSTER_URL", "redis-cluster")
}

mod cluster {
    use super::*;

    mod across_slots {
        use super::*;

        /// How many keys a case spreads over the cluster: enough to reach every primary.
        const SPREAD: usize = 48;

        async fn open(url: &str) -> Arc<dyn Store> {
            RedisTarget { url: url.to_owned() }.open().await
        }

        /// A directory without a hash tag, unique to the case: its keys land in many slots.
        fn spread_dir(name: &str) -> String {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_nanos();
            format!("vk-cluster/{name}-{}-{nanos}", std::process::id())
        }

        fn spread_keys(dir: &str) -> Vec<String> {
            (0..SPREAD).map(|n| format!("{dir}/k{n:03}")).collect()
        }

        /// Checks that `keys` live on every primary of the cluster (else the case proves
        /// nothing about fanning out).
        async fn assert_on_every_primary(keys: &[String]) {
            let client = plain_client(&url()).await;
            let routing = client.cached_cluster_state().expect("the cluster's routing");
            let owners: BTreeSet<String> = keys
                .iter()
                .map(|key| {
                    let owner = routing
                        .get_server(redis_keyslot(key.as_bytes()))
                        .expect("a slot's owner");
                    format!("{}:{}", owner.host, owner.port)
                })
                .collect();
            assert_eq!(
                owners.len(),
                routing.unique_primary_nodes().len(),
                "the keys reach only {owners:?}"
            );
            client.quit().await.expect("quit");
        }

        /// Two keys of `dir` in different slots.
        fn two_slots(dir: &str) -> (String, String) {
            let first = format!("{dir}/a");
            let other = (0..)
                .map(|n| format!("{dir}/b{n}"))
                .find(|key| redis_keyslot(key.as_bytes()) != redis_keyslot(first.as_bytes()))
                .expect("a key in another slot");
            (first, other)
        }

        fn value(text: &str) -> Bytes {
            Bytes::copy_from_slice(text.as_bytes())
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn capabilities_say_what_holds_on_a_cluster() {
            let store = open(&url()).await;
            let caps = store.capabilities();
            assert!(caps.watch && caps.watch_tree && caps.transactions && caps.atomic_get_many);
            assert_eq!(caps.atomic_scope, AtomicScope::OneHashSlot);
            store.close().await.expect("close");
        }

        /// Keys that share a hash tag commit together, or not at all.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn keys_of_one_slot_commit_atomically() {
            let store = open(&url()).await;
            let dir = format!("{{{}}}", spread_dir("one-slot"));
            let (a, b) = (format!("{dir}/a"), format!("{dir}/b"));
            let txn = Transaction::new()
                .when_absent(&a)
                .put(&a, value("1"))
                .put(&b, value("2"));
            assert_eq!(store.commit(txn).await.expect("commit"), TxnOutcome::Committed);
            let txn = Transaction::new().when_absent(&a).put(&b, value("3")).delete(&a);
            assert!(matches!(
                store.commit(txn).await.expect("commit"),
                TxnOutcome::Failed { .. }
            ));
            let pairs = store
                .get_many(&[&a, &b], &ReadOptions::default())
                .await
                .expect("get_many");
            let values: Vec<Option<Bytes>> = pairs.into_iter().map(|p| p.map(|p| p.value)).collect();
            assert_eq!(values, [Some(value("1")), Some(value("2"))]);
            store.delete_tree(&dir).await.expect("delete_tree");
            store.close().await.expect("close");
        }

        /// `commit`, `put_many` and `delete_many` over two slots are refused before anything
        /// is sent, naming the rule and the hash-tag remedy.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn multi_key_writes_across_slots_are_refused_before_sending() {
            let store = open(&url()).await;
            let dir = spread_dir("refused");
            let (a, b) = two_slots(&dir);
            let refused = |result: valkeyrie_core::Result<()>, what: &str| {
                let err = result.expect_err(what);
                assert_eq!(err.kind(), ErrorKind::InvalidTransaction, "{what}: {err}");
                let text = err.to_string();
                assert!(
                    text.contains("hash slot") && text.contains("hash tag"),
                    "{what}: {text}"
                );
            };
            let txn = Transaction::new().put(&a, value("1")).put(&b, value("2"));
            refused(store.commit(txn).await.map(drop), "commit");
            let pairs = vec![(a.clone(), value("1")), (b.clone(), value("2"))];
            refused(store.put_many(pairs, &WriteOptions::default()).await, "put_many");
            for key in [&a, &b] {
                assert!(!store.exists(key, &ReadOptions::default()).await.expect("exists"));
            }
            for key in [&a, &b] {
                store
                    .put(key, value("kept"), &WriteOptions::default())
                    .await
                    .expect("put");
            }
            refused(store.delete_many(&[&a, &b]).await, "delete_many");
            for key in [&a, &b] {
                assert!(store.exists(key, &ReadOptions::default()).await.expect("exists"));
            }
            store.delete_tree(&dir).await.expect("delete_tree");
            store.close().await.expect("close");
        }

        /// `list`, `list_stream`, `get_many` and `delete_tree` over keys on every primary, on
        /// both layouts.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn reads_and_deletes_fan_out_to_every_primary() {
            for url in [url(), with_raw_values(&url())] {
                let store = open(&url).await;
                let dir = spread_dir("fan-out");
                let keys = spread_keys(&dir);
                assert_on_every_primary(&keys).await;
                for key in &keys {
                    store.put(key, value(key), &WriteOptions::default()).await.expect("put");
                }
                let listed = store.list(&dir, &ReadOptions::default()).await.expect("list");
                let listed: Vec<String> = listed.into_iter().map(|pair| pair.key).collect();
                assert_eq!(listed, keys, "{url}: list");

                let mut stream = Arc::clone(&store)
                    .list_stream(&dir, ListOptions::default().page_size(7))
                    .expect("list_stream");
                let mut streamed = Vec::new();
                while let Some(pair) = stream.next().await {
                    let pair = pair.expect("a page");
                    assert_eq!(pair.value, value(&pair.key));
                    streamed.push(pair.key);
                }
                assert_eq!(streamed, keys, "{url}: list_stream");

                let missing = format!("{dir}/missing");
                let mut wanted: Vec<&str> = keys.iter().map(String::as_str).collect();
                wanted.insert(SPREAD / 2, &missing);
                let pairs = store
                    .get_many(&wanted, &ReadOptions::default())
                    .await
                    .expect("get_many");
                for (key, pair) in wanted.iter().zip(&pairs) {
                    match pair {
                        Some(pair) => assert_eq!((pair.key.as_str(), &pair.value), (*key, &value(key))),
                        None => assert_eq!(*key, missing),
                    }
                }

                store.delete_tree(&dir).await.expect("delete_tree");
                for key in &keys {
                    assert!(!store.exists(key, &ReadOptions::default()).await.expect("exists"));
                }
                let gone = store.list(&dir, &ReadOptions::default()).await;
                assert_eq!(
                    gone.map(|pairs| pairs.len()).unwrap_or(0),
                    0,
                    "{url}: listed after delete_tree"
                );
                store.close().await.expect("close");
            }
        }

        /// A tree watch hears writes on every primary, and in a quiet run (no fault, several
        /// topology checks) sends no snapshot after its first.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn watch_tree_hears_every_primary_without_needless_snapshots() {
            let (watcher, writer) = (open(&url()).await, open(&url()).await);
            let dir = spread_dir("watch");
            let keys = spread_keys(&dir);
            assert_on_every_primary(&keys).await;
            let mut events = watcher
                .watch_tree(&dir, &ReadOptions::default())
                .await
                .expect("watch_tree");
            let first = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
            assert!(
                matches!(first, Ok(Some(Ok(WatchEvent::Snapshot(_))))),
                "first item: {first:?}"
            );
            let mut unseen: BTreeSet<String> = keys.iter().cloned().collect();
            let mut snapshots = 0;
            for key in &keys {
                writer
                    .put(key, value("1"), &WriteOptions::default())
                    .await
                    .expect("put");
                // Spread over several of the watch's topology checks.
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            while !unseen.is_empty() {
                let item = tokio::time::timeout(Duration::from_secs(10), events.next())
                    .await
                    .unwrap_or_else(|_| panic!("no event for {unseen:?}"));
                match item {
                    Some(Ok(WatchEvent::Put(pair))) => {
                        unseen.remove(&pair.key);
                    }
                    Some(Ok(WatchEvent::Snapshot(_))) => snapshots += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(snapshots, 0, "snapshots after the first in a quiet run");
            drop(events);
            writer.delete_tree(&dir).await.expect("delete_tree");
            for store in [watcher, writer] {
                store.close().await.expect("close");
            }
        }
    }
}
