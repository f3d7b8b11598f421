//! The one place where HTTP statuses, transport failures and `rs-consul`'s errors become ours.
//!
//! A request no agent could even be connected to is [`Error::NotReachable`]: nothing was
//! sent. One that failed once a connection was made (hyper could not send it whole, the
//! connection broke, the answer's body could not be read) may have been applied: its
//! outcome is unknown, and it is an [`Error::Timeout`].

use std::time::Duration;

use http::StatusCode;
use rs_consul::ConsulError;
use valkeyrie_core::raw::Summarized;
use valkeyrie_core::tls::certificate_failure;
use valkeyrie_core::{BoxError, Error};

use crate::CONSUL;

/// No agent could be connected to (or, while connecting, one failed mid-request); or a
/// certificate was refused during the TLS handshake (either side's), which no retry mends.
pub(crate) fn not_reachable(key: &str, err: impl Into<BoxError>) -> Error {
    let source = err.into();
    // hyper's error says only that the request failed; the rustls error inside says why.
    if let Some(why) = certificate_failure(source.as_ref()) {
        return Error::tls_verification(CONSUL, key, why);
    }
    // hyper's own message is "client error (Connect)": its causes say what happened.
    Error::not_reachable(CONSUL, key, Summarized::chain(source))
}

/// A request on `key` that failed after `waited`, once a connection was made: it may have
/// reached the agent, so its outcome is unknown; or a certificate was refused, as in
/// [`not_reachable`].
pub(crate) fn outcome_unknown(key: &str, waited: Duration, err: impl Into<BoxError>) -> Error {
    let source = err.into();
    if let Some(why) = certificate_failure(source.as_ref()) {
        return Error::tls_verification(CONSUL, key, why);
    }
    Error::outcome_unknown(CONSUL, key, waited, Summarized::chain(source))
}

/// Consul's answer (403) to a token it does not know (`acl.ErrNotFound` in Consul's
/// `acl/errors.go`); any other 403 is a refusal by the token's policies.
const ACL_NOT_FOUND: &str = "ACL not found";

/// An answer other than 200 (or a 404 the caller interprets), with Consul's explanation.
/// `anonymous` says the request carried no token.
pub(crate) fn map_status(key: &str, status: StatusCode, body: &[u8], anonymous: bool) -> Error {
    let said = String::from_utf8_lossy(body);
    let said = said.trim();
    let (temporary, reason) = match status {
        // The anonymous token cannot be deleted, so not finding it means the servers have
        // not loaded their ACL state yet: a restart or a leader election, over in seconds.
        StatusCode::FORBIDDEN if anonymous && said.contains(ACL_NOT_FOUND) => (
            true,
            format!("the agent does not know the anonymous ACL token yet: its servers are still starting ({said})"),
        ),
        StatusCode::FORBIDDEN if said.contains(ACL_NOT_FOUND) => {
            return Error::unauthenticated(
                CONSUL,
                key,
                format!("the ACL token is not one Consul knows: wrong, deleted or expired ({said})"),
            )
        }
        StatusCode::FORBIDDEN => {
            return Error::permission_denied(
                CONSUL,
                key,
                format!("the ACL token's policies do not allow this ({said})"),
            )
        }
        StatusCode::PAYLOAD_TOO_LARGE => (
            false,
            format!("the request is larger than the agent accepts ({said}); see kv_max_value_size and txn_max_req_len"),
        ),
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::INTERNAL_SERVER_ERROR
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => (true, format!("HTTP {status}: {said}")),
        _ => (false, format!("HTTP {status}: {said}")),
    };
    Error::backend(CONSUL, key, temporary, reason)
}

/// Maps an error of `rs-consul` on `key`, for a request that ran for `waited`; `anonymous`
/// as in [`map_status`].
pub(crate) fn map_consul_error(key: &str, err: ConsulError, anonymous: bool, waited: Duration) -> Error {
    match err {
        ConsulError::ResponseError(err) if err.is_connect() => not_reachable(key, err),
        // Sent, or being sent, when it failed; or the answer's body could not be read.
        ConsulError::ResponseError(err) => outcome_unknown(key, waited, err),
        ConsulError::InvalidResponse(err) => outcome_unknown(key, waited, err),
        ConsulError::UnexpectedResponseCode(status, body) => {
            map_status(key, status, body.unwrap_or_default().as_bytes(), anonymous)
        }
        ConsulError::TimeoutExceeded(after) => Error::timeout(CONSUL, key, after),
        other => Error::backend(CONSUL, key, false, other),
    }
}

#[cfg(test)]
mod tests {
    use valkeyrie_core::ErrorKind;

    use super::*;

    #[test]
    fn statuses_say_what_to_do() {
        let denied = map_status("app/x", StatusCode::FORBIDDEN, b"Permission denied", false);
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied, "{denied}");
        assert!(denied.to_string().contains("ACL token"), "{denied}");
        assert!(!denied.is_temporary());
        let unknown = map_status("app/x", StatusCode::FORBIDDEN, b"ACL not found", false);
        assert_eq!(unknown.kind(), ErrorKind::Unauthenticated, "{unknown}");
        assert!(
            !unknown.is_temporary(),
            "a wrong token is not worth retrying: {unknown}"
        );
        let starting = map_status("app/x", StatusCode::FORBIDDEN, b"ACL not found", true);
        assert!(starting.is_temporary(), "{starting}");
        assert!(starting.to_string().contains("still starting"), "{starting}");
        let busy = map_status("app/x", StatusCode::SERVICE_UNAVAILABLE, b"No cluster leader", false);
        assert!(busy.is_temporary());
        assert_eq!(busy.kind(), ErrorKind::Backend);
        assert_eq!(busy.key(), Some("app/x"));
    }
}
