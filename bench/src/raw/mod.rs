//! The raw side of every comparison: per backend, its client crate doing what the backend
//! does for each operation, with the same data layout, written the way a user calling
//! that client directly would write it.

mod consul;
mod dynamodb;
mod etcd;
mod redis;
mod sled;
mod zookeeper;

use crate::driver::{BenchResult, Driver};
use crate::target::Target;

/// The raw client of `target`'s backend.
pub(crate) async fn connect(target: &Target) -> BenchResult<Box<dyn Driver>> {
    Ok(match target.backend {
        "redis" => Box::new(redis::RawRedis::new(redis::Fred::connect(endpoint(target)?).await?)),
        "redis-cluster" => Box::new(redis::RawRedis::new(
            redis::Fred::connect_cluster(&target.endpoints).await?,
        )),
        "etcd" => Box::new(etcd::RawEtcd::connect(target).await?),
        "zookeeper" => Box::new(zookeeper::RawZookeeper::connect(target).await?),
        "consul" => Box::new(consul::RawConsul::connect(target).await?),
        "dynamodb" => Box::new(dynamodb::RawDynamoDb::connect(target).await?),
        "boltlike" => Box::new(sled::RawSled::connect(target).await?),
        other => return Err(format!("no raw client for {other}")),
    })
}

/// A second raw client of `target`'s backend, where the bench has one, and its name: the
/// same recipes through another client crate, to tell the client's share of the raw side's
/// figures. Redis has redis-rs beside fred.
pub(crate) async fn second(target: &Target) -> BenchResult<Option<(&'static str, Box<dyn Driver>)>> {
    Ok(match target.backend {
        "redis" => {
            let client = redis::RedisRs::connect(endpoint(target)?).await?;
            Some(("redis-rs", Box::new(redis::RawRedis::new(client))))
        }
        _ => None,
    })
}

/// The first endpoint of `target`.
fn endpoint(target: &Target) -> BenchResult<&str> {
    target
        .endpoints
        .first()
        .map(String::as_str)
        .ok_or_else(|| format!("no {} endpoint", target.backend))
}
