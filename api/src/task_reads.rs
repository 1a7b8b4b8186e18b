//! Reads of live tasks for `GET /v1/tasks/{id}`, batched per tenant.
//!
//! A finished task's body is cached ([`crate::cache`]); a live one is read from
//! PostgreSQL every time, in a tenant transaction under row-level security: three round
//! trips (`BEGIN` with the tenant settings, the read, `COMMIT`) for one row. Concurrent
//! reads of one tenant's tasks share that transaction instead
//! ([`ris_runtime::batch::KeyedBatcher`], [`ris_store::TaskRepo::get_tasks`]): a lone
//! read goes alone, at once; under load, the reads that arrive while a batch runs go
//! together in the next. The answer is the same as alone: the row as committed when the
//! batch's statement ran.

use ris_runtime::batch::KeyedBatcher;
use ris_schemas::ids::TaskId;
use ris_store::{DynStore, StoreError, TaskRecord, TenantCtx, MAX_PLACEMENT_BATCH};

/// Batches in flight at once. Two, not more: under load each batch costs PostgreSQL
/// about the same whatever its size (three round trips, the tenant settings parsed), so
/// fewer, larger batches leave more of the machine to the reads themselves (64 clients:
/// 4 in flight, 12–14k reads/s, p99 10–11 ms; 2 in flight, 16–17k, p99 8–9 ms; 1 in
/// flight about the same as 2, but one slow batch would hold up every read).
const CONCURRENT_BATCHES: usize = 2;

type Read = Result<Option<TaskRecord>, StoreError>;

#[derive(Clone)]
pub struct TaskReads {
    reads: KeyedBatcher<TenantCtx, TaskId, Read>,
    store: DynStore,
}

impl TaskReads {
    /// Starts the worker (on the current tokio runtime).
    pub fn start(store: DynStore) -> Self {
        let reading = store.clone();
        let reads = KeyedBatcher::start(
            MAX_PLACEMENT_BATCH * 4,
            MAX_PLACEMENT_BATCH,
            CONCURRENT_BATCHES,
            move |tenant: TenantCtx, ids: Vec<TaskId>| {
                let store = reading.clone();
                async move { ris_store::get_tasks_each(&*store, &tenant, &ids).await }
            },
        );
        TaskReads { reads, store }
    }

    /// The tenant's task `id`, if it has one.
    pub async fn get(&self, tenant: &TenantCtx, id: TaskId) -> Read {
        match self.reads.submit(tenant.clone(), id).await {
            Some(read) => read,
            None => {
                tracing::error!("task reader gave no answer; reading the task alone");
                self.store.get_task(tenant, id).await
            }
        }
    }
}
