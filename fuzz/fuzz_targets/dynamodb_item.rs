//! An item of any attributes decodes to the pair of its `id`, or is a permanent `Backend`
//! error naming the key; numbers past `u64::MAX`, negative or fractional, and values that
//! are not base64, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valkeyrie_core::ErrorKind;
use valkeyrie_dynamodb::fuzzing;

#[path = "shared/dynamodb_attributes.rs"]
mod dynamodb_attributes;

use dynamodb_attributes::{attributes, Attr};

fuzz_target!(|attrs: Vec<Attr>| {
    let attributes = attributes(&attrs);
    // The last of several attributes of one name wins, as in a map.
    let id = attributes.iter().rev().find(|(name, _, _)| name == "id");
    match fuzzing::decode_item(&attributes) {
        Ok(pair) => assert_eq!(Some((false, pair.key.as_str())), id.map(|(_, n, t)| (*n, t.as_str()))),
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
            assert!(!err.is_temporary(), "{err}");
        }
    }
});
