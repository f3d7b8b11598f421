//! The one place sled's errors become ours.

use std::path::Path;

use valkeyrie_core::{BoxError, Error};

use crate::BOLTLIKE;

/// Maps an error of opening the database at `path`. sled refuses a database that another
/// process holds (it takes an exclusive file lock); say so plainly.
pub(crate) fn open_error(path: &Path, err: sled::Error) -> Error {
    let held_elsewhere = matches!(&err, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock)
        || err.to_string().contains("could not acquire lock");
    if held_elsewhere {
        let reason = format!(
            "the database {} is open in another process; an embedded database belongs to one process \
             (share it within the process by opening the same path again)",
            path.display()
        );
        return Error::backend(BOLTLIKE, "", true, reason);
    }
    Error::backend(BOLTLIKE, "", false, storage_error(err))
}

/// Keeps a sled error as the source of a storage error.
pub(crate) fn storage_error(err: sled::Error) -> BoxError {
    Box::new(err)
}

/// A record that does not decode: the file was written by something else.
pub(crate) fn corrupt(what: &str, key: &str) -> BoxError {
    format!("corrupt {what} record for {key:?}").into()
}
