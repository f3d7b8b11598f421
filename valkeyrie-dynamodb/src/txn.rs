//! Transactions as one `TransactWriteItems`.
//!
//! DynamoDB allows one action per item, so each item the transaction touches becomes one
//! action: an operation's `Update` (the same expression as `put`) or `Delete` carries every
//! compare on its key in its condition, and the compares on a key no operation writes
//! become one `ConditionCheck` of that key. The compares on one item are ANDed, each read
//! against one `:now`, so expired items count as absent as everywhere else.
//!
//! When a condition fails, DynamoDB cancels the transaction and, for each action, says
//! whether its condition failed and returns that item as it was (`ALL_OLD`); the failing
//! compare is found by evaluating that item's compares on it here, with the same `:now`.
//! A cancellation by a concurrent transaction (`TransactionConflict`) wrote nothing and
//! says nothing about the compares, so the whole transaction is sent again after a short
//! jittered pause.

use std::collections::HashMap;

use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, Delete, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
use valkeyrie_core::raw::{Backoff, Compare, Key, Txn, TxnOp};
use valkeyrie_core::{Check, Error, KvPair, Result, TxnOutcome};

use crate::client::DynamoClient;
use crate::item::{
    encoded, exists, expiry, now_secs, number, string, unexpired_version, value_is, value_is_empty, version_is,
    ItemWrite, Record, ABSENT, ID,
};
use crate::DYNAMODB;

/// The most actions one `TransactWriteItems` takes (DynamoDB Local 2.6.1 too). Compares on
/// a written key share its action, so compares plus operations within it always fit.
pub(crate) const MAX_ACTIONS: usize = 100;

/// The most bytes of items one transaction may write.
const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;

/// What a put adds to its key and encoded value: `version`, `expiration_time`, names.
const PUT_OVERHEAD: usize = 64;

/// Sends of one transaction while concurrent transactions keep cancelling it.
const ATTEMPTS: u32 = 8;

/// The pause after the first conflict, about doubled after each up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// The longest pause between two sends.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The cancellation reason of an action whose condition failed.
const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// Cancellation reasons a later send may get past: nothing was written or decided.
const TRANSIENT: [&str; 3] = [
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

/// One item of the transaction, one action: the operation writing it, if any, and the
/// compares on it with their positions, in order.
struct Target<'t> {
    key: Key,
    op: Option<&'t TxnOp>,
    compares: Vec<(usize, &'t Compare)>,
}

/// Commits `txn` (checked by valkeyrie-core) in one `TransactWriteItems`, sent again
/// while concurrent transactions cancel it.
pub(crate) async fn commit(client: &DynamoClient, txn: &Txn) -> Result<TxnOutcome> {
    let first_key = txn.first_key().map_or("", Key::as_str);
    check_size(txn, first_key)?;
    let targets = targets(txn)?;
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    for attempt in 1..=ATTEMPTS {
        if let Some(outcome) = send(client, &targets, first_key).await? {
            return Ok(outcome);
        }
        if attempt < ATTEMPTS {
            backoff.wait().await;
        }
    }
    Err(Error::backend(
        DYNAMODB,
        first_key,
        true,
        format!("TransactionConflict: cancelled by concurrent transactions {ATTEMPTS} times"),
    ))
}

/// Refuses before sending what DynamoDB would refuse for its size: the items a
/// transaction writes may not exceed 4 MB together, though each value fits an item.
fn check_size(txn: &Txn, first_key: &str) -> Result<()> {
    let bytes: usize = txn
        .ops
        .iter()
        .map(|op| match op {
            TxnOp::Put { key, value, .. } => key.as_str().len() + value.len().div_ceil(3) * 4 + PUT_OVERHEAD,
            TxnOp::Delete { key } => key.as_str().len(),
        })
        .sum();
    if bytes <= MAX_TRANSACTION_BYTES {
        return Ok(());
    }
    Err(Error::InvalidTransaction {
        store: DYNAMODB,
        key: first_key.to_owned(),
        reason: format!(
            "about {bytes} bytes of items, over DynamoDB's limit of {MAX_TRANSACTION_BYTES} per transaction"
        ),
    })
}

/// The items of `txn`: its operations in order, then the keys only compared, in the order
/// first compared.
fn targets(txn: &Txn) -> Result<Vec<Target<'_>>> {
    let mut targets: Vec<Target<'_>> = txn
        .ops
        .iter()
        .map(|op| Target {
            key: op.key().clone(),
            op: Some(op),
            compares: Vec::new(),
        })
        .collect();
    for (position, compare) in txn.compares.iter().enumerate() {
        let key = compared_key(compare)?;
        match targets.iter_mut().find(|target| target.key == key) {
            Some(target) => target.compares.push((position, compare)),
            None => targets.push(Target {
                key,
                op: None,
                compares: vec![(position, compare)],
            }),
        }
    }
    Ok(targets)
}

/// The item a compare reads: a fence is checked on its lock's item.
fn compared_key(compare: &Compare) -> Result<Key> {
    match &compare.check {
        Check::HeldBy(fence) => Key::parse(DYNAMODB, fence.key()),
        _ => Ok(compare.key.clone()),
    }
}

/// Sends the transaction once: its outcome, or `None` when a transient cancellation calls
/// for another send.
async fn send(client: &DynamoClient, targets: &[Target<'_>], first_key: &str) -> Result<Option<TxnOutcome>> {
    let now = now_secs();
    let actions = targets
        .iter()
        .map(|target| action(client, target, now))
        .collect::<Result<Vec<_>>>()?;
    let sent = client
        .sdk
        .transact_write_items()
        .set_transact_items(Some(actions))
        .send()
        .await;
    let err = match sent {
        Ok(_) => return Ok(Some(TxnOutcome::Committed)),
        Err(err) => err,
    };
    let reasons = match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => cancelled.cancellation_reasons(),
        _ => return Err(client.error(first_key, err)),
    };
    match cancellation(targets, reasons, now)? {
        Cancellation::Failed(compare) => Ok(Some(TxnOutcome::Failed { compare })),
        Cancellation::Transient => {
            tracing::debug!(
                store = DYNAMODB,
                key = first_key,
                "transaction cancelled by a conflict; retrying"
            );
            Ok(None)
        }
        Cancellation::Refused => Err(client.error(first_key, err)),
    }
}

/// What a cancelled transaction means.
#[derive(Debug, PartialEq, Eq)]
enum Cancellation {
    /// The compare at this position failed: the answer, whatever else happened.
    Failed(usize),
    /// Only concurrent transactions or throttling stood in the way: send it again.
    Transient,
    /// Refused for another reason (an invalid request): an error.
    Refused,
}

/// Reads the cancellation reasons (one per action, in order).
fn cancellation(targets: &[Target<'_>], reasons: &[CancellationReason], now: u64) -> Result<Cancellation> {
    if let Some(compare) = first_failed(targets, reasons, now)? {
        return Ok(Cancellation::Failed(compare));
    }
    let transient = reasons
        .iter()
        .any(|r| r.code().is_some_and(|code| TRANSIENT.contains(&code)));
    Ok(if transient {
        Cancellation::Transient
    } else {
        Cancellation::Refused
    })
}

/// The action of one item, its condition asking for the item as it was when it fails.
fn action(client: &DynamoClient, target: &Target<'_>, now: u64) -> Result<TransactWriteItem> {
    let (condition, mut values) = match condition(target, now) {
        Some((expression, values)) => (Some(expression), values),
        None => (None, HashMap::new()),
    };
    let on_failure = condition.as_ref().map(|_| ReturnValuesOnConditionCheckFailure::AllOld);
    let id = string(target.key.as_str());
    let built = match target.op {
        Some(TxnOp::Put { value, opts, .. }) => {
            let write = ItemWrite::bumped(value, opts.ttl.map(expiry));
            values.extend(write.values);
            Update::builder()
                .table_name(&client.table)
                .key(ID, id)
                .update_expression(write.expression)
                .set_condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .set_return_values_on_condition_check_failure(on_failure)
                .build()
                .map(|update| TransactWriteItem::builder().update(update).build())
        }
        Some(TxnOp::Delete { .. }) => Delete::builder()
            .table_name(&client.table)
            .key(ID, id)
            .set_condition_expression(condition)
            // DynamoDB refuses an empty map of values.
            .set_expression_attribute_values(Some(values).filter(|v| !v.is_empty()))
            .set_return_values_on_condition_check_failure(on_failure)
            .build()
            .map(|delete| TransactWriteItem::builder().delete(delete).build()),
        None => ConditionCheck::builder()
            .table_name(&client.table)
            .key(ID, id)
            .set_condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .set_return_values_on_condition_check_failure(on_failure)
            .build()
            .map(|check| TransactWriteItem::builder().condition_check(check).build()),
    };
    built.map_err(|e| Error::backend(DYNAMODB, target.key.as_str(), false, e))
}

/// The condition of an item's action: each of its compares, ANDed, and the values they
/// name; `None` without compares.
fn condition(target: &Target<'_>, now: u64) -> Option<(String, HashMap<String, AttributeValue>)> {
    if target.compares.is_empty() {
        return None;
    }
    let mut values = HashMap::from([(":now".to_owned(), number(now))]);
    let mut clauses = Vec::with_capacity(target.compares.len());
    for &(position, compare) in &target.compares {
        // Named by position: two compares on one item never share a placeholder.
        let placeholder = format!(":c{position}");
        let (clause, value) = check_expression(&compare.check, &placeholder);
        if let Some(value) = value {
            values.insert(placeholder, value);
        }
        clauses.push(clause);
    }
    // DynamoDB refuses parentheses around a whole expression as redundant.
    let expression = match clauses.as_slice() {
        [only] => only.clone(),
        _ => clauses
            .iter()
            .map(|c| format!("({c})"))
            .collect::<Vec<_>>()
            .join(" AND "),
    };
    Some((expression, values))
}

/// The condition of one compare and the value it names as `placeholder`, if any.
fn check_expression(check: &Check, placeholder: &str) -> (String, Option<AttributeValue>) {
    match check {
        Check::Exists => (exists(), None),
        Check::Absent => (ABSENT.to_owned(), None),
        Check::IndexIs(index) => (version_is(placeholder), Some(number(*index))),
        Check::ValueIs(value) if value.is_empty() => (value_is_empty(), None),
        Check::ValueIs(value) => (value_is(placeholder), Some(encoded(value))),
        // The heartbeat's own condition: the lease this fence took, still running.
        Check::HeldBy(fence) => (unexpired_version(placeholder), Some(number(fence.token()))),
    }
}

/// The first compare, by position, that failed: among the compares of each action whose
/// condition failed, evaluated on the item DynamoDB returned for it.
fn first_failed(targets: &[Target<'_>], reasons: &[CancellationReason], now: u64) -> Result<Option<usize>> {
    let mut first: Option<usize> = None;
    for (target, reason) in targets.iter().zip(reasons) {
        if reason.code() != Some(CONDITION_FAILED) {
            continue;
        }
        let record = reason
            .item()
            .map(Record::decode)
            .transpose()?
            .filter(|record| record.is_live(now));
        let pair = record.clone().map(Record::into_pair);
        let failed = target
            .compares
            .iter()
            .find(|(_, compare)| !holds(&compare.check, record.as_ref(), pair.as_ref()))
            // DynamoDB saw this condition fail: trust it over the local reading.
            .or(target.compares.first())
            .map(|&(position, _)| position);
        first = match (first, failed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(first)
}

/// Whether `check` holds for the item as it was (`None`: absent or expired), as its
/// condition reads it.
fn holds(check: &Check, record: Option<&Record>, pair: Option<&KvPair>) -> bool {
    match check {
        // A live record with an expiry: the lease with this token is still running.
        Check::HeldBy(fence) => record.is_some_and(|r| r.version == fence.token() && r.expires_at.is_some()),
        check => check.holds_for(pair) != Some(false),
    }
}

#[cfg(test)]
mod tests {
    use valkeyrie_core::Fence;

    use super::*;

    fn key(raw: &str) -> Key {
        Key::parse(DYNAMODB, raw).unwrap()
    }

    fn compare(raw: &str, check: Check) -> Compare {
        Compare { key: key(raw), check }
    }

    fn reason(code: &str, record: Option<&Record>) -> CancellationReason {
        let item = record.map(|r| {
            HashMap::from([
                (ID.to_owned(), string(r.key.as_str())),
                ("version".to_owned(), number(r.version)),
                ("encoded_value".to_owned(), encoded(&r.value)),
            ])
            .into_iter()
            .chain(r.expires_at.map(|at| ("expiration_time".to_owned(), number(at))))
            .collect()
        });
        CancellationReason::builder().code(code).set_item(item).build()
    }

    fn record(raw: &str, version: u64, expires_at: Option<u64>) -> Record {
        Record {
            key: raw.to_owned(),
            value: "v".into(),
            version,
            expires_at,
        }
    }

    #[test]
    fn one_action_per_item_with_its_compares_in_order() {
        let fence = Fence::new(DYNAMODB, "lock", 7, None);
        let txn = Txn {
            compares: vec![
                compare("b", Check::Exists),
                compare("lock", Check::HeldBy(fence)),
                compare("a", Check::IndexIs(3)),
                compare("b", Check::ValueIs("x".into())),
            ],
            ops: vec![
                TxnOp::Put {
                    key: key("a"),
                    value: "1".into(),
                    opts: Default::default(),
                },
                TxnOp::Delete { key: key("c") },
            ],
        };
        let targets = targets(&txn).unwrap();
        let shape: Vec<(&str, bool, Vec<usize>)> = targets
            .iter()
            .map(|t| (t.key.as_str(), t.op.is_some(), t.compares.iter().map(|c| c.0).collect()))
            .collect();
        assert_eq!(
            shape,
            [
                ("a", true, vec![2]),
                ("c", true, vec![]),
                ("b", false, vec![0, 3]),
                ("lock", false, vec![1]),
            ]
        );
        let (expression, values) = condition(&targets[2], 100).unwrap();
        assert_eq!(
            expression,
            format!("({}) AND ({})", exists(), value_is(":c3")),
            "compares on one item are ANDed, each with its own placeholder"
        );
        assert_eq!(values.len(), 2, ":now and :c3: {values:?}");
        assert!(condition(&targets[1], 100).is_none(), "a delete without compares");
    }

    #[test]
    fn the_first_failing_compare_is_found_on_the_returned_items() {
        let txn = Txn {
            compares: vec![
                compare("a", Check::Exists),
                compare("b", Check::Absent),
                compare("a", Check::IndexIs(5)),
                compare("lock", Check::HeldBy(Fence::new(DYNAMODB, "lock", 9, None))),
            ],
            ops: Vec::new(),
        };
        let targets = targets(&txn).unwrap();
        let live_a = record("a", 4, None);
        let reasons = [
            reason(CONDITION_FAILED, Some(&live_a)),
            reason("None", None),
            reason("None", None),
        ];
        assert_eq!(first_failed(&targets, &reasons, 100).unwrap(), Some(2));
        // Expired: absent, so "exists" fails first.
        let expired_a = record("a", 5, Some(100));
        let reasons = [
            reason(CONDITION_FAILED, Some(&expired_a)),
            reason("None", None),
            reason("None", None),
        ];
        assert_eq!(first_failed(&targets, &reasons, 100).unwrap(), Some(0));
        // The lease: the right token but run out, or another token.
        for lease in [
            record("lock", 9, Some(100)),
            record("lock", 10, Some(200)),
            record("lock", 9, None),
        ] {
            let reasons = [
                reason("None", None),
                reason("None", None),
                reason(CONDITION_FAILED, Some(&lease)),
            ];
            assert_eq!(first_failed(&targets, &reasons, 100).unwrap(), Some(3), "{lease:?}");
        }
    }

    #[test]
    fn conflicts_are_sent_again_unless_a_compare_failed() {
        let txn = Txn {
            compares: vec![compare("a", Check::Exists), compare("b", Check::Exists)],
            ops: Vec::new(),
        };
        let targets = targets(&txn).unwrap();
        let read = |codes: [&str; 2]| cancellation(&targets, &codes.map(|code| reason(code, None)), 100).unwrap();
        assert_eq!(read(["None", "TransactionConflict"]), Cancellation::Transient);
        assert_eq!(read(["ThrottlingError", "None"]), Cancellation::Transient);
        assert_eq!(
            read(["TransactionConflict", CONDITION_FAILED]),
            Cancellation::Failed(1),
            "a failed compare decides, even beside a conflict"
        );
        assert_eq!(read(["ValidationError", "None"]), Cancellation::Refused);
    }

    #[test]
    fn sizes_over_the_transaction_limit_are_refused() {
        let big = |n: usize| TxnOp::Put {
            key: key(&format!("k{n}")),
            value: vec![b'x'; 300 * 1024].into(),
            opts: Default::default(),
        };
        let fits = Txn {
            compares: Vec::new(),
            ops: (0..10).map(big).collect(),
        };
        assert!(check_size(&fits, "k0").is_ok());
        let over = Txn {
            compares: Vec::new(),
            ops: (0..11).map(big).collect(),
        };
        let err = check_size(&over, "k0").unwrap_err().to_string();
        assert!(err.contains(&MAX_TRANSACTION_BYTES.to_string()), "{err}");
    }
}
