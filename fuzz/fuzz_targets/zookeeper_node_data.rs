//! Node data of any bytes decodes to a value or to "a directory", never a panic; and the
//! data written for any value decodes back to exactly it (never to a directory).
#![no_main]

use libfuzzer_sys::fuzz_target;
use valkeyrie_zookeeper::fuzzing;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::decode(data.to_vec());
    let written = fuzzing::encode(data);
    assert_eq!(fuzzing::decode(written).as_deref(), Some(data));
});
