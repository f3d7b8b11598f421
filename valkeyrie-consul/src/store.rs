//! [`ConsulStore`]: the [`Backend`] implementation and the registration.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use valkeyrie_core::raw::{Backend, Background, Expect, Key, Registration, StoreSpec, Txn};
use valkeyrie_core::{
    Capabilities, Error, ErrorKind, KvPair, LockOptions, Locker, ReadOptions, Result, Store, TxnOutcome as Outcome,
    WatchStream, WriteOptions,
};

use crate::api::{Consistency, Entry, KvOp, TxnOutcome};
use crate::client::{ApiRequest, ConsulClient};
use crate::config::ConsulConfig;
use crate::keep_alive::KeepAliveSessions;
use crate::lock::ConsulLocker;
use crate::write::{write, KeepAlive};
use crate::{txn, watch, CONSUL};

/// A handle on a Consul cluster, through one or more agents.
pub struct ConsulStore {
    pub(crate) client: ConsulClient,
    pub(crate) config: ConsulConfig,
    background: Background,
    /// The sessions `keep_alive` writes of one TTL share.
    keep_alive: KeepAliveSessions,
}

impl std::fmt::Debug for ConsulStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ConsulConfig {
    /// Connects to the agents at `endpoints` (`host:port`, or URLs with a scheme; default
    /// `127.0.0.1:8500`), and proves the connection with one request (the cluster leader),
    /// and the token, if one is set, with another (the token reading itself).
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a bad setting, unreadable TLS file, or an
    /// `http://` endpoint with TLS settings; [`Error::TlsVerification`] when either side
    /// refuses the other's certificate; [`Error::Unauthenticated`] for a token the cluster
    /// does not know; [`Error::NotReachable`] or [`Error::Timeout`] when no agent answers.
    pub async fn connect<I, E>(self, endpoints: I) -> Result<ConsulStore>
    where
        I: IntoIterator<Item = E>,
        E: Into<String>,
    {
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        // Not called through the store handle: its errors are named here, once.
        self.connect_agents(&endpoints)
            .await
            .map_err(|e| e.in_call("connect", ""))
    }

    /// [`ConsulConfig::connect`], with errors that do not name the call yet.
    async fn connect_agents(self, endpoints: &[String]) -> Result<ConsulStore> {
        self.validate()?;
        let background = Background::new();
        let client = ConsulClient::new(endpoints, &self, background.spawner())?;
        let deadline = self.connect_timeout.saturating_add(self.request_timeout);
        let leader = match client
            .send("", ApiRequest::get("status/leader").deadline(deadline).connecting())
            .await
        {
            Ok(leader) => leader,
            Err(err) if err.kind() == ErrorKind::NotReachable => match client.certificate_refusal().await {
                Some(refusal) => return Err(Error::tls_verification(CONSUL, "", refusal)),
                None => return Err(err),
            },
            Err(err) => return Err(err),
        };
        // `""` while the cluster has no leader, which no write can get past.
        if leader.body.as_ref() == b"\"\"" {
            let reason = "the agent answers but its cluster has no leader";
            return Err(Error::backend(CONSUL, "", true, reason));
        }
        if self.token.is_some() {
            // Any token may read itself; an unknown one is refused here, at connect, rather
            // than by the first call. 401 means the agent has ACLs off: the token is unused.
            let reply = client
                .send_any("", ApiRequest::get("acl/token/self").deadline(deadline).connecting())
                .await?;
            if !matches!(reply.status, StatusCode::OK | StatusCode::UNAUTHORIZED) {
                return Err(client.status_error("", reply.status, &reply.body));
            }
        }
        Ok(ConsulStore {
            client,
            config: self,
            background,
            keep_alive: KeepAliveSessions::default(),
        })
    }
}

/// The pair of a KV entry.
pub(crate) fn pair(entry: Entry) -> KvPair {
    KvPair::new(entry.key, entry.value, entry.modify_index)
}

/// How reads with `opts` are served: `consistent` through a confirmed leader, otherwise
/// Consul's default mode (the leader, without confirming).
pub(crate) fn consistency(opts: &ReadOptions) -> Consistency {
    if opts.consistent {
        Consistency::Consistent
    } else {
        Consistency::Default
    }
}

/// Whether `key` is `dir` or below it: a read of the prefix `dir` also returns siblings
/// such as `dir2/x`.
fn at_or_below(dir: &Key, key: &str) -> bool {
    key == dir.as_str() || dir.contains(key)
}

/// The TTL of a write and whether to keep it alive (the store handle has checked the TTL
/// against [`Capabilities::max_ttl`]).
fn ttl(opts: &WriteOptions) -> Option<(std::time::Duration, bool)> {
    opts.ttl.map(|ttl| (ttl, opts.keep_alive))
}

#[async_trait]
impl Backend for ConsulStore {
    fn name(&self) -> &'static str {
        CONSUL
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::all();
        caps.min_ttl = self.config.min_ttl();
        // A TTL is carried by a session of half its length, and a session lasts at most 24 h.
        caps.max_ttl = Some(self.config.max_ttl());
        caps.max_value_size = Some(self.config.max_value_size());
        caps.consistent_reads = true;
        caps.persistent = true;
        caps.max_transaction_ops = Some(txn::MAX_TXN_OPS);
        caps
    }

    fn background(&self) -> &Background {
        &self.background
    }

    async fn put(&self, key: &Key, value: Bytes, opts: &WriteOptions) -> Result<()> {
        let ttl = ttl(opts);
        let spawner = self.background.spawner();
        let keep_alive = KeepAlive {
            sessions: &self.keep_alive,
            spawner: &spawner,
        };
        write(&self.client, &keep_alive, key, &value, Expect::Anything, ttl).await?;
        Ok(())
    }

    async fn get(&self, key: &Key, opts: &ReadOptions) -> Result<KvPair> {
        let (value, index) = self
            .client
            .kv_value(key.as_str(), consistency(opts))
            .await?
            .ok_or_else(|| Error::not_found(CONSUL, key.as_str()))?;
        Ok(KvPair::new(key.as_str(), value, index))
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        // `get` fails the transaction when the key is absent, so nothing is deleted twice.
        let ops = [KvOp::get(key.as_str()), KvOp::delete(key.as_str())];
        match self.client.txn(key.as_str(), &ops).await? {
            TxnOutcome::Committed(_) => Ok(()),
            TxnOutcome::RolledBack(_) => Err(Error::not_found(CONSUL, key.as_str())),
        }
    }

    async fn list(&self, dir: &Key, opts: &ReadOptions) -> Result<Vec<KvPair>> {
        let (entries, _) = self.client.kv_read(dir.as_str(), true, consistency(opts), None).await?;
        Ok(entries
            .into_iter()
            .filter(|e| at_or_below(dir, &e.key))
            .map(pair)
            .collect())
    }

    // Keys only, filtered as `list` filters its entries: `list_stream` then reads the
    // values page by page with `get_many`.
    async fn list_keys(&self, dir: &Key, opts: &ReadOptions) -> Result<Vec<String>> {
        let names = self.client.kv_keys(dir.as_str(), None, consistency(opts)).await?;
        Ok(names.into_iter().filter(|name| at_or_below(dir, name)).collect())
    }

    async fn delete_tree(&self, dir: &Key) -> Result<()> {
        // Consul's recursive delete of `dir` would take siblings (`dir2/…`) too: delete
        // `dir` and the prefix `dir/` instead, once something is there.
        let prefix = dir.dir_prefix();
        let names = self
            .client
            .kv_keys(dir.as_str(), Some("/"), Consistency::Default)
            .await?;
        if !names.iter().any(|name| name == dir.as_str() || *name == prefix) {
            return Err(Error::not_found(CONSUL, dir.as_str()));
        }
        let ops = [KvOp::delete(dir.as_str()), KvOp::delete_tree(&prefix)];
        match self.client.txn(dir.as_str(), &ops).await? {
            TxnOutcome::Committed(_) => Ok(()),
            TxnOutcome::RolledBack(errors) => {
                let reason = format!("the transaction was rolled back: {errors:?}");
                Err(Error::backend(CONSUL, dir.as_str(), true, reason))
            }
        }
    }

    async fn watch(&self, key: &Key, opts: &ReadOptions) -> Result<WatchStream> {
        watch::watch(self, key, false, opts).await
    }

    async fn watch_tree(&self, dir: &Key, opts: &ReadOptions) -> Result<WatchStream> {
        watch::watch(self, dir, true, opts).await
    }

    async fn new_lock(&self, key: &Key, opts: LockOptions) -> Result<Box<dyn Locker>> {
        Ok(Box::new(ConsulLocker::new(
            self.client.clone(),
            key.clone(),
            opts,
            self.config.watch_wait,
            self.background.spawner(),
        )))
    }

    async fn atomic_put(
        &self,
        key: &Key,
        value: Bytes,
        previous: Option<&KvPair>,
        opts: &WriteOptions,
    ) -> Result<KvPair> {
        let ttl = ttl(opts);
        let expect = Expect::previous(previous);
        let spawner = self.background.spawner();
        let keep_alive = KeepAlive {
            sessions: &self.keep_alive,
            spawner: &spawner,
        };
        let index = write(&self.client, &keep_alive, key, &value, expect, ttl).await?;
        Ok(KvPair::new(key.as_str(), value, index))
    }

    async fn atomic_delete(&self, key: &Key, previous: &KvPair) -> Result<()> {
        let ops = [
            KvOp::get(key.as_str()),
            KvOp::delete_cas(key.as_str(), previous.last_index),
        ];
        match self.client.txn(key.as_str(), &ops).await? {
            TxnOutcome::Committed(_) => Ok(()),
            TxnOutcome::RolledBack(errors) if errors.iter().any(|e| e.op_index == 0) => {
                Err(Error::not_found(CONSUL, key.as_str()))
            }
            TxnOutcome::RolledBack(_) => Err(Error::modified(CONSUL, key.as_str())),
        }
    }

    async fn commit(&self, txn: &Txn) -> Result<Outcome> {
        txn::commit(&self.client, txn).await
    }

    async fn close(&self) -> Result<()> {
        // Pooled connections close with the last clone of the client; background work
        // (keep-alive sessions, watch feeders, lock sessions) ends with the handle.
        Ok(())
    }
}

async fn open(spec: StoreSpec) -> Result<Arc<dyn Store>> {
    let config: ConsulConfig = spec.config.resolve()?;
    Ok(Arc::new(config.connect(spec.endpoints).await?))
}

inventory::submit! { Registration::new(CONSUL, None, |spec| Box::pin(open(spec))) }

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// `connect` is not called through the store handle: it names the call itself.
    #[tokio::test]
    async fn connect_errors_name_the_call() {
        let config = ConsulConfig {
            connect_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let err = config.connect(["127.0.0.1:1"]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotReachable, "{err}");
        assert!(
            err.to_string()
                .starts_with("consul: server not reachable during connect: "),
            "{err}"
        );
        assert_eq!(err.key(), None);
    }
}
