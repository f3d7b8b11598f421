//! Stream records of any shape, in any order, give a watch only events about the keys it
//! watches (a `Put` or a `Delete`, never a snapshot), and never a panic: records without a
//! key, foreign images, unknown operations and huge versions or expiry times included.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use valkeyrie_core::raw::Key;
use valkeyrie_core::WatchEvent;
use valkeyrie_dynamodb::fuzzing;

#[path = "shared/dynamodb_attributes.rs"]
mod dynamodb_attributes;

use dynamodb_attributes::{attributes, Attr};

/// A stream record.
#[derive(Debug, Arbitrary)]
struct Input {
    event: Event,
    key: Option<Keyed>,
    old_image: Option<Vec<Attr>>,
    new_image: Option<Vec<Attr>>,
}

#[derive(Debug, Arbitrary)]
enum Event {
    Insert,
    Modify,
    Remove,
    Other(String),
}

/// A record's key: the watched one, one below it, or anything.
#[derive(Debug, Arbitrary)]
enum Keyed {
    Watched,
    Below(String),
    Other(String),
}

#[derive(Debug, Arbitrary)]
struct Inputs {
    tree: bool,
    now: u64,
    records: Vec<Input>,
}

fuzz_target!(|inputs: Inputs| {
    let Ok(watched) = Key::parse("dynamodb", "w") else {
        return;
    };
    let records: Vec<fuzzing::StreamInput> = inputs
        .records
        .iter()
        .map(|input| fuzzing::StreamInput {
            event_name: match &input.event {
                Event::Insert => "INSERT".to_owned(),
                Event::Modify => "MODIFY".to_owned(),
                Event::Remove => "REMOVE".to_owned(),
                Event::Other(name) => name.clone(),
            },
            key: input.key.as_ref().map(|key| match key {
                Keyed::Watched => "w".to_owned(),
                Keyed::Below(rest) => format!("w/{rest}"),
                Keyed::Other(key) => key.clone(),
            }),
            old_image: input.old_image.as_deref().map(attributes),
            new_image: input.new_image.as_deref().map(attributes),
        })
        .collect();
    for event in fuzzing::stream_events(&watched, inputs.tree, &records, inputs.now) {
        let key = match &event {
            WatchEvent::Put(pair) => pair.key.clone(),
            WatchEvent::Delete { key, .. } => key.clone(),
            other => panic!("a stream record gave {other:?}"),
        };
        assert!(
            key == "w" || (inputs.tree && watched.contains(&key)),
            "{key:?} is not watched"
        );
    }
});
