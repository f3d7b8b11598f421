//! Transactions as one ZooKeeper multi-read and one `multi` write.
//!
//! ZooKeeper's `multi` compares only node versions, so a commit works optimistically:
//!
//! 1. One multi-read (`getData` of every compared and written node, and of each fence's
//!    contender node) gives a consistent snapshot, on which the compares are evaluated.
//! 2. One `multi` applies the operations guarded by what was read: a version `check` of each
//!    compared node that exists, a create-then-delete of each compared node that does not
//!    (it fails if the node appeared), the fence's contender node at its version, and the
//!    writes at the versions read. If anything moved in between, the `multi` fails as a
//!    whole and the commit starts over from the read.
//!
//! Missing parents of nodes the `multi` creates are made first, as directory nodes (which
//! are not keys). After a commit, TTL nodes are marked as `put` marks them and directory
//! nodes a delete left empty are removed.

use std::collections::HashMap;

use valkeyrie_core::raw::{Key, Txn, TxnOp};
use valkeyrie_core::{Check, Error, Fence, KvPair, Result, TxnOutcome};
use zookeeper_client::{Acls, CreateMode, MultiWriteError, MultiWriter, Stat};

use crate::error::{is_not_empty, map_error};
use crate::node::{checked_path, decode, encode, index_of, key_of, path_of, Node, DIR_MARKER};
use crate::store::{create_options, is_plain_node, ZookeeperStore, WRITE_ATTEMPTS};
use crate::ZOOKEEPER;

/// The contender node a fence names. A fence without one is not from this backend's locks;
/// the lock key's own node is never a contender, so it fails.
fn contender(fence: &Fence) -> String {
    fence.record().map_or_else(|| path_of(fence.key()), str::to_owned)
}

/// Commits `txn`: see the module docs.
pub(crate) async fn commit(store: &ZookeeperStore, txn: &Txn) -> Result<TxnOutcome> {
    let call_key = txn.first_key().map_or("", |key| key.as_str());
    let mut paths: Vec<String> = Vec::new();
    for compare in &txn.compares {
        let path = match &compare.check {
            Check::HeldBy(fence) => contender(fence),
            _ => checked_path(&compare.key)?,
        };
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    for op in &txn.ops {
        let path = checked_path(op.key())?;
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    for _ in 0..WRITE_ATTEMPTS {
        let snapshot = store.zk.read_nodes(call_key, &paths).await?;
        if let Some(compare) = first_failed(txn, &snapshot) {
            return Ok(TxnOutcome::Failed { compare });
        }
        for path in paths_to_create(txn, &snapshot)? {
            store.zk.ensure_parents(&path).await?;
        }
        if write(store, call_key, txn, &snapshot).await? {
            after_commit(store, txn, &snapshot).await?;
            return Ok(TxnOutcome::Committed);
        }
    }
    let reason = format!("gave up after {WRITE_ATTEMPTS} attempts racing other writers");
    Err(Error::gave_up(ZOOKEEPER, call_key, reason))
}

fn node<'s>(snapshot: &'s HashMap<String, Node>, key: &Key) -> Option<&'s (Vec<u8>, Stat)> {
    snapshot.get(&path_of(key.as_str())).and_then(Option::as_ref)
}

fn first_failed(txn: &Txn, snapshot: &HashMap<String, Node>) -> Option<usize> {
    let pairs: HashMap<&str, KvPair> = txn
        .compares
        .iter()
        .filter_map(|compare| {
            let (data, stat) = node(snapshot, &compare.key)?;
            let value = decode(data.clone())?;
            let pair = KvPair::new(compare.key.as_str(), value, index_of(stat));
            Some((compare.key.as_str(), pair))
        })
        .collect();
    txn.first_failed(
        |key| pairs.get(key.as_str()),
        |fence| {
            let held = snapshot.get(&contender(fence)).and_then(Option::as_ref);
            held.is_some_and(|(_, stat)| u64::try_from(stat.czxid).ok() == Some(fence.token()))
        },
    )
}

/// Nodes the `multi` creates, whose parents must exist (compares and puts on missing
/// nodes), one per parent directory.
fn paths_to_create(txn: &Txn, snapshot: &HashMap<String, Node>) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    let compared = txn
        .compares
        .iter()
        .filter(|compare| !matches!(compare.check, Check::HeldBy(_)))
        .map(|compare| &compare.key);
    let put = txn.ops.iter().filter_map(|op| match op {
        TxnOp::Put { key, .. } => Some(key),
        TxnOp::Delete { .. } => None,
    });
    // One path per parent directory: making the parents of one makes them for its siblings.
    let mut parents = std::collections::HashSet::new();
    for key in compared.chain(put) {
        let path = checked_path(key)?;
        let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent).to_owned();
        if node(snapshot, key).is_none() && parents.insert(parent) {
            paths.push(path);
        }
    }
    Ok(paths)
}

/// Stages the guarded writes and sends them. `false` when a guard failed (something moved
/// since the read): the caller reads again.
async fn write(store: &ZookeeperStore, call_key: &str, txn: &Txn, snapshot: &HashMap<String, Node>) -> Result<bool> {
    let client = store.zk.client()?;
    let mut writer = client.new_multi_writer();
    stage(&mut writer, txn, snapshot, store.zk.acls())?;
    // A failed request is the request's error; a failed operation, the server's answer.
    let sent = async {
        match writer.commit().await {
            Ok(_) => Ok(None),
            Err(MultiWriteError::OperationFailed { source, .. }) => Ok(Some(source)),
            Err(MultiWriteError::RequestFailed { source }) => Err(source),
        }
    };
    match store.zk.request(call_key, sent).await? {
        None => Ok(true),
        Some(source) => match map_error(call_key, source) {
            Error::KeyNotFound { .. } | Error::KeyExists { .. } | Error::KeyModified { .. } => Ok(false),
            err if is_not_empty(&err) => Ok(false),
            err => Err(err),
        },
    }
}

/// Maps an error of staging an operation on `path` (the client validates paths there),
/// naming its key.
fn staging(path: &str) -> impl FnOnce(zookeeper_client::Error) -> Error + '_ {
    move |err| map_error(&key_of(path), err)
}

fn stage(writer: &mut MultiWriter<'_>, txn: &Txn, snapshot: &HashMap<String, Node>, acls: Acls<'_>) -> Result<()> {
    let directory = CreateMode::Persistent.with_acls(acls);
    let mut guarded: Vec<&str> = Vec::new();
    for compare in &txn.compares {
        let path = match &compare.check {
            Check::HeldBy(fence) => contender(fence),
            _ => path_of(compare.key.as_str()),
        };
        let Some((path, node)) = snapshot.get_key_value(&path) else {
            continue;
        };
        if guarded.contains(&path.as_str()) {
            continue;
        }
        guarded.push(path);
        match node {
            Some((_, stat)) => writer.add_check_version(path, stat.version).map_err(staging(path))?,
            None => {
                writer.add_create(path, DIR_MARKER, &directory).map_err(staging(path))?;
                writer.add_delete(path, None).map_err(staging(path))?;
            }
        }
    }
    for op in &txn.ops {
        let path = path_of(op.key().as_str());
        let found = node(snapshot, op.key());
        match op {
            TxnOp::Put { value, opts, .. } => {
                let data = encode(value);
                let options = create_options(acls, opts.ttl, false);
                let staged = match found {
                    None => writer.add_create(&path, &data, &options),
                    // As `put` decides: a node with children stays and a plain node is set
                    // in place; a write that changes the node's type replaces it.
                    Some((_, stat)) if opts.ttl.is_none() && (stat.num_children > 0 || is_plain_node(stat)) => {
                        writer.add_set_data(&path, &data, Some(stat.version))
                    }
                    Some((_, stat)) if stat.num_children > 0 => {
                        let reason = "a key with keys below it cannot take a TTL on ZooKeeper (its node must stay)";
                        return Err(Error::backend(ZOOKEEPER, op.key().as_str(), false, reason));
                    }
                    Some((_, stat)) => writer
                        .add_delete(&path, Some(stat.version))
                        .and_then(|()| writer.add_create(&path, &data, &options)),
                };
                staged.map_err(staging(&path))?;
            }
            TxnOp::Delete { .. } => match found {
                Some((data, stat)) if data.as_slice() != DIR_MARKER => {
                    let staged = if stat.num_children > 0 {
                        writer.add_set_data(&path, DIR_MARKER, Some(stat.version))
                    } else {
                        writer.add_delete(&path, Some(stat.version))
                    };
                    staged.map_err(staging(&path))?;
                }
                // Missing, or a directory node: not a key, nothing to delete.
                _ => {}
            },
        }
    }
    Ok(())
}

/// Marks the TTL nodes the commit created and removes directory nodes its deletes emptied.
async fn after_commit(store: &ZookeeperStore, txn: &Txn, snapshot: &HashMap<String, Node>) -> Result<()> {
    for op in &txn.ops {
        let path = path_of(op.key().as_str());
        match op {
            TxnOp::Put { key, opts, .. } if opts.ttl.is_some() => store.mark_ttl(key, &path).await?,
            TxnOp::Delete { key } if node(snapshot, key).is_some_and(|(_, stat)| stat.num_children == 0) => {
                store.zk.cleanup_parents(&path).await;
            }
            _ => {}
        }
    }
    Ok(())
}
