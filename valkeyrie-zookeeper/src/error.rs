//! The one place zookeeper-client's errors become ours.
//!
//! zookeeper-client queues a request while its session reconnects and sends it once
//! connected; when the connection breaks it fails every request written or being written
//! with `ConnectionLoss`, or with a custom error (a socket error, a server that stopped
//! answering). Such a request may have been applied: its outcome is unknown, an
//! [`Error::Timeout`]. Only opening a session reports them as [`Error::NotReachable`].

use std::time::Duration;

use valkeyrie_core::Error;
use zookeeper_client::Error as ClientError;

use crate::ZOOKEEPER;

/// Maps the error of a request on `key` (empty when it concerns none) that ran for
/// `waited`; the caller's call is stamped by the store handle or the driver that runs it.
pub(crate) fn map_request_error(key: &str, waited: Duration, err: ClientError) -> Error {
    match err {
        // Failed in flight: the request may have reached the server.
        ClientError::ConnectionLoss | ClientError::Custom(_) => Error::outcome_unknown(ZOOKEEPER, key, waited, err),
        other => map_error(key, other),
    }
}

/// Maps an error of opening a session: failing to reach the ensemble in any way applied
/// nothing.
pub(crate) fn map_connect_error(err: ClientError) -> Error {
    match err {
        ClientError::ConnectionLoss | ClientError::NoHosts | ClientError::Custom(_) => {
            Error::not_reachable(ZOOKEEPER, "", err)
        }
        other => map_error("", other),
    }
}

/// Maps an error of the client on `key` (empty when the request concerns none): one the
/// server answered (a request's, or one operation's of a multi), or one the client raised
/// before sending (staging a multi). A request's goes through [`map_request_error`].
pub(crate) fn map_error(key: &str, err: ClientError) -> Error {
    let key = key.to_owned();
    match err {
        ClientError::NoNode => Error::not_found(ZOOKEEPER, key),
        ClientError::NodeExists => Error::exists(ZOOKEEPER, key),
        ClientError::BadVersion => Error::modified(ZOOKEEPER, key),
        // Every host was tried and none connected (only while opening a session).
        ClientError::NoHosts => Error::not_reachable(ZOOKEEPER, key, err),
        // Raised for a request in flight, which `map_request_error` maps with the time it
        // waited; not for an answer or before sending.
        ClientError::ConnectionLoss | ClientError::Custom(_) => {
            Error::outcome_unknown(ZOOKEEPER, key, Duration::ZERO, err)
        }
        ClientError::Timeout | ClientError::Throttled => Error::backend(ZOOKEEPER, key, true, err),
        // The handle opens a new session in the background (see `client`): a retry works.
        ClientError::SessionExpired => Error::backend(ZOOKEEPER, key, true, err),
        // A node whose ACL does not admit this session's identity (ZooKeeper's digest
        // `addauth` accepts any password, so a wrong one shows here too).
        ClientError::NoAuth => Error::permission_denied(ZOOKEEPER, key, err),
        // The server refused the credentials (a SASL failure, or `enforce.auth` and none).
        ClientError::AuthFailed => Error::unauthenticated(ZOOKEEPER, key, err),
        ClientError::ClientClosed => Error::closed(ZOOKEEPER, key),
        other => Error::backend(ZOOKEEPER, key, false, other),
    }
}

/// Whether `err` is ZooKeeper's "node has children" (kept as the source of a backend error).
pub(crate) fn is_not_empty(err: &Error) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<ClientError>())
        .is_some_and(|source| matches!(source, ClientError::NotEmpty))
}

#[cfg(test)]
mod tests {
    use valkeyrie_core::ErrorKind;

    use super::*;

    const WAITED: Duration = Duration::from_millis(40);

    #[test]
    fn a_request_failed_by_a_broken_connection_has_an_unknown_outcome() {
        let err = map_request_error("a/b", WAITED, ClientError::ConnectionLoss);
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(err.is_temporary());
        assert_eq!(err.key(), Some("a/b"));
        assert_eq!(
            err.to_string(),
            "zookeeper: request on \"a/b\" timed out after 40ms (outcome unknown: connection to server has lost)"
        );
    }

    #[test]
    fn opening_a_session_that_reaches_no_server_is_not_reachable() {
        for err in [ClientError::NoHosts, ClientError::ConnectionLoss] {
            let shown = err.to_string();
            let err = map_connect_error(err);
            assert_eq!(err.kind(), ErrorKind::NotReachable, "{shown} became {err}");
            assert!(err.is_temporary());
        }
        let err = map_request_error("k", WAITED, ClientError::NoHosts);
        assert_eq!(
            err.kind(),
            ErrorKind::NotReachable,
            "no host tried: nothing sent ({err})"
        );
    }

    #[test]
    fn answers_keep_their_kinds() {
        assert_eq!(
            map_request_error("k", WAITED, ClientError::NoNode).kind(),
            ErrorKind::KeyNotFound
        );
        assert_eq!(
            map_request_error("k", WAITED, ClientError::BadVersion).kind(),
            ErrorKind::KeyModified
        );
        let denied = map_request_error("k", WAITED, ClientError::NoAuth);
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
        assert!(!denied.is_temporary());
        let refused = map_connect_error(ClientError::AuthFailed);
        assert_eq!(refused.kind(), ErrorKind::Unauthenticated);
        assert!(!refused.is_temporary());
    }
}
