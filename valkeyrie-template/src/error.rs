//! The one function that maps the client's errors to ours.
//!
//! Keep the distinctions a caller acts on (not found, modified, exists, timeout,
//! unreachable, auth) and keep the client's error as the source of everything else. The
//! stand-in client already speaks valkeyrie errors, labelled with its own store name; they
//! are relabelled with ours.

use valkeyrie_core::{Error, ErrorKind};

use crate::TEMPLATE;

/// Maps an error of the client during `call` on `key`.
pub(crate) fn map_error(call: &'static str, key: &str, err: Error) -> Error {
    let key = key.to_owned();
    match err.kind() {
        ErrorKind::KeyNotFound => Error::not_found(TEMPLATE, key),
        ErrorKind::KeyModified => Error::modified(TEMPLATE, key),
        ErrorKind::KeyExists => Error::exists(TEMPLATE, key),
        ErrorKind::Closed => Error::Closed {
            store: TEMPLATE,
            call,
            key,
        },
        _ => match err {
            Error::LockLost { reason, .. } => Error::LockLost {
                store: TEMPLATE,
                key,
                reason,
            },
            Error::Timeout { after, .. } => Error::Timeout {
                store: TEMPLATE,
                call,
                key,
                after,
            },
            other => {
                let temporary = other.is_temporary();
                Error::backend(TEMPLATE, call, key, temporary, other)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_visible_kinds_survive_and_the_store_is_ours() {
        let err = map_error("get", "a", Error::not_found("memory", "a"));
        assert_eq!((err.kind(), err.store()), (ErrorKind::KeyNotFound, TEMPLATE));
        let err = map_error("get", "a", Error::config("memory", "x", "bad"));
        assert_eq!(err.kind(), ErrorKind::Backend);
        assert!(std::error::Error::source(&err).is_some(), "the client's error is kept");
    }
}
