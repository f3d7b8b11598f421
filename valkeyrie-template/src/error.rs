//! The one function that maps the client's errors to ours.
//!
//! Keep the distinctions a caller acts on (not found, modified, exists, timeout,
//! unreachable, auth) and keep the client's error as the source of everything else. Name the
//! key, not the call: the store handle stamps every error with the call it belongs to
//! ([`Error::in_call`]). The stand-in client already speaks valkeyrie errors, labelled with
//! its own store name; they are relabelled with ours.

use valkeyrie_core::{Error, ErrorKind};

use crate::TEMPLATE;

/// Maps an error of the client on `key` (empty when the request concerns none).
pub(crate) fn map_error(key: &str, err: Error) -> Error {
    let key = key.to_owned();
    match err.kind() {
        ErrorKind::KeyNotFound => Error::not_found(TEMPLATE, key),
        ErrorKind::KeyModified => Error::modified(TEMPLATE, key),
        ErrorKind::KeyExists => Error::exists(TEMPLATE, key),
        ErrorKind::Closed => Error::closed(TEMPLATE, key),
        _ => match err {
            Error::LockLost { reason, .. } => Error::LockLost {
                store: TEMPLATE,
                key,
                reason,
            },
            Error::Timeout { after, .. } => Error::timeout(TEMPLATE, key, after),
            other => {
                let temporary = other.is_temporary();
                Error::backend(TEMPLATE, key, temporary, other)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_visible_kinds_survive_and_the_store_is_ours() {
        let err = map_error("a", Error::not_found("memory", "a"));
        assert_eq!((err.kind(), err.store()), (ErrorKind::KeyNotFound, TEMPLATE));
        let err = map_error("a", Error::config("memory", "x", "bad"));
        assert_eq!(err.kind(), ErrorKind::Backend);
        assert!(std::error::Error::source(&err).is_some(), "the client's error is kept");
    }
}
