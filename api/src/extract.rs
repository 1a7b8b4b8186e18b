//! Extractors that turn bad input into a 400 naming the field.
//!
//! axum's own `Json` rejects with plain text; [`ValidJson`] parses with
//! `serde_path_to_error`, so `{"task": {"argv": 3}}` yields `field: "task.argv"`.
//! Newtypes in `ris-schemas` validate during deserialization, so a handler that gets a
//! `ValidJson<T>` holds a valid `T`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, fully validated.
pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_content = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ct| ct.starts_with("application/json") || ct.contains("+json"));
        if !json_content {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a JSON body (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(e.status(), "body_too_large", e.body_text())
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", e.body_text())
            }
        })?;
        parse_json(&bytes).map(ValidJson)
    }
}

/// Parses `bytes` as `T`, naming the offending field on error.
///
/// A NUL character (`\u0000`) anywhere in a string is refused up front: PostgreSQL
/// cannot store it in `text` or `jsonb`, and no field of the API has a use for it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if nesting_depth(bytes) > MAX_JSON_DEPTH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "json_too_deep",
            format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    if contains_nul_escape(bytes) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "strings may not contain the NUL character (\\u0000)",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("request body is not valid JSON: {inner}"),
            );
        }
        let message = strip_position(&inner.to_string());
        // Types that parse their content by hand report the inner field in the message.
        let (path, message) = match ris_schemas::task::split_nested(&message) {
            Some((inner_path, msg)) if path == "." => (inner_path.to_owned(), msg.to_owned()),
            Some((inner_path, msg)) => (format!("{path}.{inner_path}"), msg.to_owned()),
            None => (path, message),
        };
        let error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message);
        if path == "." {
            error
        } else {
            error.with_field(path)
        }
    })
}

/// Deepest nesting of objects and arrays accepted in a body. No API body needs more
/// than a handful of levels; the limit keeps recursive parsing cheap and bounded.
pub const MAX_JSON_DEPTH: usize = 64;

/// The deepest nesting of `[` and `{` outside strings (the text need not be valid).
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Whether the JSON text holds a `\u0000` escape (a raw NUL byte is a syntax error).
fn contains_nul_escape(bytes: &[u8]) -> bool {
    bytes.windows(6).enumerate().any(|(i, w)| {
        w == b"\\u0000" && bytes[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0
    })
}

/// serde_json appends " at line 1 column 42"; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(idx) => message[..idx].to_owned(),
        None => message.to_owned(),
    }
}

/// Parses a path or query parameter, naming it on error.
pub fn parse_param<T: std::str::FromStr>(name: &str, raw: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    raw.parse()
        .map_err(|e| ApiError::invalid(name, format!("`{name}` is invalid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ris_schemas::task::TaskRequest;

    #[test]
    fn names_the_nested_field() {
        let err = parse_json::<TaskRequest>(
            br#"{"target":{"selector":"a=b"},"task":{"kind":"shell","argv":3}}"#,
        )
        .unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.field.as_deref(), Some("task.argv"), "{err:?}");
    }

    #[test]
    fn nul_characters_are_refused_but_escaped_backslashes_are_not() {
        let err = parse_json::<serde_json::Value>(br#"{"a":"x\u0000"}"#).unwrap_err();
        assert!(err.message.contains("NUL"), "{err:?}");
        // `\\u0000` is a backslash followed by the text u0000: allowed.
        assert!(parse_json::<serde_json::Value>(br#"{"a":"\\u0000"}"#).is_ok());
    }

    #[test]
    fn deep_json_is_refused_by_name() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        let err = parse_json::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert_eq!(err.code, "json_too_deep");
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse_json::<serde_json::Value>(ok.as_bytes()).is_ok());
        // Brackets inside strings do not count.
        let s = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        assert!(parse_json::<serde_json::Value>(s.as_bytes()).is_ok(), "{s}");
    }

    #[test]
    fn malformed_json() {
        let err = parse_json::<TaskRequest>(b"{nope").unwrap_err();
        assert_eq!(err.code, "malformed_json");
    }

    #[test]
    fn unknown_kind_and_missing_field() {
        let err =
            parse_json::<TaskRequest>(br#"{"target":{"selector":"a=b"},"task":{"kind":"ftp"}}"#)
                .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("task.kind"), "{err:?}");
        assert!(err.message.contains("ftp"), "{err:?}");
        let err = parse_json::<TaskRequest>(br#"{"task":{"kind":"noop"}}"#).unwrap_err();
        assert!(err.message.contains("target"), "{err:?}");
    }
}
