//! The one HTTP error type.
//!
//! Every error leaves the API as `{"code", "message", "field"?}` with a status that says
//! whose fault it was. Codes are stable; messages are for people. A 5xx says nothing
//! internal to the caller and is logged once, here, with its cause.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ris_schemas::api::ApiErrorBody;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400: the request is wrong; `field` names what.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", message).with_field(field)
    }

    pub fn not_found(what: &'static str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 503: a dependency is down; the caller may retry.
    pub fn unavailable(dependency: &'static str, cause: &dyn std::error::Error) -> Self {
        tracing::warn!(dependency, error = %error_chain(cause), "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{dependency} is unavailable, retry later"),
        )
    }

    /// 500: a bug or an unexpected state. Logged with its cause; the body says nothing
    /// internal.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error_chain(cause), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }
}

/// `outer: inner: innermost`, for logs.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            code: self.code.to_owned(),
            message: self.message,
            field: self.field,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ris_store::StoreError> for ApiError {
    fn from(err: ris_store::StoreError) -> Self {
        match &err {
            ris_store::StoreError::TaskIdTaken(_) => {
                Self::conflict("task_id_taken", "this task id is already in use")
            }
            e if e.is_unavailable() => Self::unavailable("database", e),
            e => Self::internal(e),
        }
    }
}

impl From<ris_broker::BrokerError> for ApiError {
    fn from(err: ris_broker::BrokerError) -> Self {
        Self::unavailable("message broker", &err)
    }
}

impl From<ris_presence::PresenceError> for ApiError {
    fn from(err: ris_presence::PresenceError) -> Self {
        match err {
            ris_presence::PresenceError::Redis(e) => Self::unavailable("redis", &e),
            e @ ris_presence::PresenceError::Corrupt(_) => Self::internal(&e),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
