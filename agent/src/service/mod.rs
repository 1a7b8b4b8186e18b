//! Docker services on this agent: desired state on disk, converged by a reconciler.
//!
//! The [`ServiceManager`] takes `service.apply` / `service.remove` orders, writes them
//! to the service's record ([`record`]) before answering, and wakes the service's
//! reconciler ([`reconcile`]), one task per service. The reconciler converges the
//! containers to the record every tick and right after an order: it scales, replaces
//! replicas one at a time on update, rolls back when a new replica does not become
//! healthy in time, and restores replicas that died or were removed. It sends a
//! [`ServiceStatusReport`] to the status sink on every change and periodically.
//!
//! Records are loaded at start, so services keep converging after an agent restart and
//! while the broker is away.

pub mod forward;
pub mod health;
pub mod reconcile;
pub mod record;
pub mod status;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ris_schemas::messages::ControlMessage;
use ris_schemas::service::{InstanceState, ServiceName, ServiceSpec, ServiceStatusReport};
use tokio::sync::{mpsc, Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::docker::{containers, labels, Engine, Owner};
pub use record::{RecordError, RecordStore, ServiceRecord};

/// Where reports go (the agent forwards them to `ris.results`).
pub type StatusSink = mpsc::UnboundedSender<ServiceStatusReport>;

/// Delays of the reconciler.
#[derive(Debug, Clone)]
pub struct ServiceTimings {
    /// Time between two reconciliations of a service (an order wakes it at once).
    pub tick: Duration,
    /// A report is sent at least this often, even when nothing changed.
    pub report_every: Duration,
    /// How often a new replica is looked at while it should become healthy.
    pub health_poll: Duration,
    /// First and longest delay between attempts after an engine error (pull failed,
    /// port taken, engine away).
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for ServiceTimings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            report_every: Duration::from_secs(30),
            health_poll: Duration::from_millis(500),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// What the manager needs.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Holds one `<service>.json` per service.
    pub dir: PathBuf,
    pub owner: Owner,
    pub engine: Engine,
    pub timings: ServiceTimings,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("cannot build the health check client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// What became of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Stored; the reconciler converges to it.
    Accepted,
    /// Older than what is stored (a late message); nothing changed.
    Stale,
}

/// Shared by the manager and every reconciler.
pub(crate) struct Context {
    pub config: ServiceConfig,
    pub store: RecordStore,
    pub sink: StatusSink,
    pub http: reqwest::Client,
    pub stop: CancellationToken,
    tracker: TaskTracker,
    services: Mutex<HashMap<ServiceName, Handle>>,
    /// Records read by `open`, waiting for `start`.
    loaded: std::sync::Mutex<Vec<ServiceRecord>>,
}

/// One service's record and the bell that wakes its reconciler.
#[derive(Clone)]
pub(crate) struct Handle {
    pub record: Arc<Mutex<ServiceRecord>>,
    pub wake: Arc<Notify>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct ServiceManager {
    ctx: Arc<Context>,
}

impl ServiceManager {
    /// Loads the stored services (blocking file reads); [`ServiceManager::start`] then
    /// starts their reconcilers. Everything runs until `stop` fires.
    pub fn open(
        config: ServiceConfig,
        sink: StatusSink,
        stop: CancellationToken,
    ) -> Result<Self, ServiceError> {
        let store = RecordStore::open(config.dir.clone())?;
        let records = store.load_all()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let ctx = Arc::new(Context {
            config,
            store,
            sink,
            http,
            stop: stop.child_token(),
            tracker: TaskTracker::new(),
            services: Mutex::new(HashMap::new()),
            loaded: std::sync::Mutex::new(records),
        });
        Ok(Self { ctx })
    }

    /// Starts the reconcilers of the services loaded from disk.
    pub async fn start(&self) {
        let records = std::mem::take(
            &mut *self
                .ctx
                .loaded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut services = self.ctx.services.lock().await;
        for record in records {
            if services.contains_key(&record.service) {
                continue;
            }
            tracing::info!(service = %record.service, revision = record.current.revision, removed = record.removed, "service loaded from disk");
            let name = record.service.clone();
            let handle = self.spawn(record);
            services.insert(name, handle);
        }
    }

    /// [`ServiceManager::open`] off the async threads, then [`ServiceManager::start`].
    pub async fn launch(
        config: ServiceConfig,
        sink: StatusSink,
        stop: CancellationToken,
    ) -> Result<Self, ServiceError> {
        let manager = tokio::task::spawn_blocking(move || Self::open(config, sink, stop))
            .await
            .map_err(|_| RecordError::Blocking)??;
        manager.start().await;
        Ok(manager)
    }

    fn spawn(&self, record: ServiceRecord) -> Handle {
        let service = record.service.clone();
        let handle = Handle {
            record: Arc::new(Mutex::new(record)),
            wake: Arc::new(Notify::new()),
        };
        let worker = reconcile::Reconciler::new(self.ctx.clone(), service, handle.clone());
        self.ctx.tracker.spawn(worker.run());
        handle
    }

    /// Stores a revision and wakes the service's reconciler; an older revision than
    /// stored is ignored.
    pub async fn apply(
        &self,
        service: &ServiceName,
        revision: u32,
        spec: &ServiceSpec,
    ) -> Result<Applied, ServiceError> {
        let mut services = self.ctx.services.lock().await;
        let Some(handle) = services.get(service) else {
            let record = ServiceRecord::new(service.clone(), revision, spec.clone());
            self.ctx.store.save_async(&record).await?;
            tracing::info!(%service, revision, "service added");
            let handle = self.spawn(record);
            services.insert(service.clone(), handle);
            return Ok(Applied::Accepted);
        };
        let mut record = handle.record.lock().await;
        let stored = record.current.revision;
        if revision < stored || (revision == stored && record.removed) {
            tracing::info!(%service, revision, stored, "stale service.apply ignored");
            return Ok(Applied::Stale);
        }
        if revision == stored && record.current.spec == *spec {
            handle.wake.notify_one();
            return Ok(Applied::Accepted);
        }
        let mut next = record.clone();
        next.current = record::Revision {
            revision,
            spec: spec.clone(),
        };
        next.removed = false;
        if next.failed.as_ref().is_some_and(|f| f.revision < revision) {
            next.failed = None;
        }
        self.ctx.store.save_async(&next).await?;
        tracing::info!(%service, revision, "service revision stored");
        *record = next;
        handle.wake.notify_one();
        Ok(Applied::Accepted)
    }

    /// Marks the service removed (its reconciler removes every container, then the
    /// record); an older revision than stored is ignored.
    pub async fn remove(
        &self,
        service: &ServiceName,
        revision: u32,
    ) -> Result<Applied, ServiceError> {
        let services = self.ctx.services.lock().await;
        let Some(handle) = services.get(service) else {
            drop(services);
            // Unknown here (never applied, or the record is gone): remove whatever
            // containers still carry its name, and say so.
            self.ctx
                .tracker
                .spawn(remove_orphans(self.ctx.clone(), service.clone(), revision));
            return Ok(Applied::Accepted);
        };
        let mut record = handle.record.lock().await;
        if revision < record.current.revision {
            tracing::info!(%service, revision, stored = record.current.revision, "stale service.remove ignored");
            return Ok(Applied::Stale);
        }
        let mut next = record.clone();
        next.current.revision = revision;
        next.removed = true;
        self.ctx.store.save_async(&next).await?;
        tracing::info!(%service, revision, "service removal stored");
        *record = next;
        handle.wake.notify_one();
        Ok(Applied::Accepted)
    }

    /// Carries out a service order; other orders are not ours (false).
    pub async fn handle(&self, message: &ControlMessage) -> Result<bool, ServiceError> {
        match message {
            ControlMessage::ServiceApply {
                service,
                revision,
                spec,
                ..
            } => self.apply(service, *revision, spec).await.map(|_| true),
            ControlMessage::ServiceRemove {
                service, revision, ..
            } => self.remove(service, *revision).await.map(|_| true),
            _ => Ok(false),
        }
    }

    /// The services this agent holds.
    pub async fn services(&self) -> Vec<ServiceName> {
        let mut names: Vec<_> = self.ctx.services.lock().await.keys().cloned().collect();
        names.sort();
        names
    }

    /// Stops every reconciler and waits for them to end (containers keep running).
    pub async fn wait(&self) {
        self.ctx.stop.cancel();
        self.ctx.tracker.close();
        self.ctx.tracker.wait().await;
    }
}

impl Context {
    /// Forgets a removed service, unless a newer order revived it meanwhile. True when
    /// the reconciler should end.
    pub(crate) async fn forget(&self, service: &ServiceName, handle: &Handle) -> bool {
        let mut services = self.services.lock().await;
        let record = handle.record.lock().await;
        if !record.removed {
            return false;
        }
        if let Err(e) = self.store.delete_async(service).await {
            tracing::error!(%service, error = %e, "cannot delete the service record");
            return false;
        }
        services.remove(service);
        true
    }
}

/// Removes the containers of a service this agent holds no record of.
async fn remove_orphans(ctx: Arc<Context>, service: ServiceName, revision: u32) {
    let engine = &ctx.config.engine;
    let owner = &ctx.config.owner;
    let result = async {
        let list =
            containers::list(engine, owner, &[(labels::SERVICE, service.as_str())], true).await?;
        for c in list {
            if let Some(id) = c.id.as_deref() {
                containers::remove(engine, id).await?;
            }
        }
        Ok::<_, crate::docker::DockerError>(())
    }
    .await;
    let (state, reason, error) = match result {
        Ok(()) => (InstanceState::Removed, None, None),
        Err(e) => (
            InstanceState::Failed,
            Some(e.reason().to_owned()),
            Some(e.to_string()),
        ),
    };
    let _ = ctx.sink.send(ServiceStatusReport {
        service,
        desired_revision: revision,
        revision,
        state,
        reason,
        error,
        containers: Vec::new(),
        restarts: 0,
    });
}
