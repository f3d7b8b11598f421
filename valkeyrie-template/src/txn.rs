//! Transactions: a [`Txn`] turned into the server's own transaction request, so every
//! compare and operation is checked and applied by the server at once.
//!
//! A real backend builds its server's request here (etcd's `Txn`, Consul's `/v1/txn`, a
//! Lua script, DynamoDB's `TransactWriteItems`) and maps the answer: `Committed`, or
//! `Failed` with the first compare that did not hold. The stand-in server takes a
//! [`Transaction`], and checks lock fences under its own name.

use valkeyrie_core::raw::{Txn, TxnOp};
use valkeyrie_core::{Check, Fence, Transaction};

/// The stand-in server's transaction for `txn`, with fences renamed to `server`.
pub(crate) fn request(server: &'static str, txn: &Txn) -> Transaction {
    let mut request = Transaction::new();
    for compare in &txn.compares {
        let check = match &compare.check {
            Check::HeldBy(fence) => Check::HeldBy(Fence::new(
                server,
                fence.key(),
                fence.token(),
                fence.record().map(str::to_owned),
            )),
            check => check.clone(),
        };
        request = request.when(compare.key.as_str(), check);
    }
    for op in &txn.ops {
        request = match op {
            TxnOp::Put { key, value, opts } => request.put_with(key.as_str(), value.clone(), opts.clone()),
            TxnOp::Delete { key } => request.delete(key.as_str()),
        };
    }
    request
}
