//! Any body, read as a KV answer or a transaction's answer, gives its entries or a typed
//! error (`Backend` for another shape or a value that is no base64, `PermissionDenied` for
//! a refusal), never a panic: indexes past `u64::MAX` or negative included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valkeyrie_consul::fuzzing;
use valkeyrie_core::ErrorKind;

fuzz_target!(|body: &[u8]| {
    if let Err(err) = fuzzing::kv_entries(body) {
        assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    }
    if let Err(err) = fuzzing::txn_outcome(body) {
        assert!(
            matches!(err.kind(), ErrorKind::Backend | ErrorKind::PermissionDenied),
            "{err}"
        );
    }
});
