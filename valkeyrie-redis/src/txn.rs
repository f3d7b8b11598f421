//! Transactions as one Lua script (see `COMMIT` in [`crate::scripts`]): this side lays the
//! validated transaction out as KEYS and ARGV and reads the script's answer.

use bytes::Bytes;
use fred::util::redis_keyslot;
use valkeyrie_core::raw::{Key, Txn, TxnOp};
use valkeyrie_core::{Check, Error, Result, TxnOutcome};

use crate::client::RedisClient;
use crate::codec::encode_value;
use crate::config::ValueEncoding;
use crate::scripts::write_args;
use crate::REDIS;

/// Commits `txn` in one round trip: the script checks the compares in order and applies
/// the operations only if all hold, atomically since Redis runs one script at a time.
pub(crate) async fn commit(client: &RedisClient, txn: &Txn) -> Result<TxnOutcome> {
    let first = txn.first_key().map_or("", Key::as_str);
    let keys = keys(txn);
    if client.cluster {
        same_slot(&keys)?;
    }
    let args = args(txn, client.encoding);
    let status = client.eval(first, &client.scripts.commit, keys, args).await?;
    outcome(first, &status)
}

/// The compared keys in order, then the written ones. A fence is checked on its lock's key.
fn keys(txn: &Txn) -> Vec<String> {
    let compared = txn.compares.iter().map(|compare| match &compare.check {
        Check::HeldBy(fence) => fence.key().to_owned(),
        _ => compare.key.to_string(),
    });
    let written = txn.ops.iter().map(|op| op.key().to_string());
    compared.chain(written).collect()
}

/// A script runs on one cluster node, so all its keys must live in one hash slot.
fn same_slot(keys: &[String]) -> Result<()> {
    let Some((first, rest)) = keys.split_first() else {
        return Ok(());
    };
    let slot = redis_keyslot(first.as_bytes());
    match rest.iter().find(|key| redis_keyslot(key.as_bytes()) != slot) {
        None => Ok(()),
        Some(key) => Err(Error::InvalidTransaction {
            store: REDIS,
            key: key.clone(),
            reason: format!(
                "the keys span hash slots ({} here, {slot} for {first:?}): on a cluster a transaction's keys \
                 must share one slot, e.g. through a hash tag such as {{app}}/a and {{app}}/b",
                redis_keyslot(key.as_bytes())
            ),
        }),
    }
}

/// ARGV: the number of compares, then three arguments per compare and four per operation.
fn args(txn: &Txn, encoding: ValueEncoding) -> Vec<Bytes> {
    let mut args = Vec::with_capacity(1 + txn.compares.len() * 3 + txn.ops.len() * 4);
    args.push(Bytes::from(txn.compares.len().to_string()));
    for compare in &txn.compares {
        args.extend(compare_args(&compare.check));
    }
    for op in &txn.ops {
        args.extend(op_args(op, encoding));
    }
    args
}

/// `kind, a, b` of one compare.
fn compare_args(check: &Check) -> [Bytes; 3] {
    let none = Bytes::new;
    match check {
        Check::Exists => [Bytes::from_static(b"exists"), none(), none()],
        Check::Absent => [Bytes::from_static(b"absent"), none(), none()],
        Check::IndexIs(index) => [Bytes::from_static(b"index"), index.to_string().into(), none()],
        // Both encodings: an envelope holds base64, a value another client wrote raw bytes.
        Check::ValueIs(value) => [Bytes::from_static(b"value"), encode_value(value).into(), value.clone()],
        Check::HeldBy(fence) => [Bytes::from_static(b"held"), fence.token().to_string().into(), none()],
    }
}

/// `kind, payload, ttl_ms` of one operation: a put's are exactly those of `put`.
fn op_args(op: &TxnOp, encoding: ValueEncoding) -> [Bytes; 3] {
    match op {
        TxnOp::Put { key, value, opts } => {
            let [payload, ttl] = write_args(encoding, key, value, opts.ttl);
            [Bytes::from_static(b"put"), payload, ttl]
        }
        TxnOp::Delete { .. } => [Bytes::from_static(b"del"), Bytes::new(), Bytes::new()],
    }
}

/// The script's answer: `ok` or `failed:<position>`.
fn outcome(key: &str, status: &str) -> Result<TxnOutcome> {
    if status == "ok" {
        return Ok(TxnOutcome::Committed);
    }
    match status.strip_prefix("failed:").and_then(|at| at.parse().ok()) {
        Some(compare) => Ok(TxnOutcome::Failed { compare }),
        None => Err(Error::backend(
            REDIS,
            key,
            false,
            format!("unexpected script answer {status:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use valkeyrie_core::raw::Compare;
    use valkeyrie_core::{Fence, WriteOptions};

    use super::*;

    fn key(raw: &str) -> Key {
        Key::parse(REDIS, raw).expect("a valid key")
    }

    fn txn() -> Txn {
        Txn {
            compares: vec![
                Compare {
                    key: key("lock"),
                    check: Check::HeldBy(Fence::new(REDIS, "lock", 17, None)),
                },
                Compare {
                    key: key("a"),
                    check: Check::ValueIs(Bytes::from_static(b"hi")),
                },
            ],
            ops: vec![
                TxnOp::Put {
                    key: key("a"),
                    value: Bytes::from_static(b"hello2"),
                    opts: WriteOptions::with_ttl(std::time::Duration::from_millis(1500)),
                },
                TxnOp::Delete { key: key("b") },
            ],
        }
    }

    #[test]
    fn keys_and_args_follow_the_script_layout() {
        let txn = txn();
        assert_eq!(keys(&txn), ["lock", "a", "a", "b"]);
        let args = args(&txn, ValueEncoding::Envelope);
        let expected: [&[u8]; 13] = [
            b"2",
            b"held",
            b"17",
            b"",
            b"value",
            b"aGk=",
            b"hi",
            b"put",
            br#"{"Key":"a","Value":"aGVsbG8y","LastIndex":0000000000000000}"#,
            b"1500",
            b"del",
            b"",
            b"",
        ];
        assert_eq!(args, expected.map(Bytes::from_static));
    }

    #[test]
    fn answers_map_to_outcomes() {
        assert_eq!(outcome("a", "ok").expect("ok"), TxnOutcome::Committed);
        assert_eq!(
            outcome("a", "failed:3").expect("failed"),
            TxnOutcome::Failed { compare: 3 }
        );
        assert!(outcome("a", "what").is_err());
    }

    #[test]
    fn keys_across_slots_are_refused_before_sending() {
        let tagged = ["{app}/a".to_owned(), "{app}/b".to_owned()];
        assert!(same_slot(&tagged).is_ok());
        let spread = ["a".to_owned(), "b".to_owned()];
        let err = same_slot(&spread).expect_err("two slots");
        assert!(
            matches!(&err, Error::InvalidTransaction { key, .. } if key == "b"),
            "{err}"
        );
        assert!(err.to_string().contains("span hash slots"), "{err}");
    }
}
