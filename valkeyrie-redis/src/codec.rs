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

/// The envelope of `value` at `key` up to its index: `{"Key":<key>,"Value":"<base64>","LastIndex":`.
///
/// The scripts append the index they assign and the closing brace. Building the rest here
/// keeps the value's bytes out of Lua string building, whose copies (and the garbage they
/// leave for Lua's collector) made a 10 KiB write cost several times a plain `SET`.
pub(crate) fn envelope_prefix(key: &str, value: &[u8]) -> String {
    const HEAD: &str = r#"{"Key":"#;
    const MIDDLE: &str = r#","Value":""#;
    const TAIL: &str = r#"","LastIndex":"#;
    let mut prefix =
        String::with_capacity(HEAD.len() + key.len() + 2 + MIDDLE.len() + value.len() * 4 / 3 + 4 + TAIL.len());
    prefix.push_str(HEAD);
    // A `String` always serializes: the only failure serde_json reports here is a writer's.
    prefix.push_str(&serde_json::to_string(key).expect("a string serializes to JSON"));
    prefix.push_str(MIDDLE);
    STANDARD.encode_string(value, &mut prefix);
    prefix.push_str(TAIL);
    prefix
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

    #[test]
    fn a_prefix_and_its_index_make_an_envelope_that_decodes() {
        for (key, value) in [
            ("j/a/b", &b"hello2"[..]),
            ("k\"\u{e9}", &[0, 255, 10][..]),
            ("e", &b""[..]),
        ] {
            let envelope = format!("{}1700000000000001}}", envelope_prefix(key, value));
            assert_eq!(
                decode(key, envelope.as_bytes()),
                KvPair::new(key, Bytes::copy_from_slice(value), 1_700_000_000_000_001)
            );
            let json: serde_json::Value = serde_json::from_str(&envelope).expect("valid JSON");
            assert_eq!(json["Key"], key);
        }
        assert_eq!(
            envelope_prefix("j/a/b", b"hello2"),
            r#"{"Key":"j/a/b","Value":"aGVsbG8y","LastIndex":"#
        );
    }
}
