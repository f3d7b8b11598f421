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

/// Maps an error of the SDK on `key` (after the SDK's own retries); the store handle names
/// the call. `after` is the request's deadline, reported by a timeout.
pub(crate) fn map_error<E, R>(key: &str, after: Duration, err: SdkError<E, R>) -> Error
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
        SdkError::TimeoutError(_) => Error::timeout(DYNAMODB, key, after),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => Error::timeout(DYNAMODB, key, after),
        // An I/O failure, or a connection the server closed mid-request (reported as
        // "other" with a transient kind): the server is unreachable for now.
        SdkError::DispatchFailure(failure)
            if failure.is_io() || failure.as_other() == Some(RetryKind::TransientError) =>
        {
            Error::not_reachable(DYNAMODB, key, DisplayErrorContext(&err).to_string())
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
