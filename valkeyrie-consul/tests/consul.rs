//! What the conformance suite cannot see: the on-server layout shared with the Go store
//! (flags, TTL sessions, lock sessions), limits, failover and secrets.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{endpoints, master_token, unique, Agent};
use valkeyrie_consul::ConsulConfig;
use valkeyrie_core::{ErrorKind, LockOptions, ReadOptions, Store, Transaction, TxnOutcome, WriteOptions};

/// The flags the Go store writes on every key.
const GO_LOCK_FLAGS: u64 = 0x2ddc_cbc0_58a5_0c18;

async fn store() -> valkeyrie_consul::ConsulStore {
    ConsulConfig::default()
        .connect(endpoints())
        .await
        .expect("connect to the agent")
}

#[tokio::test]
async fn values_are_raw_with_the_go_flags() {
    let store = store().await;
    let agent = Agent::new();
    let key = unique("layout");
    let value = Bytes::from_static(b"\x00\xffbinary");
    store.put(&key, value.clone(), &WriteOptions::default()).await.unwrap();
    let entry = agent.entry(&key).await.expect("the key exists");
    assert_eq!(entry["Flags"], GO_LOCK_FLAGS);
    assert_eq!(
        entry["Value"], "AP9iaW5hcnk=",
        "the value itself, base64 in Consul's JSON"
    );
    assert!(entry["Session"].is_null(), "no session without a TTL");
    let pair = store.get(&key, &ReadOptions::default()).await.unwrap();
    assert_eq!(pair.last_index, entry["ModifyIndex"].as_u64().unwrap());
    assert_eq!(pair.value, value);
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn ttl_is_a_delete_session_of_half_the_ttl_and_goes_with_a_plain_put() {
    let store = store().await;
    let agent = Agent::new();
    let key = unique("ttl");
    store
        .put(&key, "v1".into(), &WriteOptions::with_ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let entry = agent.entry(&key).await.expect("the key exists");
    let first = entry["Session"]
        .as_str()
        .expect("a TTL session holds the key")
        .to_owned();
    let session = agent.session(&first).await.expect("the session exists");
    assert_eq!(session["Behavior"], "delete");
    assert_eq!(session["TTL"], "15s", "half the TTL, as the Go store writes it");
    assert_eq!(session["LockDelay"], 1_000_000, "1 ms, in nanoseconds");

    // A second TTL write replaces the session; the first one, holding nothing, is left to
    // expire (a session can hold other keys of its owner).
    store
        .put(&key, "v2".into(), &WriteOptions::with_ttl(Duration::from_secs(40)))
        .await
        .unwrap();
    let second = agent.entry(&key).await.unwrap()["Session"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(agent.session(&second).await.unwrap()["TTL"], "20s");

    // A write without TTL makes the key permanent again.
    store.put(&key, "v3".into(), &WriteOptions::default()).await.unwrap();
    let entry = agent.entry(&key).await.unwrap();
    assert!(entry["Session"].is_null(), "no session after a plain put: {entry}");
    assert_eq!(store.get(&key, &ReadOptions::default()).await.unwrap().value, "v3");
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn a_go_ttl_session_is_cleared_by_a_plain_put() {
    // The Go store attaches its TTL session by acquiring the key, then writes it plainly.
    let store = store().await;
    let agent = Agent::new();
    let key = unique("go-ttl");
    let (_, body) = agent
        .request(
            http::Method::PUT,
            "session/create",
            br#"{"Behavior":"delete","TTL":"15s","LockDelay":"1ms"}"#,
        )
        .await;
    let session: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let session = session["ID"].as_str().unwrap().to_owned();
    let path = format!("kv/{key}?acquire={session}&flags={GO_LOCK_FLAGS}");
    let (_, acquired) = agent.request(http::Method::PUT, &path, b"from-go").await;
    assert_eq!(acquired.trim_ascii(), b"true");

    let previous = store.get(&key, &ReadOptions::default()).await.unwrap();
    let written = store
        .atomic_put(&key, "from-rust".into(), Some(&previous), &WriteOptions::default())
        .await
        .unwrap();
    let entry = agent.entry(&key).await.unwrap();
    assert!(entry["Session"].is_null(), "the TTL went with the write: {entry}");
    assert_eq!(written.last_index, entry["ModifyIndex"].as_u64().unwrap());
    assert!(
        agent.session(&session).await.is_some(),
        "the Go session itself is left alone"
    );
    agent.destroy_session(&session).await;
    assert!(
        agent.entry(&key).await.is_some(),
        "and ending it no longer deletes the key"
    );
    store.delete(&key).await.unwrap();
}

/// The session holding `key`, if any.
async fn holder(agent: &Agent, key: &str) -> Option<String> {
    let entry = agent.entry(key).await.unwrap_or_else(|| panic!("{key} exists"));
    entry["Session"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn transaction_puts_write_what_put_writes() {
    let store = store().await;
    let agent = Agent::new();
    let (permanent, ttl, fresh) = (unique("txn-permanent"), unique("txn-ttl"), unique("txn-fresh"));
    let ttl_30 = WriteOptions::with_ttl(Duration::from_secs(30));
    store.put(&permanent, "v0".into(), &ttl_30).await.unwrap();
    store.put(&ttl, "v0".into(), &ttl_30).await.unwrap();
    let old = holder(&agent, &ttl).await.expect("a TTL session");

    // Each key is held by a TTL session: the first attempt is rolled back, the second
    // planned on what a read found.
    let txn = Transaction::new().put(&permanent, "v1").put(&fresh, "v1");
    assert_eq!(store.commit(txn).await.unwrap(), TxnOutcome::Committed);
    assert_eq!(holder(&agent, &permanent).await, None, "a plain put clears the TTL");
    assert_eq!(holder(&agent, &fresh).await, None);
    let txn = Transaction::new().put_with(&ttl, "v1", WriteOptions::with_ttl(Duration::from_secs(40)));
    assert_eq!(store.commit(txn).await.unwrap(), TxnOutcome::Committed);
    let new = holder(&agent, &ttl).await.expect("a TTL session");
    assert_ne!(new, old, "the TTL put brings its own session");
    let session = agent.session(&new).await.expect("the session exists");
    assert_eq!(session["Behavior"], "delete");
    assert_eq!(session["TTL"], "20s", "half the TTL, as put writes it");
    for key in [&permanent, &ttl, &fresh] {
        let entry = agent.entry(key).await.unwrap();
        assert_eq!(entry["Flags"], GO_LOCK_FLAGS, "{key}");
        assert_eq!(store.get(key, &ReadOptions::default()).await.unwrap().value, "v1");
    }
    for key in [&permanent, &ttl, &fresh] {
        store.delete(key).await.unwrap();
    }
}

#[tokio::test]
async fn transaction_puts_leave_a_lock_to_its_holder() {
    let store = store().await;
    let agent = Agent::new();
    let key = unique("txn-locked");
    let locker = store.new_lock(&key, LockOptions::with_value("held")).await.unwrap();
    let guard = locker.lock().await.unwrap();
    let session = holder(&agent, &key).await.expect("the lock's session");

    let txn = Transaction::new().when_held(&guard.fence()).put(&key, "written");
    assert_eq!(store.commit(txn).await.unwrap(), TxnOutcome::Committed);
    assert_eq!(holder(&agent, &key).await, Some(session), "the holder keeps its lock");
    assert_eq!(store.get(&key, &ReadOptions::default()).await.unwrap().value, "written");

    let txn = Transaction::new().put_with(&key, "taken", WriteOptions::with_ttl(Duration::from_secs(30)));
    let err = store.commit(txn).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains(&key), "{err}");
    assert_eq!(store.get(&key, &ReadOptions::default()).await.unwrap().value, "written");
    guard.unlock().await.unwrap();
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn the_sessions_of_a_failed_transaction_are_destroyed() {
    let store = store().await;
    let agent = Agent::new();
    let (existing, key) = (unique("txn-exists"), unique("txn-doomed"));
    store
        .put(&existing, "v".into(), &WriteOptions::default())
        .await
        .unwrap();
    // A TTL no other test uses, to find the session among the cluster's.
    let txn =
        Transaction::new()
            .when_absent(&existing)
            .put_with(&key, "v", WriteOptions::with_ttl(Duration::from_secs(46)));
    assert_eq!(store.commit(txn).await.unwrap(), TxnOutcome::Failed { compare: 0 });
    assert!(agent.entry(&key).await.is_none());
    let mut left = usize::MAX;
    for _ in 0..50 {
        left = agent.sessions().await.iter().filter(|s| s["TTL"] == "23s").count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the session of the TTL put is destroyed");
    store.delete(&existing).await.unwrap();
}

#[tokio::test]
async fn a_transaction_at_the_limit_counts_one_op_per_entry() {
    let store = store().await;
    let agent = Agent::new();
    let dir = unique("txn-limit");
    let limit = store.capabilities().max_transaction_ops.expect("a limit");
    assert_eq!(limit, 64, "Consul 1.8's limit");
    let ttl_held = format!("{dir}/0");
    store
        .put(&ttl_held, "v".into(), &WriteOptions::with_ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    // Too many puts for a session check each: their keys are read first.
    let mut txn = Transaction::new().when_exists(&ttl_held);
    for n in 0..limit - 1 {
        txn = txn.put(format!("{dir}/{n}"), "w");
    }
    assert_eq!(store.commit(txn).await.unwrap(), TxnOutcome::Committed);
    assert_eq!(holder(&agent, &ttl_held).await, None, "the TTL went with the put");
    assert_eq!(
        store.list(&dir, &ReadOptions::default()).await.unwrap().len(),
        limit - 1
    );

    // A TTL put on a key with a TTL takes two: at the limit, it is refused, and nothing written.
    store
        .put(&ttl_held, "v".into(), &WriteOptions::with_ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let mut txn = Transaction::new().put_with(&ttl_held, "x", WriteOptions::with_ttl(Duration::from_secs(30)));
    for n in 1..limit {
        txn = txn.put(format!("{dir}/{n}"), "x");
    }
    let err = store.commit(txn).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTransaction, "{err}");
    assert!(err.to_string().contains("64"), "{err}");
    assert_eq!(store.get(&ttl_held, &ReadOptions::default()).await.unwrap().value, "v");
    store.delete_tree(&dir).await.unwrap();
}

#[tokio::test]
async fn locks_use_the_go_layout_and_exclude_a_raw_holder() {
    let store = store().await;
    let agent = Agent::new();
    let key = unique("lock");
    for delete_on_unlock in [false, true] {
        let opts = LockOptions::with_value("owner1")
            .ttl(Duration::from_secs(30))
            .delete_on_unlock(delete_on_unlock);
        let locker = store.new_lock(&key, opts).await.unwrap();
        let guard = locker.lock().await.unwrap();
        let entry = agent.entry(&key).await.expect("the lock key");
        assert_eq!(entry["Value"], "b3duZXIx", "the lock value");
        assert_eq!(entry["Flags"], GO_LOCK_FLAGS);
        let holder = entry["Session"].as_str().expect("held by a session").to_owned();
        let session = agent.session(&holder).await.unwrap();
        assert_eq!(session["Behavior"], "release");
        assert_eq!(session["TTL"], "15s", "half the lock TTL, as the Go store");
        assert_eq!(
            guard.fencing_token(),
            entry["ModifyIndex"].as_u64().unwrap(),
            "the fencing token is the acquiring write's index"
        );
        guard.unlock().await.unwrap();
        // Destroyed right after the unlock returns, in the background.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while agent.session(&holder).await.is_some() {
            assert!(tokio::time::Instant::now() < deadline, "the session ends with the lock");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match agent.entry(&key).await {
            Some(entry) => {
                assert!(!delete_on_unlock, "delete_on_unlock deletes the key");
                assert!(entry["Session"].is_null(), "released");
                assert_eq!(entry["Value"], "b3duZXIx", "the value stays");
            }
            None => assert!(delete_on_unlock, "without delete_on_unlock the key stays"),
        }
    }

    // A holder outside valkeyrie (as a Go service would hold it) excludes us until it releases.
    let (_, body) = agent
        .request(
            http::Method::PUT,
            "session/create",
            br#"{"Behavior":"release","TTL":"15s","LockDelay":"1ms"}"#,
        )
        .await;
    let session: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let session = session["ID"].as_str().unwrap().to_owned();
    let path = format!("kv/{key}?acquire={session}&flags={GO_LOCK_FLAGS}");
    assert_eq!(
        agent.request(http::Method::PUT, &path, b"go").await.1.trim_ascii(),
        b"true"
    );
    let locker = store.new_lock(&key, LockOptions::with_value("rust")).await.unwrap();
    assert!(locker.try_lock().await.unwrap().is_none(), "held by the other session");
    let waiting = tokio::spawn(async move { locker.lock().await.map(|guard| guard.fencing_token()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "waits while the other session holds it");
    let path = format!("kv/{key}?release={session}&flags={GO_LOCK_FLAGS}");
    assert_eq!(
        agent.request(http::Method::PUT, &path, b"go").await.1.trim_ascii(),
        b"true"
    );
    let token = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("acquired once released")
        .unwrap()
        .unwrap();
    assert!(token > 0);
    agent.destroy_session(&session).await;
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn keep_alive_renews_until_the_handle_closes() {
    let store = store().await;
    let agent = Agent::new();
    let key = unique("keep-alive");
    store
        .put(&key, "v".into(), &WriteOptions::keep_alive(Duration::from_secs(20)))
        .await
        .unwrap();
    let session = agent.entry(&key).await.unwrap()["Session"].as_str().unwrap().to_owned();
    store.close().await.unwrap();
    // Renewals stop; the session (and the key) end one TTL later, as on every store.
    assert!(agent.session(&session).await.is_some(), "not destroyed on close");
    assert!(agent.entry(&key).await.is_some());
    agent.destroy_session(&session).await;
    assert!(agent.entry(&key).await.is_none(), "the key goes with its session");
}

#[tokio::test]
async fn keep_alive_writes_of_one_ttl_share_one_session() {
    let store = store().await;
    let agent = Agent::new();
    let [a, b, c, plain, again] = ["a", "b", "c", "plain", "again"].map(|name| unique(&format!("shared-{name}")));
    let session_of = |key: &str| {
        let (agent, key) = (&agent, key.to_owned());
        async move {
            let entry = agent.entry(&key).await.expect("the key exists");
            entry["Session"].as_str().expect("a session holds it").to_owned()
        }
    };
    let twenty = WriteOptions::keep_alive(Duration::from_secs(20));
    store.put(&a, "a".into(), &twenty).await.unwrap();
    store.put(&b, "b".into(), &twenty).await.unwrap();
    let thirty = WriteOptions::keep_alive(Duration::from_secs(30));
    store.put(&c, "c".into(), &thirty).await.unwrap();
    let with_ttl = WriteOptions::with_ttl(Duration::from_secs(20));
    store.put(&plain, "plain".into(), &with_ttl).await.unwrap();
    let shared = session_of(&a).await;
    assert_eq!(session_of(&b).await, shared, "one session for the keys of one TTL");
    assert_ne!(session_of(&c).await, shared, "another TTL, another session");
    assert_ne!(
        session_of(&plain).await,
        shared,
        "a plain TTL write has its own, as in Go"
    );
    let info = agent.session(&shared).await.expect("the session exists");
    assert_eq!(
        (info["Behavior"].as_str(), info["TTL"].as_str()),
        (Some("delete"), Some("10s"))
    );

    // A shared session that ended behind the handle's back (while Consul was away, say)
    // takes its keys with it; the next write of its TTL gets a new one and does not fail.
    agent.destroy_session(&shared).await;
    assert!(agent.entry(&a).await.is_none() && agent.entry(&b).await.is_none());
    store.put(&again, "again".into(), &twenty).await.unwrap();
    let replaced = session_of(&again).await;
    assert_ne!(replaced, shared, "a new session");
    store.put(&a, "a".into(), &twenty).await.unwrap();
    assert_eq!(session_of(&a).await, replaced, "shared again");

    let sessions = [replaced, session_of(&c).await, session_of(&plain).await];
    store.close().await.unwrap();
    for session in &sessions {
        agent.destroy_session(session).await;
    }
}

#[tokio::test]
async fn list_of_a_missing_dir_with_siblings_is_not_found() {
    let store = store().await;
    let dir = unique("sib");
    store
        .put(&format!("{dir}2/x"), "v".into(), &WriteOptions::default())
        .await
        .unwrap();
    let err = store.list(&dir, &ReadOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyNotFound);
    store.delete_tree(&format!("{dir}2")).await.unwrap();
}

#[tokio::test]
async fn values_up_to_the_transaction_limit_round_trip() {
    let store = store().await;
    let key = unique("large");
    let limit = store.capabilities().max_value_size.expect("a limit");
    assert!(limit > 380 * 1024, "about 383 KiB with Consul's defaults, got {limit}");
    let value = Bytes::from(vec![0xa5; limit]);
    let created = store
        .atomic_put(&key, value.clone(), None, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get(&key, &ReadOptions::default()).await.unwrap(), created);
    let too_large = store
        .put(&key, Bytes::from(vec![0; limit + 1]), &WriteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(too_large.kind(), ErrorKind::ValueTooLarge);
    assert!(too_large.to_string().contains(&key), "{too_large}");
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn a_dead_agent_is_skipped() {
    let mut with_dead_first = vec!["127.0.0.1:1".to_owned()];
    with_dead_first.extend(endpoints());
    let store = ConsulConfig::default().connect(with_dead_first).await.unwrap();
    let key = unique("failover");
    store.put(&key, "v".into(), &WriteOptions::default()).await.unwrap();
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn tokens_never_show() {
    let config = ConsulConfig {
        token: Some("s3cret-token".into()),
        connect_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let err = config.clone().connect(["127.0.0.1:1"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotReachable);
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    // One line about no key that says what happened, not only hyper's "client error".
    let message = err.to_string();
    println!("{message}");
    assert!(
        message.starts_with("consul: server not reachable during connect: "),
        "{message}"
    );
    assert!(message.to_lowercase().contains("connect"), "{message}");
    assert!(
        message.len() > "consul: server not reachable during connect: client error (Connect)".len(),
        "{message}"
    );
    // A token the cluster does not know is refused at connect, and not quoted.
    let err = config.connect(endpoints()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(!err.is_temporary(), "{err}");
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    let master = master_token();
    let store = ConsulConfig {
        token: Some(master.as_str().into()),
        ..Default::default()
    }
    .connect(endpoints())
    .await
    .unwrap();
    assert!(!format!("{store:?}").contains(&master));
}

#[tokio::test]
async fn acl_refusals_are_errors_not_conditions() {
    // A token that may only read below `dir/`: Consul refuses its writes inside
    // transactions with a rollback, which must not read as "not found" or "busy".
    let agent = Agent::new();
    let dir = unique("acl");
    let master = master_token();
    let rules = format!(
        r#"{{"Name":"{}","Rules":"key_prefix \"{dir}/\" {{ policy = \"read\" }}"}}"#,
        dir.replace('/', "-")
    );
    let (status, body) = agent
        .request_as(&master, http::Method::PUT, "acl/policy", rules.as_bytes())
        .await;
    assert_eq!(status, 200, "create the policy: {}", String::from_utf8_lossy(&body));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secret = format!("00000000-0000-4000-8000-{:012x}", nanos % (1 << 48));
    let token = format!(
        r#"{{"SecretID":"{secret}","Policies":[{{"Name":"{}"}}]}}"#,
        dir.replace('/', "-")
    );
    let (status, body) = agent
        .request_as(&master, http::Method::PUT, "acl/token", token.as_bytes())
        .await;
    assert_eq!(status, 200, "create the token: {}", String::from_utf8_lossy(&body));

    let key = format!("{dir}/k");
    store()
        .await
        .put(&key, "v".into(), &WriteOptions::default())
        .await
        .unwrap();
    let limited = ConsulConfig {
        token: Some(secret.as_str().into()),
        ..Default::default()
    }
    .connect(endpoints())
    .await
    .unwrap();
    let read = limited.get(&key, &ReadOptions::default()).await.unwrap();
    let refused = |err: valkeyrie_core::Error| {
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert!(!err.is_temporary(), "{err}");
        assert!(err.to_string().contains("permission denied"), "{err}");
        assert!(!err.to_string().contains(&secret), "{err}");
    };
    refused(
        limited
            .put(&key, "w".into(), &WriteOptions::default())
            .await
            .unwrap_err(),
    );
    refused(limited.delete(&key).await.unwrap_err());
    refused(limited.atomic_delete(&key, &read).await.unwrap_err());
    let locker = limited.new_lock(&key, LockOptions::default()).await.unwrap();
    refused(locker.try_lock().await.map(|_| ()).unwrap_err());
    refused(
        limited
            .commit(Transaction::new().put(&key, "w"))
            .await
            .map(drop)
            .unwrap_err(),
    );
    store().await.delete(&key).await.unwrap();
}
