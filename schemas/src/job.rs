//! Fleet jobs: one task template run once on every agent of a fixed target set, with
//! rate control (`max_concurrency`) and an error threshold (`max_errors`) that halts the
//! job. See `docs/jobs.md` for the semantics.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{AgentId, InvalidName, TaskId};
use crate::labels::LabelSelector;
pub use crate::rate::Rate;
use crate::task::{OutputCap, RetryPolicy, Target, TaskRequest, TaskSpec, Timeout};

crate::ids::uuid_id!(
    /// Identifies a fleet job.
    JobId
);

/// Most targets a job may have.
pub const MAX_TARGETS: usize = 100_000;
/// Longest a job may wait for offline targets to come online: one day.
pub const MAX_WAIT_OFFLINE_SECS: u32 = 24 * 3600;

/// `POST /v1/jobs`: a task template, where to run it, and how fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The agents: a selector (`mode: all`, every matching agent) or an explicit list.
    /// Resolved once, when the job is created.
    pub target: JobTarget,
    /// What every child task runs.
    pub task: TaskSpec,
    #[serde(default = "default_timeout")]
    pub timeout_secs: Timeout,
    #[serde(default = "default_output_cap")]
    pub output_cap_bytes: OutputCap,
    /// How long each child may wait for its (online) agent before it fails `no_agent`.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout_secs: Timeout,
    /// Retry policy of every child (absent: the tenant's default, else none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Kept with the job and copied to every child task.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Children running (dispatched and not ended) at most at once: a number (≥ 1) or a
    /// percentage of the targets (`"10%"`, rounded up, at least 1). Default 50.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: Rate,
    /// Failed or timed-out children tolerated: a number (≥ 0) or a percentage of the
    /// targets (`"5%"`, rounded down). One more halts the job. Default 0.
    #[serde(default = "default_errors")]
    pub max_errors: Rate,
    /// On halt, also cancel the children that are already running (default: they
    /// finish).
    #[serde(default)]
    pub cancel_running_on_halt: bool,
    /// Wait up to this many seconds for targets that are offline when the job is
    /// created; without it they are `skipped_offline` at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_offline_secs: Option<WaitSecs>,
}

fn default_timeout() -> Timeout {
    crate::task::default_timeout()
}
fn default_output_cap() -> OutputCap {
    crate::task::default_output_cap()
}
fn default_queue_timeout() -> Timeout {
    crate::task::default_queue_timeout()
}
fn default_concurrency() -> Rate {
    Rate::Count(50)
}
fn default_errors() -> Rate {
    Rate::Count(0)
}

impl JobRequest {
    /// The child task for `agent`: the template, targeted at that agent.
    pub fn child(&self, agent: AgentId) -> TaskRequest {
        TaskRequest {
            target: Target::Agent(agent),
            task: self.task.clone(),
            timeout_secs: self.timeout_secs,
            output_cap_bytes: self.output_cap_bytes,
            queue_timeout_secs: self.queue_timeout_secs,
            metadata: self.metadata.clone(),
            retry: self.retry.clone(),
        }
    }
}

/// Seconds in `0..=86400`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "u64", into = "u32")]
#[schemars(with = "u32", extend("minimum" = 0, "maximum" = 86400))]
pub struct WaitSecs(u32);

impl WaitSecs {
    pub fn secs(self) -> u32 {
        self.0
    }
}

impl TryFrom<u64> for WaitSecs {
    type Error = InvalidName;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        u32::try_from(v)
            .ok()
            .filter(|v| *v <= MAX_WAIT_OFFLINE_SECS)
            .map(Self)
            .ok_or_else(|| {
                InvalidName(format!(
                    "must be between 0 and {MAX_WAIT_OFFLINE_SECS} seconds, got {v}"
                ))
            })
    }
}

impl From<WaitSecs> for u32 {
    fn from(w: WaitSecs) -> Self {
        w.0
    }
}

/// The agents of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawJobTarget", into = "RawJobTarget")]
#[schemars(with = "RawJobTarget")]
pub enum JobTarget {
    /// Every agent whose labels match, when the job is created.
    Selector(LabelSelector),
    /// These agents (duplicates removed, order kept).
    Agents(Vec<AgentId>),
}

/// How a job's selector picks agents: all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobMode {
    #[default]
    All,
}

/// The JSON form of a [`JobTarget`]: exactly one of `selector` and `agent_ids`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJobTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// `all` (the only mode of a job; `any` is a single task, `POST /v1/tasks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<JobMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ids: Option<Vec<AgentId>>,
}

impl TryFrom<RawJobTarget> for JobTarget {
    type Error = InvalidName;
    fn try_from(raw: RawJobTarget) -> Result<Self, Self::Error> {
        match (raw.selector, raw.agent_ids) {
            (Some(sel), None) => Ok(JobTarget::Selector(sel)),
            (None, Some(ids)) => {
                if ids.is_empty() {
                    return Err(InvalidName("`agent_ids` must not be empty".into()));
                }
                if ids.len() > MAX_TARGETS {
                    return Err(InvalidName(format!(
                        "`agent_ids` may list at most {MAX_TARGETS} agents"
                    )));
                }
                let mut seen = std::collections::HashSet::new();
                Ok(JobTarget::Agents(
                    ids.into_iter().filter(|id| seen.insert(*id)).collect(),
                ))
            }
            _ => Err(InvalidName(
                "target needs exactly one of `selector` or `agent_ids`".into(),
            )),
        }
    }
}

impl From<JobTarget> for RawJobTarget {
    fn from(t: JobTarget) -> Self {
        match t {
            JobTarget::Selector(sel) => RawJobTarget {
                selector: Some(sel),
                mode: Some(JobMode::All),
                agent_ids: None,
            },
            JobTarget::Agents(ids) => RawJobTarget {
                selector: None,
                mode: None,
                agent_ids: Some(ids),
            },
        }
    }
}

/// Where a job is.
///
/// ```text
/// running → completed                      (every target ended)
///    │  ↘ cancelled                        (POST /v1/jobs/{id}/cancel)
///    ↓
/// halting → halted                         (errors > max_errors)
/// ```
/// `halting`: no child is dispatched any more; children that were assigned but may not
/// have started are being stopped. `halted`: from `halted_at` on, no child of the job
/// starts. A halted or cancelled job may still have running children until `ended_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Halting,
    Halted,
    Cancelled,
    Completed,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Running,
        JobState::Halting,
        JobState::Halted,
        JobState::Cancelled,
        JobState::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Halting => "halting",
            JobState::Halted => "halted",
            JobState::Cancelled => "cancelled",
            JobState::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A job in this state dispatches no more children and stops those not started.
    pub fn is_stopping(self) -> bool {
        matches!(
            self,
            JobState::Halting | JobState::Halted | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one target of a job is: before its child exists (`pending`, `waiting` for an
/// offline agent), never run (`skipped_*`), or its child task's state.
pub const TARGET_STATES: [&str; 13] = [
    "pending",
    "waiting",
    "queued",
    "routing",
    "executing",
    "retrying",
    "completed",
    "failed",
    "timed_out",
    "cancelled",
    "skipped_offline",
    "skipped_halted",
    "skipped_cancelled",
];

/// Target states that are not final.
pub const LIVE_TARGET_STATES: [&str; 6] = [
    "pending",
    "waiting",
    "queued",
    "routing",
    "executing",
    "retrying",
];

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobView {
    pub id: JobId,
    pub state: JobState,
    pub request: JobRequest,
    /// `max_concurrency` resolved against the target count.
    pub max_concurrency: u32,
    /// `max_errors` resolved against the target count.
    pub max_errors: u32,
    /// Agents the target resolved to (fixed when the job was created).
    pub target_count: u32,
    /// Targets by state (see [`TARGET_STATES`]); they add up to `target_count`.
    pub counts: BTreeMap<String, u32>,
    /// Children that ended `failed` or `timed_out`.
    pub errors: u32,
    /// Why the job halted, or a note such as "the selector matched no agent".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the first child was dispatched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the error threshold was crossed: no child is dispatched after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halting_at: Option<DateTime<Utc>>,
    /// When the halt was complete: no child starts after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Offline targets are waited for until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_until: Option<DateTime<Utc>>,
    /// When the last target ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
}

/// One target of a job (`GET /v1/jobs/{id}/tasks`), in target order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobTargetView {
    /// Position in the job (targets are dispatched in this order).
    pub seq: u32,
    pub agent_id: AgentId,
    pub agent_name: String,
    /// See [`TARGET_STATES`].
    pub state: String,
    /// The child task, once dispatched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The child's reason (`exit_status`, `no_agent`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The child's error message, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/jobs/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobCancelled {
    pub job: JobView,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_defaults_and_target_forms() {
        let r: JobRequest = serde_json::from_value(serde_json::json!({
            "target": {"selector": "env=prod", "mode": "all"},
            "task": {"kind": "noop"},
        }))
        .unwrap();
        assert_eq!(r.max_concurrency, Rate::Count(50));
        assert_eq!(r.max_errors, Rate::Count(0));
        let a = AgentId::new();
        let r: JobRequest = serde_json::from_value(serde_json::json!({
            "target": {"agent_ids": [a, a]},
            "task": {"kind": "noop"},
            "max_errors": "5%",
        }))
        .unwrap();
        assert_eq!(r.target, JobTarget::Agents(vec![a]));
        assert_eq!(r.child(a).target, Target::Agent(a));
        for bad in [
            serde_json::json!({"selector": "a=b", "mode": "any"}),
            serde_json::json!({"agent_ids": []}),
            serde_json::json!({}),
        ] {
            let body = serde_json::json!({"target": bad, "task": {"kind": "noop"}});
            assert!(serde_json::from_value::<JobRequest>(body).is_err(), "{bad}");
        }
    }
}
