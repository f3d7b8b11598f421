//! [`TemplateStore`]: the [`Backend`] implementation and the registration.
//!
//! Each call is one request through the client, bounded by the request timeout, its errors
//! mapped by [`map_error`] (the store handle names the call on them). Keys arrive validated
//! and normalized; list and watch_tree results are sorted and filtered by valkeyrie-core.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use valkeyrie_core::raw::{deadline, Backend, Background, Key, Registration, StoreSpec, Txn};
use valkeyrie_core::{
    Capabilities, Error, KvPair, ListOptions, LockOptions, Locker, ReadOptions, Result, Store, TxnOutcome, WatchStream,
    WriteOptions,
};

use crate::client::TemplateClient;
use crate::config::TemplateConfig;
use crate::error::map_error;
use crate::lock::TemplateLocker;
use crate::{txn, watch, TEMPLATE};

/// A handle on a template server.
#[derive(Debug)]
pub struct TemplateStore {
    client: TemplateClient,
    config: TemplateConfig,
    background: Background,
}

impl TemplateConfig {
    /// Connects to the server named by the one endpoint.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a bad setting or not exactly one endpoint.
    pub async fn connect<I, E>(self, endpoints: I) -> Result<TemplateStore>
    where
        I: IntoIterator<Item = E>,
        E: Into<String>,
    {
        self.validate()?;
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        // The one place this backend names a call: `connect` is not a call of the handle.
        let client = TemplateClient::connect(&endpoints, &self).map_err(|e| e.in_call("connect", ""))?;
        Ok(TemplateStore {
            client,
            config: self,
            background: Background::new(),
        })
    }
}

impl TemplateStore {
    /// The client, for what the `Store` API does not cover.
    pub fn client(&self) -> &TemplateClient {
        &self.client
    }

    /// Runs one request on `key` with the configured deadline, mapping its error.
    async fn request<T>(&self, key: &Key, request: impl Future<Output = Result<T>>) -> Result<T> {
        let request = async { request.await.map_err(|err| map_error(key.as_str(), err)) };
        deadline::within(self.config.request_timeout, TEMPLATE, key.as_str(), request).await
    }
}

#[async_trait]
impl Backend for TemplateStore {
    fn name(&self) -> &'static str {
        TEMPLATE
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = self.client.requests().capabilities();
        caps.max_value_size = Some(self.config.max_value_size);
        caps
    }

    fn background(&self) -> &Background {
        &self.background
    }

    async fn put(&self, key: &Key, value: Bytes, opts: &WriteOptions) -> Result<()> {
        self.request(key, self.client.requests().put(key.as_str(), value, opts))
            .await
    }

    async fn get(&self, key: &Key, opts: &ReadOptions) -> Result<KvPair> {
        self.request(key, self.client.requests().get(key.as_str(), opts)).await
    }

    async fn get_many(&self, keys: &[Key], opts: &ReadOptions) -> Result<Vec<Option<KvPair>>> {
        // A real backend sends its multi-key read here; the stand-in server reads all the
        // keys in one snapshot, as `capabilities().atomic_get_many` claims.
        let names: Vec<&str> = keys.iter().map(Key::as_str).collect();
        let Some(first) = keys.first() else {
            return Ok(Vec::new());
        };
        self.request(first, self.client.requests().get_many(&names, opts)).await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.request(key, self.client.requests().delete(key.as_str())).await
    }

    async fn exists(&self, key: &Key, opts: &ReadOptions) -> Result<bool> {
        self.request(key, self.client.requests().exists(key.as_str(), opts))
            .await
    }

    async fn list(&self, dir: &Key, opts: &ReadOptions) -> Result<Vec<KvPair>> {
        // The shared rules want `dir` itself and everything below; the server's list gives
        // what is below, and its `KeyNotFound` means "nothing below".
        let below = match self.request(dir, self.client.requests().list(dir.as_str(), opts)).await {
            Ok(pairs) => pairs,
            Err(Error::KeyNotFound { .. }) => Vec::new(),
            Err(err) => return Err(err),
        };
        let own = match Backend::get(self, dir, opts).await {
            Ok(pair) => Some(pair),
            Err(Error::KeyNotFound { .. }) => None,
            Err(err) => return Err(err),
        };
        Ok(own.into_iter().chain(below).collect())
    }

    async fn list_page(&self, dir: &Key, after: Option<&str>, limit: usize, opts: &ReadOptions) -> Result<Vec<KvPair>> {
        // A real backend reads one ordered range here (a range request with a limit). The
        // stand-in server pages by itself: one page of its stream is the range.
        let opts = ListOptions::default()
            .page_size(limit)
            .start_after(after.map(str::to_owned))
            .read(opts.clone());
        let page = async {
            let stream = self.client.shared_requests().list_stream(dir.as_str(), opts)?;
            stream.take(limit).try_collect().await
        };
        self.request(dir, page).await
    }

    async fn delete_tree(&self, dir: &Key) -> Result<()> {
        self.request(dir, self.client.requests().delete_tree(dir.as_str()))
            .await
    }

    async fn watch(&self, key: &Key, opts: &ReadOptions) -> Result<WatchStream> {
        let stream = self
            .request(key, self.client.requests().watch(key.as_str(), opts))
            .await?;
        watch::start(&self.background.spawner(), key, stream).await
    }

    async fn watch_tree(&self, dir: &Key, opts: &ReadOptions) -> Result<WatchStream> {
        let stream = self
            .request(dir, self.client.requests().watch_tree(dir.as_str(), opts))
            .await?;
        watch::start(&self.background.spawner(), dir, stream).await
    }

    async fn new_lock(&self, key: &Key, opts: LockOptions) -> Result<Box<dyn Locker>> {
        let inner = self
            .request(key, self.client.requests().new_lock(key.as_str(), opts))
            .await?;
        Ok(Box::new(TemplateLocker {
            inner,
            request_timeout: self.config.request_timeout,
            spawner: self.background.spawner(),
        }))
    }

    async fn atomic_put(
        &self,
        key: &Key,
        value: Bytes,
        previous: Option<&KvPair>,
        opts: &WriteOptions,
    ) -> Result<KvPair> {
        self.request(
            key,
            self.client.requests().atomic_put(key.as_str(), value, previous, opts),
        )
        .await
    }

    async fn atomic_delete(&self, key: &Key, previous: &KvPair) -> Result<()> {
        self.request(key, self.client.requests().atomic_delete(key.as_str(), previous))
            .await
    }

    async fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        let Some(key) = txn.first_key() else {
            return Ok(TxnOutcome::Committed);
        };
        let request = txn::request(self.client.requests().name(), txn);
        self.request(key, self.client.requests().commit(request)).await
    }

    async fn close(&self) -> Result<()> {
        self.client.requests().close().await
    }
}

async fn open(spec: StoreSpec) -> Result<Arc<dyn Store>> {
    let config: TemplateConfig = spec.config.resolve()?;
    Ok(Arc::new(config.connect(spec.endpoints).await?))
}

inventory::submit! { Registration::new(TEMPLATE, None, |spec| Box::pin(open(spec))) }
