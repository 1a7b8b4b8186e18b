//! Opening AMQP connections: URI building, a bounded connect, and a reconnect loop.
//!
//! One connection serves one vhost, hence one tenant. lapin runs an OS thread per
//! connection, so share connections (one channel per concern) rather than multiply them.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::percent::encode;

/// Builds `scheme://user:password@host:port/vhost?heartbeat=..[&frame_max=..]`.
///
/// User, password and vhost are percent-encoded. Credentials or a path already present
/// in `base` are dropped; query parameters already present are kept (after ours).
pub fn amqp_uri(
    base: &str,
    vhost: &str,
    username: &str,
    password: &str,
    heartbeat_secs: u16,
    frame_max: Option<u32>,
) -> String {
    let (head, query) = base.split_once('?').unwrap_or((base, ""));
    let (scheme, rest) = head.split_once("://").unwrap_or(("amqp", head));
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let mut uri = format!(
        "{scheme}://{}:{}@{host}/{}?heartbeat={heartbeat_secs}",
        encode(username),
        encode(password),
        encode(vhost)
    );
    if let Some(frame_max) = frame_max {
        uri.push_str(&format!("&frame_max={frame_max}"));
    }
    if !query.is_empty() {
        uri.push('&');
        uri.push_str(query);
    }
    uri
}

/// Opens a connection to `vhost` as the given user, with connection_name set (shows in
/// the management UI), heartbeat and frame_max from cfg, wrapped in a timeout (lapin's
/// connect has none). Must be called inside tokio.
#[tracing::instrument(skip(cfg, password))]
pub async fn connect(
    cfg: &BrokerConfig,
    vhost: &str,
    username: &str,
    password: &str,
    connection_name: &str,
) -> Result<Connection, BrokerError> {
    let mut uri = amqp_uri(
        &cfg.amqp_url,
        vhost,
        username,
        password,
        cfg.heartbeat_secs,
        cfg.frame_max,
    );
    uri.push_str(&format!("&connection_timeout={}", cfg.connect_timeout_ms));
    let props = ConnectionProperties::default().with_connection_name(connection_name.into());
    let tls = tls_config(cfg).await?;
    let runtime = lapin::runtime::default_runtime()?;
    let limit = cfg.connect_timeout();
    let connecting = Connection::connect_with_config(&uri, props, tls, runtime);
    match tokio::time::timeout(limit, connecting).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(BrokerError::Timeout(limit, "connecting to RabbitMQ")),
    }
}

/// TLS settings for `amqps://`: the configured CA (PEM), else the system's roots.
/// (lapin's rustls connector offers TLS 1.2 and 1.3 only.)
async fn tls_config(cfg: &BrokerConfig) -> Result<OwnedTLSConfig, BrokerError> {
    let cert_chain =
        match &cfg.ca_file {
            Some(path) => Some(tokio::fs::read_to_string(path).await.map_err(|source| {
                BrokerError::CaFile {
                    path: path.clone(),
                    source,
                }
            })?),
            None => None,
        };
    Ok(OwnedTLSConfig {
        identity: None,
        cert_chain,
    })
}

/// Same as [`connect`] with the admin credentials from cfg.
pub async fn connect_admin(
    cfg: &BrokerConfig,
    vhost: &str,
    connection_name: &str,
) -> Result<Connection, BrokerError> {
    connect(cfg, vhost, &cfg.username, &cfg.password, connection_name).await
}

/// The reconnect backoff: exponential with jitter, 100 ms to 3 s, never giving up (a
/// short ceiling: after a broker restart every client should be back within seconds).
fn reconnect_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(3))
        .without_max_times()
}

/// Connects like [`connect`], retrying (exponential backoff with jitter, 100 ms to 10 s,
/// unlimited attempts) until it succeeds or `cancel` fires (then `None`). Each failure is
/// logged at warn level.
pub async fn connect_with_retry(
    cfg: &BrokerConfig,
    vhost: &str,
    username: &str,
    password: &str,
    connection_name: &str,
    cancel: &CancellationToken,
) -> Option<Connection> {
    let attempt = || connect(cfg, vhost, username, password, connection_name);
    let retrying = attempt
        .retry(reconnect_backoff())
        .sleep(tokio::time::sleep)
        .notify(|err: &BrokerError, delay: Duration| {
            tracing::warn!(%vhost, %username, error = %err, ?delay, "broker connect failed, retrying");
        });
    tokio::select! {
        conn = retrying => conn.ok(),
        () = cancel.cancelled() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_encodes_credentials_and_vhost() {
        let uri = amqp_uri("amqp://127.0.0.1:5672", "ris.acme", "u@x", "p:/w", 10, None);
        assert_eq!(
            uri,
            "amqp://u%40x:p%3A%2Fw@127.0.0.1:5672/ris.acme?heartbeat=10"
        );
        let uri = amqp_uri(
            "amqps://old:pw@h:5671/?cafile=x",
            "/",
            "a",
            "b",
            5,
            Some(16384),
        );
        assert_eq!(
            uri,
            "amqps://a:b@h:5671/%2F?heartbeat=5&frame_max=16384&cafile=x"
        );
    }

    #[test]
    fn uri_parses_back() {
        let uri = amqp_uri(
            "amqp://h:1",
            "ris.t-1",
            "ris.t-1.agent.x",
            "p w",
            7,
            Some(8192),
        );
        let parsed: lapin::uri::AMQPUri = uri.parse().unwrap();
        assert_eq!(parsed.vhost, "ris.t-1");
        assert_eq!(parsed.authority.userinfo.username, "ris.t-1.agent.x");
        assert_eq!(parsed.authority.userinfo.password, "p w");
        assert_eq!(parsed.query.heartbeat, Some(7));
        assert_eq!(parsed.query.frame_max, Some(8192));
    }
}
