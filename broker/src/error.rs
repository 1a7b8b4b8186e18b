//! The one error type of the broker crate.

use lapin::types::ShortString;

/// Anything that can go wrong talking to RabbitMQ.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("timed out after {0:?} while {1}")]
    Timeout(std::time::Duration, &'static str),
    #[error("message to {exchange}/{routing_key} was unroutable")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("broker refused (nack) message to {exchange}/{routing_key}")]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    #[error("management API {method} {path}: {status} {body}")]
    Management {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("management API request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("reading the broker CA {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is plain AMQP: use amqps:// (with ca_file), or set insecure_amqp = true for local development")]
    PlainAmqp(String),
    /// A name or property longer than AMQP's short-string limit (255 bytes).
    #[error("{field} is {len} bytes long, AMQP allows at most 255")]
    TooLong { field: &'static str, len: usize },
    /// A message to an agent could not be signed (no signing key available).
    #[error("signing: {0}")]
    Signing(String),
}

/// AMQP reply code ACCESS_REFUSED.
const ACCESS_REFUSED: u16 = 403;

impl BrokerError {
    /// True when the broker refused the operation for lack of permission (AMQP 403
    /// ACCESS_REFUSED, at channel or connection level, including failed logins).
    pub fn is_access_refused(&self) -> bool {
        match self {
            BrokerError::Amqp(e) => match e.kind() {
                lapin::ErrorKind::ProtocolError(amqp) => amqp.get_id() == ACCESS_REFUSED,
                _ => false,
            },
            _ => false,
        }
    }
}

/// Converts to an AMQP short string, refusing (instead of panicking, as `From` does)
/// anything over 255 bytes.
pub(crate) fn short(field: &'static str, value: &str) -> Result<ShortString, BrokerError> {
    ShortString::try_new(value).map_err(|_| BrokerError::TooLong {
        field,
        len: value.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_errors_not_panics() {
        assert!(short("routing key", "k").is_ok());
        let err = short("routing key", &"k".repeat(256)).unwrap_err();
        assert!(matches!(err, BrokerError::TooLong { len: 256, .. }));
        assert!(!err.is_access_refused());
    }
}
