//! The table the tests use, and a raw SDK client on it to act behind valkeyrie's back.

#![allow(dead_code)] // Each test binary uses part of it.

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::Provider;

pub(crate) const ENDPOINT: &str = "VALKEYRIE_DYNAMODB_ENDPOINT";

/// The table every test shares (created by the first handle that needs it).
pub(crate) const TABLE: &str = "valkeyrie-tests";

pub(crate) fn endpoint() -> String {
    std::env::var(ENDPOINT).unwrap_or_else(|_| {
        panic!("{ENDPOINT} is not set: run `cargo xtask test --backend dynamodb`, or point it at DynamoDB Local (http://host:port)")
    })
}

/// The store URL of the test table.
pub(crate) fn url() -> String {
    format!(
        "dynamodb://{TABLE}?endpoint={}&region=us-east-1&access_key_id=test&secret_access_key=test&create_table=true",
        endpoint()
    )
}

/// A key made unique per run.
pub(crate) fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    format!("vk-dynamodb/{name}-{}-{nanos}", std::process::id())
}

/// A plain SDK client on the endpoint.
pub(crate) async fn raw() -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    Client::new(&config)
}

/// The raw item at `key`, if any.
pub(crate) async fn item(client: &Client, key: &str) -> Option<std::collections::HashMap<String, AttributeValue>> {
    client
        .get_item()
        .table_name(TABLE)
        .key("id", AttributeValue::S(key.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("get_item")
        .item()
        .cloned()
}
