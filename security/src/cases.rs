//! The cases every secured store runs; [`security_suite!`](crate::security_suite) makes
//! each one a `#[tokio::test]` of a store's test file.

use std::time::Duration;

use futures_util::StreamExt;
use valkeyrie::{Error, ErrorKind, WatchEvent};

use crate::{app_key, assert_error_keeps_secrets, assert_no_secret, ClientCert, Connection, Secured, Trust};

/// How long a watch may take to report a write.
const WATCH_WAIT: Duration = Duration::from_secs(10);

/// Asserts that `outcome` failed with a permanent error of `kind` that keeps the secrets;
/// the error.
fn refused<T>(what: &str, outcome: valkeyrie::Result<T>, kind: ErrorKind) -> Error {
    let err = match outcome {
        Ok(_) => panic!("{what}: succeeded, expected {kind:?}"),
        Err(err) => err,
    };
    assert_eq!(err.kind(), kind, "{what}: {err}");
    assert!(!err.is_temporary(), "{what}: a refusal must be permanent: {err}");
    assert_error_keeps_secrets(&err);
    eprintln!("{what}: {err}");
    err
}

/// put, get, list, watch, a lock and a commit, as the app user over TLS with the private
/// CA and a client certificate.
pub async fn data_calls_over_tls(store: Secured) {
    let kv = store.connect(&Connection::app(store)).await;
    let dir = app_key("data");
    let mut watch = kv.watch_tree(&dir).await.expect("watch_tree");
    match watch.next().await {
        Some(Ok(WatchEvent::Snapshot(pairs))) => assert!(pairs.is_empty(), "{pairs:?}"),
        other => panic!("the first watch item: {other:?}"),
    }
    kv.put(&format!("{dir}/a"), "1").await.expect("put");
    assert_eq!(
        kv.get(&format!("{dir}/a")).await.expect("get").map(|pair| pair.value),
        Some("1".into())
    );
    match tokio::time::timeout(WATCH_WAIT, watch.next()).await {
        Ok(Some(Ok(WatchEvent::Put(pair)))) => assert_eq!(pair.key, format!("{dir}/a")),
        other => panic!("the watch after a put: {other:?}"),
    }
    let outcome = kv
        .transaction()
        .when_absent(format!("{dir}/b"))
        .put(format!("{dir}/b"), "2")
        .put(format!("{dir}/c"), "3")
        .commit()
        .await
        .expect("commit");
    assert!(outcome.is_committed());
    let listed: Vec<String> = kv.list(&dir).await.expect("list").into_iter().map(|p| p.key).collect();
    assert_eq!(listed, [format!("{dir}/a"), format!("{dir}/b"), format!("{dir}/c")]);
    let guard = kv.lock(&format!("{dir}-lock")).value("node-a").await.expect("lock");
    kv.put(&format!("{dir}/fenced"), "4")
        .if_held(&guard)
        .await
        .expect("a fenced write while the lock is held");
    guard.unlock().await.expect("unlock");
    assert!(
        kv.delete_tree(&dir).await.expect("delete_tree"),
        "{dir} was there to delete"
    );
    kv.close().await.expect("close");
}

/// A client that trusts another CA cannot verify the server: a permanent error that says
/// TLS verification failed.
pub async fn wrong_ca_is_refused(store: Secured) {
    let connection = Connection {
        trust: Trust::OtherCa,
        ..Connection::app(store)
    };
    let err = refused("another CA", store.open(&connection).await, ErrorKind::TlsVerification);
    assert!(err.to_string().contains("TLS verification failed"), "{err}");
}

/// The server refuses a client without a certificate, with an expired one, and with one
/// of a CA it does not trust: a permanent error that says TLS verification failed.
pub async fn bad_client_certificates_are_refused(store: Secured) {
    for cert in [ClientCert::Missing, ClientCert::Expired, ClientCert::OtherCa] {
        let connection = Connection {
            cert,
            ..Connection::app(store)
        };
        let what = format!("client certificate {cert:?}");
        let err = refused(&what, store.open(&connection).await, ErrorKind::TlsVerification);
        assert!(err.to_string().contains("TLS verification failed"), "{what}: {err}");
    }
}

/// A wrong password is `Unauthenticated`, and neither password shows in the error.
pub async fn wrong_password_is_unauthenticated(store: Secured) {
    let mut connection = Connection::app(store);
    if let Some((_, password)) = connection.account.as_mut() {
        password.push_str("-wrong");
    }
    refused(
        "a wrong password",
        store.open(&connection).await,
        ErrorKind::Unauthenticated,
    );
}

/// A key outside the app user's permission (one the admin wrote: on ZooKeeper, whose users
/// have no prefixes, a node is its creator's) is `PermissionDenied` for reads and writes,
/// and nothing is written.
pub async fn keys_outside_the_permission_are_denied(store: Secured) {
    let app = store.connect(&Connection::app(store)).await;
    let admin = store.connect(&Connection::admin(store)).await;
    let outside = format!("outside/denied-{}", std::process::id());
    admin.put(&outside, "admin's").await.expect("the admin writes");
    let err = refused(
        "a put outside the prefix",
        app.put(&outside, "x").await,
        ErrorKind::PermissionDenied,
    );
    assert_eq!(err.key(), Some(outside.as_str()), "{err}");
    refused(
        "a get outside the prefix",
        app.get(&outside).await,
        ErrorKind::PermissionDenied,
    );
    refused(
        "a commit touching a key outside the prefix",
        app.transaction()
            .put(app_key("inside"), "1")
            .put(outside.clone(), "2")
            .commit()
            .await,
        ErrorKind::PermissionDenied,
    );
    match admin.get(&outside).await {
        Ok(Some(pair)) if pair.value == "admin's" => {}
        other => panic!("the admin reads {outside}: {other:?} (nothing may have been written)"),
    }
    match admin.get(&app_key("inside")).await {
        Ok(None) => {}
        other => panic!("a refused commit wrote its permitted half: {other:?}"),
    }
    assert!(
        admin.delete(&outside).await.expect("the admin deletes"),
        "{outside} was there to delete"
    );
    app.close().await.expect("close");
    admin.close().await.expect("close");
}

/// A password holding `/ ? # @ :` works written into the URL as it is, unencoded.
pub async fn unencoded_password_in_the_url_works(store: Secured) {
    let connection = Connection::app(store);
    let (user, password) = connection.account.clone().expect("the app account");
    let url = store.url_with_userinfo(&format!("{user}:{password}@"), &connection);
    let kv = match valkeyrie::open(&url).await {
        Ok(kv) => kv,
        Err(err) => {
            assert_error_keeps_secrets(&err);
            panic!("{}: the unencoded password was not understood: {err}", store.name());
        }
    };
    kv.put(&app_key("unencoded"), "1").await.expect("put");
    kv.delete(&app_key("unencoded")).await.expect("delete");
    kv.close().await.expect("close");
}

/// No password shows in the `Debug` output of a parsed URL or of the typed config it fills.
pub async fn debug_output_keeps_secrets(store: Secured) {
    let url = valkeyrie::raw::StoreUrl::parse(&store.url(&Connection::app(store))).expect("the URL parses");
    assert_no_secret("a parsed URL's Debug", &format!("{url:?}"));
    let params = valkeyrie::StoreConfig::Params(url.params);
    let config = match store {
        Secured::Etcd => format!(
            "{:?}",
            params.resolve::<valkeyrie::etcd::EtcdConfig>().expect("the config")
        ),
        Secured::Redis => format!(
            "{:?}",
            params.resolve::<valkeyrie::redis::RedisConfig>().expect("the config")
        ),
        Secured::Consul => format!(
            "{:?}",
            params.resolve::<valkeyrie::consul::ConsulConfig>().expect("the config")
        ),
        Secured::ZooKeeper => format!(
            "{:?}",
            params
                .resolve::<valkeyrie::zookeeper::ZookeeperConfig>()
                .expect("the config")
        ),
        Secured::DynamoDb => format!(
            "{:?}",
            params
                .resolve::<valkeyrie::dynamodb::DynamoDbConfig>()
                .expect("the config")
        ),
    };
    assert!(config.contains("password") || config.contains("token"), "{config}");
    assert_no_secret("a typed config's Debug", &config);
}

/// Makes each case of [`cases`](crate::cases) a `#[tokio::test]` for `$store`; `@cases`
/// takes a store and the cases it runs, for a store where one does not apply (ZooKeeper's
/// digest authentication accepts any password: see its test file).
#[macro_export]
macro_rules! security_suite {
    ($store:expr) => {
        $crate::security_suite!(@cases $store;
            data_calls_over_tls, wrong_ca_is_refused, bad_client_certificates_are_refused,
            wrong_password_is_unauthenticated, keys_outside_the_permission_are_denied,
            unencoded_password_in_the_url_works, debug_output_keeps_secrets);
    };
    (@cases $store:expr; $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            $crate::cases::$case($store).await;
        }
    )*};
}
