//! The one place etcd-client's errors become ours.

use etcd_client::Error as ClientError;
use valkeyrie_core::Error;

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

/// Maps an error of the client during `call` on `key`.
pub(crate) fn map_error(call: &'static str, key: &str, err: ClientError) -> Error {
    let key = key.to_owned();
    if wrapped(&err).is_some_and(valkeyrie_core::tls::is_certificate_failure) {
        return Error::tls_verification(ETCD, call, key, err);
    }
    match &err {
        ClientError::GRpcStatus(status) => {
            use tonic::Code;
            let message = status.message();
            match status.code() {
                // An invalid token reaches us only when logging in again failed too.
                Code::Unauthenticated => Error::unauthenticated(ETCD, call, key, err),
                Code::InvalidArgument if message.starts_with(AUTH_FAILED) => {
                    Error::unauthenticated(ETCD, call, key, err)
                }
                Code::PermissionDenied => Error::permission_denied(ETCD, call, key, err),
                // tonic reports a broken or timed-out connection as a status (Unknown or
                // Cancelled) whose source is the transport error.
                code if code == Code::Unavailable
                    || (matches!(code, Code::Unknown | Code::Cancelled) && is_transport(status)) =>
                {
                    Error::NotReachable {
                        store: ETCD,
                        call,
                        key,
                        source: Box::new(err),
                    }
                }
                Code::DeadlineExceeded => Error::backend(ETCD, call, key, true, err),
                Code::InvalidArgument if message.contains("too large") => Error::backend(
                    ETCD,
                    call,
                    key,
                    false,
                    "the request is larger than the server's max-request-bytes",
                ),
                Code::ResourceExhausted | Code::Aborted => Error::backend(ETCD, call, key, true, err),
                _ => Error::backend(ETCD, call, key, false, err),
            }
        }
        ClientError::TransportError(_) | ClientError::IoError(_) => Error::NotReachable {
            store: ETCD,
            call,
            key,
            source: Box::new(err),
        },
        ClientError::InvalidArgs(_) | ClientError::InvalidUri(_) | ClientError::EndpointError(_) => {
            Error::config(ETCD, "endpoints", err.to_string())
        }
        ClientError::WatchError(_) | ClientError::LeaseKeepAliveError(_) => Error::backend(ETCD, call, key, true, err),
        _ => Error::backend(ETCD, call, key, false, err),
    }
}
