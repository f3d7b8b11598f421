//! The one place etcd-client's errors become ours.
//!
//! A request that failed before it left (the channel could not connect) is
//! [`Error::NotReachable`]: nothing was applied. One that failed after it may have reached
//! the server (the connection broke, the server said it is unavailable, a deadline passed) is
//! [`Error::Timeout`]: its outcome is unknown.

use std::time::Duration;

use etcd_client::Error as ClientError;
use valkeyrie_core::error::one_line;
use valkeyrie_core::raw::Summarized;
use valkeyrie_core::Error;

use crate::ETCD;

/// The errors in `status`'s chain of sources.
fn causes(status: &tonic::Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |err| err.source())
}

/// Whether a status stands for a connection failure rather than an answer of the server.
fn is_transport(status: &tonic::Status) -> bool {
    causes(status).any(|err| err.is::<tonic::transport::Error>() || err.is::<std::io::Error>())
}

/// Whether a status is tonic's for a channel that could not connect (TCP, TLS handshake):
/// tonic's connector wraps every such failure in a [`tonic::ConnectError`], and the
/// channel fails a request with it before sending anything.
fn is_connect_failure(status: &tonic::Status) -> bool {
    causes(status).any(|err| err.is::<tonic::ConnectError>())
}

/// etcd 3.4's answer to a wrong user name or password (`ErrGRPCAuthFailed` in
/// `etcdserver/api/v3rpc/rpctypes/error.go`): code `InvalidArgument`, so only its text
/// tells it from a malformed request.
const AUTH_FAILED: &str = "etcdserver: authentication failed";

/// etcd 3.4's answer to a request on a server shutting down (`raft.ErrStopped`, which
/// `v3rpc` does not translate): code `Unknown`. The raft node may have taken the proposal
/// before it stopped (`stepWithWaitOption` returns this while waiting for the result), and
/// an entry already in the log is applied once the member is back: the outcome is unknown.
const RAFT_STOPPED: &str = "raft: stopped";

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

/// Maps an error of the client on a request on `key` (empty when the request concerns
/// none) that ran for `waited`.
pub(crate) fn map_error(key: &str, waited: Duration, err: ClientError) -> Error {
    map(key, waited, err, false)
}

/// Maps an error of the client while connecting: there a failure of any kind to reach the
/// cluster is [`Error::NotReachable`], since opening a client applies nothing.
pub(crate) fn map_connect_error(err: ClientError) -> Error {
    map("", Duration::ZERO, err, true)
}

fn map(key: &str, waited: Duration, err: ClientError, connecting: bool) -> Error {
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
                // Refused before sending: tonic's status for a channel that could not connect.
                Code::Unavailable if connecting || is_connect_failure(status) => {
                    Error::not_reachable(ETCD, key, summarized(err))
                }
                // Anything else unavailable may have been sent: a connection that broke or
                // missed its keep-alive (tonic's Unavailable), or the server's own (no
                // leader, leader changed, its request timeout). So may a request tonic
                // reports as Unknown with the transport error as its source, and a
                // cancelled one: tonic's per-request timeout (etcd-client's `with_timeout`)
                // is Cancelled ("Timeout expired"), as is the server's cancelled context.
                code if code == Code::Unavailable
                    || code == Code::Cancelled
                    || (code == Code::Unknown && is_transport(status)) =>
                {
                    if connecting {
                        Error::not_reachable(ETCD, key, summarized(err))
                    } else {
                        Error::outcome_unknown(ETCD, key, waited, summarized(err))
                    }
                }
                Code::DeadlineExceeded => Error::backend(ETCD, key, true, summarized(err)),
                Code::Unknown if message == RAFT_STOPPED => Error::outcome_unknown(ETCD, key, waited, summarized(err)),
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
        // Raised by etcd-client only while building its channel (TLS settings, endpoints):
        // no request has been sent.
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

#[cfg(test)]
mod tests {
    use std::io;

    use tonic::{Code, Status};
    use valkeyrie_core::ErrorKind;

    use super::*;

    const WAITED: Duration = Duration::from_millis(30);

    fn refused() -> Status {
        let io = io::Error::new(io::ErrorKind::ConnectionRefused, "Connection refused");
        Status::from_error(Box::new(tonic::ConnectError(Box::new(io))))
    }

    #[test]
    fn a_channel_that_could_not_connect_sent_nothing() {
        let status = refused();
        assert_eq!(status.code(), Code::Unavailable, "tonic's status for a connect failure");
        let err = map_error("k", WAITED, ClientError::GRpcStatus(status));
        assert_eq!(err.kind(), ErrorKind::NotReachable, "{err}");
        assert!(err.is_temporary());
        assert!(err.to_string().contains("Connection refused"), "{err}");
    }

    #[test]
    fn a_request_that_may_have_reached_the_server_has_an_unknown_outcome() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "connection reset");
        let may_have_reached = [
            // The server's own: no leader, leader changed, its request timed out.
            Status::unavailable("etcdserver: leader changed"),
            // tonic's per-request timeout, and a cancelled request.
            Status::from_error(Box::new(tonic::TimeoutExpired(()))),
            Status::cancelled("context canceled"),
            // A connection that broke under the request.
            Status::from_error(Box::new(reset)),
        ];
        for status in may_have_reached {
            let shown = format!("{status:?}");
            let err = map_error("k", WAITED, ClientError::GRpcStatus(status));
            assert_eq!(err.kind(), ErrorKind::Timeout, "{shown} became {err}");
            assert!(err.is_temporary(), "{err}");
            assert_eq!(err.key(), Some("k"));
        }
    }

    #[test]
    fn connecting_reports_any_failure_to_reach_the_cluster_as_not_reachable() {
        for status in [refused(), Status::unavailable("etcdserver: no leader")] {
            let err = map_connect_error(ClientError::GRpcStatus(status));
            assert_eq!(err.kind(), ErrorKind::NotReachable, "{err}");
        }
    }

    #[test]
    fn refusals_and_answers_keep_their_kinds() {
        let denied = map_error(
            "k",
            WAITED,
            ClientError::GRpcStatus(Status::permission_denied("etcdserver: permission denied")),
        );
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied, "{denied}");
        let auth = map_error(
            "k",
            WAITED,
            ClientError::GRpcStatus(Status::invalid_argument(AUTH_FAILED)),
        );
        assert_eq!(auth.kind(), ErrorKind::Unauthenticated, "{auth}");
        let unknown = map_error("k", WAITED, ClientError::GRpcStatus(Status::unknown("odd")));
        assert_eq!(
            unknown.kind(),
            ErrorKind::Backend,
            "an Unknown answer without a transport cause"
        );
        assert!(!unknown.is_temporary());
        let stopping = map_error("k", WAITED, ClientError::GRpcStatus(Status::unknown(RAFT_STOPPED)));
        assert_eq!(
            stopping.kind(),
            ErrorKind::Timeout,
            "a server shutting down: {stopping}"
        );
        assert!(stopping.is_temporary(), "{stopping}");
    }
}
