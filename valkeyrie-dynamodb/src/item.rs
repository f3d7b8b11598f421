//! The item layout of the Go `kvtools/dynamodb` store, the clock it expires by, and the
//! condition and update expressions every request on an item shares (single writes, locks
//! and transactions), so "exists" and "a write" mean one thing everywhere.
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `id` | S | the key (hash key) |
//! | `version` | N | `last_index`, bumped by every write |
//! | `encoded_value` | S | the value in standard base64; absent for an empty value |
//! | `expiration_time` | N | Unix seconds after which the item is gone; absent without TTL |
//!
//! DynamoDB deletes expired items lazily (days later on AWS), so every read hides items
//! whose `expiration_time` has passed. A new item's `version` starts at the current time
//! in microseconds rather than at 1, so indexes (and lock fencing tokens) keep growing when
//! a key is deleted and created again; Go readers only compare versions for equality.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use valkeyrie_core::{Error, KvPair, Result};

use crate::DYNAMODB;

/// The hash key attribute.
pub(crate) const ID: &str = "id";
/// The index attribute.
pub(crate) const VERSION: &str = "version";
/// The base64 value attribute.
pub(crate) const VALUE: &str = "encoded_value";
/// The expiry attribute (Unix seconds), also the table's TTL attribute.
pub(crate) const EXPIRATION: &str = "expiration_time";

/// DynamoDB's item size limit.
const ITEM_LIMIT: usize = 400 * 1024;
/// Room for the key (at most 2 KiB as a hash key) and the other attributes.
const ITEM_OVERHEAD: usize = 2304;

/// The largest value an item can hold once base64-encoded.
pub(crate) const MAX_VALUE_SIZE: usize = (ITEM_LIMIT - ITEM_OVERHEAD) / 4 * 3;

// The base64 of the largest value, and the rest of the item, fit.
const _: () = assert!(MAX_VALUE_SIZE / 3 * 4 + ITEM_OVERHEAD <= ITEM_LIMIT);

/// One item, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) key: String,
    pub(crate) value: Bytes,
    pub(crate) version: u64,
    pub(crate) expires_at: Option<u64>,
}

impl Record {
    /// Decodes an item of the table.
    pub(crate) fn decode(item: &HashMap<String, AttributeValue>) -> Result<Record> {
        let key = match item.get(ID) {
            Some(AttributeValue::S(key)) => key.clone(),
            _ => return Err(Error::backend(DYNAMODB, "", false, "an item without a string `id`")),
        };
        let invalid = |what: String| Error::backend(DYNAMODB, key.as_str(), false, what);
        let number = |name: &str| -> Result<Option<u64>> {
            match item.get(name) {
                None => Ok(None),
                Some(AttributeValue::N(n)) => n
                    .parse()
                    .map(Some)
                    .map_err(|_| invalid(format!("`{name}` is not a whole number: {n}"))),
                Some(_) => Err(invalid(format!("`{name}` is not a number"))),
            }
        };
        let value = match item.get(VALUE) {
            None => Bytes::new(),
            Some(AttributeValue::S(encoded)) => BASE64
                .decode(encoded)
                .map_err(|e| invalid(format!("`{VALUE}` is not base64: {e}")))?
                .into(),
            Some(_) => return Err(invalid(format!("`{VALUE}` is not a string"))),
        };
        Ok(Record {
            value,
            version: number(VERSION)?.unwrap_or(0),
            expires_at: number(EXPIRATION)?,
            key,
        })
    }

    /// Decodes an item read at `now` (Unix seconds); `None` when it has expired, as every
    /// read of a key answers.
    pub(crate) fn decode_live(item: &HashMap<String, AttributeValue>, now: u64) -> Result<Option<Record>> {
        let record = Record::decode(item)?;
        Ok(record.is_live(now).then_some(record))
    }

    /// Whether the item still exists at `now` (Unix seconds).
    pub(crate) fn is_live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    /// The pair of this record.
    pub(crate) fn into_pair(self) -> KvPair {
        KvPair::new(self.key, self.value, self.version)
    }
}

fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Unix time in seconds, the unit of `expiration_time`.
pub(crate) fn now_secs() -> u64 {
    since_epoch().as_secs()
}

/// The `expiration_time` of an item written now with `ttl`: whole seconds, rounded up so
/// the item never goes early. Clamped at `u64::MAX` (an item that never expires) when the
/// sum overflows; `Store` refuses TTLs over `MAX_TTL` before they get here, so only a
/// direct call with a huge TTL (`Duration::MAX`) reaches the clamp.
pub(crate) fn expiry(ttl: Duration) -> u64 {
    expiry_at(since_epoch(), ttl)
}

/// [`expiry`] at `now` (since the Unix epoch).
fn expiry_at(now: Duration, ttl: Duration) -> u64 {
    now.checked_add(ttl).map_or(u64::MAX, |at| {
        at.as_secs().saturating_add(u64::from(at.subsec_nanos() > 0))
    })
}

/// The `version` a new item starts from (see the module docs).
pub(crate) fn version_base() -> u64 {
    u64::try_from(since_epoch().as_micros()).unwrap_or(u64::MAX / 2)
}

/// A `version` for one lock attempt: past `previous`, past the clock in microseconds, and
/// never one this process handed out before. A lock recognizes its own write (one whose
/// answer was lost and retried) by its version, so two attempts of one process must never
/// share one, even when they compute it in the same microsecond.
pub(crate) fn unique_version(previous: Option<u64>) -> u64 {
    static LAST_ISSUED: AtomicU64 = AtomicU64::new(0);
    let wanted = previous.map_or(0, |v| v.saturating_add(1)).max(version_base());
    let next = |last: u64| wanted.max(last.saturating_add(1));
    // The closure always answers `Some`, so `fetch_update` cannot fail; both arms hold `last`.
    let last = LAST_ISSUED
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(next(last)))
        .unwrap_or_else(|last| last);
    next(last)
}

/// Holds while the item has not expired at `:now`.
pub(crate) const LIVE: &str = "(attribute_not_exists(expiration_time) OR expiration_time > :now)";

/// Holds while the key is absent at `:now`: no item, or an expired one.
pub(crate) const ABSENT: &str = "attribute_not_exists(id) OR expiration_time <= :now";

/// Holds while the key exists at `:now`: an item that has not expired.
pub(crate) fn exists() -> String {
    format!("attribute_exists(id) AND {LIVE}")
}

/// Holds while the key exists at `:now` with the version in `placeholder`.
pub(crate) fn version_is(placeholder: &str) -> String {
    format!("version = {placeholder} AND {LIVE}")
}

/// Holds while the key exists at `:now` with the (non-empty, encoded) value in `placeholder`;
/// standard base64 is canonical, so equal values have equal encodings.
pub(crate) fn value_is(placeholder: &str) -> String {
    format!("{VALUE} = {placeholder} AND {LIVE}")
}

/// Holds while the key exists at `:now` with an empty value (stored as no `encoded_value`).
pub(crate) fn value_is_empty() -> String {
    format!("attribute_exists(id) AND attribute_not_exists({VALUE}) AND {LIVE}")
}

/// Holds while the item has the version in `placeholder` and an expiry still ahead of
/// `:now`: a lease or keep-alive that is still running, the only kind renewals extend.
pub(crate) fn unexpired_version(placeholder: &str) -> String {
    format!("version = {placeholder} AND expiration_time > :now")
}

/// The `SET` clause that moves `version` past any the key had (see the module docs).
const BUMP_VERSION: &str = "version = if_not_exists(version, :base) + :one";

/// What a write sets: its update expression and the values the expression names.
pub(crate) struct ItemWrite {
    pub(crate) expression: String,
    pub(crate) values: HashMap<String, AttributeValue>,
}

impl ItemWrite {
    /// Writes `value` (an empty one clears the old) and `expiration_time` at `expires_at`
    /// (none removes it); `version_set` is the `SET` clause of `version`, whose values the
    /// caller supplies.
    pub(crate) fn new(version_set: &str, value: &[u8], expires_at: Option<u64>) -> ItemWrite {
        let mut sets = vec![version_set];
        let mut removes = Vec::new();
        let mut values = HashMap::new();
        if value.is_empty() {
            // The Go store leaves the old value in place here; an empty value clears it.
            removes.push(VALUE);
        } else {
            sets.push("encoded_value = :value");
            values.insert(":value".to_owned(), encoded(value));
        }
        match expires_at {
            Some(at) => {
                sets.push("expiration_time = :expires");
                values.insert(":expires".to_owned(), number(at));
            }
            None => removes.push(EXPIRATION),
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        ItemWrite { expression, values }
    }

    /// Like [`ItemWrite::new`], with a `version` past any the key had: what `put` writes.
    pub(crate) fn bumped(value: &[u8], expires_at: Option<u64>) -> ItemWrite {
        let mut write = ItemWrite::new(BUMP_VERSION, value, expires_at);
        write.values.insert(":base".to_owned(), number(version_base()));
        write.values.insert(":one".to_owned(), number(1));
        write
    }
}

/// A number attribute.
pub(crate) fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// A string attribute.
pub(crate) fn string(s: impl Into<String>) -> AttributeValue {
    AttributeValue::S(s.into())
}

/// The base64 attribute of a non-empty value.
pub(crate) fn encoded(value: &[u8]) -> AttributeValue {
    AttributeValue::S(BASE64.encode(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_decode_as_the_go_store_writes_them() {
        let item = HashMap::from([
            (ID.to_owned(), string("a/b")),
            (VERSION.to_owned(), number(3)),
            (VALUE.to_owned(), encoded(b"\x00\xff")),
            (EXPIRATION.to_owned(), number(100)),
        ]);
        let record = Record::decode(&item).unwrap();
        assert_eq!(record.value.as_ref(), b"\x00\xff");
        assert_eq!((record.version, record.expires_at), (3, Some(100)));
        assert!(record.is_live(99));
        assert!(!record.is_live(100));
        let empty = HashMap::from([(ID.to_owned(), string("e")), (VERSION.to_owned(), number(1))]);
        let record = Record::decode(&empty).unwrap();
        assert!(record.value.is_empty() && record.is_live(u64::MAX));
        let broken = HashMap::from([(ID.to_owned(), string("x")), (VALUE.to_owned(), string("%%"))]);
        let err = Record::decode(&broken).unwrap_err().to_string();
        assert!(err.contains("base64") && err.contains("\"x\""), "{err}");
    }

    #[test]
    fn limits_and_clocks() {
        let now = now_secs();
        assert!((now + 2..=now + 3).contains(&expiry(Duration::from_millis(1500))));
        assert!(version_base() > 1_700_000_000_000_000);
    }

    #[test]
    fn expiry_at_the_limits_rounds_up_or_clamps() {
        let now = Duration::from_secs(1_700_000_000);
        assert_eq!(expiry_at(now, Duration::from_millis(1)), 1_700_000_001);
        assert_eq!(
            expiry_at(now, valkeyrie_core::MAX_TTL),
            1_700_000_000 + valkeyrie_core::MAX_TTL.as_secs()
        );
        // u64::MAX milliseconds still fits in seconds; Duration::MAX clamps to "never".
        assert_eq!(
            expiry_at(now, Duration::from_millis(u64::MAX)),
            1_700_000_000 + u64::MAX / 1000 + 1
        );
        assert_eq!(expiry_at(now, Duration::MAX), u64::MAX);
        assert_eq!(expiry_at(Duration::MAX, Duration::ZERO), u64::MAX);
        assert_eq!(expiry(Duration::MAX), u64::MAX);
    }

    /// Property tests at and beyond the limits of the clock and the number attributes.
    mod limits {
        use proptest::prelude::*;

        use super::super::*;
        use super::number_text;

        proptest! {
            /// Any TTL gives the first whole second at or after now + TTL, or `u64::MAX`
            /// when that is past the end of `Duration`.
            #[test]
            fn expiry_is_the_ceiling_of_now_plus_ttl_or_never(
                now_secs in prop_oneof![0..=u64::MAX / 2, any::<u64>()],
                ttl_secs in prop_oneof![0..=u64::MAX / 2, any::<u64>()],
                nanos in 0..1_000_000_000u32,
            ) {
                let (now, ttl) = (Duration::from_secs(now_secs), Duration::new(ttl_secs, nanos));
                let got = expiry_at(now, ttl);
                match now_secs.checked_add(ttl_secs) {
                    Some(sum) => prop_assert_eq!(got, sum.saturating_add(u64::from(nanos > 0))),
                    None => prop_assert_eq!(got, u64::MAX),
                }
            }

            /// A `version` or `expiration_time` of any text decodes to the number it spells
            /// or is a permanent `Backend` error naming the key and the attribute.
            #[test]
            fn numbers_of_any_text_decode_or_fail_typed(
                text in prop_oneof![
                    any::<u64>().prop_map(|n| n.to_string()),
                    any::<i64>().prop_map(|n| n.to_string()),
                    Just("18446744073709551616".to_owned()),
                    Just("1e3".to_owned()),
                    "\\PC{0,24}",
                ],
                attribute in prop_oneof![Just(VERSION), Just(EXPIRATION)],
            ) {
                let item = HashMap::from([(ID.to_owned(), string("k")), (attribute.to_owned(), number_text(&text))]);
                match (Record::decode(&item), text.parse::<u64>()) {
                    (Ok(record), Ok(n)) => {
                        let got = if attribute == VERSION { Some(record.version) } else { record.expires_at };
                        prop_assert_eq!(got, Some(n));
                    }
                    (Err(err), Err(_)) => {
                        prop_assert_eq!(err.kind(), valkeyrie_core::ErrorKind::Backend);
                        prop_assert!(!err.is_temporary());
                        prop_assert_eq!(err.key(), Some("k"));
                        let message = err.to_string();
                        prop_assert!(message.contains(attribute), "{}", message);
                    }
                    (got, parsed) => prop_assert!(false, "{:?}: decoded {:?}, parsed {:?}", text, got, parsed),
                }
            }
        }
    }

    fn number_text(text: &str) -> AttributeValue {
        AttributeValue::N(text.to_owned())
    }

    #[test]
    fn lock_versions_are_unique_in_a_process_even_in_one_microsecond() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..10_000).map(|_| unique_version(None)).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let issued = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), issued, "no version handed out twice");
        assert!(
            unique_version(Some(u64::MAX / 2)) > u64::MAX / 2,
            "past the previous version"
        );
    }
}
