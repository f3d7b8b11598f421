//! The security suite on the secured ZooKeeper: the TLS port only with client
//! certificates required (feature `zookeeper-tls`), digest authentication enforced.
//!
//! ZooKeeper's digest `addauth` accepts any `user:password`: the password is checked only
//! against the ACLs of nodes. So here a wrong password is no refusal at connect; it shows
//! as `PermissionDenied` on the nodes the right user made, and so does any other user.

use std::time::Duration;

use valkeyrie::ErrorKind;
use valkeyrie_security::{app_key, assert_error_keeps_secrets, env, Connection, Secured};

valkeyrie_security::security_suite!(@cases Secured::ZooKeeper;
    data_calls_over_tls, wrong_ca_is_refused, bad_client_certificates_are_refused,
    keys_outside_the_permission_are_denied, unencoded_password_in_the_url_works,
    debug_output_keeps_secrets);

/// Asserts `outcome` is a permanent `PermissionDenied` that keeps the secrets.
fn denied<T: std::fmt::Debug>(what: &str, outcome: valkeyrie::Result<T>) {
    match outcome {
        Err(err) if err.kind() == ErrorKind::PermissionDenied => {
            assert!(!err.is_temporary(), "{what}: {err}");
            assert_error_keeps_secrets(&err);
        }
        other => panic!("{what}: expected PermissionDenied, got {other:?}"),
    }
}

/// The app user with `password`.
fn app_with_password(password: &str) -> Connection {
    Connection {
        account: Some((env("VALKEYRIE_SECURE_APP_USER"), password.to_owned())),
        ..Connection::app(Secured::ZooKeeper)
    }
}

/// The app user's nodes (a key, its directory, a held lock) refuse `intruder` whatever it
/// tries: read, list, write, delete, lock; and nothing changes.
async fn intruder_is_refused(intruder: Connection, case: &str) {
    let app = Secured::ZooKeeper.connect(&Connection::app(Secured::ZooKeeper)).await;
    let dir = app_key(case);
    let key = format!("{dir}/k");
    app.put(&key, "mine").await.expect("the app writes");
    let guard = app
        .lock(&format!("{dir}/lock"))
        .value("app")
        .await
        .expect("the app locks");

    let other = Secured::ZooKeeper.connect(&intruder).await;
    denied("a get", other.get(&key).await);
    denied("a list", other.list(&dir).await);
    denied("a put", other.put(&key, "theirs").await);
    denied(
        "a new key in the app's directory",
        other.put(&format!("{dir}/new"), "x").await,
    );
    denied("a delete", other.delete(&key).await);
    denied("a delete_tree", other.delete_tree(&dir).await);
    let stealer = other
        .lock(&format!("{dir}/lock"))
        .value("intruder")
        .locker()
        .await
        .expect("new_lock needs no server");
    denied("a try_lock on the app's lock", stealer.try_lock().await.map(|_| ()));

    assert_eq!(
        app.get(&key).await.expect("get").map(|pair| pair.value),
        Some("mine".into())
    );
    assert!(guard.lost_signal().reason().is_none(), "the app's lock was taken");
    guard.unlock().await.expect("unlock");
    assert!(
        app.delete_tree(&dir).await.expect("delete_tree"),
        "{dir} was there to delete"
    );
    other.close().await.expect("close");
    app.close().await.expect("close");
}

/// A wrong password is accepted at connect (digest `addauth` checks nothing) and then
/// refused as `PermissionDenied` on every node the right password made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_denied_on_the_users_nodes() {
    let wrong = format!("{}-wrong", env("VALKEYRIE_SECURE_APP_PASSWORD"));
    intruder_is_refused(app_with_password(&wrong), "wrong-password").await;
}

/// Another user (the admin) cannot read, change, delete or lock the app's nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_is_refused() {
    intruder_is_refused(Connection::admin(Secured::ZooKeeper), "other-user").await;
}

/// A session without credentials is refused by `enforce.auth`: `Unauthenticated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_credentials_is_unauthenticated() {
    let anonymous = Connection {
        account: None,
        ..Connection::app(Secured::ZooKeeper)
    };
    let outcome = match Secured::ZooKeeper.open(&anonymous).await {
        Ok(kv) => kv.get(&app_key("anonymous")).await.map(drop),
        Err(err) => Err(err),
    };
    match outcome {
        Err(err) if err.kind() == ErrorKind::Unauthenticated => assert!(!err.is_temporary(), "{err}"),
        other => panic!("a session without credentials: expected Unauthenticated, got {other:?}"),
    }
}

/// The chroot node is made by the user's session with the user's ACL: another user can
/// neither read it nor create under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chroot_is_the_users_alone() {
    let chroot = app_key("chroot");
    let url = |connection: &Connection| {
        let url = Secured::ZooKeeper.url(connection);
        let (base, query) = url.split_once('?').expect("the URL has parameters");
        format!("{base}/{chroot}?{query}")
    };
    let app = valkeyrie::open(&url(&Connection::app(Secured::ZooKeeper)))
        .await
        .expect("the app opens its chroot");
    app.put("k", "1").await.expect("put");
    let app_root = Secured::ZooKeeper.connect(&Connection::app(Secured::ZooKeeper)).await;
    assert_eq!(
        app_root
            .get(&format!("{chroot}/k"))
            .await
            .expect("get")
            .map(|pair| pair.value),
        Some("1".into()),
        "the key is under the chroot"
    );
    let admin = Secured::ZooKeeper.connect(&Connection::admin(Secured::ZooKeeper)).await;
    denied("a list of the chroot", admin.list(&chroot).await);
    denied(
        "a key under the chroot",
        admin.put(&format!("{chroot}/theirs"), "x").await,
    );
    assert!(
        app_root.delete_tree(&chroot).await.expect("delete_tree"),
        "{chroot} was there to delete"
    );
    app.close().await.expect("close");
}

/// A TTL key of the app's is the app's alone too, and still expires: the TTL mark (an ACL
/// version bump) works with the user's ACL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_keys_are_the_users_and_expire() {
    let app = Secured::ZooKeeper.connect(&Connection::app(Secured::ZooKeeper)).await;
    let admin = Secured::ZooKeeper.connect(&Connection::admin(Secured::ZooKeeper)).await;
    let key = app_key("ttl");
    app.put(&key, "short")
        .ttl(Duration::from_secs(1))
        .await
        .expect("a TTL put");
    denied("another user's read of a TTL key", admin.get(&key).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match app.get(&key).await {
            Ok(None) => break,
            Ok(Some(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            other => panic!("the TTL key after its TTL: {other:?}"),
        }
    }
}
