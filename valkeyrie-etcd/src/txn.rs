//! Transactions as one etcd `Txn`.
//!
//! The compares become etcd compares (`version > 0` for exists, `version == 0` for absent,
//! the mod revision, the value, and for a lock fence the create revision of the holder's
//! contender key, which its lease deletes when the acquisition ends); the operations are the
//! success branch. The failure branch reads every compared key, so the first failed compare
//! is found on exactly the revision the compares saw, in the same round trip.
//!
//! A put with a TTL gets a lease granted before the `Txn`, one per distinct TTL, revoked
//! again when the transaction does not commit.

use std::collections::{BTreeMap, HashMap};

use etcd_client::{Compare as EtcdCompare, CompareOp, PutOptions, Txn as EtcdTxn, TxnOp as EtcdOp, TxnOpResponse};
use valkeyrie_core::raw::{Txn, TxnOp};
use valkeyrie_core::{Check, Fence, KvPair, Result, TxnOutcome};

use crate::client::{lease_seconds, EtcdClient};
use crate::lock::contenders_prefix;
use crate::store::{pair, revision};

/// etcd's default `--max-txn-ops`: the most compares, and the most operations, in one `Txn`.
/// The failure branch has at most one read per compare, so compares plus operations within
/// this limit always fit.
pub(crate) const MAX_TXN_OPS: usize = 128;

/// The key etcd compares for `fence`: the holder's contender key. A fence without one is not
/// from this backend's locks; its contenders' directory key never exists, so it fails.
fn fence_key(fence: &Fence) -> String {
    fence
        .record()
        .map_or_else(|| contenders_prefix(fence.key()), str::to_owned)
}

/// The etcd compare of one check on `key`, and the key it reads.
fn compare(key: &str, check: &Check) -> (EtcdCompare, String) {
    match check {
        Check::Exists => (EtcdCompare::version(key, CompareOp::Greater, 0), key.to_owned()),
        Check::Absent => (EtcdCompare::version(key, CompareOp::Equal, 0), key.to_owned()),
        Check::IndexIs(index) => (
            EtcdCompare::mod_revision(key, CompareOp::Equal, revision(*index)),
            key.to_owned(),
        ),
        Check::ValueIs(value) => (
            EtcdCompare::value(key, CompareOp::Equal, value.to_vec()),
            key.to_owned(),
        ),
        Check::HeldBy(fence) => {
            let contender = fence_key(fence);
            (
                EtcdCompare::create_revision(contender.as_str(), CompareOp::Equal, revision(fence.token())),
                contender,
            )
        }
    }
}

/// Commits `txn` in one `Txn` (plus a lease grant per distinct TTL).
pub(crate) async fn commit(client: &EtcdClient, txn: &Txn) -> Result<TxnOutcome> {
    let call_key = txn.first_key().map_or("", |key| key.as_str());
    let leases = grant_leases(client, call_key, txn).await?;
    let outcome = send(client, call_key, txn, &leases).await;
    if !matches!(outcome, Ok(TxnOutcome::Committed)) {
        client.revoke(call_key, leases.into_values()).await;
    }
    outcome
}

async fn send(client: &EtcdClient, call_key: &str, txn: &Txn, leases: &BTreeMap<i64, i64>) -> Result<TxnOutcome> {
    let mut compares = Vec::with_capacity(txn.compares.len());
    let mut reads: Vec<String> = Vec::new();
    for c in &txn.compares {
        let (compare, read) = compare(c.key.as_str(), &c.check);
        compares.push(compare);
        if !reads.contains(&read) {
            reads.push(read);
        }
    }
    let ops: Vec<EtcdOp> = txn
        .ops
        .iter()
        .map(|op| match op {
            TxnOp::Put { key, value, opts } => {
                let lease = opts.ttl.and_then(|ttl| leases.get(&lease_seconds(ttl)));
                EtcdOp::put(
                    key.as_str(),
                    value.to_vec(),
                    lease.map(|&id| PutOptions::new().with_lease(id)),
                )
            }
            TxnOp::Delete { key } => EtcdOp::delete(key.as_str(), None),
        })
        .collect();
    let request = EtcdTxn::new().when(compares).and_then(ops).or_else(
        reads
            .iter()
            .map(|key| EtcdOp::get(key.as_str(), None))
            .collect::<Vec<_>>(),
    );
    let mut raw = client.raw();
    let response = client.request(call_key, raw.txn(request)).await?;
    if response.succeeded() {
        return Ok(TxnOutcome::Committed);
    }
    let mut current: HashMap<String, (KvPair, i64)> = HashMap::new();
    for op in response.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            for kv in get.kvs() {
                let pair = pair(kv);
                current.insert(pair.key.clone(), (pair, kv.create_revision()));
            }
        }
    }
    let failed = txn.first_failed(
        |key| current.get(key.as_str()).map(|(pair, _)| pair),
        |fence| current.get(&fence_key(fence)).map(|&(_, created)| created) == Some(revision(fence.token())),
    );
    // etcd said a compare failed; reading them back can only disagree if the reads raced a
    // write, which a Txn rules out, so the fallback names the first compare.
    Ok(TxnOutcome::Failed {
        compare: failed.unwrap_or(0),
    })
}

/// One lease per distinct TTL of the puts, by lease seconds.
async fn grant_leases(client: &EtcdClient, call_key: &str, txn: &Txn) -> Result<BTreeMap<i64, i64>> {
    let mut leases = BTreeMap::new();
    for op in &txn.ops {
        let TxnOp::Put { opts, .. } = op else { continue };
        let Some(seconds) = opts.ttl.map(lease_seconds) else {
            continue;
        };
        if leases.contains_key(&seconds) {
            continue;
        }
        let mut raw = client.raw();
        match client.request(call_key, raw.lease_grant(seconds, None)).await {
            Ok(grant) => {
                leases.insert(seconds, grant.id());
            }
            Err(err) => {
                client.revoke(call_key, leases.into_values()).await;
                return Err(err);
            }
        }
    }
    Ok(leases)
}
