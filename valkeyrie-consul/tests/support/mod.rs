//! What the tests need to see and do on the agent behind valkeyrie's back, over plain HTTP.

#![allow(dead_code)] // Each test binary uses part of it.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub(crate) const ENDPOINTS: &str = "VALKEYRIE_CONSUL_ENDPOINTS";

pub(crate) fn endpoints() -> Vec<String> {
    let value = std::env::var(ENDPOINTS).unwrap_or_else(|_| {
        panic!("{ENDPOINTS} is not set: run `cargo xtask test --backend consul`, or point it at your agent (host:port)")
    });
    value.split(',').map(str::to_owned).collect()
}

/// The ACL master token of the test agent, to make tokens with.
pub(crate) fn master_token() -> String {
    std::env::var("VALKEYRIE_CONSUL_MASTER_TOKEN")
        .unwrap_or_else(|_| panic!("VALKEYRIE_CONSUL_MASTER_TOKEN is not set: run `cargo xtask test --backend consul`"))
}

/// A key made unique per run, under `vk-consul/`.
pub(crate) fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    format!("vk-consul/{name}-{}-{nanos}", std::process::id())
}

/// The first agent, spoken to directly.
pub(crate) struct Agent {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Agent {
    pub(crate) fn new() -> Self {
        Agent {
            base: format!("http://{}", endpoints()[0]),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Status and body of one request.
    pub(crate) async fn request(&self, method: Method, path: &str, body: &[u8]) -> (u16, Bytes) {
        self.request_as("", method, path, body).await
    }

    /// Status and body of one request made with the ACL `token`.
    pub(crate) async fn request_as(&self, token: &str, method: Method, path: &str, body: &[u8]) -> (u16, Bytes) {
        let request = Request::builder()
            .header("X-Consul-Token", token)
            .method(method)
            .uri(format!("{}/v1/{path}", self.base))
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("a request");
        let response = self.http.request(request).await.expect("the agent answers");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.expect("a body").to_bytes();
        (status, body)
    }

    /// The raw KV entry at `key` (with `Session`, `Flags`, `LockIndex`…), if any.
    pub(crate) async fn entry(&self, key: &str) -> Option<Value> {
        let (status, body) = self.request(Method::GET, &format!("kv/{key}"), b"").await;
        if status == 404 {
            return None;
        }
        let entries: Value = serde_json::from_slice(&body).expect("KV JSON");
        entries.get(0).cloned()
    }

    /// Every session of the cluster.
    pub(crate) async fn sessions(&self) -> Vec<Value> {
        let (_, body) = self.request(Method::GET, "session/list", b"").await;
        serde_json::from_slice(&body).expect("session JSON")
    }

    /// The session `id`, if it exists.
    pub(crate) async fn session(&self, id: &str) -> Option<Value> {
        self.sessions().await.into_iter().find(|s| s["ID"] == id)
    }

    pub(crate) async fn delete(&self, key: &str) {
        let (status, _) = self.request(Method::DELETE, &format!("kv/{key}"), b"").await;
        assert_eq!(status, 200, "delete {key}");
    }

    pub(crate) async fn put(&self, key: &str, value: &[u8]) {
        let (status, _) = self.request(Method::PUT, &format!("kv/{key}"), value).await;
        assert_eq!(status, 200, "put {key}");
    }

    pub(crate) async fn destroy_session(&self, id: &str) {
        let (status, _) = self.request(Method::PUT, &format!("session/destroy/{id}"), b"").await;
        assert_eq!(status, 200, "destroy session {id}");
    }
}
