//! The conformance suite: one behaviour suite, written once, run by every backend against
//! its real server (feature `testsuite`).
//!
//! A backend's test file implements [`TestTarget`] (how to open a handle on the store under
//! test, and how to take a lock away from its holder as the server would) and invokes
//! [`conformance_suite!`](crate::conformance_suite), which expands to one `#[tokio::test]` per
//! case so a report names what failed:
//!
//! ```ignore
//! struct Target;
//!
//! #[async_trait::async_trait]
//! impl valkeyrie_core::testsuite::TestTarget for Target {
//!     async fn open(&self) -> std::sync::Arc<dyn valkeyrie_core::Store> { /* … */ }
//!     async fn revoke_lock(&self, key: &str, how: valkeyrie_core::LockRevocation) { /* … */ }
//! }
//!
//! valkeyrie_core::conformance_suite!(Target);
//! ```
//!
//! Every case works under its own unique key prefix, so cases run in parallel and reruns
//! never collide, and deletes that prefix when it passes. It covers every case of the Go
//! library's testsuite, and more: invalid keys, binary and empty values, value limits,
//! non-ASCII keys, contention on one counter, mutual exclusion with fencing tokens, lost-lock
//! signals, watch cancellation without leaks, transactions and fenced writes, and capability
//! honesty. A call the backend does not claim in [`Capabilities`](crate::Capabilities) must fail with `CallNotSupported`.

mod batch;
mod cases;
mod layered;
mod leadership;
pub mod limits;
mod resume;
mod support;
mod transactions;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use batch::*;
pub use cases::*;
pub use layered::{ErrorsNameTheirCall, Layered};
pub use leadership::*;
pub use limits::ttls_and_indexes_at_their_limits;
pub use resume::*;
pub use support::Case;
pub use transactions::*;

use crate::raw::local::LockRevocation;
use crate::store::Store;

/// The longest a case may run before it fails as hung (the slowest cases wait for TTLs of
/// backends whose minimum is 10 s).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(180);

/// The store under test, as the conformance suite sees it.
#[async_trait]
pub trait TestTarget: Send + Sync + 'static {
    /// A new handle (a new connection) on the store under test. Handles opened from one
    /// target share the data; closing one must not affect the others. Panics with a
    /// message naming what is missing (for example the endpoint variable) when the server
    /// cannot be reached: a backend test never passes by skipping.
    async fn open(&self) -> Arc<dyn Store>;

    /// Takes the lock on `key` away from its current holder without the holder's help, the
    /// way the server would: [`LockRevocation::DeleteRecord`] deletes the lock record (an
    /// operator clearing it), [`LockRevocation::Expire`] ends the holder's session, lease or
    /// TTL. Panics if that is impossible.
    async fn revoke_lock(&self, key: &str, how: LockRevocation);

    /// How long after its TTL an expiring key or an abandoned lock may still be visible
    /// (server-side reapers run periodically).
    fn expiry_slack(&self) -> Duration {
        Duration::from_secs(3)
    }

    /// The prefix a case's keys go under, given a name unique to the case, the process and
    /// the moment: `vk-conformance/<unique>` by default. A store whose multi-key calls are
    /// atomic only among related keys groups them here: a Redis Cluster target returns
    /// `{vk-conformance/<unique>}`, a hash tag that puts every key of the case in one slot.
    fn case_prefix(&self, unique: &str) -> String {
        format!("vk-conformance/{unique}")
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each on a fresh target built by
/// evaluating `$target` (an expression whose type implements [`TestTarget`]).
#[macro_export]
macro_rules! conformance_suite {
    ($target:expr) => {
        $crate::conformance_suite!(@cases $target;
            put_get_delete_exists, get_missing_key, delete_missing_key, index_changes_on_every_write,
            list, list_excludes_sibling_prefixes, list_excludes_lock_bookkeeping, delete_tree,
            atomic_put, atomic_put_create, atomic_put_slash_suffix_key, atomic_put_missing_key_with_previous,
            atomic_delete, atomic_calls_need_an_index, watch, watch_missing_key_waits, watch_reports_delete,
            watch_tree, watch_tree_missing_dir_waits, watch_reports_expiry, watch_drop_stops,
            lock_unlock, lock_keeps_value_without_delete_on_unlock, try_lock_and_timeout, lock_ttl,
            lock_mutual_exclusion, lock_lost_when_record_deleted, lock_lost_when_session_expires,
            put_ttl, put_ttl_keep_alive, put_without_ttl_clears_ttl, invalid_keys_rejected_before_io,
            empty_and_binary_values, value_too_large, non_ascii_keys, slashes_are_normalized,
            contention_atomic_counter, closed_handle_refuses_calls, unsupported_calls_match_capabilities,
            stale_reads, registered_in_registry, tiny_ttls_are_raised_to_the_minimum,
            leadership_one_leader_at_a_time, leadership_failover, leadership_resign_and_stop,
            leadership_failover_after_crash, txn_all_or_nothing, txn_put_with_ttl,
            txn_rules_checked_before_sending, txn_conflicts_never_both_commit, txn_transfers_keep_the_sum,
            fenced_writes, batch_calls, batch_get_many_is_one_snapshot, list_stream_pages,
            watch_resumes_from_an_index, ttls_and_indexes_at_their_limits
        );
    };
    (@cases $target:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let target = $target;
                let case = $crate::testsuite::$case(&target);
                if tokio::time::timeout($crate::testsuite::CASE_TIMEOUT, case).await.is_err() {
                    panic!("{} did not finish within {:?}: something hangs", stringify!($case), $crate::testsuite::CASE_TIMEOUT);
                }
            }
        )*
    };
}
