//! [`within`]: one request bounded by a deadline, the way every backend runs its requests.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

/// Runs `request` on `key` of `store` (empty when it concerns none), giving up after
/// `deadline` (on tokio's clock) with [`Error::Timeout`], which the store handle stamps
/// with its call ([`Error::in_call`]). Cancel-safe as `request` is: dropping the future
/// drops the request.
///
/// ```
/// # async fn demo() {
/// use std::time::Duration;
/// use valkeyrie_core::raw::deadline;
/// use valkeyrie_core::ErrorKind;
///
/// let slow = async {
///     tokio::time::sleep(Duration::from_secs(60)).await;
///     Ok(())
/// };
/// let err = deadline::within(Duration::from_millis(10), "etcd", "config/mode", slow)
///     .await
///     .unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Timeout);
/// assert_eq!(err.to_string(), "etcd: request on \"config/mode\" timed out after 10ms");
/// assert_eq!(
///     err.in_call("get", "config/mode").to_string(),
///     "etcd: get on \"config/mode\" timed out after 10ms"
/// );
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo());
/// ```
pub async fn within<T>(
    deadline: Duration,
    store: &'static str,
    key: &str,
    request: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(deadline, request).await {
        Ok(result) => result,
        Err(_) => Err(Error::timeout(store, key, deadline)),
    }
}
