//! The connection to the local Docker engine.
//!
//! A bollard client is made lazily on the configured unix socket, with the API version
//! negotiated (Debian's engine speaks an older API than bollard's default). [`Engine::probe`]
//! pings it; [`Engine::run_probe`] does so every `every` and keeps
//! [`Engine::is_available`] current, which the heartbeat reads to advertise the `docker`
//! capability. A transport failure on any call forgets the client, so the next call
//! reconnects (the engine may have been restarted).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use tokio_util::sync::CancellationToken;

use super::DockerError;

/// Default engine socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Longest wait for one engine request (pulls, stops with grace are bounded separately).
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Longest wait for a ping.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A cheap handle (clones share the client).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    socket: PathBuf,
    client: tokio::sync::Mutex<Option<Docker>>,
    available: AtomicBool,
}

impl Engine {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                socket: socket.into(),
                client: tokio::sync::Mutex::new(None),
                available: AtomicBool::new(false),
            }),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.inner.socket
    }

    pub(crate) fn socket_str(&self) -> String {
        self.inner.socket.display().to_string()
    }

    /// Whether the last contact with the engine worked.
    pub fn is_available(&self) -> bool {
        self.inner.available.load(Ordering::Relaxed)
    }

    /// A client, connecting first when there is none.
    pub async fn client(&self) -> Result<Docker, DockerError> {
        let mut guard = self.inner.client.lock().await;
        if let Some(client) = guard.as_ref() {
            return Ok(client.clone());
        }
        match self.connect().await {
            Ok(client) => {
                self.set_available(true);
                *guard = Some(client.clone());
                Ok(client)
            }
            Err(e) => {
                self.set_available(false);
                Err(e)
            }
        }
    }

    async fn connect(&self) -> Result<Docker, DockerError> {
        let socket = self.socket_str();
        let sort = |e| DockerError::from_bollard(&socket, e);
        let client =
            Docker::connect_with_unix(&socket, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                .map_err(sort)?;
        let client = tokio::time::timeout(PING_TIMEOUT, client.negotiate_version())
            .await
            .map_err(|_| DockerError::Unavailable {
                socket: socket.clone(),
                message: "no answer to the version request".to_owned(),
            })?
            .map_err(sort)?;
        Ok(client)
    }

    /// Sorts a bollard error; a transport failure marks the engine unavailable and drops
    /// the client so the next call reconnects.
    pub(crate) async fn fail(&self, err: bollard::errors::Error) -> DockerError {
        let err = DockerError::from_bollard(&self.socket_str(), err);
        if err.is_unavailable() {
            self.set_available(false);
            *self.inner.client.lock().await = None;
        }
        err
    }

    /// Pings the engine; true when it answers.
    pub async fn probe(&self) -> bool {
        let ok = match self.client().await {
            Ok(client) => match tokio::time::timeout(PING_TIMEOUT, client.ping()).await {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => {
                    self.fail(e).await;
                    false
                }
                Err(_) => {
                    *self.inner.client.lock().await = None;
                    false
                }
            },
            Err(_) => false,
        };
        self.set_available(ok);
        ok
    }

    fn set_available(&self, now: bool) {
        let before = self.inner.available.swap(now, Ordering::Relaxed);
        if before != now {
            if now {
                tracing::info!(socket = %self.inner.socket.display(), "docker engine available");
            } else {
                tracing::warn!(socket = %self.inner.socket.display(), "docker engine unavailable");
            }
        }
    }

    /// Probes every `every` until `stop` fires.
    pub async fn run_probe(self, every: Duration, stop: CancellationToken) {
        loop {
            self.probe().await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
