//! The one place zookeeper-client's errors become ours.

use valkeyrie_core::Error;
use zookeeper_client::Error as ClientError;

use crate::ZOOKEEPER;

/// Maps an error of the client during `call` on `key`.
pub(crate) fn map_error(call: &'static str, key: &str, err: ClientError) -> Error {
    let key = key.to_owned();
    match err {
        ClientError::NoNode => Error::not_found(ZOOKEEPER, key),
        ClientError::NodeExists => Error::exists(ZOOKEEPER, key),
        ClientError::BadVersion => Error::modified(ZOOKEEPER, key),
        ClientError::ConnectionLoss | ClientError::NoHosts => Error::NotReachable {
            store: ZOOKEEPER,
            call,
            key,
            source: Box::new(err),
        },
        // The session layer reports a broken connection (a socket error, a server that
        // stopped answering) as a custom error, whose source it does not expose.
        ClientError::Custom(_) => Error::NotReachable {
            store: ZOOKEEPER,
            call,
            key,
            source: Box::new(err),
        },
        ClientError::Timeout | ClientError::Throttled => Error::backend(ZOOKEEPER, call, key, true, err),
        // The handle opens a new session in the background (see `client`): a retry works.
        ClientError::SessionExpired => Error::backend(ZOOKEEPER, call, key, true, err),
        // A node whose ACL does not admit this session's identity (ZooKeeper's digest
        // `addauth` accepts any password, so a wrong one shows here too).
        ClientError::NoAuth => Error::permission_denied(ZOOKEEPER, call, key, err),
        // The server refused the credentials (a SASL failure, or `enforce.auth` and none).
        ClientError::AuthFailed => Error::unauthenticated(ZOOKEEPER, call, key, err),
        ClientError::ClientClosed => Error::Closed {
            store: ZOOKEEPER,
            call,
            key,
        },
        other => Error::backend(ZOOKEEPER, call, key, false, other),
    }
}

/// Whether `err` is ZooKeeper's "node has children" (kept as the source of a backend error).
pub(crate) fn is_not_empty(err: &Error) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<ClientError>())
        .is_some_and(|source| matches!(source, ClientError::NotEmpty))
}
