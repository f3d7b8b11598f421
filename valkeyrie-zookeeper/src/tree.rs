//! Walks over a subtree: listing the keys below a directory, reading many keys at once,
//! and removing directory nodes left without children.

use futures_util::{stream, StreamExt, TryStreamExt};
use valkeyrie_core::raw::Key;
use valkeyrie_core::{Error, KvPair, Result};

use crate::client::ZkClient;
use crate::node::{decode, index_of, is_lock_node, key_of, path_of, DIR_MARKER};

impl ZkClient {
    /// The paths of `dir` and every node below it, parents before children; lock contender
    /// nodes only with `with_locks`. At most `concurrency` requests in flight.
    pub(crate) async fn walk(&self, dir: &Key, with_locks: bool, concurrency: usize) -> Result<Vec<String>> {
        let mut paths = Vec::new();
        let mut level = vec![path_of(dir.as_str())];
        while !level.is_empty() {
            let children: Vec<(String, Vec<String>)> = stream::iter(level.clone())
                .map(|path| async move {
                    match self.request(&path, self.client()?.list_children(&path)).await {
                        Ok(children) => Ok((path, children)),
                        Err(Error::KeyNotFound { .. }) => Ok((path, Vec::new())),
                        Err(err) => Err(err),
                    }
                })
                .buffered(concurrency)
                .try_collect()
                .await?;
            paths.append(&mut level);
            for (parent, names) in children {
                for name in names {
                    if with_locks || !is_lock_node(&name) {
                        level.push(format!("{parent}/{name}"));
                    }
                }
            }
        }
        Ok(paths)
    }

    /// The keys below `dir` (and `dir` itself when nothing below is a key: it then decides
    /// whether the listing is empty or not found), lock contender nodes excluded. Each
    /// node's stat, read with its data, says whether it has children to list, so leaves
    /// cost one read. At most `concurrency` requests in flight.
    pub(crate) async fn list_keys(&self, dir: &Key, concurrency: usize) -> Result<Vec<KvPair>> {
        let root = path_of(dir.as_str());
        let mut pairs = Vec::new();
        let mut parents = vec![root.clone()];
        while !parents.is_empty() {
            let children: Vec<String> = stream::iter(parents)
                .map(|parent| async move {
                    let names = match self.request(&parent, self.client()?.list_children(&parent)).await {
                        Ok(names) => names,
                        Err(Error::KeyNotFound { .. }) => Vec::new(),
                        Err(err) => return Err(err),
                    };
                    let names = names.into_iter().filter(|name| !is_lock_node(name));
                    Ok(names.map(|name| format!("{parent}/{name}")).collect::<Vec<_>>())
                })
                .buffer_unordered(concurrency)
                .try_concat()
                .await?;
            let nodes: Vec<Option<(String, Option<KvPair>, bool)>> = stream::iter(children)
                .map(|path| async move {
                    match self.request(&path, self.client()?.get_data(&path)).await {
                        Ok((data, stat)) => {
                            let pair = decode(data).map(|value| KvPair::new(key_of(&path), value, index_of(&stat)));
                            Ok(Some((path, pair, stat.num_children > 0)))
                        }
                        Err(Error::KeyNotFound { .. }) => Ok(None),
                        Err(err) => Err(err),
                    }
                })
                .buffer_unordered(concurrency)
                .try_collect()
                .await?;
            parents = Vec::new();
            for (path, pair, has_children) in nodes.into_iter().flatten() {
                if has_children {
                    parents.push(path);
                }
                pairs.extend(pair);
            }
        }
        if pairs.is_empty() {
            return self.read_keys(vec![root], concurrency).await;
        }
        Ok(pairs)
    }

    /// The keys at `paths`, skipping nodes that are not keys or are gone.
    pub(crate) async fn read_keys(&self, paths: Vec<String>, concurrency: usize) -> Result<Vec<KvPair>> {
        let pairs: Vec<Option<KvPair>> = stream::iter(paths)
            .map(|path| async move {
                match self.request(&path, self.client()?.get_data(&path)).await {
                    Ok((data, stat)) => {
                        Ok(decode(data).map(|value| KvPair::new(key_of(&path), value, index_of(&stat))))
                    }
                    Err(Error::KeyNotFound { .. }) => Ok(None),
                    Err(err) => Err(err),
                }
            })
            .buffered(concurrency)
            .try_collect()
            .await?;
        Ok(pairs.into_iter().flatten().collect())
    }

    /// After the node at `path` was deleted: removes its ancestors that are directory nodes
    /// with no children left, bottom-up. Best effort: a node that gained a child or a value
    /// meanwhile stays (the delete is conditional on its version and emptiness).
    pub(crate) async fn cleanup_parents(&self, path: &str) {
        let Ok(client) = self.client() else { return };
        let mut current = path.to_owned();
        while let Some((parent, _)) = current.rsplit_once('/') {
            if parent.is_empty() {
                return;
            }
            let Ok((data, stat)) = self.request(parent, client.get_data(parent)).await else {
                return;
            };
            if data != DIR_MARKER || stat.num_children > 0 {
                return;
            }
            if self
                .request(parent, client.delete(parent, Some(stat.version)))
                .await
                .is_err()
            {
                return;
            }
            current = parent.to_owned();
        }
    }
}
