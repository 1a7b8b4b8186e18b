//! Limits on what a request may carry and how long it may take.
//!
//! Body size is capped by `RequestBodyLimitLayer` (413) and JSON nesting by
//! [`crate::extract::MAX_JSON_DEPTH`] (400); this module caps headers (431) and the time
//! a handler may take to start answering (408). Streams (SSE, WebSocket) are not cut:
//! the timeout ends when the response head is ready.

use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Largest request body accepted (a task with a big inline script fits).
pub const MAX_BODY: usize = 2 * 1024 * 1024;
/// Largest total size of request header names and values.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 64;
/// Longest a handler may take to produce its response head.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// Refuses oversized headers (431) and a declared body over [`MAX_BODY`] (413) with
/// the API's JSON error; a body without a length is cut by `RequestBodyLimitLayer`.
pub async fn limit_headers(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {MAX_BODY} bytes"),
        )
        .into_response();
    }
    let size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > MAX_HEADER_BYTES || headers.len() > MAX_HEADERS {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers exceed {MAX_HEADERS} fields or {MAX_HEADER_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

pub async fn timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(HANDLER_TIMEOUT, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!("request timed out after {HANDLER_TIMEOUT:?}");
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the request took longer than {} s",
                    HANDLER_TIMEOUT.as_secs()
                ),
            )
            .into_response()
        }
    }
}
