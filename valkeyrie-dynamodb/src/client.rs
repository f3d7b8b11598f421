//! The connection: the SDK client on rustls with ring (never the SDK's legacy HTTP stack),
//! region, endpoint, credentials, timeouts and retries, and the table (found or created).

use std::collections::HashMap;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableDescription, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, ServerName, TlsContext, TrustStore};
use valkeyrie_core::{Error, Result};

use crate::config::DynamoDbConfig;
use crate::error::map_error;
use crate::item::{EXPIRATION, ID};
use crate::DYNAMODB;

/// How long a created table may take to become active.
const TABLE_READY_WITHIN: Duration = Duration::from_secs(300);

/// What an `UpdateItem` did.
pub(crate) enum Update {
    /// Written; the attributes it was asked to return.
    Written(Option<HashMap<String, AttributeValue>>),
    /// Its condition failed; the item as it was, when asked for (`ALL_OLD`).
    Refused(Option<HashMap<String, AttributeValue>>),
}

/// The SDK clients and the table they work on. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct DynamoClient {
    pub(crate) sdk: Client,
    /// DynamoDB Streams, for watches.
    pub(crate) streams: aws_sdk_dynamodbstreams::Client,
    pub(crate) table: String,
    /// The table's stream, when it has one with new and old images (what watches need).
    pub(crate) stream_arn: Option<String>,
    request_timeout: Duration,
}

/// The Streams client: Streams has its own endpoint on AWS, so the DynamoDB endpoint
/// override applies to it only when `streams_endpoint` does not say otherwise.
fn streams_client(shared: &aws_config::SdkConfig, config: &DynamoDbConfig) -> aws_sdk_dynamodbstreams::Client {
    let mut builder = aws_sdk_dynamodbstreams::config::Builder::from(shared);
    if let Some(endpoint) = &config.streams_endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_dynamodbstreams::Client::from_conf(builder.build())
}

/// The SDK's TLS settings: the CA file's certificates or the public web roots (never the
/// platform's: the same roots as every backend), and `server_name` as a name the
/// certificate may carry.
///
/// # Errors
/// [`Error::InvalidConfiguration`] naming the TLS field that cannot be used.
fn tls_context(config: &DynamoDbConfig) -> Result<TlsContext> {
    let material = config.tls_config().load(DYNAMODB)?;
    let trust = TrustStore::empty().with_pem_certificate(material.roots_pem().into_owned());
    let mut context = TlsContext::builder().with_trust_store(trust);
    if let Some(name) = material.server_name() {
        let name = ServerName::try_from(name).map_err(|e| Error::config(DYNAMODB, "server_name", e.to_string()))?;
        context = context.with_additional_server_names(vec![name]);
    }
    context
        .build()
        .map_err(|e| Error::config(DYNAMODB, "tls", e.to_string()))
}

impl DynamoClient {
    /// Builds the client and checks the table (creating it if asked to). Its errors name no
    /// call: [`DynamoDbConfig::connect`] stamps them.
    pub(crate) async fn connect(config: &DynamoDbConfig) -> Result<Self> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .tls_context(tls_context(config)?)
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(config.connect_timeout)
            .operation_timeout(config.request_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts))
            .timeout_config(timeouts);
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            let token = config.session_token.as_ref().map(|t| t.expose().to_owned());
            let credentials = Credentials::new(id, secret.expose(), token, None, "valkeyrie-config");
            loader = loader.credentials_provider(credentials);
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(Error::config(
                DYNAMODB,
                "region",
                "no region: set `region`, or AWS_REGION / a profile for the standard chain",
            ));
        }
        let mut client = DynamoClient {
            sdk: Client::new(&shared),
            streams: streams_client(&shared, config),
            table: config.table.clone(),
            stream_arn: None,
            request_timeout: config.request_timeout,
        };
        let table = client.ensure_table(config.create_table).await?;
        let images = table.stream_specification().is_some_and(|spec| {
            spec.stream_enabled() && spec.stream_view_type() == Some(&StreamViewType::NewAndOldImages)
        });
        if images {
            client.stream_arn = table.latest_stream_arn().map(str::to_owned);
        }
        Ok(client)
    }

    /// Maps an SDK error on `key`.
    pub(crate) fn error<E, R>(&self, key: &str, err: SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        map_error(key, self.request_timeout, err, false)
    }

    /// Maps an SDK error of checking (or creating) the table while connecting: failing to
    /// reach the endpoint in any way is [`Error::NotReachable`] there.
    fn connect_error<E, R>(&self, err: SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        map_error("", self.request_timeout, err, true)
    }

    /// Sends an `UpdateItem`; a failed condition is an answer, not an error.
    pub(crate) async fn update(&self, key: &str, request: UpdateItemFluentBuilder) -> Result<Update> {
        match request.send().await {
            Ok(written) => Ok(Update::Written(written.attributes)),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(Update::Refused(failed.item.clone()))
                }
                _ => Err(self.error(key, err)),
            },
        }
    }

    /// Finds the table, or creates it with `create` (on-demand, a stream of new and old
    /// images, TTL on `expiration_time`) and waits until it is active; describes it.
    async fn ensure_table(&self, create: bool) -> Result<TableDescription> {
        let described = self.sdk.describe_table().table_name(&self.table).send().await;
        match described {
            // Maybe still being created by another process.
            Ok(described) if described.table().and_then(|t| t.table_status()) != Some(&TableStatus::Active) => {
                return self.wait_until_active().await;
            }
            Ok(described) => return self.description(described.table),
            Err(err)
                if !create
                    || err
                        .as_service_error()
                        .is_none_or(|e| !e.is_resource_not_found_exception()) =>
            {
                return Err(self.connect_error(err));
            }
            Err(_) => {}
        }
        let created = self
            .sdk
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(ID)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| Error::backend(DYNAMODB, "", false, e))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(ID)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| Error::backend(DYNAMODB, "", false, e))?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .map_err(|e| Error::backend(DYNAMODB, "", false, e))?,
            )
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Someone else created it meanwhile: wait for it like for ours.
            Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(err) => return Err(self.connect_error(err)),
        }
        let table = self.wait_until_active().await?;
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(EXPIRATION)
            .build()
            .map_err(|e| Error::backend(DYNAMODB, "", false, e))?;
        match self
            .sdk
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
        {
            Ok(_) => Ok(table),
            // Already enabled by whoever created the table.
            Err(err)
                if err
                    .as_service_error()
                    .and_then(|e| e.message())
                    .is_some_and(|m| m.contains("already enabled")) =>
            {
                Ok(table)
            }
            Err(err) => Err(self.connect_error(err)),
        }
    }

    fn description(&self, table: Option<TableDescription>) -> Result<TableDescription> {
        table.ok_or_else(|| Error::backend(DYNAMODB, "", false, "DescribeTable returned no table"))
    }

    async fn wait_until_active(&self) -> Result<TableDescription> {
        let deadline = tokio::time::Instant::now() + TABLE_READY_WITHIN;
        loop {
            let described = self
                .sdk
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| self.connect_error(e))?;
            if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return self.description(described.table);
            }
            if tokio::time::Instant::now() > deadline {
                let reason = format!("table {} not active after {TABLE_READY_WITHIN:?}", self.table);
                return Err(Error::backend(DYNAMODB, "", true, reason));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
