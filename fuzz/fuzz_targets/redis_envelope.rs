//! Stored bytes of any shape decode to a pair of the key read, never a panic: an envelope
//! the Go store or the scripts wrote gives its value and index, anything else the raw
//! bytes with index 0. What the scripts store for any key, value and index decodes back to
//! exactly them, in both layouts.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use valkeyrie_core::Bytes;
use valkeyrie_redis::fuzzing;
use valkeyrie_redis::ValueEncoding;

fuzz_target!(|data: &[u8]| {
    let pair = fuzzing::decode("k", data);
    assert_eq!(pair.key, "k");
    // serde_json skips an unknown field's string without checking its UTF-8, so only text
    // that is no JSON at all must come back raw.
    if std::str::from_utf8(data).is_ok() && serde_json::from_slice::<serde_json::Value>(data).is_err() {
        assert_eq!(
            (pair.value.as_ref(), pair.last_index),
            (data, 0),
            "bytes that are no JSON come back raw"
        );
    }
    let _ = round_trip(&mut Unstructured::new(data));
});

fn round_trip(u: &mut Unstructured<'_>) -> Result<()> {
    let key: String = u.arbitrary()?;
    let value = Bytes::from(u.arbitrary::<Vec<u8>>()?);
    let index: u64 = u.arbitrary()?;
    let stored = fuzzing::stored(ValueEncoding::Envelope, &key, &value, index);
    let pair = fuzzing::decode(&key, &stored);
    assert_eq!(
        (pair.key.as_str(), &pair.value, pair.last_index),
        (key.as_str(), &value, index)
    );
    let index_text = index.to_string();
    let raw = fuzzing::stored(ValueEncoding::Raw, &key, &value, index);
    let pair = fuzzing::decode_raw(&key, Bytes::from(raw), Some(index_text.as_bytes()));
    assert_eq!((&pair.value, pair.last_index), (&value, index));
    let junk: Vec<u8> = u.arbitrary()?;
    let expected = std::str::from_utf8(&junk)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0);
    assert_eq!(fuzzing::decode_raw(&key, value, Some(&junk)).last_index, expected);
    Ok(())
}
