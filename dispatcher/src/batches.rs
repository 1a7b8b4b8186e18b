//! Group commit of placements, and batched task reads, across the dispatcher.
//!
//! Submissions, job steps and the sweep place tasks concurrently; each placement is one
//! short transaction (lock the task, record the attempt), and so is the read of a
//! submitted task. Under load most of their cost is the transaction itself: `BEGIN`
//! and the tenant settings, `COMMIT`, a WAL flush. Here callers hand their placement
//! (or read) to one worker ([`ris_runtime::batch::Batcher`]), which takes whatever has
//! gathered while it was busy, splits it by tenant, and runs one transaction per tenant
//! ([`ris_store::TaskRepo::begin_attempts`], [`ris_store::TaskRepo::get_tasks`]). A lone
//! placement goes alone, at once. When a batch fails, its items are done one by one, so
//! one the store refuses does not take the others with it.

use std::future::Future;
use std::sync::Arc;

use ris_runtime::batch::Batcher;
use ris_schemas::ids::{AgentId, TaskId};
use ris_store::{
    DynStore, StoreError, TaskRecord, TenantCtx, TransitionOutcome, MAX_PLACEMENT_BATCH,
};
use uuid::Uuid;

/// Batches in flight at once: while one commits, the next gathers and starts, so the
/// time a batch takes (its statements run one after another) does not cap placements
/// per second.
const CONCURRENT_BATCHES: usize = 4;

/// Items of many tenants handed to one worker, which applies each tenant's share of a
/// batch with `apply` (one call per tenant, the tenants' calls concurrently).
struct ByTenant<T, R> {
    batcher: Batcher<(TenantCtx, T), Option<R>>,
}

impl<T: Send + 'static, R: Send + 'static> ByTenant<T, R> {
    fn start<F, Fut>(apply: F) -> Self
    where
        F: Fn(TenantCtx, Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let apply = Arc::new(apply);
        let batcher = Batcher::start_concurrent(
            MAX_PLACEMENT_BATCH * 4,
            MAX_PLACEMENT_BATCH,
            CONCURRENT_BATCHES,
            move |items: Vec<(TenantCtx, T)>| {
                let apply = apply.clone();
                async move {
                    let count = items.len();
                    let groups = split_by_tenant(items);
                    let answers = futures::future::join_all(groups.into_iter().map(
                        |(tenant, positions, items)| async {
                            (positions, apply(tenant, items).await)
                        },
                    ))
                    .await;
                    let mut ordered: Vec<Option<R>> = (0..count).map(|_| None).collect();
                    for (positions, results) in answers {
                        for (i, result) in positions.into_iter().zip(results) {
                            ordered[i] = Some(result);
                        }
                    }
                    ordered
                }
            },
        );
        ByTenant { batcher }
    }

    async fn submit(&self, tenant: &TenantCtx, item: T) -> Option<R> {
        self.batcher.submit((tenant.clone(), item)).await.flatten()
    }
}

/// The items of each tenant, in arrival order, with their positions in `items`.
fn split_by_tenant<T>(items: Vec<(TenantCtx, T)>) -> Vec<(TenantCtx, Vec<usize>, Vec<T>)> {
    let mut groups: Vec<(TenantCtx, Vec<usize>, Vec<T>)> = Vec::new();
    let mut index: std::collections::HashMap<Uuid, usize> = Default::default();
    for (i, (tenant, item)) in items.into_iter().enumerate() {
        let group = *index.entry(tenant.id).or_insert_with(|| {
            groups.push((tenant, Vec::new(), Vec::new()));
            groups.len() - 1
        });
        groups[group].1.push(i);
        groups[group].2.push(item);
    }
    groups
}

/// The dispatcher's batched placements and task reads. Cheap to clone.
#[derive(Clone)]
pub struct Batches(Arc<Inner>);

struct Inner {
    store: DynStore,
    placements: ByTenant<(TaskId, AgentId), Result<TransitionOutcome, StoreError>>,
    reads: ByTenant<TaskId, Result<Option<TaskRecord>, StoreError>>,
}

impl Batches {
    /// Starts the workers (on the current tokio runtime).
    pub fn start(store: DynStore) -> Self {
        let placing = store.clone();
        let placements = ByTenant::start(move |tenant, items: Vec<(TaskId, AgentId)>| {
            let store = placing.clone();
            async move {
                metrics::histogram!("ris_placement_batch_size").record(items.len() as f64);
                match store.begin_attempts(&tenant, &items).await {
                    Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                    Err(err) if items.len() > 1 => {
                        tracing::info!(error = %err, placements = items.len(), "placement batch failed; recording its placements one by one");
                        let mut outcomes = Vec::with_capacity(items.len());
                        for (task, agent) in items {
                            outcomes.push(store.begin_attempt(&tenant, task, agent).await);
                        }
                        outcomes
                    }
                    Err(err) => vec![Err(err)],
                }
            }
        });
        let reading = store.clone();
        let reads = ByTenant::start(move |tenant, ids: Vec<TaskId>| {
            let store = reading.clone();
            async move {
                match store.get_tasks(&tenant, &ids).await {
                    Ok(found) => found.into_iter().map(Ok).collect(),
                    Err(err) if ids.len() > 1 => {
                        tracing::info!(error = %err, tasks = ids.len(), "batched read failed; reading its tasks one by one");
                        let mut found = Vec::with_capacity(ids.len());
                        for id in ids {
                            found.push(store.get_task(&tenant, id).await);
                        }
                        found
                    }
                    Err(err) => vec![Err(err)],
                }
            }
        });
        Batches(Arc::new(Inner {
            store,
            placements,
            reads,
        }))
    }

    /// Records the placement of `task` on `agent` ([`ris_store::TaskRepo::begin_attempt`]),
    /// in some batch.
    pub async fn begin_attempt(
        &self,
        tenant: &TenantCtx,
        task: TaskId,
        agent: AgentId,
    ) -> Result<TransitionOutcome, StoreError> {
        match self.0.placements.submit(tenant, (task, agent)).await {
            Some(outcome) => outcome,
            None => {
                tracing::error!("placement batcher gave no answer; recording the placement alone");
                self.0.store.begin_attempt(tenant, task, agent).await
            }
        }
    }

    /// Reads `task` ([`ris_store::TaskRepo::get_task`]), in some batch.
    pub async fn get_task(
        &self,
        tenant: &TenantCtx,
        task: TaskId,
    ) -> Result<Option<TaskRecord>, StoreError> {
        match self.0.reads.submit(tenant, task).await {
            Some(found) => found,
            None => {
                tracing::error!("read batcher gave no answer; reading the task alone");
                self.0.store.get_task(tenant, task).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ris_schemas::ids::TenantName;

    fn tenant(name: &str) -> TenantCtx {
        TenantCtx {
            id: Uuid::new_v4(),
            name: TenantName::parse(name).expect("tenant name"),
        }
    }

    #[test]
    fn items_are_split_by_tenant_in_arrival_order() {
        let (a, b) = (tenant("alpha"), tenant("beta"));
        let items = vec![
            (a.clone(), 1),
            (b.clone(), 2),
            (a.clone(), 3),
            (b.clone(), 4),
        ];
        let groups = split_by_tenant(items);
        let summary: Vec<(Uuid, Vec<usize>, Vec<i32>)> =
            groups.into_iter().map(|(t, p, i)| (t.id, p, i)).collect();
        assert_eq!(
            summary,
            vec![
                (a.id, vec![0, 2], vec![1, 3]),
                (b.id, vec![1, 3], vec![2, 4])
            ]
        );
    }

    #[tokio::test]
    async fn each_caller_gets_the_answer_of_its_tenant_call() {
        let batches = ByTenant::start(|tenant: TenantCtx, items: Vec<u32>| async move {
            items
                .into_iter()
                .map(|i| format!("{}:{i}", tenant.name))
                .collect::<Vec<_>>()
        });
        let (a, b) = (tenant("alpha"), tenant("beta"));
        let answers = futures::future::join_all(
            (0..20u32).map(|i| batches.submit(if i % 3 == 0 { &a } else { &b }, i)),
        )
        .await;
        let expected: Vec<Option<String>> = (0..20u32)
            .map(|i| Some(format!("{}:{i}", if i % 3 == 0 { "alpha" } else { "beta" })))
            .collect();
        assert_eq!(answers, expected);
    }
}
