//! The one place etcd-client's errors become ours.

use etcd_client::Error as ClientError;
use valkeyrie_core::error::one_line;
use valkeyrie_core::{Error, Summarized};

use crate::ETCD;

/// Whether a status stands for a connection failure rather than an answer of the server.
fn is_transport(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::transport::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// etcd 3.4's answer to a wrong user name or password (`ErrGRPCAuthFailed` in
/// `etcdserver/api/v3rpc/rpctypes/error.go`): code `InvalidArgument`, so only its text
/// tells it from a malformed request.
const AUTH_FAILED: &str = "etcdserver: authentication failed";

/// The error a client error wraps: etcd-client's errors do not expose it as `source()`.
fn wrapped(err: &ClientError) -> Option<&(dyn std::error::Error + 'static)> {
    match err {
        ClientError::TransportError(e) => Some(e),
        ClientError::GRpcStatus(e) => Some(e),
        ClientError::IoError(e) => Some(e),
        _ => None,
    }
}

/// The client's error with a message on one line: a status as its message and code (tonic
/// prints a status with its details and metadata), a transport or I/O error as its chain of
/// causes (which etcd-client's error does not expose as `source()`).
fn summarized(err: ClientError) -> valkeyrie_core::BoxError {
    let summary = match &err {
        ClientError::GRpcStatus(status) => {
            let mut summary = status.message().to_owned();
            // A status made by the client for a failed connection keeps the cause apart.
            if let Some(cause) = std::error::Error::source(status).map(one_line) {
                if cause.contains(&summary) {
                    summary = cause;
                } else if !summary.contains(&cause) {
                    summary = format!("{summary}: {cause}");
                }
            }
            format!("{summary} ({:?})", status.code())
        }
        _ => wrapped(&err).map_or_else(|| err.to_string(), one_line),
    };
    Box::new(Summarized::new(summary, err))
}

/// Maps an error of the client on `key` (empty when the request concerns none).
pub(crate) fn map_error(key: &str, err: ClientError) -> Error {
    let key = key.to_owned();
    if wrapped(&err).is_some_and(valkeyrie_core::tls::is_certificate_failure) {
        return Error::tls_verification(ETCD, key, summarized(err));
    }
    match &err {
        ClientError::GRpcStatus(status) => {
            use tonic::Code;
            let message = status.message();
            match status.code() {
                // An invalid token reaches us only when logging in again failed too.
                Code::Unauthenticated => Error::unauthenticated(ETCD, key, summarized(err)),
                Code::InvalidArgument if message.starts_with(AUTH_FAILED) => {
                    Error::unauthenticated(ETCD, key, summarized(err))
                }
                Code::PermissionDenied => Error::permission_denied(ETCD, key, summarized(err)),
                // tonic reports a broken or timed-out connection as a status (Unknown or
                // Cancelled) whose source is the transport error.
                code if code == Code::Unavailable
                    || (matches!(code, Code::Unknown | Code::Cancelled) && is_transport(status)) =>
                {
                    Error::not_reachable(ETCD, key, summarized(err))
                }
                Code::DeadlineExceeded => Error::backend(ETCD, key, true, summarized(err)),
                Code::InvalidArgument if message.contains("too large") => Error::backend(
                    ETCD,
                    key,
                    false,
                    "the request is larger than the server's max-request-bytes",
                ),
                Code::ResourceExhausted | Code::Aborted => Error::backend(ETCD, key, true, summarized(err)),
                _ => Error::backend(ETCD, key, false, summarized(err)),
            }
        }
        ClientError::TransportError(_) | ClientError::IoError(_) => Error::not_reachable(ETCD, key, summarized(err)),
        ClientError::InvalidArgs(_) | ClientError::InvalidUri(_) | ClientError::EndpointError(_) => {
            Error::config(ETCD, "endpoints", err.to_string())
        }
        ClientError::WatchError(_) | ClientError::LeaseKeepAliveError(_) => {
            Error::backend(ETCD, key, true, summarized(err))
        }
        _ => Error::backend(ETCD, key, false, summarized(err)),
    }
}
