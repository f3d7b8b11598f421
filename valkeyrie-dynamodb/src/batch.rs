//! `get_many` as `BatchGetItem`.
//!
//! A request takes at most 100 keys and refuses one twice, so the distinct keys are read
//! in requests of 100, a few in flight, and every key asked gets the answer of its read.
//! DynamoDB may leave keys unprocessed (throttling, or its 16 MB answer limit); those are
//! sent again after a short jittered pause until none are left, a bounded number of times.
//! The items are read one by one, not from one snapshot, and expired ones are absent, as
//! for `get`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use futures_util::{stream, StreamExt, TryStreamExt};
use valkeyrie_core::raw::{Backoff, Key};
use valkeyrie_core::{Error, KvPair, Result};

use crate::client::DynamoClient;
use crate::item::{now_secs, string, Record, ID};
use crate::DYNAMODB;

/// The most keys one `BatchGetItem` reads.
const MAX_KEYS: usize = 100;

/// Requests of one `get_many` in flight at once.
const IN_FLIGHT: usize = 4;

/// Sends of a request's unprocessed keys before giving up.
const RETRIES: u32 = 10;

/// The pause before the first resend, about doubled after each up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);

/// The longest pause between two resends.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Reads `keys` (`consistent` or not), in order, `None` where a key is absent or expired.
pub(crate) async fn get_many(client: &DynamoClient, keys: &[Key], consistent: bool) -> Result<Vec<Option<KvPair>>> {
    let mut seen = HashSet::with_capacity(keys.len());
    let distinct: Vec<&Key> = keys.iter().filter(|key| seen.insert(key.as_str())).collect();
    // Collected first: a lazy iterator's closure in the future trips the `Send` check.
    let reads: Vec<_> = distinct
        .chunks(MAX_KEYS)
        .map(|chunk| read(client, chunk, consistent))
        .collect();
    let found = stream::iter(reads)
        .buffer_unordered(IN_FLIGHT)
        .try_fold(HashMap::with_capacity(distinct.len()), |mut found, pairs| async move {
            found.extend(pairs.into_iter().map(|pair| (pair.key.clone(), pair)));
            Ok(found)
        })
        .await?;
    Ok(keys.iter().map(|key| found.get(key.as_str()).cloned()).collect())
}

/// The live pairs among `keys` (distinct, at most [`MAX_KEYS`]), in one `BatchGetItem`
/// and as many resends of its unprocessed keys as it takes.
async fn read(client: &DynamoClient, keys: &[&Key], consistent: bool) -> Result<Vec<KvPair>> {
    let first_key = keys.first().map_or("", |key| key.as_str());
    let mut pending: Vec<HashMap<String, AttributeValue>> = keys
        .iter()
        .map(|key| HashMap::from([(ID.to_owned(), string(key.as_str()))]))
        .collect();
    let mut pairs = Vec::with_capacity(keys.len());
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    for retry in 0.. {
        let request = KeysAndAttributes::builder()
            .set_keys(Some(pending))
            .consistent_read(consistent)
            .build()
            .map_err(|e| Error::backend(DYNAMODB, first_key, false, e))?;
        let read = client
            .sdk
            .batch_get_item()
            .request_items(&client.table, request)
            .send()
            .await
            .map_err(|e| client.error(first_key, e))?;
        let now = now_secs();
        for item in read
            .responses
            .and_then(|mut r| r.remove(&client.table))
            .unwrap_or_default()
        {
            pairs.extend(Record::decode_live(&item, now)?.map(Record::into_pair));
        }
        pending = read
            .unprocessed_keys
            .and_then(|mut unprocessed| unprocessed.remove(&client.table))
            .map(|unprocessed| unprocessed.keys)
            .unwrap_or_default();
        if pending.is_empty() {
            break;
        }
        if retry == RETRIES {
            let reason = format!(
                "{} of {} keys still unprocessed after {RETRIES} resends",
                pending.len(),
                keys.len()
            );
            return Err(Error::backend(DYNAMODB, first_key, true, reason));
        }
        backoff.wait().await;
    }
    Ok(pairs)
}
