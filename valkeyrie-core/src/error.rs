//! The one error type of the library.
//!
//! Every variant that concerns a key carries the store name and the key, so a
//! message such as `etcd: key "config/db" was modified` can be acted on without
//! a backtrace. Callers match on the variant (or on [`Error::kind`]) and ask
//! [`Error::status`] (or [`Error::is_temporary`]) whether retrying can help: an error is
//! temporary, permanent, or persistent — temporary by nature, but the library already
//! retried it for as long as a setting allows and gave up, so an outer retry loop should not
//! simply try again at once. Backend errors keep their source, so
//! `std::error::Error::source` walks down to the client's error.
//!
//! Errors never contain values or secrets: only store names, keys, field names
//! and the text of the underlying error.

use std::time::Duration;

/// Shorthand for `Result<T, valkeyrie_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The source error kept by [`Error::Backend`] and [`Error::NotReachable`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a held lock was lost; carried by [`Error::LockLost`] and the lock guard's lost signal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// The session, lease or TTL behind the lock expired before it was renewed.
    Expired,
    /// The lock's record was deleted or taken over by someone else.
    RecordDeleted,
    /// Renewing the lock failed; the text says why.
    RenewalFailed(String),
    /// The store handle that held the lock was closed.
    StoreClosed,
    /// The holder released it (unlock or guard dropped).
    Released,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LostReason::Expired => f.write_str("its session or TTL expired"),
            LostReason::RecordDeleted => f.write_str("its record was deleted or taken over"),
            LostReason::RenewalFailed(why) => write!(f, "renewal failed: {why}"),
            LostReason::StoreClosed => f.write_str("the store was closed"),
            LostReason::Released => f.write_str("it was released"),
        }
    }
}

/// Whether retrying a failed call can help; see [`Error::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorStatus {
    /// Retrying the same call later may succeed: network trouble, a timeout, contention.
    Temporary,
    /// Retrying cannot help: a logic error (a bad key, a missing key), or a refusal of
    /// credentials, permissions or certificates.
    Permanent,
    /// Temporary by nature, but the library already retried it (for as long as a setting
    /// such as `watch_retry_for` allows, or for a number of attempts) and gave up: the
    /// trouble has lasted; retrying at once is unlikely to help.
    Persistent,
}

/// What went wrong, without the context: handy for `match` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::KeyNotFound`].
    KeyNotFound,
    /// See [`Error::KeyModified`].
    KeyModified,
    /// See [`Error::KeyExists`].
    KeyExists,
    /// See [`Error::PreviousNotSpecified`].
    PreviousNotSpecified,
    /// See [`Error::CallNotSupported`].
    CallNotSupported,
    /// See [`Error::NotReachable`].
    NotReachable,
    /// See [`Error::CannotLock`].
    CannotLock,
    /// See [`Error::LockLost`].
    LockLost,
    /// See [`Error::LockNotHeld`].
    LockNotHeld,
    /// See [`Error::InvalidTransaction`].
    InvalidTransaction,
    /// See [`Error::UnknownStore`].
    UnknownStore,
    /// See [`Error::InvalidConfiguration`].
    InvalidConfiguration,
    /// See [`Error::InvalidKey`].
    InvalidKey,
    /// See [`Error::ValueTooLarge`].
    ValueTooLarge,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::Unauthenticated`].
    Unauthenticated,
    /// See [`Error::PermissionDenied`].
    PermissionDenied,
    /// See [`Error::TlsVerification`].
    TlsVerification,
    /// See [`Error::Closed`].
    Closed,
    /// See [`Error::Backend`].
    Backend,
}

impl ErrorKind {
    /// The kind in snake case (`"key_not_found"`, `"timeout"`, …): stable, for metric
    /// labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::KeyNotFound => "key_not_found",
            ErrorKind::KeyModified => "key_modified",
            ErrorKind::KeyExists => "key_exists",
            ErrorKind::PreviousNotSpecified => "previous_not_specified",
            ErrorKind::CallNotSupported => "call_not_supported",
            ErrorKind::NotReachable => "not_reachable",
            ErrorKind::CannotLock => "cannot_lock",
            ErrorKind::LockLost => "lock_lost",
            ErrorKind::LockNotHeld => "lock_not_held",
            ErrorKind::InvalidTransaction => "invalid_transaction",
            ErrorKind::UnknownStore => "unknown_store",
            ErrorKind::InvalidConfiguration => "invalid_configuration",
            ErrorKind::InvalidKey => "invalid_key",
            ErrorKind::ValueTooLarge => "value_too_large",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::TlsVerification => "tls_verification",
            ErrorKind::Closed => "closed",
            ErrorKind::Backend => "backend",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error the library returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key (or, for `list`/`delete_tree`, the directory and everything below it) does not exist.
    #[error("{store}: key {key:?} not found")]
    KeyNotFound {
        /// Store name.
        store: &'static str,
        /// The key concerned.
        key: String,
    },
    /// An atomic call's `previous` no longer matches: someone wrote the key in between.
    #[error("{store}: key {key:?} was modified since the given index")]
    KeyModified {
        /// Store name.
        store: &'static str,
        /// The key concerned.
        key: String,
    },
    /// `atomic_put` with no previous pair (create only) found the key already there.
    #[error("{store}: key {key:?} already exists")]
    KeyExists {
        /// Store name.
        store: &'static str,
        /// The key concerned.
        key: String,
    },
    /// An atomic call was given a previous pair without an index (`last_index == 0`).
    #[error("{store}: atomic call on key {key:?} needs a previous pair read from the store (last_index is 0)")]
    PreviousNotSpecified {
        /// Store name.
        store: &'static str,
        /// The key concerned.
        key: String,
    },
    /// This backend does not implement the call; [`crate::Capabilities`] says so too.
    #[error("{store}: {call} is not supported by this backend{}", on_key(key))]
    CallNotSupported {
        /// Store name.
        store: &'static str,
        /// The call, such as `"watch"`.
        call: &'static str,
        /// The key concerned.
        key: String,
    },
    /// The server could not be reached (connection refused, DNS, TLS handshake, ...).
    #[error("{store}: server not reachable{}{}: {source}", during(call), on_key(key))]
    NotReachable {
        /// Store name.
        store: &'static str,
        /// The call that failed (empty until the store handle names it: see
        /// [`Error::in_call`]).
        call: &'static str,
        /// The key concerned (empty when connecting).
        key: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The lock could not be taken for a reason other than contention.
    #[error("{store}: cannot lock {key:?}: {reason}")]
    CannotLock {
        /// Store name.
        store: &'static str,
        /// The lock's key.
        key: String,
        /// Why, in words.
        reason: String,
    },
    /// A lock held by this process was lost.
    #[error("{store}: lock on {key:?} was lost: {reason}")]
    LockLost {
        /// Store name.
        store: &'static str,
        /// The lock's key.
        key: String,
        /// Why it was lost.
        reason: LostReason,
    },
    /// A fenced write ([`Store::put_if_held`](crate::Store::put_if_held)) was refused by the
    /// store: the acquisition of the lock it was fenced with is over. Nothing was written.
    #[error("{store}: write to {key:?} refused: the lock on {lock:?} is no longer held by this acquisition")]
    LockNotHeld {
        /// Store name.
        store: &'static str,
        /// The key the write was for.
        key: String,
        /// The lock's key.
        lock: String,
    },
    /// A transaction breaks a rule checked before sending (two operations on one key, too
    /// many operations for the backend, a fence of another store); nothing was sent.
    #[error("{store}: invalid transaction at {key:?}: {reason}")]
    InvalidTransaction {
        /// Store name.
        store: &'static str,
        /// The key at fault (the first key of the transaction when no key is).
        key: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// No backend with this name is registered (its crate is not linked).
    #[error(
        "unknown store {name:?}; registered stores: [{}]; link the backend crate (for example `use valkeyrie_etcd as _;`)",
        registered.join(", ")
    )]
    UnknownStore {
        /// The name asked for.
        name: String,
        /// The names that are registered, sorted.
        registered: Vec<String>,
    },
    /// A configuration value, URL parameter or endpoint is wrong.
    #[error("{store}: invalid configuration for {field:?}: {reason}")]
    InvalidConfiguration {
        /// Store name.
        store: &'static str,
        /// The field or URL parameter at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key breaks the key rules (see [`crate::key`]); nothing was sent.
    #[error("{store}: invalid key {key:?}: {reason}")]
    InvalidKey {
        /// Store name.
        store: &'static str,
        /// The key as given.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The value is larger than this backend can hold; nothing was written.
    #[error("{store}: value for {key:?} is {size} bytes, over this backend's limit of {limit} bytes")]
    ValueTooLarge {
        /// Store name.
        store: &'static str,
        /// The key concerned.
        key: String,
        /// Size of the rejected value.
        size: usize,
        /// The backend's limit.
        limit: usize,
    },
    /// The call did not finish in time, or its connection failed after the request may
    /// have reached the server: either way a write may or may not have been applied (read
    /// the key to learn which). Temporary.
    #[error("{store}: {}{} timed out after {after:?}{}", call_name(call), on_key(key), unknown_outcome_note(source.as_ref()))]
    Timeout {
        /// Store name.
        store: &'static str,
        /// The call that timed out (empty until the store handle names it).
        call: &'static str,
        /// The key concerned.
        key: String,
        /// How long it waited.
        after: Duration,
        /// What ended the request early, when it was not the deadline (a connection reset
        /// after the request was written, say).
        #[source]
        source: Option<BoxError>,
    },
    /// The store refused the credentials: a wrong user name or password, an unknown token,
    /// or an expired one that could not be renewed. Permanent: retrying with the same
    /// credentials fails the same way. The message never holds the credentials.
    #[error("{store}: authentication failed{}{}: {source}", during(call), on_key(key))]
    Unauthenticated {
        /// Store name.
        store: &'static str,
        /// The call that failed (empty until the store handle names it: see
        /// [`Error::in_call`]).
        call: &'static str,
        /// The key concerned (empty when connecting).
        key: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The credentials are valid but not allowed this call on this key (an ACL, a role, a
    /// policy refused it). Permanent; nothing was written.
    #[error("{store}: permission denied for {}{}: {source}", call_name(call), on_key(key))]
    PermissionDenied {
        /// Store name.
        store: &'static str,
        /// The call refused (empty until the store handle names it).
        call: &'static str,
        /// The key concerned (empty when the call concerns none).
        key: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The TLS handshake failed on a certificate: the server's could not be verified
    /// (unknown CA, expired, another name), or the server refused the client's (missing,
    /// unknown or expired). Permanent: a configuration mistake, not a network fault.
    #[error("{store}: TLS verification failed{}{}: {source}", during(call), on_key(key))]
    TlsVerification {
        /// Store name.
        store: &'static str,
        /// The call that failed (empty until the store handle names it: see
        /// [`Error::in_call`]).
        call: &'static str,
        /// The key concerned (empty when connecting).
        key: String,
        /// The TLS library's error.
        #[source]
        source: BoxError,
    },
    /// The store handle was closed; open a new one.
    #[error("{store}: store handle is closed ({}{})", call_name(call), on_key(key))]
    Closed {
        /// Store name.
        store: &'static str,
        /// The call refused (empty until the store handle names it).
        call: &'static str,
        /// The key concerned.
        key: String,
    },
    /// Any other error of the backend's client, kept as the source.
    #[error("{store}: {}{} failed: {source}", call_name(call), on_key(key))]
    Backend {
        /// Store name.
        store: &'static str,
        /// The call that failed (empty until the store handle names it: see
        /// [`Error::in_call`]).
        call: &'static str,
        /// The key concerned.
        key: String,
        /// Whether retrying the same call may succeed.
        status: ErrorStatus,
        /// The client's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// The variant without its context.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::KeyNotFound { .. } => ErrorKind::KeyNotFound,
            Error::KeyModified { .. } => ErrorKind::KeyModified,
            Error::KeyExists { .. } => ErrorKind::KeyExists,
            Error::PreviousNotSpecified { .. } => ErrorKind::PreviousNotSpecified,
            Error::CallNotSupported { .. } => ErrorKind::CallNotSupported,
            Error::NotReachable { .. } => ErrorKind::NotReachable,
            Error::CannotLock { .. } => ErrorKind::CannotLock,
            Error::LockLost { .. } => ErrorKind::LockLost,
            Error::LockNotHeld { .. } => ErrorKind::LockNotHeld,
            Error::InvalidTransaction { .. } => ErrorKind::InvalidTransaction,
            Error::UnknownStore { .. } => ErrorKind::UnknownStore,
            Error::InvalidConfiguration { .. } => ErrorKind::InvalidConfiguration,
            Error::InvalidKey { .. } => ErrorKind::InvalidKey,
            Error::ValueTooLarge { .. } => ErrorKind::ValueTooLarge,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Unauthenticated { .. } => ErrorKind::Unauthenticated,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::TlsVerification { .. } => ErrorKind::TlsVerification,
            Error::Closed { .. } => ErrorKind::Closed,
            Error::Backend { .. } => ErrorKind::Backend,
        }
    }

    /// The store the error concerns (for [`Error::UnknownStore`], the name asked for).
    pub fn store(&self) -> &str {
        match self {
            Error::UnknownStore { name, .. } => name,
            Error::KeyNotFound { store, .. }
            | Error::KeyModified { store, .. }
            | Error::KeyExists { store, .. }
            | Error::PreviousNotSpecified { store, .. }
            | Error::CallNotSupported { store, .. }
            | Error::NotReachable { store, .. }
            | Error::CannotLock { store, .. }
            | Error::LockLost { store, .. }
            | Error::LockNotHeld { store, .. }
            | Error::InvalidTransaction { store, .. }
            | Error::InvalidConfiguration { store, .. }
            | Error::InvalidKey { store, .. }
            | Error::ValueTooLarge { store, .. }
            | Error::Timeout { store, .. }
            | Error::Unauthenticated { store, .. }
            | Error::PermissionDenied { store, .. }
            | Error::TlsVerification { store, .. }
            | Error::Closed { store, .. }
            | Error::Backend { store, .. } => store,
        }
    }

    /// The key the error concerns, if it concerns one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::UnknownStore { .. } | Error::InvalidConfiguration { .. } => None,
            Error::KeyNotFound { key, .. }
            | Error::KeyModified { key, .. }
            | Error::KeyExists { key, .. }
            | Error::PreviousNotSpecified { key, .. }
            | Error::CannotLock { key, .. }
            | Error::LockLost { key, .. }
            | Error::LockNotHeld { key, .. }
            | Error::InvalidTransaction { key, .. }
            | Error::InvalidKey { key, .. }
            | Error::ValueTooLarge { key, .. } => Some(key),
            // Empty for a call that concerns no key (connecting, closing).
            Error::CallNotSupported { key, .. }
            | Error::NotReachable { key, .. }
            | Error::Timeout { key, .. }
            | Error::Closed { key, .. }
            | Error::Backend { key, .. }
            | Error::Unauthenticated { key, .. }
            | Error::PermissionDenied { key, .. }
            | Error::TlsVerification { key, .. } => (!key.is_empty()).then_some(key.as_str()),
        }
    }

    /// Whether retrying can help: see [`ErrorStatus`]. Network trouble and timeouts are
    /// temporary; logic errors such as [`Error::InvalidKey`], and refusals of credentials,
    /// permissions or certificates, are permanent; a backend error says which it is.
    pub fn status(&self) -> ErrorStatus {
        match self {
            Error::NotReachable { .. } | Error::Timeout { .. } => ErrorStatus::Temporary,
            Error::Backend { status, .. } => *status,
            _ => ErrorStatus::Permanent,
        }
    }

    /// Whether retrying the same call later may succeed: [`ErrorStatus::Temporary`] only
    /// (not an error the library already retried and gave up on).
    pub fn is_temporary(&self) -> bool {
        self.status() == ErrorStatus::Temporary
    }

    /// Builds [`Error::KeyNotFound`].
    pub fn not_found(store: &'static str, key: impl Into<String>) -> Self {
        Error::KeyNotFound { store, key: key.into() }
    }

    /// Builds [`Error::KeyModified`].
    pub fn modified(store: &'static str, key: impl Into<String>) -> Self {
        Error::KeyModified { store, key: key.into() }
    }

    /// Builds [`Error::KeyExists`].
    pub fn exists(store: &'static str, key: impl Into<String>) -> Self {
        Error::KeyExists { store, key: key.into() }
    }

    /// Builds [`Error::InvalidConfiguration`].
    pub fn config(store: &'static str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfiguration {
            store,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Builds [`Error::Unauthenticated`] for `key` (empty when the call concerns none).
    pub fn unauthenticated(store: &'static str, key: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unauthenticated {
            store,
            call: "",
            key: key.into(),
            source: source.into(),
        }
    }

    /// Builds [`Error::PermissionDenied`] for `key` (empty when the call concerns none).
    pub fn permission_denied(store: &'static str, key: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::PermissionDenied {
            store,
            call: "",
            key: key.into(),
            source: source.into(),
        }
    }

    /// Builds [`Error::TlsVerification`] for `key` (empty when the call concerns none).
    pub fn tls_verification(store: &'static str, key: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::TlsVerification {
            store,
            call: "",
            key: key.into(),
            source: source.into(),
        }
    }

    /// Builds [`Error::NotReachable`] for `key` (empty when the call concerns none).
    pub fn not_reachable(store: &'static str, key: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::NotReachable {
            store,
            call: "",
            key: key.into(),
            source: source.into(),
        }
    }

    /// Builds [`Error::Timeout`]: a request on `key` (empty when it concerns none) that did
    /// not finish within `after`.
    pub fn timeout(store: &'static str, key: impl Into<String>, after: Duration) -> Self {
        Error::Timeout {
            store,
            call: "",
            key: key.into(),
            after,
            source: None,
        }
    }

    /// Builds [`Error::Timeout`] for a request on `key` (empty when it concerns none) that
    /// failed after `after` for a reason other than its deadline, once it may have reached
    /// the server (the connection broke, the answer was lost): its outcome is unknown. The
    /// message keeps `source`. Backends return [`Error::NotReachable`] only for a request
    /// certainly not sent, which a retry cannot apply twice.
    pub fn outcome_unknown(
        store: &'static str,
        key: impl Into<String>,
        after: Duration,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Timeout {
            store,
            call: "",
            key: key.into(),
            after,
            source: Some(source.into()),
        }
    }

    /// Builds [`Error::Closed`]: a request on `key` (empty when it concerns none) after the
    /// handle was closed.
    pub fn closed(store: &'static str, key: impl Into<String>) -> Self {
        Error::Closed {
            store,
            call: "",
            key: key.into(),
        }
    }

    /// Builds [`Error::Backend`] from a client error on `key` (empty when the call concerns
    /// none), [temporary](ErrorStatus::Temporary) or [permanent](ErrorStatus::Permanent).
    pub fn backend(store: &'static str, key: impl Into<String>, temporary: bool, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            store,
            call: "",
            key: key.into(),
            status: if temporary {
                ErrorStatus::Temporary
            } else {
                ErrorStatus::Permanent
            },
            source: source.into(),
        }
    }

    /// This error as the call `call` on `key` reports it: the call and the key are filled in
    /// where the error does not name them yet, and kept where it does (a backend may name
    /// the one key of a multi-key call that failed). The store handle stamps every error of
    /// its calls, so a backend builds errors without naming the call; work a backend runs
    /// on its own (a renewal, a watch) is stamped by the kit that runs it.
    #[must_use]
    pub fn in_call(mut self, call: &'static str, key: &str) -> Self {
        let (named_call, named_key) = match &mut self {
            Error::CallNotSupported { call, key, .. }
            | Error::NotReachable { call, key, .. }
            | Error::Timeout { call, key, .. }
            | Error::Unauthenticated { call, key, .. }
            | Error::PermissionDenied { call, key, .. }
            | Error::TlsVerification { call, key, .. }
            | Error::Closed { call, key, .. }
            | Error::Backend { call, key, .. } => (call, key),
            _ => return self,
        };
        if named_call.is_empty() {
            *named_call = call;
        }
        if named_key.is_empty() && !key.is_empty() {
            key.clone_into(named_key);
        }
        self
    }

    /// This error once the library has retried it for `retried` and gives up: a temporary
    /// error becomes [persistent](ErrorStatus::Persistent), with the time in its message
    /// (and the original as its source, for an error that was not a backend error); any
    /// other error stays as it is.
    #[must_use]
    pub fn persisted(self, retried: Duration) -> Error {
        match self {
            Error::Backend {
                store,
                call,
                key,
                status: ErrorStatus::Temporary,
                source,
            } => Error::gave_up(
                store,
                key,
                format!("still failing after {retried:?} of retries: {source}"),
            )
            .in_call(call, ""),
            Error::NotReachable {
                store, call, ref key, ..
            }
            | Error::Timeout {
                store, call, ref key, ..
            } => {
                let key = key.clone();
                Error::gave_up(store, key, GaveUp { retried, last: self }).in_call(call, "")
            }
            other => other,
        }
    }

    /// Builds a persistent [`Error::Backend`]: a temporary trouble the library retried by
    /// itself and gave up on; `source` says for how long or how many times, and the last
    /// failure.
    pub fn gave_up(store: &'static str, key: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            store,
            call: "",
            key: key.into(),
            status: ErrorStatus::Persistent,
            source: source.into(),
        }
    }
}

/// A client's error with a one-line message for people: `Display` is the summary,
/// `source()` the client's error with all its detail. For clients whose own messages are
/// multi-level debug dumps.
#[derive(Debug)]
pub struct Summarized {
    summary: String,
    source: BoxError,
}

impl Summarized {
    /// `source`, shown as `summary`.
    pub fn new(summary: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Summarized {
            summary: summary.into(),
            source: source.into(),
        }
    }

    /// `source`, shown as [`one_line`] makes its chain of sources.
    pub fn chain(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Summarized {
            summary: one_line(source.as_ref()),
            source,
        }
    }
}

/// The messages of `err` and its chain of sources on one line, each only once (a wrapper
/// that repeats its cause's text adds nothing): `a: b: c`.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

impl std::fmt::Display for Summarized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::error::Error for Summarized {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// The source of a persistent error made from a temporary one that was not a backend error.
#[derive(Debug)]
struct GaveUp {
    retried: Duration,
    last: Error,
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "still failing after {:?} of retries: {}", self.retried, self.last)
    }
}

impl std::error::Error for GaveUp {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.last)
    }
}

/// A call's name in a message; "request" for an error no call has stamped (see
/// [`Error::in_call`]).
fn call_name(call: &str) -> &str {
    if call.is_empty() {
        "request"
    } else {
        call
    }
}

/// " during <call>", or nothing for an error no call has stamped.
fn during(call: &str) -> String {
    if call.is_empty() {
        String::new()
    } else {
        format!(" during {call}")
    }
}

/// ` (outcome unknown: …)` for a timeout that a failure ended early, or nothing.
fn unknown_outcome_note(source: Option<&BoxError>) -> String {
    source.map_or_else(String::new, |source| {
        format!(" (outcome unknown: {})", one_line(source.as_ref()))
    })
}

/// ` on "key"`, or nothing for an error that concerns no key.
fn on_key(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" on {key:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_store_and_key() {
        let err = Error::modified("etcd", "config/db");
        assert_eq!(
            err.to_string(),
            "etcd: key \"config/db\" was modified since the given index"
        );
        assert_eq!(err.store(), "etcd");
        assert_eq!(err.key(), Some("config/db"));
        assert_eq!(err.kind(), ErrorKind::KeyModified);
        assert!(!err.is_temporary());
    }

    #[test]
    fn a_call_on_no_key_says_nothing_about_a_key() {
        let err = Error::NotReachable {
            store: "consul",
            call: "connect",
            key: String::new(),
            source: "connection refused".into(),
        };
        assert_eq!(
            err.to_string(),
            "consul: server not reachable during connect: connection refused"
        );
        assert_eq!(err.key(), None);
        let on_key = Error::backend("etcd", "a/b", true, "no leader").in_call("put", "a/b");
        assert_eq!(on_key.to_string(), "etcd: put on \"a/b\" failed: no leader");
        assert_eq!(on_key.key(), Some("a/b"));
    }

    #[test]
    fn the_handle_stamps_the_call_and_fills_a_missing_key() {
        let unstamped = Error::timeout("zookeeper", "", Duration::from_secs(1));
        assert_eq!(unstamped.to_string(), "zookeeper: request timed out after 1s");
        let stamped = unstamped.in_call("get", "a/b");
        assert_eq!(stamped.to_string(), "zookeeper: get on \"a/b\" timed out after 1s");
        let named = Error::backend("etcd", "k2", true, "no leader").in_call("get_many", "k1");
        assert_eq!(named.key(), Some("k2"), "the key the backend named is kept");
        let again = named.in_call("other", "k3");
        assert!(
            again.to_string().starts_with("etcd: get_many on"),
            "the first stamp stays: {again}"
        );
        let unrelated = Error::not_found("etcd", "k").in_call("get", "other");
        assert_eq!(unrelated.key(), Some("k"));
    }

    #[test]
    fn a_summary_is_one_line_and_keeps_the_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let wrapped = Summarized::new("tcp connect error", io);
        let outer = Summarized::chain(Summarized::new("transport error", wrapped));
        assert_eq!(
            outer.to_string(),
            "transport error: tcp connect error: Connection refused"
        );
        let mut depth = 0;
        let mut next = std::error::Error::source(&outer);
        while let Some(err) = next {
            depth += 1;
            next = err.source();
        }
        assert_eq!(depth, 3, "the whole chain stays reachable through source()");
    }

    #[test]
    fn unknown_store_lists_registered_and_hints_linking() {
        let err = Error::UnknownStore {
            name: "etcdv2".into(),
            registered: vec!["boltlike".into(), "memory".into()],
        };
        let text = err.to_string();
        assert!(text.contains("[boltlike, memory]"), "{text}");
        assert!(text.contains("use valkeyrie_etcd as _;"), "{text}");
    }

    #[test]
    fn backend_errors_keep_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let err = Error::backend("redis", "a", true, io);
        assert!(err.is_temporary());
        let source = std::error::Error::source(&err).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("reset"));
    }

    #[test]
    fn refusals_are_permanent_and_name_what_they_concern() {
        let refused = [
            Error::unauthenticated("etcd", "", "authentication failed").in_call("connect", ""),
            Error::permission_denied("redis", "other/x", "NOPERM").in_call("put", "x"),
            Error::tls_verification("consul", "", "invalid peer certificate: UnknownIssuer"),
        ];
        for err in &refused {
            assert!(!err.is_temporary(), "{err}");
        }
        assert_eq!(refused[0].kind(), ErrorKind::Unauthenticated);
        assert_eq!(refused[0].key(), None);
        assert_eq!(
            refused[0].to_string(),
            "etcd: authentication failed during connect: authentication failed"
        );
        assert_eq!(refused[1].key(), Some("other/x"));
        assert_eq!(
            refused[1].to_string(),
            "redis: permission denied for put on \"other/x\": NOPERM"
        );
        assert!(refused[2].to_string().contains("TLS verification failed"));
    }

    #[test]
    fn given_up_errors_are_persistent_not_temporary() {
        let retried = Duration::from_secs(60);
        let unreachable = Error::NotReachable {
            store: "etcd",
            call: "watch",
            key: "k".into(),
            source: "connection refused".into(),
        };
        assert_eq!(unreachable.status(), ErrorStatus::Temporary);
        let persistent = unreachable.persisted(retried);
        assert_eq!(persistent.status(), ErrorStatus::Persistent);
        assert!(!persistent.is_temporary());
        assert_eq!(persistent.key(), Some("k"));
        assert!(
            persistent.to_string().contains("still failing after 60s"),
            "{persistent}"
        );
        let backend = Error::backend("consul", "k", true, "EOF").persisted(retried);
        assert_eq!(backend.status(), ErrorStatus::Persistent);
        let permanent = Error::not_found("redis", "k");
        assert_eq!(permanent.status(), ErrorStatus::Permanent);
        assert_eq!(permanent.persisted(retried).status(), ErrorStatus::Permanent);
    }
}
