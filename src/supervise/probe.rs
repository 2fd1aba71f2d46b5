//! Health probes: one HTTP client for the whole daemon (connections are pooled per gateway), a GET
//! with a time limit, and "healthy" means a 2xx answer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// The daemon's HTTP client for probes. Cheap to clone.
#[derive(Clone)]
pub struct Prober {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for Prober {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            // Probe answers are a few hundred bytes: a small buffer per pooled connection.
            .http1_read_buf_exact_size(2048)
            .build(connector);
        Prober { client }
    }
}

impl Prober {
    /// GETs `url` within `timeout`: `Ok` on a 2xx answer, otherwise what went wrong.
    pub async fn probe(&self, url: &str, timeout: Duration) -> Result<(), String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let get = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
            let status = resp.status();
            // Read the (small) body so the connection can be reused.
            let _ = resp.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("GET {url}: HTTP {status}"))
            }
        };
        match tokio::time::timeout(timeout, get).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "GET {url}: no answer within {}",
                humantime::format_duration(timeout)
            )),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
