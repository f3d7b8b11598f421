//! Item attributes for the DynamoDB fuzz targets (items and stream records): mostly the
//! table's own names, sometimes anything, each a number or a string of any text.

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use valkeyrie_dynamodb::fuzzing;

/// An attribute name: mostly the table's own, sometimes anything.
#[derive(Debug, Arbitrary)]
pub enum Name {
    Id,
    Version,
    Value,
    Expiration,
    Other(String),
}

impl Name {
    pub fn text(&self) -> String {
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
pub struct Attr(pub Name, pub bool, pub String);

pub fn attributes(attrs: &[Attr]) -> Vec<fuzzing::Attribute> {
    attrs
        .iter()
        .map(|Attr(name, number, text)| (name.text(), *number, text.clone()))
        .collect()
}
