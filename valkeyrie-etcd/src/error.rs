//! The one place etcd-client's errors become ours.

use etcd_client::Error as ClientError;
use valkeyrie_core::Error;

use crate::ETCD;

/// Maps an error of the client during `call` on `key`.
pub(crate) fn map_error(call: &'static str, key: &str, err: ClientError) -> Error {
    let key = key.to_owned();
    match &err {
        ClientError::GRpcStatus(status) => {
            use tonic::Code;
            let message = status.message();
            match status.code() {
                Code::Unavailable => Error::NotReachable {
                    store: ETCD,
                    call,
                    key,
                    source: Box::new(err),
                },
                Code::DeadlineExceeded => Error::backend(ETCD, call, key, true, err),
                Code::InvalidArgument if message.contains("too large") => Error::backend(
                    ETCD,
                    call,
                    key,
                    false,
                    "the request is larger than the server's max-request-bytes",
                ),
                Code::ResourceExhausted | Code::Aborted => Error::backend(ETCD, call, key, true, err),
                _ => Error::backend(ETCD, call, key, false, err),
            }
        }
        ClientError::TransportError(_) | ClientError::IoError(_) => Error::NotReachable {
            store: ETCD,
            call,
            key,
            source: Box::new(err),
        },
        ClientError::InvalidArgs(_) | ClientError::InvalidUri(_) | ClientError::EndpointError(_) => {
            Error::config(ETCD, "endpoints", err.to_string())
        }
        ClientError::WatchError(_) | ClientError::LeaseKeepAliveError(_) => Error::backend(ETCD, call, key, true, err),
        _ => Error::backend(ETCD, call, key, false, err),
    }
}
