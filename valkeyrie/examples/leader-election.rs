//! Leader election: three candidates on the embedded store in one process, a follower
//! printing who leads; the leader resigns and another takes over, then a second one does.
//! Run it with `cargo run --example leader-election`.
//! It depends on `valkeyrie` alone: the default feature `boltlike` links the embedded store.
#![allow(clippy::print_stdout)] // An example talks to its reader.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use valkeyrie::leadership::{Candidate, Follower, Leadership};

#[tokio::main]
async fn main() -> valkeyrie::Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kv = valkeyrie::open(&format!("boltlike://{}", dir.path().join("kv.db").display())).await?;
    let key = "services/scheduler/leader";

    // The follower names each new leader.
    let mut leaders = Follower::new(kv.clone(), key).follow();
    let follower = tokio::spawn(async move {
        let mut named = Vec::new();
        while let Some(leader) = leaders.next().await {
            let leader = leader.expect("the follower keeps going");
            println!("follower: {leader} leads");
            named.push(leader);
            if named.len() == 3 {
                return named;
            }
        }
        named
    });

    // Three candidates; each reports its own terms.
    let candidates: Vec<Arc<Candidate>> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|node| Arc::new(Candidate::new(kv.clone(), key, node, Duration::from_secs(10))))
        .collect();
    let (elected_tx, mut elected) = tokio::sync::mpsc::unbounded_channel();
    for (index, candidate) in candidates.iter().enumerate() {
        let mut terms = candidate.campaign();
        let elected_tx = elected_tx.clone();
        tokio::spawn(async move {
            while let Some(term) = terms.next().await {
                match term {
                    Ok(Leadership::Elected { fencing_token }) => {
                        println!("node {index}: elected (fencing token {fencing_token})");
                        let _ = elected_tx.send(index);
                    }
                    Ok(Leadership::NotElected) => println!("node {index}: not leading"),
                    Err(err) => println!("node {index}: {err} (campaigning on)"),
                }
            }
        });
    }

    // Twice: the current leader resigns, and another candidate takes over.
    for _ in 0..2 {
        let leader = elected.recv().await.expect("a leader is elected");
        tokio::time::sleep(Duration::from_millis(200)).await;
        println!("node {leader}: resigning");
        candidates[leader].resign().await;
    }
    let last = elected.recv().await.expect("a third term");
    let named = follower.await.expect("the follower ran");
    println!("leaders, in order: {}", named.join(" → "));
    println!("node {last} leads; stopping everyone");
    for candidate in &candidates {
        candidate.stop().await;
    }
    Ok(())
}
