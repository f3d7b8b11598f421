//! Any text after `<store>://`, for every network and embedded store, either is refused as
//! a URL with `InvalidConfiguration`, or its parameters fill the store's config or fail
//! with `InvalidConfiguration`, and a filled config either passes the checks opening the
//! store makes or fails them with `InvalidConfiguration`; nothing panics (huge durations
//! included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use valkeyrie_core::raw::{BackendConfig, StoreUrl};
use valkeyrie_core::{ErrorKind, Result, StoreConfig};

/// One store's path through `text`: the URL, its config, the checks opening makes (given
/// the URL's endpoints).
fn check<C: BackendConfig>(text: &str, validate: impl Fn(&C, &[String]) -> Result<()>) {
    let url = match StoreUrl::parse(&format!("{}://{text}", C::STORE)) {
        Ok(url) => url,
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::InvalidConfiguration, "{err}");
            return;
        }
    };
    let outcome = StoreConfig::Params(url.params)
        .resolve::<C>()
        .and_then(|config| validate(&config, &url.endpoints));
    if let Err(err) = outcome {
        assert_eq!(err.kind(), ErrorKind::InvalidConfiguration, "{}: {err}", C::STORE);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text, |c, _| valkeyrie_boltlike::fuzzing::validate(c));
    check(text, valkeyrie_consul::fuzzing::validate);
    check(text, |c, _| valkeyrie_dynamodb::fuzzing::validate(c));
    check(text, |c, _| valkeyrie_etcd::fuzzing::validate(c));
    check(text, valkeyrie_redis::fuzzing::validate);
    check(text, |c, _| valkeyrie_zookeeper::fuzzing::validate(c));
});
