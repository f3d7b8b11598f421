//! The conformance suite against DynamoDB Local: `VALKEYRIE_DYNAMODB_ENDPOINT` (set by
//! `cargo xtask test`) names it.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use valkeyrie_core::raw::LockRevocation;
use valkeyrie_core::testsuite::TestTarget;
use valkeyrie_core::Store;
// Opened by URL only: link the backend so it registers itself.
use valkeyrie_dynamodb as _;

struct DynamoDbTarget;

#[async_trait]
impl TestTarget for DynamoDbTarget {
    async fn open(&self) -> Arc<dyn Store> {
        let url = support::url();
        valkeyrie_core::open(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"))
            .into()
    }

    async fn revoke_lock(&self, key: &str, how: LockRevocation) {
        let client = support::raw().await;
        let id = AttributeValue::S(key.to_owned());
        match how {
            LockRevocation::DeleteRecord => {
                client
                    .delete_item()
                    .table_name(support::TABLE)
                    .key("id", id)
                    .send()
                    .await
                    .expect("delete the lock item");
            }
            LockRevocation::Expire => {
                let past = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("the clock is after 1970")
                    .as_secs()
                    - 1;
                client
                    .update_item()
                    .table_name(support::TABLE)
                    .key("id", id)
                    .update_expression("SET expiration_time = :past")
                    .expression_attribute_values(":past", AttributeValue::N(past.to_string()))
                    .send()
                    .await
                    .expect("expire the lock item");
            }
        }
    }
}

valkeyrie_core::conformance_suite!(DynamoDbTarget);
