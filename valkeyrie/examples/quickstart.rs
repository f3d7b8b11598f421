//! Quickstart: the embedded store in a temporary directory, showing put, get, list, watch,
//! atomic_put and a lock. Run it with `cargo run --example quickstart`.
//! It depends on `valkeyrie` alone: the default feature `boltlike` links the embedded store.
#![allow(clippy::print_stdout)] // An example talks to its reader.

use std::time::Duration;

use futures_util::StreamExt;
use valkeyrie::{ErrorKind, LockOptions, ReadOptions, WatchEvent, WriteOptions};

#[tokio::main]
async fn main() -> valkeyrie::Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("boltlike://{}", dir.path().join("kv.db").display());
    let store = valkeyrie::open(&url).await?;
    println!("opened {url}");
    let (read, write) = (ReadOptions::default(), WriteOptions::default());

    // put and get
    store.put("services/web/1", "10.0.0.1:80".into(), &write).await?;
    let pair = store.get("services/web/1", &read).await?;
    println!("get {} = {:?} (index {})", pair.key, pair.value, pair.last_index);

    // watch a directory: a snapshot first, then every change
    let mut events = store.watch_tree("services/web", &read).await?;
    let watcher = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(WatchEvent::Snapshot(pairs)) => {
                    println!("  watch: snapshot of {} key(s)", pairs.len())
                }
                Ok(WatchEvent::Put(pair)) => {
                    println!("  watch: put {} = {:?}", pair.key, pair.value)
                }
                Ok(WatchEvent::Delete { key, .. }) => println!("  watch: delete {key}"),
                Ok(other) => println!("  watch: {other:?}"),
                Err(err) => println!("  watch: ended with {err}"),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    // list
    store.put("services/web/2", "10.0.0.2:80".into(), &write).await?;
    let web = store.list("services/web", &read).await?;
    println!(
        "list services/web: {:?}",
        web.iter().map(|p| p.key.as_str()).collect::<Vec<_>>()
    );

    // atomic_put: compare-and-set against the index that was read
    let current = store.get("services/web/1", &read).await?;
    store
        .atomic_put("services/web/1", "10.0.0.9:80".into(), Some(&current), &write)
        .await?;
    println!("atomic_put with the current index: ok");
    match store
        .atomic_put("services/web/1", "stale".into(), Some(&current), &write)
        .await
    {
        Err(err) if err.kind() == ErrorKind::KeyModified => {
            println!("atomic_put with a stale index: {err}")
        }
        other => println!("unexpected: {other:?}"),
    }

    // a lock, contended by a second handle on the same database
    let other = valkeyrie::open(&url).await?;
    let locker = store
        .new_lock("jobs/nightly", LockOptions::with_value("node-a"))
        .await?;
    let guard = locker.lock().await?;
    println!("node-a holds jobs/nightly with fencing token {}", guard.fencing_token());
    let contender = other
        .new_lock("jobs/nightly", LockOptions::with_value("node-b"))
        .await?;
    match contender.try_lock().await? {
        None => println!("node-b: the lock is busy"),
        Some(_) => println!("node-b: unexpectedly got the lock"),
    }
    guard.unlock().await?;
    let guard = contender.lock().await?;
    let holder = other.get("jobs/nightly", &read).await?;
    println!(
        "node-b holds it now (token {}), value {:?}",
        guard.fencing_token(),
        holder.value
    );
    guard.unlock().await?;

    store.delete("services/web/2").await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    other.close().await?;
    store.close().await?;
    watcher.await.expect("the watcher task");
    println!("closed");
    Ok(())
}
