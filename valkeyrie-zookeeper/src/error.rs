//! The one place zookeeper-client's errors become ours.

use valkeyrie_core::Error;
use zookeeper_client::Error as ClientError;

use crate::ZOOKEEPER;

/// Maps an error of the client on `key` (empty when the request concerns none); the
/// caller's call is stamped by the store handle or the driver that runs it.
pub(crate) fn map_error(key: &str, err: ClientError) -> Error {
    let key = key.to_owned();
    match err {
        ClientError::NoNode => Error::not_found(ZOOKEEPER, key),
        ClientError::NodeExists => Error::exists(ZOOKEEPER, key),
        ClientError::BadVersion => Error::modified(ZOOKEEPER, key),
        // The session layer reports a broken connection (a socket error, a server that
        // stopped answering) as a custom error, whose source it does not expose.
        ClientError::ConnectionLoss | ClientError::NoHosts | ClientError::Custom(_) => {
            Error::not_reachable(ZOOKEEPER, key, err)
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
