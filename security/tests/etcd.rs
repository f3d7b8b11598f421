//! The security suite on the secured etcd: TLS with `--client-cert-auth`, users and roles,
//! and simple tokens that expire after `VALKEYRIE_SECURE_ETCD_TOKEN_TTL` (3 s) so that
//! the handle's token refresh is exercised within the suite.

use std::time::Duration;

use futures_util::StreamExt;
use valkeyrie::WatchEvent;
use valkeyrie_security::{app_key, env, Connection, Secured};

valkeyrie_security::security_suite!(Secured::Etcd);

/// The server's token TTL.
fn token_ttl() -> Duration {
    let text = env("VALKEYRIE_SECURE_ETCD_TOKEN_TTL");
    let seconds: u64 = text
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|_| panic!("VALKEYRIE_SECURE_ETCD_TOKEN_TTL={text:?} is not whole seconds"));
    Duration::from_secs(seconds)
}

/// A handle left idle past the token TTL, a watch, a held lock and a keep-alive key that
/// live across several token lifetimes all keep working: the handle logs in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_outlives_its_ttl() {
    let idle_for = token_ttl() * 2 + Duration::from_secs(1);
    let kv = Secured::Etcd.connect(&Connection::app(Secured::Etcd)).await;
    let writer = Secured::Etcd.connect(&Connection::app(Secured::Etcd)).await;
    let dir = app_key("token");
    kv.put(&format!("{dir}/a"), "1").await.expect("put");
    let mut watch = kv.watch_tree(&dir).await.expect("watch_tree");
    assert!(matches!(watch.next().await, Some(Ok(WatchEvent::Snapshot(_)))));
    let guard = kv
        .lock(&format!("{dir}-lock"))
        .value("node-a")
        .ttl(Duration::from_secs(2))
        .await
        .expect("lock");
    let kept = format!("{dir}-kept");
    kv.put(&kept, "alive")
        .ttl(Duration::from_secs(2))
        .keep_alive()
        .await
        .expect("a keep-alive put");

    tokio::time::sleep(idle_for).await;

    assert_eq!(
        kv.get(&format!("{dir}/a"))
            .await
            .expect("a get after the token expired")
            .map(|pair| pair.value),
        Some("1".into())
    );
    writer
        .put(&format!("{dir}/b"), "2")
        .await
        .expect("another handle's put");
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(Ok(WatchEvent::Put(pair)))) => assert_eq!(pair.key, format!("{dir}/b")),
        other => panic!("the watch after the token expired: {other:?}"),
    }
    guard.ensure_held().expect("the lock across token expiries");
    kv.put(&format!("{dir}/fenced"), "3")
        .if_held(&guard)
        .await
        .expect("a fenced write after the token expired");
    assert_eq!(
        writer
            .get(&kept)
            .await
            .expect("the keep-alive key")
            .map(|pair| pair.value),
        Some("alive".into())
    );
    guard.unlock().await.expect("unlock after the token expired");
    assert!(
        kv.delete_tree(&dir).await.expect("delete_tree"),
        "{dir} was there to delete"
    );
    assert!(
        kv.delete(&kept).await.expect("delete the keep-alive key"),
        "{kept} was there to delete"
    );
    writer.close().await.expect("close");
    kv.close().await.expect("close");
}
