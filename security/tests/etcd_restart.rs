//! The secured etcd restarted under a live handle: its own test binary, since the restart
//! would break the cases that run in parallel in `etcd.rs`.

use std::time::Duration;

use valkeyrie_security::{app_key, Connection, Secured};

/// A handle lives across a restart of the member it talks to: the restart forgets every
/// token, and the handle logs in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_outlives_a_member_restart() {
    let kv = Secured::Etcd.connect(&Connection::app(Secured::Etcd)).await;
    let key = app_key("restart");
    kv.put(&key, "before").await.expect("put");
    tokio::task::spawn_blocking(|| xtask::servers::secure::restart(xtask::servers::secure::Secured::Etcd))
        .await
        .expect("the restart hook")
        .unwrap_or_else(|why| panic!("restarting the secured etcd: {why}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match kv.put(&key, "after").await {
            Ok(()) => break,
            Err(err) if err.is_temporary() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("a put after the restart: {err}"),
        }
    }
    assert_eq!(
        kv.get(&key).await.expect("get").map(|pair| pair.value),
        Some("after".into())
    );
    assert!(kv.delete(&key).await.expect("delete"), "{key} was there to delete");
    kv.close().await.expect("close");
}
