//! REST bodies under `/v1`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, AgentName, ApiKeyId, TaskId, TenantName};
use crate::labels::Labels;
use crate::task::{TaskRequest, TaskResult, TaskState};

/// Every error: a stable `code`, a human `message`, and the offending `field` when one
/// is to blame (a JSON path such as `task.argv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A page of a list, newest first. Pass `next_cursor` as `cursor` to get the next page;
/// absent on the last page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: TenantName,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TenantView {
    pub name: TenantName,
    pub vhost: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key is for, e.g. `ci`.
    pub name: String,
    /// Required when a platform admin creates the key; must be absent (or the caller's
    /// own tenant) when a tenant key creates another.
    #[serde(default)]
    pub tenant: Option<TenantName>,
    /// `tenant-admin` (default), `operator` or `viewer`.
    #[serde(default)]
    pub role: Option<crate::security::Role>,
    /// When the key stops working; absent for never. Must be in the future.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The key itself is in `key`, shown this once; only its hash is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiKeyCreated {
    pub id: ApiKeyId,
    pub name: String,
    pub tenant: TenantName,
    pub key: String,
    pub created_at: DateTime<Utc>,
    pub role: crate::security::Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// Seconds the token stays valid (default 3600, at most 7 days).
    #[serde(default = "default_token_ttl")]
    pub ttl_secs: u32,
}

fn default_token_ttl() -> u32 {
    3600
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnrollmentTokenCreated {
    /// One-time token for `ris-agent enroll --token`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    pub name: AgentName,
    #[serde(default)]
    pub labels: Labels,
    /// Tasks the agent runs at once.
    pub capacity: u32,
    pub version: String,
    pub hostname: String,
}

/// The agent's identity. Saved by the agent in its state directory with mode 0600.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnrollResponse {
    pub agent_id: AgentId,
    pub tenant: TenantName,
    pub name: AgentName,
    pub amqp: AmqpCredentials,
    /// Bearer token for the heartbeat WebSocket.
    pub heartbeat_token: String,
    pub heartbeat_interval_secs: u32,
    /// Keys that sign the agent's assignments and control messages; the agent refuses
    /// anything not signed by one of them. Heartbeat replies carry the current set.
    #[serde(default)]
    pub signing_keys: Vec<crate::security::SigningKeyView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AmqpCredentials {
    /// `amqp://host:port` or `amqps://host:port`, without credentials or vhost.
    pub url: String,
    pub vhost: String,
    pub username: String,
    pub password: String,
    /// The agent's task queue.
    pub queue: String,
    /// The agent's control queue.
    pub control_queue: String,
    /// Exchange results are published to.
    pub results_exchange: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Online,
    Offline,
}

/// Load and machine figures from the agent's latest heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentLoad {
    pub running: u32,
    pub capacity: u32,
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentView {
    pub id: AgentId,
    pub name: AgentName,
    pub status: AgentStatus,
    pub labels: Labels,
    pub capacity: u32,
    pub version: String,
    pub hostname: String,
    pub addresses: Vec<String>,
    /// What the agent can run beyond the basic kinds, as its last heartbeat said
    /// (`docker` while its Docker engine answers).
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<AgentLoad>,
    /// Earlier address sets, newest first, with the time each was replaced.
    #[serde(default)]
    pub address_history: Vec<AddressChange>,
    pub enrolled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AddressChange {
    pub addresses: Vec<String>,
    pub changed_at: DateTime<Utc>,
}

/// Answer to `POST /v1/tasks` (202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskAccepted {
    pub id: TaskId,
    pub state: TaskState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskView {
    pub id: TaskId,
    pub state: TaskState,
    pub request: TaskRequest,
    /// Attempts made so far (0 until the task is placed).
    pub attempts: u32,
    /// Agent of the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    /// Why the task failed, when it did (`no_agent`, `exit_status`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Result of the latest finished attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub metadata: BTreeMap<String, String>,
    /// When a cancel was first requested through `POST /v1/tasks/{id}/cancel`. An
    /// executing task stays `executing` until its agent has stopped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// While `retrying`: when the next attempt may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The fleet job this task is a child of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<crate::job::JobId>,
}

/// One attempt's result (`GET /v1/tasks/{id}/attempts`): every attempt that reported is
/// kept, including one that was superseded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptView {
    pub attempt: u32,
    pub agent_id: AgentId,
    pub result: TaskResult,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// A tenant's settings (`GET/PUT /v1/settings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// Retry policy of tasks that do not carry their own; `null` for none.
    #[serde(default)]
    pub retry: Option<crate::task::RetryPolicy>,
    /// The tenant's rate limits and quotas as they apply (read-only here: the platform
    /// admin sets them with `PUT /v1/tenants/{name}/limits`; ignored on `PUT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::security::TenantLimits>,
}

/// Answer to `POST /v1/tasks/{id}/cancel`: the task as the cancel left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskCancelled {
    #[serde(flatten)]
    pub task: TaskView,
    /// `true` (with status 202) when the task is executing: its agent has been told to
    /// stop it, and the task ends `cancelled` once the agent reports (unless it ended
    /// on its own first). `false` (200) when the cancel took effect at once.
    pub cancel_requested: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskEventView {
    pub seq: i64,
    pub state: TaskState,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
}
