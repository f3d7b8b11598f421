//! Quickstart: the embedded store in a temporary directory, showing put, get, list, watch,
//! compare-and-set and a lock. Run it with `cargo run --example quickstart`.
//! It depends on `valkeyrie` alone: the default feature `boltlike` links the embedded store.
#![allow(clippy::print_stdout)] // An example talks to its reader.

use std::time::Duration;

use futures_util::StreamExt;
use valkeyrie::{ErrorKind, WatchEvent};

#[tokio::main]
async fn main() -> valkeyrie::Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("boltlike://{}", dir.path().join("kv.db").display());
    let kv = valkeyrie::open(&url).await?;
    println!("opened {url}");

    // put and get: an absent key is `None`
    kv.put("services/web/1", "10.0.0.1:80").await?;
    if let Some(pair) = kv.get("services/web/1").await? {
        println!("get {} = {:?} (index {})", pair.key, pair.value, pair.last_index);
    }
    println!("get services/web/9 = {:?}", kv.get("services/web/9").await?);

    // watch a directory: a snapshot first, then every change
    let mut events = kv.watch_tree("services/web").await?;
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

    // list, and a key that expires unless this handle keeps it alive
    kv.put("services/web/2", "10.0.0.2:80").await?;
    kv.put("services/web/3", "10.0.0.3:80")
        .ttl(Duration::from_secs(30))
        .keep_alive()
        .await?;
    let web = kv.list("services/web").await?;
    println!(
        "list services/web: {:?}",
        web.iter().map(|p| p.key.as_str()).collect::<Vec<_>>()
    );

    // compare-and-set against the index that was read
    let index = web[0].last_index;
    kv.put("services/web/1", "10.0.0.9:80").if_index(index).await?;
    println!("put if_index with the current index: ok");
    match kv.put("services/web/1", "stale").if_index(index).await {
        Err(err) if err.kind() == ErrorKind::KeyModified => {
            println!("put if_index with a stale index: {err}")
        }
        other => println!("unexpected: {other:?}"),
    }

    // a lock, contended by a second handle on the same database
    let other = valkeyrie::open(&url).await?;
    let guard = kv.lock("jobs/nightly").value("node-a").await?;
    println!("node-a holds jobs/nightly with fencing token {}", guard.fencing_token());
    match other.lock("jobs/nightly").value("node-b").try_lock().await? {
        None => println!("node-b: the lock is busy"),
        Some(_) => println!("node-b: unexpectedly got the lock"),
    }
    guard.unlock().await?;
    let guard = other.lock("jobs/nightly").value("node-b").await?;
    let holder = other.get("jobs/nightly").await?.map(|pair| pair.value);
    println!(
        "node-b holds it now (token {}), value {:?}",
        guard.fencing_token(),
        holder
    );
    guard.unlock().await?;

    kv.delete("services/web/2").await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    other.close().await?;
    kv.close().await?;
    watcher.await.expect("the watcher task");
    println!("closed");
    Ok(())
}
