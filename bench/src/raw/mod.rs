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
        "redis" => Box::new(redis::RawRedis::connect(target).await?),
        "etcd" => Box::new(etcd::RawEtcd::connect(target).await?),
        "zookeeper" => Box::new(zookeeper::RawZookeeper::connect(target).await?),
        "consul" => Box::new(consul::RawConsul::connect(target).await?),
        "dynamodb" => Box::new(dynamodb::RawDynamoDb::connect(target).await?),
        "boltlike" => Box::new(sled::RawSled::connect(target).await?),
        other => return Err(format!("no raw client for {other}")),
    })
}
