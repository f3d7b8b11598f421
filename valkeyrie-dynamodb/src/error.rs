//! The one place the SDK's errors become ours.

use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_types::retry::ErrorKind as RetryKind;
use valkeyrie_core::tls::certificate_failure;
use valkeyrie_core::Error;

use crate::DYNAMODB;

/// Service error codes that a later attempt may get past.
const TEMPORARY: [&str; 6] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
];

/// How hyper-util's client error shows when no connection could be made (TCP, DNS, the TLS
/// handshake, or the SDK's connect timeout, all inside its connector): `client error
/// (Connect)`, its `Display` with its kind's name. The SDK classes such a failure as I/O (or
/// as a timeout) like one that broke a connection mid-request, so only this tells them
/// apart; hyper-util is no dependency of this crate, so its `is_connect` cannot be asked.
const CONNECT_FAILED: &str = "client error (Connect)";

/// Whether a dispatch failure is one of connecting: the request was never sent.
fn is_connect_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |err| err.source()).any(|err| err.to_string() == CONNECT_FAILED)
}

/// Maps an error of the SDK on `key` (after the SDK's own retries); the store handle names
/// the call. `after` is the request's deadline, reported by a timeout. With `connecting`,
/// any failure to reach the endpoint is [`Error::NotReachable`] (opening the handle).
pub(crate) fn map_error<E, R>(key: &str, after: Duration, err: SdkError<E, R>, connecting: bool) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    // A certificate refused in the handshake (unknown CA, expired, another name): no retry
    // mends it. The SDK's error says only "dispatch failure"; the rustls error is inside.
    if let SdkError::DispatchFailure(_) = &err {
        if let Some(why) = certificate_failure(&err) {
            return Error::tls_verification(DYNAMODB, key, why);
        }
    }
    match &err {
        // No connection could be made (refused, DNS, the connect timeout): the last
        // attempt sent nothing.
        SdkError::DispatchFailure(failure) if failure.as_connector_error().is_some_and(|e| is_connect_failure(e)) => {
            Error::not_reachable(DYNAMODB, key, DisplayErrorContext(&err).to_string())
        }
        SdkError::TimeoutError(_) => Error::timeout(DYNAMODB, key, after),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => Error::timeout(DYNAMODB, key, after),
        // An I/O failure once connected, or a connection the server closed mid-request
        // (reported as "other" with a transient kind): the request may have reached the
        // server, so its outcome is unknown.
        SdkError::DispatchFailure(failure)
            if failure.is_io() || failure.as_other() == Some(RetryKind::TransientError) =>
        {
            if connecting {
                return Error::not_reachable(DYNAMODB, key, DisplayErrorContext(&err).to_string());
            }
            Error::outcome_unknown(DYNAMODB, key, after, DisplayErrorContext(&err).to_string())
        }
        // No credentials, a bad endpoint URL, …: the cause is in the context, not in "dispatch failure".
        SdkError::DispatchFailure(_) => Error::backend(DYNAMODB, key, false, DisplayErrorContext(&err).to_string()),
        SdkError::ResponseError(_) => Error::backend(DYNAMODB, key, true, err),
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let code = inner.code().unwrap_or("unknown");
            let message = inner.message().unwrap_or("").to_owned();
            let reason = match code {
                "ResourceNotFoundException" => {
                    format!("{code}: {message} (create the table, or set create_table to have it created)")
                }
                "UnrecognizedClientException" | "AccessDeniedException" | "InvalidSignatureException" => {
                    format!("{code}: {message} (check the credentials and their IAM policy)")
                }
                _ => format!("{code}: {message}"),
            };
            Error::backend(DYNAMODB, key, TEMPORARY.contains(&code), reason)
        }
        _ => Error::backend(DYNAMODB, key, false, err),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::config::retry::RetryConfig;
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
    use aws_smithy_http_client::tls::Provider;
    use valkeyrie_core::ErrorKind;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(5);

    /// The address of a listener that reads the start of each request and closes the
    /// connection unanswered: a request that reached the other side, with no outcome known.
    fn hanging_up() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut start = [0_u8; 64];
                let _ = std::io::Read::read(&mut stream, &mut start);
            }
        });
        format!("http://{address}")
    }

    /// An address nothing listens on.
    fn refusing() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    /// What one attempt of a `PutItem` to `endpoint` (on the SDK's HTTP stack, as the store
    /// builds it) maps to.
    async fn put_to(endpoint: String, connecting: bool) -> Error {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("id", "secret", None, None, "test"))
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .build();
        let err = aws_sdk_dynamodb::Client::from_conf(config)
            .put_item()
            .table_name("t")
            .item("id", AttributeValue::S("k".into()))
            .send()
            .await
            .expect_err("no DynamoDB there");
        map_error("k", DEADLINE, err, connecting)
    }

    #[tokio::test]
    async fn a_request_cut_off_after_it_was_sent_has_an_unknown_outcome() {
        let err = put_to(hanging_up(), false).await;
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(err.is_temporary());
        assert_eq!(err.key(), Some("k"));
        let err = put_to(hanging_up(), true).await;
        assert_eq!(err.kind(), ErrorKind::NotReachable, "connecting applies nothing: {err}");
    }

    #[tokio::test]
    async fn a_request_that_could_not_connect_was_not_sent() {
        let err = put_to(refusing(), false).await;
        assert_eq!(err.kind(), ErrorKind::NotReachable, "{err}");
        assert!(err.is_temporary());
    }
}
