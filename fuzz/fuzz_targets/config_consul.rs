//! Any text after `consul://` either is refused as a URL with `InvalidConfiguration`, or
//! its parameters fill `ConsulConfig` or fail with `InvalidConfiguration`, and a filled config
//! either passes the checks opening the store makes or fails them with
//! `InvalidConfiguration`; nothing panics (huge durations included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use valkeyrie_consul::fuzzing;
use valkeyrie_consul::ConsulConfig;
use valkeyrie_core::{ErrorKind, StoreConfig, StoreUrl};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let url = match StoreUrl::parse(&format!("consul://{text}")) {
        Ok(url) => url,
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::InvalidConfiguration, "{err}");
            return;
        }
    };
    match StoreConfig::Params(url.params).resolve::<ConsulConfig>() {
        Ok(config) => {
            if let Err(err) = fuzzing::validate(&config, &url.endpoints) {
                assert_eq!(err.kind(), ErrorKind::InvalidConfiguration, "{err}");
            }
        }
        Err(err) => assert_eq!(err.kind(), ErrorKind::InvalidConfiguration, "{err}"),
    }
});
