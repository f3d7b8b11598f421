//! The Go store's JSON envelope: `{"Key":"<key>","Value":"<base64>","LastIndex":<n>}`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use valkeyrie_core::KvPair;

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

#[cfg(test)]
mod tests {
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
}
