//! What the conformance suite cannot see: the Go store's item layout, the fixes to it,
//! logical expiry, batch reads beyond 100 keys and batch deletes beyond 25 items,
//! transactions on that layout, fences checked by DynamoDB, and secrets.

mod support;

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use support::{item, raw, unique, TABLE};
use valkeyrie_core::{ErrorKind, LockOptions, ReadOptions, Store, Transaction, TxnOutcome, WriteOptions};
use valkeyrie_dynamodb::DynamoDbConfig;

async fn store() -> std::sync::Arc<dyn Store> {
    valkeyrie_core::open(&support::url())
        .await
        .expect("open the test table")
        .into()
}

fn number(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .map(|n| n.parse().expect("a number"))
}

#[tokio::test]
async fn items_have_the_go_layout_and_empty_values_clear() {
    let store = store().await;
    let client = raw().await;
    let key = unique("layout");
    store
        .put(
            &key,
            Bytes::from_static(b"\x00\xff"),
            &WriteOptions::with_ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let written = item(&client, &key).await.expect("the item");
    assert_eq!(written["id"].as_s().unwrap(), &key);
    assert_eq!(written["encoded_value"].as_s().unwrap(), "AP8=");
    let expires = number(&written, "expiration_time").expect("an expiry with a TTL");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 59..=now + 61).contains(&expires), "Unix seconds, {expires}");
    let version = number(&written, "version").unwrap();
    assert_eq!(
        store.get(&key, &ReadOptions::default()).await.unwrap().last_index,
        version
    );

    // The Go store keeps the old value and expiry here; valkeyrie clears both.
    store.put(&key, Bytes::new(), &WriteOptions::default()).await.unwrap();
    let rewritten = item(&client, &key).await.unwrap();
    assert!(!rewritten.contains_key("encoded_value"), "{rewritten:?}");
    assert!(!rewritten.contains_key("expiration_time"), "{rewritten:?}");
    assert_eq!(number(&rewritten, "version"), Some(version + 1), "one bump per write");
    assert!(store.get(&key, &ReadOptions::default()).await.unwrap().value.is_empty());
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn items_written_by_go_are_read() {
    // As the Go store writes them: version from 1, no value attribute for an empty value.
    let store = store().await;
    let client = raw().await;
    let dir = unique("from-go");
    for (name, value) in [("a", Some("aGVsbG8=")), ("b", None)] {
        let mut request = client
            .put_item()
            .table_name(TABLE)
            .item("id", AttributeValue::S(format!("{dir}/{name}")))
            .item("version", AttributeValue::N("1".into()));
        if let Some(value) = value {
            request = request.item("encoded_value", AttributeValue::S(value.into()));
        }
        request.send().await.unwrap();
    }
    let pairs = store.list(&dir, &ReadOptions::default()).await.unwrap();
    let seen: Vec<(&str, &[u8], u64)> = pairs
        .iter()
        .map(|p| (p.key.rsplit('/').next().unwrap(), p.value.as_ref(), p.last_index))
        .collect();
    assert_eq!(seen, [("a", b"hello".as_ref(), 1), ("b", b"".as_ref(), 1)]);
    let updated = store
        .atomic_put(
            &format!("{dir}/a"),
            "rust".into(),
            Some(&pairs[0]),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(updated.last_index, 2, "Go's versions go on by one");
    store.delete_tree(&dir).await.unwrap();
}

#[tokio::test]
async fn expired_items_are_hidden_before_dynamodb_removes_them() {
    let store = store().await;
    let client = raw().await;
    let dir = unique("expired");
    store
        .put(&format!("{dir}/live"), "v".into(), &WriteOptions::default())
        .await
        .unwrap();
    // An item whose expiry passed, which DynamoDB has not removed yet.
    put_expired_item(&client, &format!("{dir}/gone"), None).await;
    let gone = format!("{dir}/gone");
    let read = ReadOptions::default();
    assert_eq!(
        store.get(&gone, &read).await.unwrap_err().kind(),
        ErrorKind::KeyNotFound
    );
    assert!(!store.exists(&gone, &read).await.unwrap());
    let listed = store.list(&dir, &read).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(store.delete(&gone).await.unwrap_err().kind(), ErrorKind::KeyNotFound);
    // Creating over it works, and its version goes on.
    let created = store
        .atomic_put(&gone, "new".into(), None, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(created.last_index, 2);
    store.delete_tree(&dir).await.unwrap();
}

#[tokio::test]
async fn delete_tree_goes_beyond_one_batch() {
    let store = store().await;
    let dir = unique("many");
    for i in 0..60 {
        store
            .put(&format!("{dir}/k{i:02}"), "v".into(), &WriteOptions::default())
            .await
            .unwrap();
    }
    store
        .put(&format!("{dir}x/sibling"), "v".into(), &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(store.list(&dir, &ReadOptions::default()).await.unwrap().len(), 60);
    store.delete_tree(&dir).await.unwrap();
    let read = ReadOptions::default();
    assert_eq!(
        store.list(&dir, &read).await.unwrap_err().kind(),
        ErrorKind::KeyNotFound
    );
    assert!(
        store.exists(&format!("{dir}x/sibling"), &read).await.unwrap(),
        "siblings stay"
    );
    store.delete_tree(&format!("{dir}x")).await.unwrap();
}

#[tokio::test]
async fn get_many_reads_in_batches_of_100_hides_expired_items_and_answers_repeats() {
    let store = store().await;
    let client = raw().await;
    let dir = unique("get-many");
    let keys: Vec<String> = (0..250).map(|n| format!("{dir}/k{n:03}")).collect();
    for chunk in keys.chunks(100) {
        let pairs = chunk
            .iter()
            .map(|key| (key.clone(), Bytes::from(key.clone())))
            .collect();
        store.put_many(pairs, &WriteOptions::default()).await.unwrap();
    }
    // An item whose expiry passed, which DynamoDB has not removed yet.
    let gone = format!("{dir}/gone");
    put_expired_item(&client, &gone, Some("dg==")).await;
    let missing = format!("{dir}/missing");
    // Backwards, so input order is not the table's, with repeats across and within batches.
    let mut asked: Vec<&str> = keys.iter().rev().map(String::as_str).collect();
    asked.insert(3, &gone);
    asked.insert(150, &missing);
    asked.extend([keys[0].as_str(), keys[249].as_str(), keys[0].as_str(), gone.as_str()]);
    for consistent in [false, true] {
        let read = store
            .get_many(&asked, &ReadOptions::default().consistent(consistent))
            .await
            .unwrap();
        assert_eq!(read.len(), asked.len(), "one answer per key asked");
        for (key, answer) in asked.iter().zip(&read) {
            if *key == gone || *key == missing {
                assert_eq!(answer, &None, "{key}: absent");
                continue;
            }
            let pair = answer.as_ref().unwrap_or_else(|| panic!("{key}: found"));
            assert_eq!((pair.key.as_str(), pair.value.as_ref()), (*key, key.as_bytes()));
            assert_eq!(pair, &store.get(key, &ReadOptions::default()).await.unwrap());
        }
    }
    store.delete_tree(&dir).await.unwrap();
}

#[tokio::test]
async fn get_many_resends_the_keys_past_the_16_mb_answer_limit() {
    use aws_sdk_dynamodb::types::KeysAndAttributes;
    let store = store().await;
    let client = raw().await;
    let dir = unique("get-many-large");
    let value = Bytes::from(vec![7; 290 * 1024]);
    let keys: Vec<String> = (0..50).map(|n| format!("{dir}/k{n:02}")).collect();
    for key in &keys {
        store.put(key, value.clone(), &WriteOptions::default()).await.unwrap();
    }
    // The premise: one request cannot answer them all (their base64 is over 16 MB).
    let ids = keys
        .iter()
        .map(|key| std::collections::HashMap::from([("id".to_owned(), AttributeValue::S(key.clone()))]))
        .collect();
    let once = client
        .batch_get_item()
        .request_items(TABLE, KeysAndAttributes::builder().set_keys(Some(ids)).build().unwrap())
        .send()
        .await
        .unwrap();
    let unprocessed = once
        .unprocessed_keys()
        .and_then(|u| u.get(TABLE))
        .map_or(0, |k| k.keys().len());
    assert!(unprocessed > 0, "one BatchGetItem answered 50 items of 290 KiB");

    let asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    let read = store.get_many(&asked, &ReadOptions::default()).await.unwrap();
    let answered: Vec<&str> = read.iter().flatten().map(|pair| pair.key.as_str()).collect();
    assert_eq!(answered, asked, "every key, in order");
    assert!(read.iter().flatten().all(|pair| pair.value == value));
    store.delete_tree(&dir).await.unwrap();
}

#[tokio::test]
async fn locks_are_leases_on_the_item_with_growing_tokens() {
    let store = store().await;
    let client = raw().await;
    let key = unique("lock");
    let mut last_token = 0;
    for delete_on_unlock in [true, true, false, false] {
        let opts = LockOptions::with_value("owner1")
            .ttl(Duration::from_secs(6))
            .delete_on_unlock(delete_on_unlock);
        let guard = store.new_lock(&key, opts).await.unwrap().lock().await.unwrap();
        let held = item(&client, &key).await.expect("the lock item");
        assert_eq!(held["encoded_value"].as_s().unwrap(), "b3duZXIx");
        assert!(number(&held, "expiration_time").is_some(), "a lease");
        assert_eq!(number(&held, "version"), Some(guard.fencing_token()));
        assert!(guard.fencing_token() > last_token, "tokens grow, also across deletes");
        last_token = guard.fencing_token();
        guard.unlock().await.unwrap();
        match item(&client, &key).await {
            None => assert!(delete_on_unlock),
            Some(kept) => {
                assert!(!delete_on_unlock);
                assert!(!kept.contains_key("expiration_time"), "released: no lease");
                assert_eq!(kept["encoded_value"].as_s().unwrap(), "b3duZXIx");
            }
        }
    }
    // A Go holder (versions from 1) came and its lease ran out: tokens still grow.
    store.delete(&key).await.unwrap();
    put_expired_item(&client, &key, Some("Z28=")).await;
    let guard = store
        .new_lock(&key, LockOptions::with_value("rust"))
        .await
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert!(guard.fencing_token() > last_token, "past the Go holder's version 1");
    guard.unlock().await.unwrap();
    store.delete(&key).await.unwrap();
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Sets (or with `None` removes) the `expiration_time` of `key` behind valkeyrie's back.
async fn set_expiry(client: &aws_sdk_dynamodb::Client, key: &str, at: Option<u64>) {
    let request = client
        .update_item()
        .table_name(TABLE)
        .key("id", AttributeValue::S(key.to_owned()));
    let request = match at {
        Some(at) => request
            .update_expression("SET expiration_time = :at")
            .expression_attribute_values(":at", AttributeValue::N(at.to_string())),
        None => request.update_expression("REMOVE expiration_time"),
    };
    request.send().await.expect("set the expiry");
}

#[tokio::test]
async fn transactions_write_what_put_writes_and_see_expired_items_as_absent() {
    let store = store().await;
    let client = raw().await;
    let dir = unique("txn-layout");
    let (a, b, gone) = (format!("{dir}/a"), format!("{dir}/b"), format!("{dir}/gone"));
    store
        .put(&a, "old".into(), &WriteOptions::with_ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    let before = number(&item(&client, &a).await.unwrap(), "version").unwrap();
    // An item whose expiry passed, which DynamoDB has not removed yet.
    put_expired_item(&client, &gone, Some("Z28=")).await;
    let txn = Transaction::new()
        .when_absent(&gone)
        .when_index(&a, before)
        .put(&a, Bytes::new())
        .put_with(
            &b,
            Bytes::from_static(b"\x00\xff"),
            WriteOptions::with_ttl(Duration::from_secs(60)),
        )
        .put(&gone, "back");
    assert_eq!(store.commit(txn).await.unwrap(), TxnOutcome::Committed);
    let written = item(&client, &a).await.unwrap();
    assert!(
        !written.contains_key("encoded_value"),
        "an empty value clears: {written:?}"
    );
    assert!(!written.contains_key("expiration_time"), "no TTL clears: {written:?}");
    assert_eq!(number(&written, "version"), Some(before + 1), "one bump, as put");
    let written = item(&client, &b).await.unwrap();
    assert_eq!(written["encoded_value"].as_s().unwrap(), "AP8=");
    let expires = number(&written, "expiration_time").expect("an expiry with a TTL");
    assert!((now_secs() + 59..=now_secs() + 61).contains(&expires), "{expires}");
    let written = item(&client, &gone).await.unwrap();
    assert_eq!(number(&written, "version"), Some(2), "past the expired item's version");

    // Expired again: every compare reads it as absent, and nothing is written.
    set_expiry(&client, &gone, Some(1000)).await;
    let failing = [
        Transaction::new().when_value(&a, "").when_exists(&gone),
        Transaction::new().when_value(&a, "").when_index(&gone, 2),
        Transaction::new().when_value(&a, "").when_value(&gone, "back"),
    ];
    for txn in failing {
        let txn = txn.put(&b, "changed").delete(&a);
        assert_eq!(
            store.commit(txn.clone()).await.unwrap(),
            TxnOutcome::Failed { compare: 1 },
            "{txn:?}"
        );
    }
    assert_eq!(
        store.get(&b, &ReadOptions::default()).await.unwrap().value,
        Bytes::from_static(b"\x00\xff")
    );
    let absent = Transaction::new().when_absent(&gone).when_value(&a, "").delete(&gone);
    assert_eq!(store.commit(absent).await.unwrap(), TxnOutcome::Committed);
    assert!(
        item(&client, &gone).await.is_none(),
        "a delete removes the expired item"
    );
    store.delete_tree(&dir).await.unwrap();
}

#[tokio::test]
async fn fences_are_checked_by_dynamodb_on_the_lock_item() {
    let store = store().await;
    let client = raw().await;
    let (lock, data, none) = (unique("fence-lock"), unique("fence-data"), unique("fence-none"));
    let guard = store
        .new_lock(&lock, LockOptions::with_value("a"))
        .await
        .unwrap()
        .lock()
        .await
        .unwrap();
    let fence = guard.fence();
    let held = item(&client, &lock).await.unwrap();
    assert_eq!(
        number(&held, "version"),
        Some(fence.token()),
        "the token is the version"
    );
    let write = |value: &'static str| {
        Transaction::new()
            .when_absent(&none)
            .when_held(&fence)
            .put(&data, value)
    };
    assert_eq!(store.commit(write("1")).await.unwrap(), TxnOutcome::Committed);
    let after = item(&client, &lock).await.unwrap();
    assert_eq!(
        (number(&after, "version"), &after["encoded_value"]),
        (Some(fence.token()), &held["encoded_value"]),
        "the lock item is only read"
    );

    // The lease ran out before the holder noticed: the store refuses the fence.
    set_expiry(&client, &lock, Some(now_secs() - 1)).await;
    assert_eq!(
        store.commit(write("2")).await.unwrap(),
        TxnOutcome::Failed { compare: 1 }
    );
    // The item kept its version but has no lease (released without deleting it).
    set_expiry(&client, &lock, None).await;
    assert_eq!(
        store.commit(write("3")).await.unwrap(),
        TxnOutcome::Failed { compare: 1 }
    );
    assert_eq!(store.get(&data, &ReadOptions::default()).await.unwrap().value, "1");
    drop(guard);
    store.delete(&lock).await.unwrap();
    store.delete(&data).await.unwrap();
}

#[tokio::test]
async fn transactions_stay_within_four_megabytes() {
    let store = store().await;
    let dir = unique("txn-size");
    let limit = store.capabilities().max_value_size.unwrap();
    let big = Bytes::from(vec![b'x'; limit]);
    let puts = |count: usize| (0..count).fold(Transaction::new(), |txn, n| txn.put(format!("{dir}/{n}"), big.clone()));
    assert_eq!(store.commit(puts(10)).await.unwrap(), TxnOutcome::Committed);
    let err = store.commit(puts(11)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTransaction, "{err}");
    assert_eq!(store.list(&dir, &ReadOptions::default()).await.unwrap().len(), 10);
    store.delete_tree(&dir).await.unwrap();
}

#[tokio::test]
async fn credentials_never_show() {
    let config = DynamoDbConfig {
        table: TABLE.into(),
        endpoint: Some(support::endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("s3cret-key".into()),
        ..Default::default()
    };
    let store = config.clone().connect().await.unwrap();
    assert!(!format!("{store:?}").contains("s3cret"));
    let unreachable = DynamoDbConfig {
        endpoint: Some("http://127.0.0.1:1".into()),
        max_attempts: 1,
        ..config
    };
    let Err(err) = unreachable.connect().await else {
        panic!("nothing listens on port 1")
    };
    assert_eq!(err.kind(), ErrorKind::NotReachable);
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
}

#[tokio::test]
async fn watches_read_the_stream_and_report_expiry_themselves() {
    use futures_util::StreamExt;
    use valkeyrie_core::WatchEvent;

    let store = store().await;
    assert!(
        store.capabilities().watch,
        "the test table has a stream of new and old images"
    );
    let client = raw().await;
    let dir = unique("stream");
    let mut events = store.watch_tree(&dir, &ReadOptions::default()).await.unwrap();
    assert_eq!(next(&mut events).await, WatchEvent::Snapshot(vec![]));

    // A write by another client (a Go service, say) is seen.
    client
        .put_item()
        .table_name(TABLE)
        .item("id", AttributeValue::S(format!("{dir}/go")))
        .item("version", AttributeValue::N("1".into()))
        .item("encoded_value", AttributeValue::S("Z28=".into()))
        .send()
        .await
        .unwrap();
    match next(&mut events).await {
        WatchEvent::Put(pair) => assert_eq!((pair.value.as_ref(), pair.last_index), (b"go".as_ref(), 1)),
        other => panic!("expected the put, got {other:?}"),
    }

    // A lock's heartbeats move the expiry without events; its expiry is reported when it
    // passes, before DynamoDB removes the item.
    let key = format!("{dir}/lease");
    let opts = LockOptions::with_value("holder").ttl(Duration::from_secs(3));
    let guard = store.new_lock(&key, opts).await.unwrap().lock().await.unwrap();
    match next(&mut events).await {
        WatchEvent::Put(pair) => assert_eq!(pair.last_index, guard.fencing_token()),
        other => panic!("expected the lock's put, got {other:?}"),
    }
    // Two heartbeats (every TTL/3) go by in silence.
    let quiet = tokio::time::timeout(Duration::from_millis(2500), events.next()).await;
    assert!(quiet.is_err(), "heartbeats are not changes: {quiet:?}");
    guard.unlock().await.unwrap();
    store
        .put(
            &format!("{dir}/short"),
            "v".into(),
            &WriteOptions::with_ttl(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert!(matches!(next(&mut events).await, WatchEvent::Put(_)));
    match next(&mut events).await {
        WatchEvent::Delete { key, .. } => assert_eq!(key, format!("{dir}/short")),
        other => panic!("expected the expiry, got {other:?}"),
    }
    drop(events);
    store.delete_tree(&dir).await.unwrap();
}

/// The next watch event, within 10 s.
async fn next(events: &mut valkeyrie_core::WatchStream) -> valkeyrie_core::WatchEvent {
    use futures_util::StreamExt;
    let next = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    next.expect("an event in time").expect("open").expect("no error")
}

/// Writes, as a Go service would, an item at version 1 whose expiry passed long ago (which
/// DynamoDB has not removed yet), holding `encoded_value` when given.
async fn put_expired_item(client: &aws_sdk_dynamodb::Client, id: &str, encoded_value: Option<&str>) {
    let mut item = client
        .put_item()
        .table_name(TABLE)
        .item("id", AttributeValue::S(id.to_owned()))
        .item("version", AttributeValue::N("1".into()))
        .item("expiration_time", AttributeValue::N("1000".into()));
    if let Some(value) = encoded_value {
        item = item.item("encoded_value", AttributeValue::S(value.to_owned()));
    }
    item.send().await.expect("writing an expired item by hand");
}
