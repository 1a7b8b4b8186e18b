//! Retrying store and Redis calls while a dependency is down.
//!
//! A delivery whose handling needs PostgreSQL is held (not acked, not requeued) while
//! the database is unreachable; the call is retried with exponential backoff and jitter
//! until it succeeds or the process shuts down. Requeueing instead would burn through
//! the queue's delivery limit and park healthy messages as poison. Errors that retrying
//! cannot fix (bad data, a bug) are returned at once for the caller to dead-letter.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

/// Whether an error may go away by itself.
pub trait Transient: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl Transient for ris_store::StoreError {
    fn is_transient(&self) -> bool {
        self.is_unavailable() || self.is_conflict()
    }
}

impl Transient for ris_presence::PresenceError {
    fn is_transient(&self) -> bool {
        matches!(self, ris_presence::PresenceError::Redis(_))
    }
}

/// Why [`until_ok`] gave up.
#[derive(Debug)]
pub enum Stop<E> {
    /// The process is shutting down.
    Shutdown,
    /// A permanent error.
    Failed(E),
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

/// Runs `op` until it succeeds, fails permanently, or `shutdown` fires.
pub async fn until_ok<T, E, F, Fut>(
    what: &'static str,
    shutdown: &CancellationToken,
    op: F,
) -> Result<T, Stop<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Transient,
{
    let retried = op.retry(backoff()).when(E::is_transient).notify(|err: &E, delay: Duration| {
        metrics::counter!("ris_dispatcher_dependency_retries_total", "op" => what).increment(1);
        tracing::warn!(op = what, error = %err, retry_in = ?delay, "dependency unavailable; retrying");
    });
    tokio::select! {
        res = retried => res.map_err(|err| {
            tracing::error!(op = what, error = %err, "permanent failure");
            Stop::Failed(err)
        }),
        _ = shutdown.cancelled() => Err(Stop::Shutdown),
    }
}
