//! PostgreSQL, the system of record of RIS.
//!
//! Storage sits behind repository traits ([`TenantRepo`], [`AuthRepo`], [`AgentRepo`],
//! [`TaskRepo`], [`ServiceRepo`], ...; gathered in [`Store`]) so the API and the
//! dispatcher depend on what they need, tests may substitute a fake, and a second
//! backend stays possible.
//! [`PgStore`] implements them all with sqlx.
//!
//! # Tenant scoping
//!
//! Every tenant-scoped call takes a [`TenantCtx`] and filters by its id. As defence in
//! depth the same calls run in a transaction under the NOLOGIN role `ris_app` with
//! `ris.tenant_id` set, and row-level security policies hide every other tenant's rows
//! (see the migration). Cross-tenant calls — dispatcher sweeps, lookups by credential —
//! say so in their documentation and run as the connecting user.
//!
//! # Task states
//!
//! A task's state changes only through [`ris_schemas::task::TaskState::transition`], in
//! one transaction that locks the task row, checks the attempt fence, updates the row
//! and appends a `task_events` row. The event log therefore never contradicts the state.
//!
//! # Layout
//!
//! - [`pg`]: [`PgStore`], its pool, migrations and tenant-scoped transactions.
//! - [`error`]: [`StoreError`], [`RedeemError`].
//! - [`tenants`]: tenants and [`TenantCtx`].
//! - [`audit`]: the hash-chained, append-only audit log.
//! - [`limits`]: tenant rate limits and quotas.
//! - [`signing_keys`]: the Ed25519 keys that sign messages to agents.
//! - [`users`]: users, login sessions and the keys that sign access tokens.
//! - [`auth`]: API keys, enrollment tokens and redeeming one for an agent.
//! - [`agents`]: agents, their facts and address history.
//! - [`tasks`]: task records, submission, reads and listing.
//! - [`task_events`]: a task's history.
//! - [`transitions`]: the one path by which a task's state changes.
//! - [`placement`]: placing tasks: claims, attempts, requeues, queue expiry.
//! - [`cancel`]: cancelling a task through the API.
//! - [`task_results`]: recording (deduplicated) results.
//! - [`reports`]: agents' reports applied in batches (group commit).
//! - [`recovery`]: retries, agent loss, assignments that never started.
//! - [`integrations`]: integrations, and where a task's final outcome is sent.
//! - [`dead_letters`]: messages parked on `ris.dead`, for listing and replay.
//! - [`webhooks`]: outbound webhooks and their deliveries.
//! - [`inbound_hooks`]: inbound webhooks that turn a signed POST into a task.
//! - [`services`]: Docker services, their revisions, and the orders a change makes.
//! - [`service_changes`]: applying a change to a service (one transaction).
//! - [`service_instances`]: each agent's side of a service: reports, views, metrics.
//! - [`service_sync`]: the store side of the dispatcher's service sync.
//! - [`jobs`]: fleet jobs: targets, counts, dispatching children, cancelling.
//! - [`cursor`]: the opaque pagination cursor of task lists.
//!
//! `migrations/` holds the schema, embedded with `sqlx::migrate!()`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::ids::{AgentId, ApiKeyId, TaskId, TenantName};
use ris_schemas::messages::Finished;
use ris_schemas::task::TaskRequest;

pub mod agents;
pub mod audit;
pub mod auth;
pub mod cancel;
pub mod cursor;
pub mod dead_letters;
pub mod error;
pub mod inbound_hooks;
pub mod integrations;
pub mod jobs;
pub mod limits;
pub mod pg;
pub mod placement;
pub mod recovery;
pub mod reports;
pub mod service_changes;
pub mod service_instances;
pub mod service_sync;
pub mod services;
pub mod signing_keys;
pub mod task_events;
pub mod task_results;
pub mod tasks;
pub mod tenants;
pub mod transitions;
pub mod users;
pub mod webhooks;

pub use agents::{AddressChangeRecord, AgentFacts, AgentRecord, NewAgent};
pub use audit::{AuditFilter, AuditRecord, AuditRepo, NewAuditEntry, MAX_AUDIT_BATCH};
pub use auth::ApiKeyRecord;
pub use cancel::CancelOutcome;
pub use cursor::Cursor;
pub use dead_letters::{DeadLetterCursor, DeadLetterRecord, DeadLetterRepo, NewDeadLetter};
pub use error::{RedeemError, StoreError};
pub use inbound_hooks::{InboundHookRecord, InboundHookRepo, NewInboundHook};
pub use integrations::{reply_of, IntegrationRecord, IntegrationRepo, ReplyTarget};
pub use jobs::{
    JobCancel, JobCursor, JobDriving, JobRecord, JobRepo, JobTargetRecord, NewJob, NewTarget,
};
pub use limits::LimitsRepo;
pub use pg::PgStore;
pub use placement::{get_tasks_each, Placement, MAX_PLACEMENT_BATCH};
pub use recovery::{AttemptResult, RecoveryRepo};
pub use reports::{Report, ReportOutcome, MAX_REPORT_BATCH};
pub use service_instances::{InstanceRecord, StatusOutcome};
pub use service_sync::{SyncState, SyncStep};
pub use services::{
    target_matches, ChangeOutcome, ServiceChange, ServiceOrder, ServiceRecord, ServiceRepo,
};
pub use signing_keys::{NewSigningKey, SigningKeyRecord, SigningKeyRepo};
pub use task_events::TaskEventRecord;
pub use task_results::ResultOutcome;
pub use task_results::RetryDecision;
pub use tasks::{Inserted, TaskFilter, TaskRecord, SUBMISSION_GRACE};
pub use tenants::{Tenant, TenantCtx};
pub use transitions::{Transition, TransitionOutcome};
pub use users::{JwtKeyRecord, NewUser, UserRecord, UserRepo};
pub use webhooks::{
    AttemptOutcome, DeliveryRecord, DueDelivery, NewEvent, NextStep, WebhookRecord, WebhookRepo,
};

/// The whole store, shared between request handlers and workers.
pub type DynStore = std::sync::Arc<dyn Store>;

/// Every repository, plus a health check.
#[async_trait]
pub trait Store:
    TenantRepo
    + AuthRepo
    + AgentRepo
    + TaskRepo
    + RecoveryRepo
    + DeadLetterRepo
    + IntegrationRepo
    + WebhookRepo
    + InboundHookRepo
    + ServiceRepo
    + JobRepo
    + JobDriving
    + AuditRepo
    + LimitsRepo
    + SigningKeyRepo
    + UserRepo
    + Send
    + Sync
{
    /// Succeeds when the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Tenants. Platform-level: none of these is tenant-scoped.
#[async_trait]
pub trait TenantRepo: Send + Sync {
    /// Idempotent: returns the existing row if the name exists. `true` = newly created.
    async fn create_tenant(&self, name: &TenantName) -> Result<(Tenant, bool), StoreError>;
    async fn get_tenant(&self, name: &TenantName) -> Result<Option<Tenant>, StoreError>;
    /// By name.
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Deletes the tenant and (cascade) everything it owns. `false` if absent.
    async fn delete_tenant(&self, name: &TenantName) -> Result<bool, StoreError>;
}

/// Credentials: API keys and agent enrollment tokens. Only hashes are stored.
#[async_trait]
pub trait AuthRepo: Send + Sync {
    async fn insert_api_key(
        &self,
        tenant: &TenantCtx,
        id: ApiKeyId,
        name: &str,
        role: &str,
        secret_hash: &[u8],
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<ApiKeyRecord, StoreError>;
    /// The tenant's keys, oldest first, revoked ones included.
    async fn list_api_keys(&self, tenant: &TenantCtx) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Sets `revoked_at` (kept if already set). `false` if the tenant has no such key.
    async fn revoke_api_key(&self, tenant: &TenantCtx, id: ApiKeyId) -> Result<bool, StoreError>;
    /// Cross-tenant lookup by key id (the API then compares the hash in constant time).
    async fn find_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError>;
    async fn insert_enrollment_token(
        &self,
        tenant: &TenantCtx,
        token_hash: &[u8],
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Cross-tenant (the token names the tenant). In one transaction: locks the token
    /// row by hash, refuses it if absent, used or expired, inserts the agent
    /// ([`RedeemError::NameTaken`] leaves the token unused) and marks the token used by
    /// that agent.
    async fn enroll_agent(
        &self,
        token_hash: &[u8],
        agent: NewAgent,
    ) -> Result<(Tenant, AgentRecord), RedeemError> {
        self.enroll_agent_within(token_hash, agent, None).await
    }
    /// [`AuthRepo::enroll_agent`] under the tenant's `max_agents` quota (its own
    /// limit, else `default_max_agents`, else none): [`RedeemError::QuotaExceeded`]
    /// leaves the token unused.
    async fn enroll_agent_within(
        &self,
        token_hash: &[u8],
        agent: NewAgent,
        default_max_agents: Option<u32>,
    ) -> Result<(Tenant, AgentRecord), RedeemError>;
}

/// Enrolled agents.
#[async_trait]
pub trait AgentRepo: Send + Sync {
    async fn get_agent(
        &self,
        tenant: &TenantCtx,
        id: AgentId,
    ) -> Result<Option<AgentRecord>, StoreError>;
    /// By name.
    async fn list_agents(&self, tenant: &TenantCtx) -> Result<Vec<AgentRecord>, StoreError>;
    /// Cross-tenant lookup for heartbeat authentication: the agent and its tenant.
    async fn find_agent(&self, id: AgentId) -> Result<Option<(Tenant, AgentRecord)>, StoreError>;
    /// Updates labels, capacity, version, hostname, addresses and `last_seen_at` (which
    /// never moves backwards). When the address set differs from the stored one, the
    /// old set goes to the address history (`changed_at = seen_at`; an empty old set,
    /// i.e. never reported, is not recorded). Returns true if the addresses changed;
    /// false too for an unknown agent, which changes nothing.
    async fn update_agent_facts(
        &self,
        tenant: &TenantCtx,
        id: AgentId,
        facts: &AgentFacts,
    ) -> Result<bool, StoreError>;
    /// Sets `last_seen_at` (never backwards). An unknown agent changes nothing.
    async fn touch_agent(
        &self,
        tenant: &TenantCtx,
        id: AgentId,
        seen_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Earlier address sets, newest first.
    async fn address_history(
        &self,
        tenant: &TenantCtx,
        id: AgentId,
        limit: i64,
    ) -> Result<Vec<AddressChangeRecord>, StoreError>;
}

/// Tasks, their events and results, and placement.
#[async_trait]
pub trait TaskRepo: Send + Sync {
    /// Inserts the task as `queued` (attempts 0, `queue_deadline` = now +
    /// `request.queue_timeout_secs`, placeable at once) with its first event, in one
    /// transaction. The same id, or the same idempotency key in this tenant, already
    /// stored → [`Inserted::Existing`] and no new event. The id used by another tenant
    /// → [`StoreError::TaskIdTaken`].
    async fn insert_task(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        request: &TaskRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Inserted, StoreError>;
    async fn get_task(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
    ) -> Result<Option<TaskRecord>, StoreError>;
    /// Several tasks read in one transaction: for each id, in order, its record if the
    /// tenant has it. At most [`MAX_PLACEMENT_BATCH`] ids.
    async fn get_tasks(
        &self,
        tenant: &TenantCtx,
        ids: &[TaskId],
    ) -> Result<Vec<Option<TaskRecord>>, StoreError>;
    /// Newest first (`created_at` desc, id desc); rows strictly after the cursor; limit
    /// clamped to 1..=500.
    async fn list_tasks(
        &self,
        tenant: &TenantCtx,
        filter: &TaskFilter,
        limit: i64,
        after: Option<&Cursor>,
    ) -> Result<Vec<TaskRecord>, StoreError>;
    /// The task's events in order (by `seq`). Empty for an unknown task.
    async fn task_events(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
    ) -> Result<Vec<TaskEventRecord>, StoreError>;
    /// Locks the task, checks the attempt fence, then the lifecycle
    /// (`TaskState::transition`), updates state, reason (replaced by `t.reason`) and
    /// `agent_id` (kept when `t.agent_id` is `None`) and appends an event. Entering
    /// `queued` makes the task placeable at once; coming from `retrying` it also gets
    /// a fresh queue deadline.
    async fn transition_task(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        t: Transition,
    ) -> Result<TransitionOutcome, StoreError>;
    /// A cancel requested through the API, in one transaction that locks the task:
    /// `queued`, `retrying` and `routing` go to `cancelled` at once (reason `cancelled`,
    /// event with `detail`); `executing` stays as it is and only records the request
    /// time; a finished task is left alone. See [`CancelOutcome`] for what the caller
    /// must do next.
    async fn cancel_task(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        detail: serde_json::Value,
    ) -> Result<CancelOutcome, StoreError>;
    /// Placement: `queued`/`retrying` → `routing` with `attempts + 1` and `agent_id`
    /// set, event appended. The record carries the new attempt number.
    async fn begin_attempt(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        agent: AgentId,
    ) -> Result<TransitionOutcome, StoreError>;
    /// Several placements ([`Self::begin_attempt`]) in one transaction (group commit),
    /// each with the outcome it would have had alone, in order; at most
    /// [`MAX_PLACEMENT_BATCH`]. If any statement fails, none of them is kept. A
    /// placement chosen from a submission ([`Placement::of_submitted`]) applies only to
    /// the task as submitted.
    async fn begin_attempts(
        &self,
        tenant: &TenantCtx,
        placements: &[Placement],
    ) -> Result<Vec<TransitionOutcome>, StoreError>;
    /// Back to `queued` (attempts unchanged), placeable again after `retry_in`: undoes a
    /// placement whose publish failed (from `routing`, queue deadline kept), or delays a
    /// retry (from `retrying`, fresh queue deadline).
    async fn requeue_task(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        reason: &str,
        retry_in: Duration,
    ) -> Result<TransitionOutcome, StoreError>;
    /// Results are deduplicated by `(task_id, attempt)`; a result for another attempt
    /// than the current one is kept but changes nothing ([`ResultOutcome::Stale`]);
    /// otherwise the task goes to the outcome's state with the result and its reason,
    /// and an event with `{duration_ms, outcome}`. One transaction.
    async fn record_result(
        &self,
        tenant: &TenantCtx,
        finished: &Finished,
    ) -> Result<ResultOutcome, StoreError>;
    /// Cross-tenant: queued tasks due for placement whose queue deadline has not passed,
    /// oldest first, at most `limit`. Each is leased: not offered again before `lease`
    /// has passed, so concurrent dispatchers never pick the same task at once.
    async fn claim_unplaced(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<(Tenant, TaskRecord)>, StoreError>;
    /// Cross-tenant: queued tasks past their queue deadline → `failed` with reason
    /// `no_agent` (event appended), at most `limit`. Returns them for event publishing.
    async fn expire_unplaced(&self, limit: i64) -> Result<Vec<(Tenant, TaskRecord)>, StoreError>;
    /// Tasks of the tenant in state `queued` (for quotas).
    async fn count_queued(&self, tenant: &TenantCtx) -> Result<i64, StoreError>;
    /// Makes a `queued` task due for the placement sweep now. A new task is left to its
    /// submission message for [`SUBMISSION_GRACE`]; this is for when no message will
    /// place it (its publish failed, or no agent could take it yet).
    async fn task_due_now(&self, tenant: &TenantCtx, id: TaskId) -> Result<(), StoreError>;
}
