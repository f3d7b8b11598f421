//! The one place fred's errors become ours.

use fred::error::{Error as ClientError, ErrorKind as ClientKind};
use valkeyrie_core::Error;

use crate::REDIS;

/// Maps an error of the client during `call` on `key`.
pub(crate) fn map_error(call: &'static str, key: &str, err: ClientError) -> Error {
    let key = key.to_owned();
    match err.kind() {
        ClientKind::IO | ClientKind::Canceled => Error::NotReachable {
            store: REDIS,
            call,
            key,
            source: Box::new(err),
        },
        ClientKind::Timeout => Error::backend(REDIS, call, key, true, err),
        ClientKind::Auth => Error::backend(REDIS, call, key, false, err),
        ClientKind::Config | ClientKind::Url | ClientKind::Tls => Error::config(REDIS, "config", err.to_string()),
        ClientKind::Cluster | ClientKind::Routing | ClientKind::Sentinel | ClientKind::Backpressure => {
            Error::backend(REDIS, call, key, true, err)
        }
        _ => Error::backend(REDIS, call, key, false, err),
    }
}
