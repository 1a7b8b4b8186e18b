//! HTTP to the RIS API, and what its failures look like to a person.
//!
//! Every call returns the response body as JSON ([`serde_json::Value`]) so `--json` can
//! print exactly what the API said; callers turn it into the typed views of
//! `ris_schemas::api` for tables with [`typed`]. A non-2xx answer becomes
//! [`ClientError::Api`] carrying the API's `message` and `field`; a request that never
//! got an answer becomes [`ClientError::Connect`], naming the URL.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::{Method, StatusCode};
use ris_schemas::api::ApiErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::config::Target;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{}", api_message(*.status, .body))]
    Api {
        status: StatusCode,
        body: ApiErrorBody,
    },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("cannot reach the RIS API at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// An answer this version of risctl does not understand.
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
}

fn api_message(status: StatusCode, body: &ApiErrorBody) -> String {
    let mut text = format!("{} ({}, {})", body.message, status.as_u16(), body.code);
    if let Some(field) = &body.field {
        text.push_str(&format!(" [field: {field}]"));
    }
    text
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one API with one key.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// For streams (Server-Sent Events), which last as long as what they follow: only
    /// connecting is bounded.
    streaming: reqwest::Client,
    target: Target,
}

impl Client {
    /// A client of `target`, trusting only the CA in `ca` (PEM) when given.
    pub fn new(target: Target, ca: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let tls = match ca {
            Some(ca) => Some(
                ris_runtime::tls::client_config(ca)
                    .with_context(|| format!("loading the CA {}", ca.display()))?,
            ),
            None => None,
        };
        let builder = || {
            let builder = reqwest::Client::builder()
                .user_agent(concat!("risctl/", env!("CARGO_PKG_VERSION")));
            match &tls {
                Some(tls) => builder.use_preconfigured_tls(tls.clone()),
                None => builder,
            }
        };
        let http = builder().timeout(REQUEST_TIMEOUT).build()?;
        let streaming = builder().connect_timeout(REQUEST_TIMEOUT).build()?;
        Ok(Self {
            http,
            streaming,
            target,
        })
    }

    /// Opens a Server-Sent Events stream (`GET path`).
    pub async fn stream(&self, path: &str) -> Result<crate::sse::SseReader, ClientError> {
        let url = format!("{}{path}", self.target.api);
        let response = self
            .streaming
            .get(&url)
            .bearer_auth(&self.target.key)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| ClientError::Connect {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            let body =
                serde_json::from_slice::<ApiErrorBody>(&bytes).unwrap_or_else(|_| ApiErrorBody {
                    code: "error".into(),
                    message: format!("{url} answered {status}"),
                    field: None,
                });
            return Err(ClientError::Api { status, body });
        }
        Ok(crate::sse::SseReader::new(response))
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send::<()>(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize>(&self, path: &str, body: &B) -> Result<Value, ClientError> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// POST without a body (cancel, replay).
    pub async fn post_empty(&self, path: &str) -> Result<Value, ClientError> {
        self.send::<()>(Method::POST, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send::<()>(Method::DELETE, path, None).await
    }

    /// Sends a request to `path` (which starts with `/v1/`); an empty answer is `null`.
    pub async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.target.api);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.target.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Connect {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| ClientError::Connect {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
                url,
                reason: e.to_string(),
            });
        }
        let body =
            serde_json::from_slice::<ApiErrorBody>(&bytes).unwrap_or_else(|_| ApiErrorBody {
                code: status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_lowercase()
                    .replace(' ', "_"),
                message: format!("{url} answered {status}"),
                field: None,
            });
        Err(ClientError::Api { status, body })
    }
}

/// A JSON answer as one of the typed views.
pub fn typed<T: DeserializeOwned>(value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("unexpected answer from the API: {e}"))
}

/// `err: cause: cause`, because reqwest's top-level message alone ("error sending
/// request") does not say what went wrong.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Percent-encodes one path segment or query value (ids and names are ASCII, but a
/// typo should give a 404 or 400, not a different path).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_show_message_status_code_and_field() {
        let err = ClientError::Api {
            status: StatusCode::BAD_REQUEST,
            body: ApiErrorBody {
                code: "invalid".into(),
                message: "`limit` must be between 1 and 200".into(),
                field: Some("limit".into()),
            },
        };
        assert_eq!(
            err.to_string(),
            "`limit` must be between 1 and 200 (400, invalid) [field: limit]"
        );
    }

    #[test]
    fn encode_keeps_unreserved_characters() {
        assert_eq!(encode("acme-1_x.y~"), "acme-1_x.y~");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }

    #[tokio::test]
    async fn connection_errors_name_the_url() {
        // Port 9 on localhost: nothing listens (discard is never enabled here).
        let client = Client::new(
            Target {
                api: "http://127.0.0.1:9".into(),
                key: "k".into(),
            },
            None,
        )
        .unwrap();
        let err = client.get("/v1/agents").await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot reach the RIS API at http://127.0.0.1:9/v1/agents"),
            "{text}"
        );
    }
}
