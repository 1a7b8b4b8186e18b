//! The http executor: one request from the agent's machine.
//!
//! Two clients are built once and shared: one verifies TLS certificates, the other
//! (for `tls_verify: false`) does not. The response body is read chunk by chunk and
//! kept up to the output cap; reading stops there and the result says `truncated`.

use std::collections::BTreeMap;
use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, Response};
use ris_schemas::task::{HttpOutput, HttpSpec, Outcome, TaskOutput, TaskResult};
use tokio_util::sync::CancellationToken;

use super::{elapsed_ms, error_chain, reason, unsuccessful, Limits};

#[derive(Clone)]
pub struct HttpExecutor {
    verifying: Client,
    insecure: Client,
}

/// Why a request produced no response.
enum RequestError {
    Invalid(String),
    Transport(String),
}

impl HttpExecutor {
    pub fn new() -> Result<Self, reqwest::Error> {
        let agent = concat!("ris-agent/", env!("CARGO_PKG_VERSION"));
        Ok(Self {
            verifying: Client::builder().user_agent(agent).build()?,
            insecure: Client::builder()
                .user_agent(agent)
                .danger_accept_invalid_certs(true)
                .build()?,
        })
    }

    /// Runs an http task. Never panics; every failure is a result.
    pub async fn run(
        &self,
        spec: &HttpSpec,
        limits: Limits,
        cancel: &CancellationToken,
    ) -> TaskResult {
        let started = Instant::now();
        let exchange = tokio::time::timeout(limits.timeout, self.exchange(spec, limits.output_cap));
        let outcome = tokio::select! {
            r = exchange => r,
            _ = cancel.cancelled() => {
                return unsuccessful(Outcome::Cancelled, reason::CANCELLED, "cancelled", started, TaskOutput::None);
            }
        };
        let output = match outcome {
            Err(_) => {
                return unsuccessful(
                    Outcome::TimedOut,
                    reason::TIMEOUT,
                    format!("timed out after {} s", limits.timeout.as_secs()),
                    started,
                    TaskOutput::None,
                )
            }
            Ok(Err(RequestError::Invalid(e) | RequestError::Transport(e))) => {
                return unsuccessful(
                    Outcome::Failed,
                    reason::HTTP_ERROR,
                    e,
                    started,
                    TaskOutput::None,
                )
            }
            Ok(Ok(output)) => output,
        };
        let ok = match spec.expected_status {
            Some(expected) => output.status == expected,
            None => (200..300).contains(&output.status),
        };
        if ok {
            return TaskResult {
                outcome: Outcome::Completed,
                reason: None,
                error: None,
                duration_ms: elapsed_ms(started),
                output: TaskOutput::Http(output),
            };
        }
        let wanted = spec
            .expected_status
            .map_or_else(|| "2xx".to_owned(), |s| s.to_string());
        unsuccessful(
            Outcome::Failed,
            reason::UNEXPECTED_STATUS,
            format!("status {} (expected {wanted})", output.status),
            started,
            TaskOutput::Http(output),
        )
    }

    async fn exchange(&self, spec: &HttpSpec, cap: usize) -> Result<HttpOutput, RequestError> {
        let client = if spec.tls_verify {
            &self.verifying
        } else {
            &self.insecure
        };
        let method = Method::from_bytes(spec.method.as_str().as_bytes())
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        let mut request = client
            .request(method, spec.url.as_url().clone())
            .headers(headers(&spec.headers)?);
        if let Some(body) = &spec.body {
            request = request.body(body.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| RequestError::Transport(error_chain(&e)))?;
        read_response(response, cap).await
    }
}

fn headers(spec: &BTreeMap<String, String>) -> Result<HeaderMap, RequestError> {
    let mut map = HeaderMap::new();
    for (name, value) in spec {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| RequestError::Invalid(format!("invalid header name `{name}`")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| RequestError::Invalid(format!("invalid value for header `{name}`")))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Status, headers (repeated ones joined with `, `) and the body up to `cap` bytes.
async fn read_response(mut response: Response, cap: usize) -> Result<HttpOutput, RequestError> {
    let status = response.status().as_u16();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in response.headers() {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let mut body = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| RequestError::Transport(error_chain(&e)))?
    {
        let room = cap.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..room.min(chunk.len())]);
        if chunk.len() > room {
            truncated = true;
            break;
        }
    }
    Ok(HttpOutput {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        body_truncated: truncated,
    })
}
