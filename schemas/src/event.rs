//! Events on the `ris.events` topic exchange.
//!
//! Routing key = `type`: `task.<state>` for every task state change,
//! `agent.online` / `agent.offline` when an agent comes or goes, `task.output` for a
//! chunk of a running task's live output (data: the [`OutputChunk`], itself versioned),
//! `service.<what>` for services: `service.updated` (a new revision was declared),
//! `service.deleted`, and per agent `service.running`, `service.converging`,
//! `service.rolled_back`, `service.failed`, `service.removed` (instance state changes)
//! and `service.restarted` (a replica that died was restored). `job.<state>` when a
//! fleet job changes state (`running`, `halting`, `halted`, `cancelled`, `completed`),
//! and `job.ended` when its last target ended.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, EventId, TaskId};
use crate::job::{JobId, JobState};
use crate::messages::OutputChunk;
use crate::service::{InstanceState, ServiceName};
use crate::task::TaskState;
use crate::version::V1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    pub v: V1,
    pub id: EventId,
    /// `task.<state>`, also the routing key.
    #[serde(rename = "type")]
    pub kind: String,
    pub tenant: String,
    pub time: DateTime<Utc>,
    pub data: EventData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EventData {
    Task(TaskEventData),
    Agent(AgentEventData),
    Output(OutputChunk),
    Service(ServiceEventData),
    Job(JobEventData),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobEventData {
    pub job_id: JobId,
    pub state: JobState,
    pub target_count: u32,
    /// Targets by state; they add up to `target_count`.
    pub counts: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceEventData {
    pub service: ServiceName,
    pub revision: u32,
    /// The agent, for per-agent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    /// The instance state, for per-agent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<InstanceState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `service.restarted`: how many replicas were restored since the previous report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentEventData {
    pub agent_id: AgentId,
    pub name: String,
    /// `online` or `offline`.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskEventData {
    pub task_id: TaskId,
    pub state: TaskState,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The fleet job the task is a child of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
}

impl Event {
    pub fn agent(tenant: &str, data: AgentEventData) -> Self {
        Event {
            v: V1,
            id: EventId::new(),
            kind: format!("agent.{}", data.status),
            tenant: tenant.to_owned(),
            time: Utc::now(),
            data: EventData::Agent(data),
        }
    }

    /// Routing key of live output events.
    pub const OUTPUT: &'static str = "task.output";

    pub fn output(tenant: &str, chunk: OutputChunk) -> Self {
        Event {
            v: V1,
            id: EventId::new(),
            kind: Self::OUTPUT.to_owned(),
            tenant: tenant.to_owned(),
            time: Utc::now(),
            data: EventData::Output(chunk),
        }
    }

    /// `what`: `updated`, `deleted`, `restarted`, or an instance state.
    pub fn service(tenant: &str, what: &str, data: ServiceEventData) -> Self {
        Event {
            v: V1,
            id: EventId::new(),
            kind: format!("service.{what}"),
            tenant: tenant.to_owned(),
            time: Utc::now(),
            data: EventData::Service(data),
        }
    }

    /// `what`: the job's state, or `ended`.
    pub fn job(tenant: &str, what: &str, data: JobEventData) -> Self {
        Event {
            v: V1,
            id: EventId::new(),
            kind: format!("job.{what}"),
            tenant: tenant.to_owned(),
            time: Utc::now(),
            data: EventData::Job(data),
        }
    }

    pub fn task(tenant: &str, data: TaskEventData) -> Self {
        Event {
            v: V1,
            id: EventId::new(),
            kind: format!("task.{}", data.state),
            tenant: tenant.to_owned(),
            time: Utc::now(),
            data: EventData::Task(data),
        }
    }
}
