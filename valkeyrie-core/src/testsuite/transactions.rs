//! Conformance cases of transactions and fenced writes ([`crate::txn`]).
//!
//! A backend that does not claim [`Capabilities::transactions`](crate::Capabilities) must
//! answer every commit and fenced write with `CallNotSupported`; each case checks that and
//! ends there.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::support::{eventually, fails, get, get_opt, ok, put, Case};
use super::TestTarget;
use crate::error::ErrorKind;
use crate::kv::{LockOptions, WriteOptions};
use crate::store::Store;
use crate::txn::{Fence, Transaction, TxnOutcome};

/// Whether the case can go on; checks `CallNotSupported` when the backend does not claim
/// transactions.
async fn supported(case: &Case<'_>) -> bool {
    if case.store.capabilities().transactions {
        return true;
    }
    let txn = Transaction::new().put(case.key("x"), "1");
    fails(
        case.store.commit(txn).await,
        ErrorKind::CallNotSupported,
        "commit without the capability",
    );
    false
}

fn commit_ok(outcome: crate::Result<TxnOutcome>, what: &str) -> TxnOutcome {
    ok(outcome, what)
}

/// Every kind of compare holds and fails as documented; a commit applies puts and deletes
/// together, and a failed compare, wherever it is, writes nothing and is named.
pub async fn txn_all_or_nothing(target: &dyn TestTarget) {
    let case = Case::start(target, "txn_all_or_nothing").await;
    if !supported(&case).await {
        return case.finish().await;
    }
    let store = case.store.as_ref();
    let (a, b, c) = (case.key("a"), case.key("b"), case.key("dir/c"));

    let created = Transaction::new()
        .when_absent(&a)
        .when_absent(&b)
        .put(&a, "1")
        .put(&b, Bytes::from_static(b"\x00\xffbin"))
        .delete(&c);
    assert_eq!(
        commit_ok(store.commit(created.clone()).await, "create"),
        TxnOutcome::Committed
    );
    let pa = get(store, &a).await;
    let pb = get(store, &b).await;
    assert_eq!(pa.value, "1");
    assert_eq!(pb.value, Bytes::from_static(b"\x00\xffbin"));
    assert_ne!(pa.last_index, 0);
    assert_eq!(
        commit_ok(store.commit(created).await, "create again"),
        TxnOutcome::Failed { compare: 0 },
        "when_absent fails once the key exists"
    );

    // Each compare kind that holds, then the same list with one that does not at the end.
    let holding = Transaction::new()
        .when_exists(&a)
        .when_index(&a, pa.last_index)
        .when_value(&b, Bytes::from_static(b"\x00\xffbin"))
        .when_absent(&c);
    let failing = [
        (holding.clone().when_exists(&c), 4, "exists on an absent key"),
        (holding.clone().when_absent(&a), 4, "absent on an existing key"),
        (
            holding.clone().when_index(&a, pa.last_index + 1000),
            4,
            "a different index",
        ),
        (
            holding.clone().when_index(&c, pa.last_index),
            4,
            "an index on an absent key",
        ),
        (holding.clone().when_value(&a, "2"), 4, "a different value"),
        (holding.clone().when_value(&c, ""), 4, "a value on an absent key"),
        (
            Transaction::new().when_exists(&a).when_value(&a, "0").when_absent(&b),
            1,
            "the first failing compare is named",
        ),
    ];
    for (txn, position, what) in failing {
        let txn = txn.put(&c, "written").delete(&a).put(&b, "changed");
        assert_eq!(
            commit_ok(store.commit(txn).await, what),
            TxnOutcome::Failed { compare: position },
            "{what}"
        );
        assert_eq!(get(store, &a).await, pa, "{what}: nothing written");
        assert_eq!(get(store, &b).await, pb, "{what}: nothing written");
        assert_eq!(get_opt(store, &c).await, None, "{what}: nothing written");
    }

    let applied = holding.put(&c, "3").delete(&a).put(&b, "");
    assert_eq!(commit_ok(store.commit(applied).await, "apply"), TxnOutcome::Committed);
    assert_eq!(get_opt(store, &a).await, None, "the delete was applied");
    let nb = get(store, &b).await;
    assert_eq!(nb.value, "", "an empty value is written");
    assert!(nb.last_index > pb.last_index, "a committed put moves the index");
    assert_eq!(get(store, &c).await.value, "3");
    assert_eq!(
        ok(store.list(&case.key("dir"), &Default::default()).await, "list").len(),
        1,
        "a put in a transaction creates what list needs, as put does"
    );

    // Compares alone: a consistent check of several keys.
    let check = Transaction::new().when_exists(&b).when_absent(&a);
    assert_eq!(
        commit_ok(store.commit(check).await, "compares only"),
        TxnOutcome::Committed
    );
    assert_eq!(
        commit_ok(store.commit(Transaction::new()).await, "empty"),
        TxnOutcome::Committed
    );
    case.finish().await;
}

/// A put with a TTL in a transaction expires like a `put` with that TTL.
pub async fn txn_put_with_ttl(target: &dyn TestTarget) {
    let case = Case::start(target, "txn_put_with_ttl").await;
    if !supported(&case).await || !case.store.capabilities().ttl {
        return case.finish().await;
    }
    let store = case.store.as_ref();
    let (short, stays) = (case.key("short"), case.key("stays"));
    let ttl = case.ttl();
    let txn = Transaction::new()
        .put_with(&short, "gone soon", WriteOptions::with_ttl(ttl))
        .put(&stays, "stays");
    assert_eq!(commit_ok(store.commit(txn).await, "commit"), TxnOutcome::Committed);
    assert_eq!(get(store, &short).await.value, "gone soon");
    let within = ttl * 2 + case.target.expiry_slack();
    eventually(within, "the TTL key of a transaction expires", || async {
        get_opt(store, &short).await.is_none()
    })
    .await;
    assert_eq!(get(store, &stays).await.value, "stays", "a put without TTL stays");
    case.finish().await;
}

/// The shared rules are checked before anything is sent, and nothing is written.
pub async fn txn_rules_checked_before_sending(target: &dyn TestTarget) {
    let case = Case::start(target, "txn_rules_checked_before_sending").await;
    if !supported(&case).await {
        return case.finish().await;
    }
    let store = case.store.as_ref();
    let caps = store.capabilities();
    let key = case.key("k");
    let invalid = [
        (
            Transaction::new().put(&key, "1").delete(format!("/{key}/")),
            ErrorKind::InvalidTransaction,
            "two operations on one key",
        ),
        (
            Transaction::new().put_with(&key, "1", WriteOptions::keep_alive(case.ttl())),
            ErrorKind::InvalidTransaction,
            "keep_alive in a transaction",
        ),
        (
            Transaction::new().put(&key, "1").put(case.key("a//b"), "2"),
            ErrorKind::InvalidKey,
            "an invalid key",
        ),
        (
            Transaction::new().when_index(&key, 0).put(&key, "1"),
            ErrorKind::PreviousNotSpecified,
            "an index of 0",
        ),
        (
            Transaction::new()
                .when_held(&Fence::new("another-store", &key, 1, None))
                .put(&key, "1"),
            ErrorKind::InvalidTransaction,
            "a fence of another store",
        ),
    ];
    for (txn, kind, what) in invalid {
        fails(store.commit(txn).await, kind, what);
    }
    if let Some(limit) = caps.max_value_size {
        let big = Bytes::from(vec![b'x'; limit + 1]);
        fails(
            store.commit(Transaction::new().put(&key, big)).await,
            ErrorKind::ValueTooLarge,
            "a value over the limit",
        );
    }
    if let Some(limit) = caps.max_transaction_ops {
        let mut txn = Transaction::new();
        for n in 0..=limit {
            txn = txn.put(case.key(&format!("many/{n}")), "v");
        }
        let err = store.commit(txn).await.expect_err("a transaction over the limit");
        assert_eq!(err.kind(), ErrorKind::InvalidTransaction, "{err}");
        assert!(
            err.to_string().contains(&limit.to_string()),
            "the error names the limit: {err}"
        );
        let mut txn = Transaction::new();
        for n in 0..limit {
            txn = txn.put(case.key(&format!("many/{n}")), "v");
        }
        assert_eq!(
            commit_ok(store.commit(txn).await, "a transaction at the limit"),
            TxnOutcome::Committed
        );
        ok(store.delete_tree(&case.key("many")).await, "delete_tree");
    }
    assert_eq!(get_opt(store, &key).await, None, "nothing was written");
    case.finish().await;
}

/// Two transactions that conflict never both commit: raced on one key's index, exactly
/// one wins each round, from two handles.
pub async fn txn_conflicts_never_both_commit(target: &dyn TestTarget) {
    let case = Case::start(target, "txn_conflicts_never_both_commit").await;
    if !supported(&case).await {
        return case.finish().await;
    }
    let other = case.target.open().await;
    let (key, a, b) = (case.key("k"), case.key("a"), case.key("b"));
    put(case.store.as_ref(), &key, "0").await;
    for round in 0..10 {
        let current = get(case.store.as_ref(), &key).await;
        let first = Transaction::new()
            .when_index(&key, current.last_index)
            .put(&key, format!("first-{round}"))
            .put(&a, format!("{round}"));
        let second = Transaction::new()
            .when_index(&key, current.last_index)
            .put(&key, format!("second-{round}"))
            .put(&b, format!("{round}"));
        let (one, two) = tokio::join!(case.store.commit(first), other.commit(second));
        let (one, two) = (commit_ok(one, "first"), commit_ok(two, "second"));
        assert!(
            one.is_committed() != two.is_committed(),
            "round {round}: exactly one commits: {one:?} {two:?}"
        );
        let winner = get(case.store.as_ref(), &key).await;
        let (expected, side) = if one.is_committed() {
            (format!("first-{round}"), &a)
        } else {
            (format!("second-{round}"), &b)
        };
        assert_eq!(winner.value, expected.as_bytes(), "round {round}");
        assert_eq!(
            get(case.store.as_ref(), side).await.value,
            format!("{round}").as_bytes(),
            "round {round}: the winner's other write is there too"
        );
    }
    ok(other.close().await, "close");
    case.finish().await;
}

/// 8 tasks on two handles move units between two keys with read-then-commit; the sum stays
/// constant and every move that committed is counted exactly once.
pub async fn txn_transfers_keep_the_sum(target: &dyn TestTarget) {
    let case = Case::start(target, "txn_transfers_keep_the_sum").await;
    if !supported(&case).await {
        return case.finish().await;
    }
    const TASKS: usize = 8;
    const MOVES: usize = 10;
    const TOTAL: i64 = 1000;
    let handles: [Arc<dyn Store>; 2] = [Arc::clone(&case.store), case.target.open().await];
    let (a, b) = (case.key("a"), case.key("b"));
    put(case.store.as_ref(), &a, &TOTAL.to_string()).await;
    put(case.store.as_ref(), &b, "0").await;
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&handles[task % 2]);
        let (a, b, failed) = (a.clone(), b.clone(), Arc::clone(&failed));
        tasks.push(tokio::spawn(async move {
            let number = |pair: &crate::KvPair| -> i64 {
                std::str::from_utf8(&pair.value)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or_else(|| panic!("{} holds a number", pair.key))
            };
            let mut done = 0;
            while done < MOVES {
                let pa = get(store.as_ref(), &a).await;
                let pb = get(store.as_ref(), &b).await;
                let txn = Transaction::new()
                    .when_index(&a, pa.last_index)
                    .when_index(&b, pb.last_index)
                    .put(&a, (number(&pa) - 1).to_string())
                    .put(&b, (number(&pb) + 1).to_string());
                match ok(store.commit(txn).await, "commit") {
                    TxnOutcome::Committed => done += 1,
                    TxnOutcome::Failed { compare } => {
                        assert!(compare < 2, "only the two compares can fail");
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("a mover panicked: {e}"));
    }
    let moved = i64::try_from(TASKS * MOVES).unwrap_or(i64::MAX);
    let va = get(case.store.as_ref(), &a).await;
    let vb = get(case.store.as_ref(), &b).await;
    assert_eq!(va.value, (TOTAL - moved).to_string().as_bytes(), "units left in a");
    assert_eq!(vb.value, moved.to_string().as_bytes(), "units arrived in b");
    tracing::info!(retries = failed.load(Ordering::Relaxed), "transfers done");
    ok(handles[1].close().await, "close");
    case.finish().await;
}

/// Fenced writes: accepted while the lock is held, refused by the store once the
/// acquisition is over (released and taken by another, or taken away from a holder that
/// may not have noticed), with the fence checked on the server, not in the client.
pub async fn fenced_writes(target: &dyn TestTarget) {
    let case = Case::start(target, "fenced_writes").await;
    let store = case.store.as_ref();
    if !store.capabilities().lock {
        return case.finish().await;
    }
    let (lock_key, data) = (case.key("lock"), case.key("data"));
    let locker = ok(
        store.new_lock(&lock_key, LockOptions::with_value("a")).await,
        "new_lock",
    );
    let guard = ok(locker.lock().await, "lock");
    if !store.capabilities().transactions {
        fails(
            store
                .put_if_held(&guard, &data, "v".into(), &WriteOptions::default())
                .await,
            ErrorKind::CallNotSupported,
            "put_if_held without transactions",
        );
        ok(guard.unlock().await, "unlock");
        return case.finish().await;
    }
    ok(
        store
            .put_if_held(&guard, &data, "by a".into(), &WriteOptions::default())
            .await,
        "put_if_held while held",
    );
    assert_eq!(get(store, &data).await.value, "by a");
    ok(store.delete_if_held(&guard, &data).await, "delete_if_held while held");
    assert_eq!(get_opt(store, &data).await, None);
    fails(
        store.delete_if_held(&guard, &data).await,
        ErrorKind::KeyNotFound,
        "delete_if_held of a missing key",
    );
    assert_eq!(
        get(store, &lock_key).await.value,
        "a",
        "fenced writes leave the lock value alone"
    );
    put(store, &data, "before").await;

    // Released, then taken by another handle: the old fence is refused by the store.
    let old = guard.fence();
    ok(guard.unlock().await, "unlock");
    let other = case.target.open().await;
    let next = ok(
        ok(
            other.new_lock(&lock_key, LockOptions::with_value("b")).await,
            "new_lock",
        )
        .lock_timeout(Duration::from_secs(30))
        .await,
        "lock by b",
    );
    let stale = Transaction::new().when_held(&old).put(&data, "stale");
    assert_eq!(
        commit_ok(store.commit(stale).await, "a released fence"),
        TxnOutcome::Failed { compare: 0 }
    );
    ok(
        other
            .put_if_held(&next, &data, "by b".into(), &WriteOptions::default())
            .await,
        "the new holder writes",
    );

    // Taken away behind the holder's back: whether or not it noticed, its write is refused.
    let deposed = next.fence();
    case.target
        .revoke_lock(&lock_key, crate::raw::local::LockRevocation::DeleteRecord)
        .await;
    let third = ok(
        ok(
            store.new_lock(&lock_key, LockOptions::with_value("c")).await,
            "new_lock",
        )
        .lock_timeout(Duration::from_secs(60))
        .await,
        "lock by c after the revocation",
    );
    let stale = Transaction::new().when_held(&deposed).put(&data, "deposed");
    assert_eq!(
        commit_ok(other.commit(stale).await, "a deposed fence, checked by the store"),
        TxnOutcome::Failed { compare: 0 }
    );
    let refused = other
        .put_if_held(&next, &data, "deposed".into(), &WriteOptions::default())
        .await
        .expect_err("a deposed holder's fenced write");
    assert!(
        matches!(refused.kind(), ErrorKind::LockNotHeld | ErrorKind::LockLost),
        "refused as not held: {refused}"
    );
    assert_eq!(get(store, &data).await.value, "by b", "no refused write landed");
    ok(
        store
            .put_if_held(&third, &data, "by c".into(), &WriteOptions::default())
            .await,
        "the third holder writes",
    );
    assert_eq!(get(store, &data).await.value, "by c");
    drop(next);
    ok(third.unlock().await, "unlock");
    ok(other.close().await, "close");
    case.finish().await;
}
