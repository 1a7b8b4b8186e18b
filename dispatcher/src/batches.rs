//! Group commit of placements, and batched task reads, across the dispatcher.
//!
//! Submissions, job steps and the sweep place tasks concurrently; each placement is one
//! short transaction (lock the task, record the attempt), and so is the read of a
//! submitted task. Under load most of their cost is the transaction itself: `BEGIN`
//! and the tenant settings, `COMMIT`, a WAL flush. Here callers hand their placement
//! (or read) to one worker ([`ris_runtime::batch::KeyedBatcher`]), which takes
//! whatever has gathered while it was busy, splits it by tenant, and runs one
//! transaction per tenant ([`ris_store::TaskRepo::begin_attempts`],
//! [`ris_store::TaskRepo::get_tasks`]). A lone placement goes alone, at once. When a
//! batch fails, its items are done one by one, so one the store refuses does not take
//! the others with it.

use std::future::Future;
use std::sync::Arc;

use ris_runtime::batch::KeyedBatcher;
use ris_schemas::ids::TaskId;
use ris_store::{
    DynStore, Placement, StoreError, TaskRecord, TenantCtx, TransitionOutcome, MAX_PLACEMENT_BATCH,
};

/// Batches in flight at once: while one commits, the next gathers and starts, so the
/// time a batch takes (its statements run one after another) does not cap placements
/// per second.
const CONCURRENT_BATCHES: usize = 4;

/// Items of many tenants, one transaction per tenant per batch.
type ByTenant<T, R> = KeyedBatcher<TenantCtx, T, R>;

fn by_tenant<T, R, F, Fut>(apply: F) -> ByTenant<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(TenantCtx, Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<R>> + Send + 'static,
{
    KeyedBatcher::start(
        MAX_PLACEMENT_BATCH * 4,
        MAX_PLACEMENT_BATCH,
        CONCURRENT_BATCHES,
        apply,
    )
}

/// The dispatcher's batched placements and task reads. Cheap to clone.
#[derive(Clone)]
pub struct Batches(Arc<Inner>);

struct Inner {
    store: DynStore,
    placements: ByTenant<Placement, Result<TransitionOutcome, StoreError>>,
    reads: ByTenant<TaskId, Result<Option<TaskRecord>, StoreError>>,
}

impl Batches {
    /// Starts the workers (on the current tokio runtime).
    pub fn start(store: DynStore) -> Self {
        let placing = store.clone();
        let placements = by_tenant(move |tenant, items: Vec<Placement>| {
            let store = placing.clone();
            async move {
                metrics::histogram!("ris_placement_batch_size").record(items.len() as f64);
                match store.begin_attempts(&tenant, &items).await {
                    Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                    Err(err) if items.len() > 1 => {
                        tracing::info!(error = %err, placements = items.len(), "placement batch failed; recording its placements one by one");
                        let mut outcomes = Vec::with_capacity(items.len());
                        for item in items {
                            outcomes.push(record_alone(&*store, &tenant, item).await);
                        }
                        outcomes
                    }
                    Err(err) => vec![Err(err)],
                }
            }
        });
        let reading = store.clone();
        let reads = by_tenant(move |tenant, ids: Vec<TaskId>| {
            let store = reading.clone();
            async move { ris_store::get_tasks_each(&*store, &tenant, &ids).await }
        });
        Batches(Arc::new(Inner {
            store,
            placements,
            reads,
        }))
    }

    /// Records `placement` ([`ris_store::TaskRepo::begin_attempts`]), in some batch.
    pub async fn begin_attempt(
        &self,
        tenant: &TenantCtx,
        placement: Placement,
    ) -> Result<TransitionOutcome, StoreError> {
        match self
            .0
            .placements
            .submit(tenant.clone(), placement.clone())
            .await
        {
            Some(outcome) => outcome,
            None => {
                tracing::error!("placement batcher gave no answer; recording the placement alone");
                record_alone(&*self.0.store, tenant, placement).await
            }
        }
    }

    /// Reads `task` ([`ris_store::TaskRepo::get_task`]), in some batch.
    pub async fn get_task(
        &self,
        tenant: &TenantCtx,
        task: TaskId,
    ) -> Result<Option<TaskRecord>, StoreError> {
        match self.0.reads.submit(tenant.clone(), task).await {
            Some(found) => found,
            None => {
                tracing::error!("read batcher gave no answer; reading the task alone");
                self.0.store.get_task(tenant, task).await
            }
        }
    }
}

/// One placement in a transaction of its own.
async fn record_alone(
    store: &dyn ris_store::Store,
    tenant: &TenantCtx,
    placement: Placement,
) -> Result<TransitionOutcome, StoreError> {
    store
        .begin_attempts(tenant, std::slice::from_ref(&placement))
        .await?
        .pop()
        .ok_or_else(|| StoreError::Corrupt("no outcome for a placement".into()))
}
