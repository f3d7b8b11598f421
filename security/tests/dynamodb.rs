//! The security suite on DynamoDB Local behind a TLS proxy with the private CA's
//! certificate: TLS only. DynamoDB Local checks no credentials, and the AWS SDK's HTTP
//! client cannot present a client certificate, so the password, permission and
//! client-certificate cases do not apply.

use valkeyrie::ErrorKind;
use valkeyrie_security::{assert_error_keeps_secrets, env, Secured, Trust};

valkeyrie_security::security_suite!(@cases Secured::DynamoDb; data_calls_over_tls, wrong_ca_is_refused);

/// A server certificate past its validity: a permanent `TlsVerification` that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused() {
    let url = Secured::DynamoDb.dynamodb_url(&env("VALKEYRIE_SECURE_DYNAMODB_EXPIRED_ENDPOINT"), Trust::PrivateCa);
    let err = match valkeyrie::open(&url).await {
        Ok(_) => panic!("a server with an expired certificate was trusted"),
        Err(err) => err,
    };
    assert_eq!(err.kind(), ErrorKind::TlsVerification, "{err}");
    assert!(!err.is_temporary(), "{err}");
    assert!(err.to_string().contains("expired"), "the error says why: {err}");
    assert_error_keeps_secrets(&err);
}

/// A client certificate cannot be given (the SDK's client cannot present one), and an
/// `http://` endpoint with a CA file is refused: neither is ignored silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_sdk_cannot_do_is_refused() {
    let url = Secured::DynamoDb.dynamodb_url(&env("VALKEYRIE_SECURE_DYNAMODB_ENDPOINT"), Trust::PrivateCa);
    let with_cert = format!(
        "{url}&cert_file={}&key_file={}",
        env("VALKEYRIE_TLS_CLIENT_CERT"),
        env("VALKEYRIE_TLS_CLIENT_KEY")
    );
    let plain = url.replace("https%3A", "http%3A");
    for (what, url) in [
        ("a client certificate", with_cert),
        ("an http:// endpoint with a CA file", plain),
    ] {
        match valkeyrie::open(&url).await {
            Err(err) if err.kind() == ErrorKind::InvalidConfiguration => {}
            Err(err) => panic!("{what}: expected InvalidConfiguration, got {err}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
}
