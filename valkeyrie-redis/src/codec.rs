//! How pairs are stored, per [`ValueEncoding`]: the Go store's JSON envelope
//! `{"Key":"<key>","Value":"<base64>","LastIndex":<n>}` (the default), or the raw value with
//! its index in an index key beside it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use valkeyrie_core::KvPair;

use crate::config::ValueEncoding;

/// What an index key adds to its key. Keys cannot hold control characters, so no key of a
/// user ends this way.
pub(crate) const INDEX_SUFFIX: &str = "\0valkeyrie-index";

/// The raw layout's index key of `key`, in the key's hash slot where it can be (scripts and
/// MGET touch both at once, which a cluster allows only within one slot): the key plus
/// [`INDEX_SUFFIX`] when the key has a hash tag of its own, else the key in braces plus the
/// suffix, which hashes the whole key as Redis hashes the key itself. A key without a hash
/// tag that holds a `}` cannot be put in braces whole, so it gets the plain suffix and
/// another slot ([`has_index_key_in_its_slot`] says so). The scripts' `index_key` computes
/// the same.
pub(crate) fn index_key(key: &str) -> String {
    if hash_tag(key).is_some() || key.contains('}') {
        format!("{key}{INDEX_SUFFIX}")
    } else {
        format!("{{{key}}}{INDEX_SUFFIX}")
    }
}

/// Whether [`index_key`] of `key` shares its hash slot (what a cluster needs).
pub(crate) fn has_index_key_in_its_slot(key: &str) -> bool {
    hash_tag(key).is_some() || !key.contains('}')
}

/// The hash tag of `key`, as Redis finds it: between the first `{` and the first `}` after
/// it, if not empty.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let length = key[open + 1..].find('}')?;
    (length > 0).then(|| &key[open + 1..open + 1 + length])
}

/// Whether `name` is an index key, not a key of the user's.
pub(crate) fn is_index_key(name: &str) -> bool {
    name.ends_with(INDEX_SUFFIX)
}

/// What the scripts write for `value` (`store()`'s payload).
pub(crate) fn payload(encoding: ValueEncoding, key: &str, value: &Bytes) -> Bytes {
    match encoding {
        ValueEncoding::Envelope => envelope_payload(key, value).into(),
        ValueEncoding::Raw => value.clone(),
    }
}

/// The raw layout's pair: the value and the index key's decimal index (0 without one).
pub(crate) fn decode_raw(key: &str, value: Bytes, index: Option<&[u8]>) -> KvPair {
    let index = index
        .and_then(|index| std::str::from_utf8(index).ok())
        .and_then(|index| index.parse().ok())
        .unwrap_or(0);
    KvPair::new(key, value, index)
}

#[derive(Deserialize)]
#[allow(non_snake_case)] // The Go store's field names.
struct Envelope {
    Value: Option<String>,
    LastIndex: Option<u64>,
}

/// The pair stored at `key`: the envelope's value and index, or, for a value another client
/// wrote, its raw bytes with index 0.
pub(crate) fn decode(key: &str, stored: &[u8]) -> KvPair {
    let envelope = serde_json::from_slice::<Envelope>(stored).ok();
    if let Some(Envelope {
        Value: value,
        LastIndex: Some(index),
    }) = envelope
    {
        let value = match value {
            Some(text) => STANDARD.decode(text.as_bytes()).ok().map(Bytes::from),
            None => Some(Bytes::new()),
        };
        if let Some(value) = value {
            return KvPair::new(key, value, index);
        }
    }
    KvPair::new(key, Bytes::copy_from_slice(stored), 0)
}

/// A value in the envelope's encoding.
pub(crate) fn encode_value(value: &[u8]) -> String {
    STANDARD.encode(value)
}

/// What ends an envelope payload in place of its index: 16 digits, the width of a
/// microsecond clock index from 2001 to 2286, and the closing brace. Never stored: every
/// script writes the index it assigns over it (`store()` in `scripts.rs`).
pub(crate) const INDEX_PLACEHOLDER: &str = "0000000000000000}";

/// The envelope of `value` at `key` with a placeholder for its index:
/// `{"Key":<key>,"Value":"<base64>","LastIndex":0000000000000000}`.
///
/// The scripts put the index they assign in place of [`INDEX_PLACEHOLDER`]. Building the
/// rest here keeps the value's bytes out of Lua string building, whose copies (and the
/// garbage they leave for Lua's collector) made a 10 KiB write cost several times a plain
/// `SET`; the placeholder lets a large value skip Lua string building altogether.
pub(crate) fn envelope_payload(key: &str, value: &[u8]) -> String {
    const HEAD: &str = r#"{"Key":"#;
    const MIDDLE: &str = r#","Value":""#;
    const TAIL: &str = r#"","LastIndex":"#;
    let mut payload = String::with_capacity(
        HEAD.len() + key.len() + 2 + MIDDLE.len() + value.len() * 4 / 3 + 4 + TAIL.len() + INDEX_PLACEHOLDER.len(),
    );
    payload.push_str(HEAD);
    // A `String` always serializes: the only failure serde_json reports here is a writer's.
    payload.push_str(&serde_json::to_string(key).expect("a string serializes to JSON"));
    payload.push_str(MIDDLE);
    STANDARD.encode_string(value, &mut payload);
    payload.push_str(TAIL);
    payload.push_str(INDEX_PLACEHOLDER);
    payload
}

/// What the scripts store for an envelope payload once they assign `index`: the payload
/// with the index in place of [`INDEX_PLACEHOLDER`] (for tests and fuzzing, which check
/// that it decodes).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn with_index(payload: &[u8], index: u64) -> Vec<u8> {
    let prefix = payload.strip_suffix(INDEX_PLACEHOLDER.as_bytes()).unwrap_or(payload);
    let mut stored = prefix.to_vec();
    stored.extend_from_slice(format!("{index}}}").as_bytes());
    stored
}

#[cfg(test)]
mod tests {
    use fred::util::redis_keyslot;

    use super::*;

    #[test]
    fn go_envelopes_and_foreign_values_decode() {
        let go = br#"{"Key":"j/a/b","Value":"aGVsbG8y","LastIndex":51840166}"#;
        assert_eq!(decode("j/a/b", go), KvPair::new("j/a/b", "hello2", 51_840_166));
        let slashed = br#"{"Key":"a\/b","Value":"","LastIndex":1700000000000001}"#;
        assert_eq!(decode("a/b", slashed), KvPair::new("a/b", "", 1_700_000_000_000_001));
        assert_eq!(decode("raw", b"hello"), KvPair::new("raw", "hello", 0));
        assert_eq!(encode_value(b"hello2"), "aGVsbG8y");
    }

    #[test]
    fn a_payload_and_its_index_make_an_envelope_that_decodes() {
        for (key, value) in [
            ("j/a/b", &b"hello2"[..]),
            ("k\"\u{e9}", &[0, 255, 10][..]),
            ("e", &b""[..]),
        ] {
            let envelope = with_index(envelope_payload(key, value).as_bytes(), 1_700_000_000_000_001);
            assert_eq!(
                decode(key, &envelope),
                KvPair::new(key, Bytes::copy_from_slice(value), 1_700_000_000_000_001)
            );
            let json: serde_json::Value = serde_json::from_slice(&envelope).expect("valid JSON");
            assert_eq!(json["Key"], key);
        }
        assert_eq!(
            envelope_payload("j/a/b", b"hello2"),
            r#"{"Key":"j/a/b","Value":"aGVsbG8y","LastIndex":0000000000000000}"#
        );
    }

    #[test]
    fn index_keys_share_their_keys_hash_slot() {
        assert_eq!(index_key("a/b"), "{a/b}\0valkeyrie-index");
        assert_eq!(index_key("{app}/a"), "{app}/a\0valkeyrie-index");
        // `{}` is no hash tag, nor is an unclosed brace: Redis hashes the whole key.
        assert_eq!(index_key("a{b"), "{a{b}\0valkeyrie-index");
        for key in ["a/b", "{app}/a", "a{b", "x/{y}/z"] {
            let index = index_key(key);
            assert!(has_index_key_in_its_slot(key), "{key}");
            assert_eq!(redis_keyslot(key.as_bytes()), redis_keyslot(index.as_bytes()), "{key}");
            assert!(is_index_key(&index) && !is_index_key(key));
        }
        // A `}` without a hash tag: no name in braces hashes the whole key.
        for key in ["{}/a", "a}b", "{}{x}"] {
            assert!(!has_index_key_in_its_slot(key), "{key}");
            assert_eq!(index_key(key), format!("{key}\0valkeyrie-index"));
        }
    }

    #[test]
    fn raw_pairs_take_the_index_keys_index() {
        let value = || Bytes::from_static(b"v");
        assert_eq!(decode_raw("k", value(), Some(b"17")), KvPair::new("k", "v", 17));
        assert_eq!(decode_raw("k", value(), None), KvPair::new("k", "v", 0));
        assert_eq!(decode_raw("k", value(), Some(b"junk")), KvPair::new("k", "v", 0));
        assert_eq!(payload(ValueEncoding::Raw, "k", &value()), value());
    }
}
