//! Any text given as a store URL either parses, and its path and parameters either fill a
//! typed config or fail with `InvalidConfiguration`, or the URL itself is refused with
//! `InvalidConfiguration`; nothing panics. The path also goes through the key rules, which
//! accept it or say `InvalidKey`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valkeyrie_core::config::from_params;
use valkeyrie_core::raw::{Key, StoreUrl};
use valkeyrie_core::{ErrorKind, MemoryConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let url = match StoreUrl::parse(text) {
        Ok(url) => url,
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::InvalidConfiguration, "{err}");
            return;
        }
    };
    if let Err(err) = from_params::<MemoryConfig>("memory", &url.params) {
        assert_eq!(err.kind(), ErrorKind::InvalidConfiguration, "{err}");
    }
    if let Some(path) = &url.path {
        if let Err(err) = Key::parse("memory", path) {
            assert_eq!(err.kind(), ErrorKind::InvalidKey, "{err}");
        }
    }
});
