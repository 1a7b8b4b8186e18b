//! Connecting: bounded connect, retry until cancelled.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

use std::time::Duration;

use ris_broker::{connect_admin, connect_with_retry, BrokerConfig, BrokerError};
use tokio_util::sync::CancellationToken;

/// A broker address where nothing listens.
fn unreachable() -> BrokerConfig {
    BrokerConfig {
        amqp_url: "amqp://127.0.0.1:1".into(),
        connect_timeout_ms: 500,
        ..BrokerConfig::default()
    }
}

#[tokio::test]
async fn connect_fails_fast_when_nothing_listens() {
    let started = std::time::Instant::now();
    let err = connect_admin(&unreachable(), "/", "test")
        .await
        .unwrap_err();
    assert!(
        matches!(err, BrokerError::Amqp(_) | BrokerError::Timeout(..)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn connect_with_retry_connects_or_gives_up_when_cancelled() {
    let cfg = BrokerConfig::default();
    let cancel = CancellationToken::new();
    let conn = connect_with_retry(&cfg, "/", &cfg.username, &cfg.password, "test", &cancel);
    let conn = conn.await.expect("the local broker is up");
    assert!(conn.status().connected());

    let cfg = unreachable();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        stop.cancel();
    });
    let gave_up = connect_with_retry(&cfg, "/", "guest", "guest", "test", &cancel);
    let gave_up = tokio::time::timeout(Duration::from_secs(5), gave_up).await;
    assert!(gave_up.expect("returns once cancelled").is_none());
}
