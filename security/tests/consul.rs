//! The security suite on the secured Consul: HTTPS only with `verify_incoming`, ACLs with
//! `default_policy = "deny"`, an app token allowed to write under the app prefix (and the
//! sessions TTLs and locks need) and a read-only token.

use valkeyrie::ErrorKind;
use valkeyrie_security::{app_key, assert_error_keeps_secrets, env, Connection, Secured};

valkeyrie_security::security_suite!(Secured::Consul);

/// The read-only token.
fn reader() -> Connection {
    Connection {
        account: Some((String::new(), env("VALKEYRIE_SECURE_CONSUL_READ_TOKEN"))),
        ..Connection::app(Secured::Consul)
    }
}

/// A token with `read` on the prefix reads there, and its writes are `PermissionDenied`
/// with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_reads_and_cannot_write() {
    let app = Secured::Consul.connect(&Connection::app(Secured::Consul)).await;
    let reader = Secured::Consul.connect(&reader()).await;
    let key = app_key("read-only");
    app.put(&key, "1").await.expect("the app token writes");
    assert_eq!(
        reader.get(&key).await.expect("the reader reads").map(|pair| pair.value),
        Some("1".into())
    );
    let err = reader.put(&key, "2").await.expect_err("a write with a read-only token");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!err.is_temporary(), "{err}");
    assert_eq!(err.key(), Some(key.as_str()), "{err}");
    assert_error_keeps_secrets(&err);
    let err = reader.delete(&key).await.expect_err("a delete with a read-only token");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(
        app.get(&key).await.expect("get").map(|pair| pair.value),
        Some("1".into()),
        "nothing was written"
    );
    assert!(app.delete(&key).await.expect("delete"), "{key} was there to delete");
}

/// Consul 1.8 filters the keys a token may not read out of a list and says nothing (the
/// `X-Consul-Results-Filtered-By-ACLs` header came in Consul 1.11), so a list under a
/// directory the token reads only part of looks complete. This test shows that behaviour,
/// which the README documents: it fails the day the backend can tell. The app token may
/// not read `VALKEYRIE_SECURE_CONSUL_HIDDEN_PREFIX` (`app/listing/hidden`), a deny rule
/// inside its prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_under_unreadable_keys_is_silently_partial() {
    let app = Secured::Consul.connect(&Connection::app(Secured::Consul)).await;
    let admin = Secured::Consul.connect(&Connection::admin(Secured::Consul)).await;
    let hidden = format!(
        "{}-{}",
        env("VALKEYRIE_SECURE_CONSUL_HIDDEN_PREFIX"),
        std::process::id()
    );
    let (dir, _) = hidden.rsplit_once('/').expect("the hidden prefix is in a directory");
    let visible = format!("{dir}/visible-{}", std::process::id());
    admin.put(&visible, "in").await.expect("put visible");
    admin.put(&hidden, "hidden").await.expect("put hidden");
    let keys = |pairs: Vec<valkeyrie::KvPair>| pairs.into_iter().map(|p| p.key).collect::<Vec<_>>();
    let everything = keys(admin.list(dir).await.expect("the admin lists"));
    assert!(
        everything.contains(&visible) && everything.contains(&hidden),
        "{everything:?}"
    );
    let err = app.get(&hidden).await.expect_err("the app token reads a hidden key");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let seen = keys(app.list(dir).await.expect("the app token lists, without an error"));
    assert!(seen.contains(&visible), "{seen:?}");
    assert!(
        !seen.contains(&hidden),
        "the app token may not read {hidden}, yet the list shows it: {seen:?}"
    );
    assert!(
        admin.delete(&visible).await.expect("delete"),
        "{visible} was there to delete"
    );
    assert!(
        admin.delete(&hidden).await.expect("delete"),
        "{hidden} was there to delete"
    );
}
