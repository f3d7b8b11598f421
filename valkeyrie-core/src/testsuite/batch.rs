//! Conformance cases of the batch calls (`get_many`, `put_many`, `delete_many`) and of
//! `list_stream`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use super::support::{fails, get, get_opt, ok, put, Case};
use super::TestTarget;
use crate::error::ErrorKind;
use crate::kv::{ReadOptions, WriteOptions};
use crate::list::ListOptions;
use crate::store::Store;
use crate::txn::Transaction;

/// `put_many` writes every pair at once, `get_many` reads them back in the order asked
/// (missing keys as `None`, repeats repeated) exactly as `get` does, and `delete_many`
/// removes what exists among its keys; invalid keys and oversized batches write nothing.
pub async fn batch_calls(target: &dyn TestTarget) {
    let case = Case::start(target, "batch_calls").await;
    let store = case.store.as_ref();
    let caps = store.capabilities();
    let keys: Vec<String> = ["a", "b", "dir/c", "dir/deeper/d", "é/ü"]
        .iter()
        .map(|k| case.key(k))
        .collect();
    let values = [
        Bytes::from_static(b"1"),
        Bytes::new(),
        Bytes::from_static(b"\x00\x01\xffbinary"),
        Bytes::from_static(b"4"),
        Bytes::from("ünïcode"),
    ];
    let pairs: Vec<(String, Bytes)> = keys.iter().cloned().zip(values.iter().cloned()).collect();
    if !caps.transactions {
        fails(
            store.put_many(pairs, &WriteOptions::default()).await,
            ErrorKind::CallNotSupported,
            "put_many without transactions",
        );
        fails(
            store.delete_many(&[keys[0].as_str()]).await,
            ErrorKind::CallNotSupported,
            "delete_many without transactions",
        );
        for (key, value) in keys.iter().zip(&values) {
            ok(store.put(key, value.clone(), &WriteOptions::default()).await, "put");
        }
    } else {
        ok(store.put_many(pairs, &WriteOptions::default()).await, "put_many");
    }

    let missing = case.key("missing");
    let asked: Vec<&str> = vec![&keys[2], &missing, &keys[0], &keys[1], &keys[3], &keys[4], &keys[0]];
    let read = ok(store.get_many(&asked, &ReadOptions::default()).await, "get_many");
    assert_eq!(read.len(), asked.len(), "one answer per key asked");
    for (key, answer) in asked.iter().zip(&read) {
        assert_eq!(
            answer.as_ref(),
            get_opt(store, key).await.as_ref(),
            "{key}: get_many reads what get reads"
        );
    }
    assert_eq!(read[1], None, "a missing key is None");
    assert_eq!(read[0].as_ref().map(|p| p.value.clone()), Some(values[2].clone()));
    assert_eq!(
        read[3].as_ref().map(|p| p.value.clone()),
        Some(Bytes::new()),
        "an empty value"
    );
    assert_eq!(read[2], read[6], "a key asked twice is read twice");
    assert_eq!(
        ok(
            store.get_many(&[], &ReadOptions::default()).await,
            "get_many of nothing"
        ),
        Vec::new()
    );
    fails(
        store
            .get_many(&[keys[0].as_str(), "bad//key"], &ReadOptions::default())
            .await,
        ErrorKind::InvalidKey,
        "get_many with an invalid key",
    );

    if caps.transactions {
        fails(
            store
                .put_many(
                    vec![(keys[0].clone(), "x".into()), ("bad//key".into(), "y".into())],
                    &WriteOptions::default(),
                )
                .await,
            ErrorKind::InvalidKey,
            "put_many with an invalid key",
        );
        assert_eq!(get(store, &keys[0]).await.value, values[0], "nothing was written");
        if let Some(limit) = caps.max_transaction_ops {
            let many: Vec<(String, Bytes)> = (0..=limit)
                .map(|n| (case.key(&format!("many/{n}")), "v".into()))
                .collect();
            fails(
                store.put_many(many, &WriteOptions::default()).await,
                ErrorKind::InvalidTransaction,
                "put_many over the transaction limit",
            );
            assert_eq!(get_opt(store, &case.key("many/0")).await, None, "nothing was written");
        }
        ok(
            store
                .delete_many(&[keys[0].as_str(), missing.as_str(), keys[2].as_str(), keys[4].as_str()])
                .await,
            "delete_many",
        );
        let after = ok(
            store
                .get_many(
                    &[
                        keys[0].as_str(),
                        keys[1].as_str(),
                        keys[2].as_str(),
                        keys[3].as_str(),
                        keys[4].as_str(),
                    ],
                    &ReadOptions::default(),
                )
                .await,
            "get_many",
        );
        let present: Vec<bool> = after.iter().map(Option::is_some).collect();
        assert_eq!(
            present,
            [false, true, false, true, false],
            "delete_many removed exactly the keys it named"
        );
        assert_eq!(
            ok(store.list(&case.key("dir"), &ReadOptions::default()).await, "list").len(),
            1,
            "delete_many removes a key, not what is below it"
        );
    }
    case.finish().await;
}

/// Where `get_many` claims one snapshot, it never sees half of a transaction: readers of two
/// keys that writers keep moving units between always see the same sum.
pub async fn batch_get_many_is_one_snapshot(target: &dyn TestTarget) {
    let case = Case::start(target, "batch_get_many_is_one_snapshot").await;
    let caps = case.store.capabilities();
    if !caps.atomic_get_many || !caps.transactions {
        return case.finish().await;
    }
    let (a, b) = (case.key("a"), case.key("b"));
    put(case.store.as_ref(), &a, "100").await;
    put(case.store.as_ref(), &b, "0").await;
    let number = |value: &Bytes| -> i64 {
        std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("not a number: {value:?}"))
    };
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, a, b, done) = (case.target.open().await, a.clone(), b.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            for n in 1..=40 {
                let txn = Transaction::new().put(&a, (100 - n).to_string()).put(&b, n.to_string());
                assert!(ok(store.commit(txn).await, "commit").is_committed());
                tokio::task::yield_now().await;
            }
            done.store(true, Ordering::Release);
            ok(store.close().await, "close");
        })
    };
    let mut reads = 0;
    while !done.load(Ordering::Acquire) || reads == 0 {
        let pairs = ok(
            case.store
                .get_many(&[a.as_str(), b.as_str()], &ReadOptions::default())
                .await,
            "get_many",
        );
        let values: Vec<i64> = pairs
            .iter()
            .map(|p| number(&p.as_ref().expect("both keys exist").value))
            .collect();
        assert_eq!(values[0] + values[1], 100, "one snapshot: {values:?}");
        reads += 1;
        tokio::task::yield_now().await;
    }
    writer.await.unwrap_or_else(|e| panic!("the writer panicked: {e}"));
    case.finish().await;
}

/// `list_stream` pages through 10 000 keys to exactly what `list` returns, resumes exactly
/// after any key, and streams an empty or missing directory as nothing.
pub async fn list_stream_pages(target: &dyn TestTarget) {
    const KEYS: usize = 10_000;
    let case = Case::start(target, "list_stream_pages").await;
    let store = case.store.as_ref();
    let caps = store.capabilities();
    let dir = case.key("dir");
    put(store, &dir, "the directory's own value").await;
    put(store, &case.key("dir2/sibling"), "not below dir").await;
    let keys: Vec<String> = (0..KEYS).map(|n| format!("{dir}/{:02}/{n:05}", n % 7)).collect();
    let batch = caps.max_transaction_ops.unwrap_or(500).min(500);
    let seeding = keys.chunks(batch).map(|chunk| async move {
        if caps.transactions {
            let pairs = chunk
                .iter()
                .map(|key| (key.clone(), Bytes::from(key.clone())))
                .collect();
            ok(store.put_many(pairs, &WriteOptions::default()).await, "put_many");
        } else {
            for key in chunk {
                ok(
                    store.put(key, Bytes::from(key.clone()), &WriteOptions::default()).await,
                    "put",
                );
            }
        }
    });
    futures_util::stream::iter(seeding)
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;

    let full = ok(store.list(&dir, &ReadOptions::default()).await, "list");
    assert_eq!(full.len(), KEYS, "list sees every key");
    assert_eq!(
        paged(&case.store, &dir, 333, None).await,
        full,
        "pages of 333 are list, in order"
    );
    let resume_at = full[4321].key.clone();
    assert_eq!(
        paged(&case.store, &dir, 1000, Some(resume_at)).await,
        full[4322..],
        "start_after resumes exactly"
    );
    assert_eq!(
        paged(&case.store, &dir, 500, Some(dir.clone())).await,
        full,
        "after the directory itself: everything"
    );
    assert_eq!(
        paged(&case.store, &dir, 7, Some(full[KEYS - 1].key.clone())).await,
        Vec::new(),
        "after the last key: nothing"
    );
    let small = case.key("dir/03");
    let one_by_one = ok(
        ok(
            Arc::clone(&case.store).list_stream(&small, ListOptions::default().page_size(1)),
            "list_stream",
        )
        .try_collect::<Vec<_>>()
        .await,
        "pages of one",
    );
    assert_eq!(
        one_by_one,
        ok(store.list(&small, &ReadOptions::default()).await, "list")
    );
    let missing = ok(
        Arc::clone(&case.store).list_stream(&case.key("missing"), ListOptions::default()),
        "list_stream",
    );
    assert_eq!(
        ok(missing.try_collect::<Vec<_>>().await, "a missing directory"),
        Vec::new()
    );
    fails(
        Arc::clone(&case.store)
            .list_stream("bad//dir", ListOptions::default())
            .map(drop),
        ErrorKind::InvalidKey,
        "list_stream of an invalid directory",
    );
    case.finish().await;
}

/// Everything `list_stream` yields for `dir` with these options.
async fn paged(store: &Arc<dyn Store>, dir: &str, page_size: usize, start_after: Option<String>) -> Vec<crate::KvPair> {
    let opts = ListOptions::default().page_size(page_size).start_after(start_after);
    let stream = ok(Arc::clone(store).list_stream(dir, opts), "list_stream");
    ok(stream.try_collect::<Vec<_>>().await, "list_stream pages")
}
