//! The one place fred's errors become ours.

use fred::error::{Error as ClientError, ErrorKind as ClientKind};
use valkeyrie_core::tls::text_is_certificate_failure;
use valkeyrie_core::Error;

use crate::REDIS;

/// The code of an ACL refusal: "NOPERM this user has no permissions to run the '…'
/// command" or "… to access one of the keys used as arguments" (Redis 7.0, `src/acl.c`,
/// `addACLLogEntry`/`rejectCommand`). fred passes it on as an `Unknown` kind with the reply
/// as its text, which is searched rather than prefix-matched, so that a refusal quoted
/// inside another error's text counts too.
const NO_PERMISSION: &str = "NOPERM";

/// Maps an error of the client on `key` (empty when the request concerns none); the store
/// handle names the call ([`Error::in_call`]).
pub(crate) fn map_error(key: &str, err: ClientError) -> Error {
    let key = key.to_owned();
    // fred keeps a TLS error's text only (the `Debug` text of the I/O or rustls error).
    if matches!(err.kind(), ClientKind::IO | ClientKind::Tls) && text_is_certificate_failure(err.details()) {
        return Error::tls_verification(REDIS, key, err);
    }
    if err.details().contains(NO_PERMISSION) {
        return Error::permission_denied(REDIS, key, err);
    }
    match err.kind() {
        ClientKind::IO | ClientKind::Canceled => Error::not_reachable(REDIS, key, err),
        ClientKind::Timeout => Error::backend(REDIS, key, true, err),
        ClientKind::Auth => Error::unauthenticated(REDIS, key, err),
        ClientKind::Config | ClientKind::Url | ClientKind::Tls => Error::config(REDIS, "config", err.to_string()),
        ClientKind::Cluster | ClientKind::Routing | ClientKind::Sentinel | ClientKind::Backpressure => {
            Error::backend(REDIS, key, true, err)
        }
        _ => Error::backend(REDIS, key, false, err),
    }
}
