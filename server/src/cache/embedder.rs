//! A client for OpenAI-compatible embedding endpoints: `POST {url}/v1/embeddings` with
//! `{"model", "input": [...]}` answers `{"data": [{"index", "embedding": [...]}, ...]}`. Ollama,
//! TEI, vLLM and OpenAI all speak it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::EmbedderConfig;
use crate::telemetry::names::{CACHE_EMBEDDER_DURATION_SECONDS, CACHE_EMBEDDER_REQUESTS_TOTAL};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("the embedder did not answer: {0}")]
    Request(#[from] reqwest::Error),
    #[error("the embedder answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the embedder's answer is not usable: {0}")]
    Invalid(String),
}

pub struct Embedder {
    client: reqwest::Client,
    endpoint: String,
    model: String,
    api_key: Option<String>,
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [&'a str],
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

impl Embedder {
    /// None when no embedder is configured.
    pub fn new(config: &EmbedderConfig) -> anyhow::Result<Option<Self>> {
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("patchbay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(Self {
            client,
            endpoint: format!("{}/v1/embeddings", url.trim_end_matches('/')),
            model: config.model.clone(),
            api_key: config.api_key.clone(),
        }))
    }

    /// One embedding per input, in the order given.
    pub async fn embed(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let started = Instant::now();
        let result = self.request(inputs).await;
        let outcome = if result.is_ok() { "success" } else { "failure" };
        metrics::counter!(CACHE_EMBEDDER_REQUESTS_TOTAL, "outcome" => outcome).increment(1);
        metrics::histogram!(CACHE_EMBEDDER_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::warn!(error = %e, endpoint = %self.endpoint, "embedding request failed");
        }
        result
    }

    async fn request(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut request = self.client.post(&self.endpoint).json(&Request {
            model: &self.model,
            input: inputs,
        });
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            let body: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            return Err(EmbedError::Status {
                status: status.as_u16(),
                body,
            });
        }
        let mut answer: Response = response
            .json()
            .await
            .map_err(|e| EmbedError::Invalid(e.to_string()))?;
        if answer.data.len() != inputs.len() {
            return Err(EmbedError::Invalid(format!(
                "{} embeddings for {} inputs",
                answer.data.len(),
                inputs.len()
            )));
        }
        // OpenAI numbers the items; keep the input order whatever the answer's order.
        if answer.data.iter().all(|item| item.index.is_some()) {
            answer.data.sort_by_key(|item| item.index);
            if answer
                .data
                .iter()
                .enumerate()
                .any(|(i, item)| item.index != Some(i))
            {
                return Err(EmbedError::Invalid(
                    "the answer's indexes do not match the inputs".into(),
                ));
            }
        }
        Ok(answer.data.into_iter().map(|item| item.embedding).collect())
    }
}
