//! The registry of running tasks: task id → cancellation token, and the capacity limit.
//!
//! A task is registered when it is accepted and leaves the registry when its result is
//! reported, so the heartbeat's `running_tasks` (the tasks' lease) covers the whole
//! attempt. `Cancel` orders from the control queue find the token here, and are
//! remembered in [`Running::cancelled`] for assignments that have not started.
//!
//! Every task token is a child of one *kill* token: cancelling it (at shutdown, once the
//! grace is over) stops every task at once, and [`Running::killed`] tells a task that
//! was stopped that way from one an operator cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ris_schemas::ids::TaskId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::cancelled::{Cancelled, Revoked};

#[derive(Clone)]
pub struct Running {
    inner: Arc<Inner>,
}

struct Inner {
    tasks: Mutex<HashMap<TaskId, (u64, CancellationToken)>>,
    /// One permit per task slot: acks happen before a task runs, so the broker's
    /// prefetch alone does not bound how many run at once.
    slots: Arc<Semaphore>,
    capacity: u32,
    kill: CancellationToken,
    /// Tells registrations of the same task id apart.
    next_generation: AtomicU64,
    cancelled: Cancelled,
    revoked: Revoked,
}

/// Proof of registration: drop it when the task's result is reported.
pub struct RunningGuard {
    inner: Arc<Inner>,
    task_id: TaskId,
    generation: u64,
    token: CancellationToken,
}

impl Running {
    pub fn new(capacity: u32) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Arc::new(Inner {
                tasks: Mutex::new(HashMap::new()),
                slots: Arc::new(Semaphore::new(capacity as usize)),
                capacity,
                kill: CancellationToken::new(),
                next_generation: AtomicU64::new(0),
                cancelled: Cancelled::default(),
                revoked: Revoked::default(),
            }),
        }
    }

    pub fn capacity(&self) -> u32 {
        self.inner.capacity
    }

    /// Tasks cancelled by an order from the control queue.
    pub fn cancelled(&self) -> &Cancelled {
        &self.inner.cancelled
    }

    /// Attempts a dispatcher took back (re-placed elsewhere while this agent was
    /// unreachable): never to be started here.
    pub fn revoked(&self) -> &Revoked {
        &self.inner.revoked
    }

    /// Waits for a free slot; the permit is held until the task has reported. `None`
    /// only if the slots were closed, which nothing does.
    pub async fn acquire_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.slots.clone().acquire_owned().await.ok()
    }

    /// Registers a task. Registering the same id twice replaces the earlier token.
    pub fn register(&self, task_id: TaskId) -> RunningGuard {
        let token = self.inner.kill.child_token();
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        self.inner
            .lock()
            .insert(task_id, (generation, token.clone()));
        RunningGuard {
            inner: self.inner.clone(),
            task_id,
            generation,
            token,
        }
    }

    /// Cancels a running task; false when no such task runs here.
    pub fn cancel(&self, task_id: TaskId) -> bool {
        match self.inner.lock().get(&task_id) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops every task (shutdown after the grace period).
    pub fn kill_all(&self) {
        self.inner.kill.cancel();
    }

    /// True once [`Running::kill_all`] was called.
    pub fn killed(&self) -> bool {
        self.inner.kill.is_cancelled()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().len()
    }

    /// Ids of the running tasks, sorted (oldest first, ids are time-ordered).
    pub fn task_ids(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self.inner.lock().keys().copied().collect();
        ids.sort();
        ids
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, (u64, CancellationToken)>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RunningGuard {
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut tasks = self.inner.lock();
        // Only remove our own entry, not a later registration of the same id.
        if tasks
            .get(&self.task_id)
            .is_some_and(|(g, _)| *g == self.generation)
        {
            tasks.remove(&self.task_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn register_cancel_and_kill() {
        let running = Running::new(2);
        let a = TaskId::new();
        let b = TaskId::new();
        let ga = running.register(a);
        let gb = running.register(b);
        assert_eq!(running.count(), 2);
        assert!(running.cancel(a));
        assert!(ga.token().is_cancelled());
        assert!(!gb.token().is_cancelled());
        assert!(!running.cancel(TaskId::new()));
        drop(ga);
        assert_eq!(running.task_ids(), vec![b]);
        running.kill_all();
        assert!(gb.token().is_cancelled() && running.killed());
    }

    #[tokio::test]
    async fn slots_bound_concurrency() {
        let running = Running::new(1);
        let first = running.acquire_slot().await;
        assert!(first.is_some());
        let second =
            tokio::time::timeout(std::time::Duration::from_millis(50), running.acquire_slot())
                .await;
        assert!(second.is_err(), "a second slot must wait");
        drop(first);
        assert!(running.acquire_slot().await.is_some());
    }
}
