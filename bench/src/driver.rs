//! What a workload needs from a store: the same few operations, implemented once through
//! valkeyrie ([`crate::through_valkeyrie`]) and once per backend through its raw client
//! ([`crate::raw`]), with the same data layout, so the two can be compared call for call.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

/// A benchmark error: what failed, as text (a benchmark reports and stops, it does not recover).
pub(crate) type BenchError = String;

/// The result of a driver call.
pub(crate) type BenchResult<T> = Result<T, BenchError>;

/// Values a watch delivers, in order: the current value first (if any), then each new one.
pub(crate) type ValueStream = Pin<Box<dyn Stream<Item = BenchResult<Bytes>> + Send>>;

/// One side of a comparison: a store reached through valkeyrie or through a raw client.
#[async_trait]
pub(crate) trait Driver: Send + Sync {
    /// Writes `value` at `key`, creating or replacing it.
    async fn put(&self, key: &str, value: Bytes) -> BenchResult<()>;

    /// Reads the value at `key` (which exists).
    async fn get(&self, key: &str) -> BenchResult<Bytes>;

    /// Reads the value at `key` with the index a compare-and-set needs.
    async fn get_indexed(&self, key: &str) -> BenchResult<(Bytes, u64)>;

    /// Writes `value` at `key` only if its index is still `index`; `false` if it moved.
    async fn compare_and_set(&self, key: &str, value: Bytes, index: u64) -> BenchResult<bool>;

    /// Lists the keys below `dir` with their values; the number of pairs.
    async fn list(&self, dir: &str) -> BenchResult<usize>;

    /// Watches `key`, which exists.
    async fn watch(&self, key: &str) -> BenchResult<ValueStream>;

    /// Takes the lock at `key` (waiting while another holds it), then releases it.
    async fn lock_cycle(&self, key: &str) -> BenchResult<()>;

    /// Whether this driver reads the store the valkeyrie side writes, so that both can list
    /// one directory written once. An embedded database opened apart does not.
    fn shares_the_store(&self) -> bool {
        true
    }
}
