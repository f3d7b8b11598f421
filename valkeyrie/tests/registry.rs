//! The registry lists exactly the stores this build's features enable. Run with each
//! feature set that matters: `--no-default-features`, the default (`boltlike`), one
//! network store, and `--features all` (`cargo xtask test` runs them all).

#[test]
fn the_registry_lists_exactly_the_enabled_stores() {
    let mut expected: Vec<&str> = valkeyrie::ENABLED.to_vec();
    expected.push("memory");
    expected.sort_unstable();
    assert_eq!(valkeyrie::constructors(), expected);
}

#[test]
fn features_and_enabled_stores_agree() {
    let enabled = |name: &str| valkeyrie::ENABLED.contains(&name);
    assert_eq!(enabled("boltlike"), cfg!(feature = "boltlike"));
    assert_eq!(enabled("consul"), cfg!(feature = "consul"));
    assert_eq!(enabled("dynamodb"), cfg!(feature = "dynamodb"));
    assert_eq!(enabled("etcd"), cfg!(feature = "etcd"));
    assert_eq!(enabled("redis"), cfg!(feature = "redis"));
    assert_eq!(enabled("zookeeper"), cfg!(feature = "zookeeper"));
}

#[tokio::test]
async fn a_disabled_store_is_unknown_and_says_which_are_there() {
    if cfg!(feature = "zookeeper") {
        return;
    }
    let Err(err) = valkeyrie::open("zookeeper://127.0.0.1:2181").await else {
        panic!("zookeeper is not enabled in this build")
    };
    assert_eq!(err.kind(), valkeyrie::ErrorKind::UnknownStore);
    assert!(err.to_string().contains("memory"), "{err}");
}
