//! The CLI's client of a running agent's HTTP API (`lodestar status`, `vips ls --agent`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};

/// How long the agent has to answer one request.
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct AgentClient {
    base: String,
    http: reqwest::Client,
}

impl AgentClient {
    pub fn new(addr: SocketAddr) -> Result<AgentClient> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(TIMEOUT)
            // The agent is a local address: a proxy from the environment must not take it.
            .no_proxy()
            .build()
            .context("cannot build an HTTP client")?;
        Ok(AgentClient {
            base: format!("http://{addr}"),
            http,
        })
    }

    /// GETs `path` and decodes its JSON.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let response = self.http.get(&url).send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "no answer in time".to_string()
            } else {
                innermost(&e)
            };
            anyhow::anyhow!("cannot reach the agent's HTTP API at {}: {why}", self.base)
        })?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "{url}: {status}");
        let body = response
            .bytes()
            .await
            .with_context(|| format!("{url}: the answer broke off"))?;
        serde_json::from_slice(&body).with_context(|| format!("{url}: not the JSON expected"))
    }
}

/// The last cause of an error ("Connection refused (os error 111)"), not reqwest's wrapping.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}
