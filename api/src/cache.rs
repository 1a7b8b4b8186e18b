//! In-process caches on the read path, each bounded in size and age (`moka`).
//!
//! - **Credentials.** Every request names an API key; its record (tenant, role, secret
//!   hash, expiry, revocation) is kept for [`Config::credential_cache_ms`] (default 2 s)
//!   after it was read. The secret, the expiry and the role are still checked on every
//!   request against the cached record. Revoking a key evicts it here at once; another
//!   API instance stops accepting it within that time (`docs/security.md`). Unknown keys
//!   are not cached.
//! - **Finished tasks.** A task in a terminal state never changes again (the lifecycle
//!   forbids it: `TaskState::transition`), so the JSON body of `GET /v1/tasks/{id}` for
//!   one is kept for [`FINISHED_TTL`], up to [`FINISHED_BYTES`] in all. Tasks still live
//!   are always read from the store. Deleting a tenant empties both caches.
//!
//! [`Config::credential_cache_ms`]: crate::config::Config::credential_cache_ms

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use moka::sync::Cache;
use ris_schemas::ids::{ApiKeyId, TaskId};
use ris_store::ApiKeyRecord;
use uuid::Uuid;

/// How long a finished task's body is kept.
pub const FINISHED_TTL: Duration = Duration::from_secs(600);

/// The most the finished-task bodies may take, in bytes.
pub const FINISHED_BYTES: u64 = 64 * 1024 * 1024;

/// The most API key records kept.
const CREDENTIALS: u64 = 10_000;

pub struct Caches {
    /// `None` when `credential_cache_ms` is 0.
    credentials: Option<Cache<ApiKeyId, Arc<ApiKeyRecord>>>,
    finished: Cache<(Uuid, TaskId), Bytes>,
}

impl Caches {
    pub fn new(credential_ttl: Duration) -> Self {
        let credentials = (!credential_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(CREDENTIALS)
                .time_to_live(credential_ttl)
                .build()
        });
        let finished = Cache::builder()
            .max_capacity(FINISHED_BYTES)
            .weigher(|_, body: &Bytes| u32::try_from(body.len()).unwrap_or(u32::MAX))
            .time_to_live(FINISHED_TTL)
            .build();
        Caches {
            credentials,
            finished,
        }
    }

    pub fn credential(&self, id: ApiKeyId) -> Option<Arc<ApiKeyRecord>> {
        self.credentials.as_ref()?.get(&id)
    }

    pub fn keep_credential(&self, key: Arc<ApiKeyRecord>) {
        if let Some(cache) = &self.credentials {
            cache.insert(key.id, key);
        }
    }

    /// The key was revoked: stop accepting it here at once.
    pub fn forget_credential(&self, id: ApiKeyId) {
        if let Some(cache) = &self.credentials {
            cache.invalidate(&id);
        }
    }

    pub fn finished_task(&self, tenant: Uuid, id: TaskId) -> Option<Bytes> {
        self.finished.get(&(tenant, id))
    }

    /// Keeps the body of a task that is in a terminal state (the caller checked).
    pub fn keep_finished_task(&self, tenant: Uuid, id: TaskId, body: Bytes) {
        self.finished.insert((tenant, id), body);
    }

    /// A tenant was deleted: its keys and tasks are gone.
    pub fn forget_all(&self) {
        if let Some(cache) = &self.credentials {
            cache.invalidate_all();
        }
        self.finished.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_credential_ttl_nothing_is_kept() {
        let caches = Caches::new(Duration::ZERO);
        let id = ApiKeyId::new();
        assert!(caches.credential(id).is_none());
    }

    #[test]
    fn finished_tasks_are_kept_per_tenant() {
        let caches = Caches::new(Duration::from_secs(1));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let task = TaskId::new();
        caches.keep_finished_task(a, task, Bytes::from_static(b"{}"));
        assert_eq!(caches.finished_task(a, task).as_deref(), Some(&b"{}"[..]));
        assert!(caches.finished_task(b, task).is_none());
        caches.forget_all();
        assert!(caches.finished_task(a, task).is_none());
    }
}
