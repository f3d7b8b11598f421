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

/// Maps an error of the client during `call` on `key`.
pub(crate) fn map_error(call: &'static str, key: &str, err: ClientError) -> Error {
    let key = key.to_owned();
    // fred keeps a TLS error's text only (the `Debug` text of the I/O or rustls error).
    if matches!(err.kind(), ClientKind::IO | ClientKind::Tls) && text_is_certificate_failure(err.details()) {
        return Error::tls_verification(REDIS, call, key, err);
    }
    if err.details().contains(NO_PERMISSION) {
        return Error::permission_denied(REDIS, call, key, err);
    }
    match err.kind() {
        ClientKind::IO | ClientKind::Canceled => Error::NotReachable {
            store: REDIS,
            call,
            key,
            source: Box::new(err),
        },
        ClientKind::Timeout => Error::backend(REDIS, call, key, true, err),
        ClientKind::Auth => Error::unauthenticated(REDIS, call, key, err),
        ClientKind::Config | ClientKind::Url | ClientKind::Tls => Error::config(REDIS, "config", err.to_string()),
        ClientKind::Cluster | ClientKind::Routing | ClientKind::Sentinel | ClientKind::Backpressure => {
            Error::backend(REDIS, call, key, true, err)
        }
        _ => Error::backend(REDIS, call, key, false, err),
    }
}
