//! Process plumbing shared by the RIS binaries.
//!
//! - [`load_config`]: defaults, then the TOML file named by `RIS_CONFIG`, then `RIS_*`
//!   environment variables (`__` separates nested keys: `RIS_BROKER__AMQP_URL`).
//! - [`init_tracing`]: logs to stderr, filtered by `RUST_LOG` (default `info`), as JSON
//!   when `RIS_LOG_FORMAT=json`.
//! - [`shutdown_token`]: one [`CancellationToken`] cancelled on SIGTERM or SIGINT, handed
//!   down from `main` to every long-running loop.
//! - [`prometheus`]: the process-wide Prometheus recorder behind `/metrics`.
//! - [`at_startup`]: retries a dependency a process cannot start without (PostgreSQL
//!   while migrating, Redis), so the processes may start before their dependencies.
//! - [`batch`]: group commit — one worker handling many callers' items together.
//! - [`tls`]: rustls server and client configurations (TLS 1.2 minimum) and the
//!   development CA.

pub mod batch;
pub mod tls;

use std::sync::OnceLock;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Sets up logging once; later calls do nothing (tests may call it repeatedly).
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var("RIS_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // An error only means a subscriber is already installed.
    drop(result);
}

/// A token cancelled when the process receives SIGTERM or SIGINT.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; falling back to ctrl-c");
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; metrics then go there.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Loads a binary's configuration: `T::default()`, overridden by the TOML file named by
/// `RIS_CONFIG` (if set), overridden by `RIS_*` environment variables.
pub fn load_config<T: Default + Serialize + DeserializeOwned>() -> Result<T, Box<figment::Error>> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Ok(path) = std::env::var("RIS_CONFIG") {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment
        .merge(Env::prefixed("RIS_").split("__").ignore(&["config"]))
        .extract()
        .map_err(Box::new)
}

/// How long a process keeps trying to reach a dependency it cannot start without.
pub const STARTUP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `op` until it succeeds, with exponential backoff and jitter, for at most
/// [`STARTUP_PATIENCE`]; logs each failure. Then the last error is returned.
pub async fn at_startup<T, E, F, Fut>(what: &'static str, op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    use backon::{ExponentialBuilder, Retryable};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_jitter()
        .with_total_delay(Some(STARTUP_PATIENCE))
        .without_max_times();
    op.retry(backoff)
        .notify(|err: &E, delay| tracing::warn!(dependency = what, error = %err, retry_in = ?delay, "not reachable yet"))
        .await
}
