//! The one place fred's errors become ours.
//!
//! fred fails a command with an I/O error (or a cancellation) when its connection breaks
//! with the command written, or being written, and no write attempt left: the command may
//! have been applied, so its outcome is unknown, an [`Error::Timeout`]. Only a command
//! fred refused before handing it to its connection task, and connecting, are
//! [`Error::NotReachable`].

use std::time::Duration;

use fred::error::{Error as ClientError, ErrorKind as ClientKind};
use valkeyrie_core::tls::text_is_certificate_failure;
use valkeyrie_core::Error;

use crate::REDIS;

/// fred's answer to a fail-fast command sent while the client is not connected: refused
/// before it reaches the router that writes commands (`send_to_router` in fred 10's
/// `interfaces.rs`), so never written.
const NOT_SENT: &str = "Connection closed unexpectedly.";

/// The code of an ACL refusal: "NOPERM this user has no permissions to run the '…'
/// command" or "… to access one of the keys used as arguments" (Redis 7.0, `src/acl.c`,
/// `addACLLogEntry`/`rejectCommand`). fred passes it on as an `Unknown` kind with the reply
/// as its text, which is searched rather than prefix-matched, so that a refusal quoted
/// inside another error's text counts too.
const NO_PERMISSION: &str = "NOPERM";

/// Replies that say the server cannot serve the command yet, not that it is wrong; fred
/// passes them on as the `Unknown` kind. `TRYAGAIN`: a multi-key command whose keys are
/// split by a slot migration; `LOADING`: a restarted server still reading its data;
/// `READONLY`: a write that reached a replica (a failover under way); `MASTERDOWN`: a
/// replica cut off from its primary.
const TRANSIENT_REPLIES: [&str; 4] = ["TRYAGAIN", "LOADING", "READONLY", "MASTERDOWN"];

/// Maps the error of a command on `key` (empty when it concerns none) that ran for
/// `waited`; the store handle names the call ([`Error::in_call`]).
pub(crate) fn map_error(key: &str, waited: Duration, err: ClientError) -> Error {
    map(key, Some(waited), err)
}

/// Maps an error of building or connecting a client: failing to reach the server in any
/// way applied nothing.
pub(crate) fn map_connect_error(err: ClientError) -> Error {
    map("", None, err)
}

/// `waited` is `None` while connecting.
fn map(key: &str, waited: Option<Duration>, err: ClientError) -> Error {
    let key = key.to_owned();
    // fred keeps a TLS error's text only (the `Debug` text of the I/O or rustls error).
    if matches!(err.kind(), ClientKind::IO | ClientKind::Tls) && text_is_certificate_failure(err.details()) {
        return Error::tls_verification(REDIS, key, err);
    }
    if err.details().contains(NO_PERMISSION) {
        return Error::permission_denied(REDIS, key, err);
    }
    if TRANSIENT_REPLIES.iter().any(|code| err.details().starts_with(code)) {
        return Error::backend(REDIS, key, true, err);
    }
    match err.kind() {
        ClientKind::Canceled if err.details() == NOT_SENT => Error::not_reachable(REDIS, key, err),
        ClientKind::IO | ClientKind::Canceled => match waited {
            None => Error::not_reachable(REDIS, key, err),
            Some(waited) => Error::outcome_unknown(REDIS, key, waited, err),
        },
        ClientKind::Timeout => Error::backend(REDIS, key, true, err),
        ClientKind::Auth => Error::unauthenticated(REDIS, key, err),
        ClientKind::Config | ClientKind::Url | ClientKind::Tls => Error::config(REDIS, "config", err.to_string()),
        // fred cannot follow an ASK redirection: a command on a key whose hash slot is
        // migrating fails once its attempts run out, before it ran anywhere.
        ClientKind::Routing => Error::backend(
            REDIS,
            key,
            true,
            format!("{err} (the key's hash slot may be migrating between cluster nodes)"),
        ),
        ClientKind::Cluster | ClientKind::Sentinel | ClientKind::Backpressure => Error::backend(REDIS, key, true, err),
        _ => Error::backend(REDIS, key, false, err),
    }
}

#[cfg(test)]
mod tests {
    use valkeyrie_core::ErrorKind;

    use super::*;

    const WAITED: Duration = Duration::from_millis(25);

    #[test]
    fn a_command_cut_off_by_a_broken_connection_has_an_unknown_outcome() {
        let cut_off = [
            ClientError::new(ClientKind::IO, "Connection closed."),
            ClientError::new(ClientKind::IO, "Broken pipe (os error 32)"),
            ClientError::new_canceled(),
        ];
        for err in cut_off {
            let shown = err.to_string();
            let err = map_error("k", WAITED, err);
            assert_eq!(err.kind(), ErrorKind::Timeout, "{shown} became {err}");
            assert!(err.is_temporary());
            assert_eq!(err.key(), Some("k"));
        }
    }

    #[test]
    fn a_command_refused_before_it_was_written_or_a_failed_connect_is_not_reachable() {
        let refused = map_error("k", WAITED, ClientError::new(ClientKind::Canceled, NOT_SENT));
        assert_eq!(refused.kind(), ErrorKind::NotReachable, "{refused}");
        let connecting = map_connect_error(ClientError::new(ClientKind::IO, "Connection refused (os error 111)"));
        assert_eq!(connecting.kind(), ErrorKind::NotReachable, "{connecting}");
    }

    #[test]
    fn refusals_stay_permanent() {
        let denied = map_error(
            "k",
            WAITED,
            ClientError::new(
                ClientKind::Unknown,
                "NOPERM this user has no permissions to run the 'set' command",
            ),
        );
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied, "{denied}");
        let auth = map_error("k", WAITED, ClientError::new(ClientKind::Auth, "WRONGPASS"));
        assert_eq!(auth.kind(), ErrorKind::Unauthenticated, "{auth}");
        assert!(!auth.is_temporary());
    }
}
