//! An item of any attributes decodes to the pair of its `id`, or is a permanent `Backend`
//! error naming the key; numbers past `u64::MAX`, negative or fractional, and values that
//! are not base64, never panic.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use valkeyrie_core::ErrorKind;
use valkeyrie_dynamodb::fuzzing;

/// An attribute name: mostly the table's own, sometimes anything.
#[derive(Debug, Arbitrary)]
enum Name {
    Id,
    Version,
    Value,
    Expiration,
    Other(String),
}

impl Name {
    fn text(&self) -> String {
        match self {
            Name::Id => "id".to_owned(),
            Name::Version => "version".to_owned(),
            Name::Value => "encoded_value".to_owned(),
            Name::Expiration => "expiration_time".to_owned(),
            Name::Other(name) => name.clone(),
        }
    }
}

/// An attribute: name, number (`N`) or string (`S`), and text.
#[derive(Debug, Arbitrary)]
struct Attr(Name, bool, String);

fn attributes(attrs: &[Attr]) -> Vec<fuzzing::Attribute> {
    attrs
        .iter()
        .map(|Attr(name, number, text)| (name.text(), *number, text.clone()))
        .collect()
}

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
