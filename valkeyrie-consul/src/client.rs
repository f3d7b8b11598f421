//! The connection: agent addresses, TLS, the ACL token and the datacenter, and one way to
//! send a request with its deadline, its failover and its error mapping.
//!
//! One HTTP client (hyper with rustls on ring, `rs_consul::HttpsClient`) serves both
//! `rs-consul` and the thin API in [`crate::api`], so connections are pooled once.
//! A request that could not even connect to an agent is retried on the next address;
//! anything else is reported as is, since it may have reached the server.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rs_consul::{Consul, ConsulError, HttpsClient};
use rustls::pki_types::ServerName;
use valkeyrie_core::raw::{deadline, Spawner};
use valkeyrie_core::tls::{self, strip_scheme, TlsMaterial};
use valkeyrie_core::{BoxError, Error, Result, Secret};

use crate::config::ConsulConfig;
use crate::error::{map_consul_error, map_status, not_reachable, outcome_unknown};
use crate::CONSUL;

/// The whole body in one buffer. A body of one frame (most answers) is kept as it came; a
/// longer one is appended to one buffer as it arrives. Collecting the frames and copying
/// them into one buffer afterwards held a large answer (a big `list`) twice.
async fn read_body<B>(mut body: B) -> std::result::Result<Bytes, B::Error>
where
    B: BodyExt<Data = Bytes> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(earlier) => {
                let expected = usize::try_from(body.size_hint().lower()).unwrap_or(0);
                joined.reserve(earlier.len() + data.len() + expected);
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(match first {
        Some(only) => only,
        None => {
            joined.shrink_to_fit();
            Bytes::from(joined)
        }
    })
}

/// One agent: its base URL, and `rs-consul` pointed at it.
struct Agent {
    base: String,
    consul: Consul,
}

/// A connection to one or more Consul agents. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub(crate) struct ConsulClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpsClient,
    agents: Vec<Agent>,
    /// The agent that answered last; requests start there.
    current: AtomicUsize,
    token: Option<Secret>,
    datacenter: Option<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// The TLS files, kept when the agents are reached over HTTPS (for
    /// [`ConsulClient::certificate_refusal`]).
    tls: Option<TlsMaterial>,
    /// The handle's background, for cleanups a drop starts (an abandoned session).
    spawner: Spawner,
}

/// One request to the HTTP API: a path under `/v1/`, query parameters, a body.
pub(crate) struct ApiRequest {
    method: Method,
    path: String,
    /// Pairs; an empty value is a bare flag such as `recurse`.
    query: Vec<(&'static str, String)>,
    body: Bytes,
    deadline: Option<Duration>,
    /// Sent while connecting: see [`ApiRequest::connecting`].
    connecting: bool,
}

impl ApiRequest {
    /// A `GET` of `path`.
    pub(crate) fn get(path: impl Into<String>) -> Self {
        ApiRequest {
            method: Method::GET,
            path: path.into(),
            query: Vec::new(),
            body: Bytes::new(),
            deadline: None,
            connecting: false,
        }
    }

    /// A `PUT` of `body` to `path`.
    pub(crate) fn put(path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        ApiRequest {
            method: Method::PUT,
            body: body.into(),
            ..ApiRequest::get(path)
        }
    }

    /// Adds the query parameter `name=value`.
    pub(crate) fn param(mut self, name: &'static str, value: impl ToString) -> Self {
        self.query.push((name, value.to_string()));
        self
    }

    /// Adds the bare query flag `name`.
    pub(crate) fn flag(mut self, name: &'static str) -> Self {
        self.query.push((name, String::new()));
        self
    }

    /// Gives the request this deadline instead of the request timeout.
    pub(crate) fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Marks a request that proves a new connection: one that fails on the way, even after
    /// it was sent, is [`Error::NotReachable`] (connecting applies nothing), not the
    /// [`Error::Timeout`] of an outcome unknown.
    pub(crate) fn connecting(mut self) -> Self {
        self.connecting = true;
        self
    }
}

/// What an agent answered.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    /// `X-Consul-Index`, 0 when absent.
    pub(crate) index: u64,
    pub(crate) body: Bytes,
}

/// Why one attempt on one agent failed.
pub(crate) enum Failed {
    /// No connection could be made: nothing was sent, the next agent may be tried.
    Unsent(hyper_util::client::legacy::Error),
    /// Anything else.
    Error(Error),
}

/// The one HTTP client of a handle: HTTPS with `tls` (rustls on ring), plain HTTP for
/// `http://` agents when TLS is off.
fn http_client(config: &ConsulConfig, tls: &TlsMaterial) -> Result<HttpsClient> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let mut builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls.rustls_client_config(CONSUL)?)
        .https_or_http();
    if let Some(name) = tls.server_name() {
        // Checked by `TlsConfig::load`.
        let name =
            ServerName::try_from(name.to_owned()).map_err(|e| Error::config(CONSUL, "server_name", e.to_string()))?;
        builder = builder.with_server_name_resolver(FixedServerNameResolver::new(name));
    }
    let https = builder.enable_http1().wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// `scheme://host:port` for an endpoint given as `host:port` or as a URL.
fn base_url(endpoint: &str, tls: bool) -> Result<String> {
    let base = if endpoint.contains("://") {
        endpoint.trim_end_matches('/').to_owned()
    } else {
        format!("{}://{endpoint}", if tls { "https" } else { "http" })
    };
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Error::config(
            CONSUL,
            "endpoints",
            format!("{endpoint:?}: an agent is reached over http:// or https://"),
        ));
    }
    base.parse::<http::Uri>()
        .map_err(|e| Error::config(CONSUL, "endpoints", format!("{endpoint:?}: {e}")))?;
    Ok(base)
}

impl ConsulClient {
    /// Builds the client; nothing is sent. The TLS files are read here, once.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for an endpoint that is no `http(s)://host:port`, an
    /// `http://` endpoint with TLS settings, or a TLS file that cannot be used.
    pub(crate) fn new(endpoints: &[String], config: &ConsulConfig, spawner: Spawner) -> Result<Self> {
        let endpoints = if endpoints.is_empty() {
            vec!["127.0.0.1:8500".to_owned()]
        } else {
            endpoints.to_vec()
        };
        let tls = config.tls_config();
        let use_tls = tls.use_tls(CONSUL, &endpoints)?;
        let material = tls.load(CONSUL)?;
        let http = http_client(config, &material)?;
        let agents = endpoints
            .iter()
            .map(|endpoint| {
                let base = base_url(endpoint, use_tls)?;
                let consul_config = rs_consul::Config {
                    address: base.clone(),
                    token: config.token.as_ref().map(|t| t.expose().to_owned()),
                    ..Default::default()
                };
                let consul = Consul::new_with_client(consul_config, http.clone());
                Ok(Agent { base, consul })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ConsulClient {
            inner: Arc::new(Inner {
                http,
                agents,
                current: AtomicUsize::new(0),
                token: config.token.clone(),
                datacenter: config.datacenter.clone(),
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
                tls: use_tls.then_some(material),
                spawner,
            }),
        })
    }

    /// Why a TLS connection to the first agent fails, when a certificate is refused: in
    /// TLS 1.3 an agent refuses a client certificate after the client's handshake is done,
    /// and hyper may report the alert that follows only as a closed connection. `None`
    /// without TLS, or when the handshake goes through.
    ///
    /// Cancel safe: dropping the future closes the probe's connection.
    pub(crate) async fn certificate_refusal(&self) -> Option<rustls::Error> {
        let material = self.inner.tls.as_ref()?;
        let config = material.rustls_client_config(CONSUL).ok()?;
        let base = &self.inner.agents.first()?.base;
        let address = strip_scheme(base);
        let within = self.inner.connect_timeout;
        tls::certificate_refusal(&config, address, material.server_name(), &[b"http/1.1"], within).await
    }

    /// The deadline of an ordinary request.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The handle's background, for cleanups a drop starts.
    pub(crate) fn spawner(&self) -> &Spawner {
        &self.inner.spawner
    }

    /// The datacenter to address, `""` for the agent's own.
    pub(crate) fn datacenter(&self) -> &str {
        self.inner.datacenter.as_deref().unwrap_or("")
    }

    /// Runs `attempt` on the agents in turn, from the last one that answered, until one
    /// can be reached, within `deadline` plus a connect timeout per agent skipped.
    pub(crate) async fn on_agents<T, F, Fut>(&self, key: &str, deadline: Duration, attempt: F) -> Result<T>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = std::result::Result<T, Failed>>,
    {
        let agents = self.inner.agents.len();
        let first = self.inner.current.load(Ordering::Relaxed);
        let attempts = async {
            let mut last_failure = None;
            for offset in 0..agents {
                let agent = (first + offset) % agents;
                match attempt(agent).await {
                    Ok(value) => {
                        self.inner.current.store(agent, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Err(Failed::Unsent(err)) => last_failure = Some(err),
                    Err(Failed::Error(err)) => return Err(err),
                }
            }
            Err(match last_failure {
                Some(err) => not_reachable(key, err),
                None => Error::config(CONSUL, "endpoints", "no agent address"),
            })
        };
        let skips = u32::try_from(agents.saturating_sub(1)).unwrap_or(u32::MAX);
        let deadline = deadline.saturating_add(self.inner.connect_timeout.saturating_mul(skips));
        deadline::within(deadline, CONSUL, key, attempts).await
    }

    /// Sends `request` and reads the whole reply, within its deadline (the request timeout
    /// unless it says otherwise). Statuses other than 200, 404 and 409 (a rolled-back
    /// transaction) are errors; 404 and 409 are the caller's to interpret.
    pub(crate) async fn send(&self, key: &str, request: ApiRequest) -> Result<Reply> {
        let reply = self.send_any(key, request).await?;
        match reply.status {
            StatusCode::OK | StatusCode::NOT_FOUND | StatusCode::CONFLICT => Ok(reply),
            status => Err(self.status_error(key, status, &reply.body)),
        }
    }

    /// The error an answer with `status` is.
    pub(crate) fn status_error(&self, key: &str, status: StatusCode, body: &[u8]) -> Error {
        map_status(key, status, body, self.inner.token.is_none())
    }

    /// Sends `request` like [`send`](Self::send), and returns the reply whatever its status.
    pub(crate) async fn send_any(&self, key: &str, request: ApiRequest) -> Result<Reply> {
        let query = self.query_string(&request.query);
        let deadline = request.deadline.unwrap_or(self.inner.request_timeout);
        self.on_agents(key, deadline, |agent| {
            let mut uri = format!("{}/v1/{}", self.inner.agents[agent].base, request.path);
            if !query.is_empty() {
                uri.push('?');
                uri.push_str(&query);
            }
            self.exchange(
                key,
                request.method.clone(),
                uri,
                request.body.clone(),
                request.connecting,
            )
        })
        .await
    }

    /// `query` and the datacenter, encoded.
    fn query_string(&self, query: &[(&str, String)]) -> String {
        let mut params = form_urlencoded::Serializer::new(String::new());
        for (name, value) in query {
            if value.is_empty() {
                params.append_key_only(name);
            } else {
                params.append_pair(name, value);
            }
        }
        if let Some(dc) = &self.inner.datacenter {
            params.append_pair("dc", dc);
        }
        params.finish()
    }

    /// One request and its whole reply. A failure once connected may have reached the
    /// agent: an outcome unknown, unless `connecting`.
    async fn exchange(
        &self,
        key: &str,
        method: Method,
        uri: String,
        body: Bytes,
        connecting: bool,
    ) -> std::result::Result<Reply, Failed> {
        let started = tokio::time::Instant::now();
        let failed = |err: BoxError| {
            Failed::Error(if connecting {
                not_reachable(key, err)
            } else {
                outcome_unknown(key, started.elapsed(), err)
            })
        };
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = &self.inner.token {
            request = request.header("X-Consul-Token", token.expose());
        }
        let request = request
            .body(Full::new(body).map_err(|never| match never {}).boxed())
            .map_err(|e| Failed::Error(Error::backend(CONSUL, key, false, e)))?;
        let response = match self.inner.http.request(request).await {
            Ok(response) => response,
            Err(err) if err.is_connect() => return Err(Failed::Unsent(err)),
            // hyper-util already sent again, on a new connection, a request a reused one
            // closed on before writing it; what is left may have been written.
            Err(err) => return Err(failed(err.into())),
        };
        let status = response.status();
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = read_body(response.into_body()).await.map_err(|e| failed(e.into()))?;
        Ok(Reply { status, index, body })
    }

    /// Runs an `rs-consul` call on the agents in turn, within the request timeout.
    pub(crate) async fn with_consul<'a, T, F, Fut>(&'a self, key: &str, request: F) -> Result<T>
    where
        F: Fn(&'a Consul) -> Fut,
        Fut: Future<Output = std::result::Result<T, ConsulError>> + 'a,
    {
        let anonymous = self.inner.token.is_none();
        self.on_agents(key, self.inner.request_timeout, |agent| {
            let started = tokio::time::Instant::now();
            let result = request(&self.inner.agents[agent].consul);
            async move {
                match result.await {
                    Ok(value) => Ok(value),
                    Err(ConsulError::ResponseError(err)) if err.is_connect() => Err(Failed::Unsent(err)),
                    Err(err) => Err(Failed::Error(map_consul_error(key, err, anonymous, started.elapsed()))),
                }
            }
        })
        .await
    }
}

/// `key` as a URL path: every byte but unreserved characters and `/` percent-encoded
/// (`rs-consul` puts keys into URLs as they are).
pub(crate) fn key_path(key: &str) -> String {
    const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(key, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use valkeyrie_core::raw::Background;
    use valkeyrie_core::ErrorKind;

    /// The address of a listener that reads the start of each request and closes the
    /// connection unanswered: a request that reached the other side, with no outcome known.
    fn hanging_up() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut start = [0_u8; 64];
                let _ = std::io::Read::read(&mut stream, &mut start);
            }
        });
        address
    }

    /// An address nothing listens on.
    fn refusing() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    fn client(endpoint: String) -> ConsulClient {
        let config = ConsulConfig {
            connect_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        ConsulClient::new(&[endpoint], &config, Background::new().spawner()).unwrap()
    }

    #[tokio::test]
    async fn a_request_cut_off_after_it_was_sent_has_an_unknown_outcome() {
        let client = client(hanging_up());
        let err = client
            .send("k", ApiRequest::put("kv/k", "v"))
            .await
            .err()
            .expect("the connection was closed unanswered");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert_eq!(err.key(), Some("k"));
        let err = client
            .send("", ApiRequest::get("status/leader").connecting())
            .await
            .err()
            .expect("the connection was closed unanswered");
        assert_eq!(err.kind(), ErrorKind::NotReachable, "connecting applies nothing: {err}");
        let err = client
            .with_consul("k", |consul| {
                let request = rs_consul::CreateOrUpdateKeyRequest {
                    key: "k",
                    ..Default::default()
                };
                consul.create_or_update_key(request, b"v".to_vec())
            })
            .await
            .expect_err("the connection was closed unanswered");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    }

    #[tokio::test]
    async fn a_request_no_agent_could_be_connected_for_was_not_sent() {
        let client = client(refusing());
        let err = client
            .send("k", ApiRequest::put("kv/k", "v"))
            .await
            .err()
            .expect("nothing listens there");
        assert_eq!(err.kind(), ErrorKind::NotReachable, "{err}");
        let err = client
            .with_consul("k", |consul| {
                consul.read_key(rs_consul::ReadKeyRequest {
                    key: "k",
                    ..Default::default()
                })
            })
            .await
            .expect_err("nothing listens there");
        assert_eq!(err.kind(), ErrorKind::NotReachable, "{err}");
    }

    #[test]
    fn keys_are_escaped_for_urls() {
        assert_eq!(key_path("a/b c/ключ?#%"), "a/b%20c/%D0%BA%D0%BB%D1%8E%D1%87%3F%23%25");
        assert_eq!(key_path("plain/key-1.v_2~"), "plain/key-1.v_2~");
    }

    #[test]
    fn endpoints_become_base_urls() {
        assert_eq!(base_url("h:8500", false).unwrap(), "http://h:8500");
        assert_eq!(base_url("h:8501", true).unwrap(), "https://h:8501");
        assert_eq!(base_url("https://h:8501/", false).unwrap(), "https://h:8501");
        assert!(base_url("unix:///run/consul.sock", false).is_err());
    }

    #[test]
    fn an_http_endpoint_with_tls_settings_is_refused() {
        let config = ConsulConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            token: Some("t0ken".into()),
            ..Default::default()
        };
        let Err(err) = ConsulClient::new(
            &["http://127.0.0.1:8500".to_owned()],
            &config,
            Background::new().spawner(),
        ) else {
            panic!("an http:// agent with a ca_file was accepted: the token would travel in clear");
        };
        assert_eq!(err.kind(), valkeyrie_core::ErrorKind::InvalidConfiguration, "{err}");
        assert!(err.to_string().contains("http://"), "{err}");
        let config = ConsulConfig {
            server_name: Some("consul.dc1".into()),
            ..Default::default()
        };
        assert!(
            ConsulClient::new(
                &["http://127.0.0.1:8500".to_owned()],
                &config,
                Background::new().spawner()
            )
            .is_err(),
            "server_name alone asks for TLS too"
        );
    }
}
