//! Messages that travel through RabbitMQ.
//!
//! Each queue carries one message enum, tagged by `type` and versioned by `v`:
//!
//! | queue                 | producer                   | message            |
//! |-----------------------|----------------------------|--------------------|
//! | `ris.submit`          | API, integrators           | [`SubmitMessage`]  |
//! | `ris.agent.<id>`      | dispatcher                 | [`AgentMessage`]   |
//! | `ris.results`         | agents                     | [`ResultMessage`]  |
//! | `ris.agent.<id>.ctl`  | dispatcher, API            | [`ControlMessage`] |

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, TaskId};
use crate::service::{ServiceName, ServiceSpec, ServiceStatusReport};
use crate::task::{TaskRequest, TaskResult, TaskSpec};
use crate::version::V1;

/// A submission on `ris.submit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum SubmitMessage {
    #[serde(rename = "task.submit")]
    Submit(Submit),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Submit {
    pub v: V1,
    /// Chosen by the submitter; re-publishing the same id is harmless (first one wins).
    pub task_id: TaskId,
    pub request: TaskRequest,
}

/// Work for one agent, on `ris.agent.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum AgentMessage {
    #[serde(rename = "task.assign")]
    Assign(Assignment),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Assignment {
    pub v: V1,
    pub task_id: TaskId,
    /// 1 for the first attempt. Results carry it back, so a stale attempt's result never
    /// overwrites a newer one.
    pub attempt: u32,
    pub agent_id: AgentId,
    pub task: TaskSpec,
    pub timeout_secs: u32,
    pub output_cap_bytes: u32,
    pub assigned_at: DateTime<Utc>,
}

/// What agents report on `ris.results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum ResultMessage {
    /// The agent journaled the task and is about to start it.
    #[serde(rename = "task.executing")]
    Executing(Executing),
    /// The attempt ended.
    #[serde(rename = "task.finished")]
    Finished(Finished),
    /// A piece of a running attempt's stdout or stderr (best effort, never stored).
    #[serde(rename = "task.output")]
    Output(OutputChunk),
    /// Where the agent stands with one service: on every change, and every 30 s.
    #[serde(rename = "service.status")]
    ServiceStatus(ServiceStatus),
}

impl ResultMessage {
    /// The task the message is about (none for service reports).
    pub fn task_id(&self) -> Option<TaskId> {
        match self {
            ResultMessage::Executing(e) => Some(e.task_id),
            ResultMessage::Finished(f) => Some(f.task_id),
            ResultMessage::Output(o) => Some(o.task_id),
            ResultMessage::ServiceStatus(_) => None,
        }
    }

    pub fn agent_id(&self) -> AgentId {
        match self {
            ResultMessage::Executing(e) => e.agent_id,
            ResultMessage::Finished(f) => f.agent_id,
            ResultMessage::Output(o) => o.agent_id,
            ResultMessage::ServiceStatus(s) => s.agent_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceStatus {
    pub v: V1,
    pub agent_id: AgentId,
    pub sent_at: DateTime<Utc>,
    #[serde(flatten)]
    pub report: ServiceStatusReport,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Executing {
    pub v: V1,
    pub task_id: TaskId,
    pub attempt: u32,
    pub agent_id: AgentId,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Finished {
    pub v: V1,
    pub task_id: TaskId,
    pub attempt: u32,
    pub agent_id: AgentId,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub result: TaskResult,
}

/// Which output stream a chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// Live output of a running attempt: what was read from one stream since the previous
/// chunk. Best effort: chunks may be missing (the agent drops them rather than slow the
/// task down) and streaming stops after 1 MiB per attempt; the stored result keeps the
/// output as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutputChunk {
    pub v: V1,
    pub task_id: TaskId,
    pub attempt: u32,
    pub agent_id: AgentId,
    pub stream: OutputStream,
    /// Per attempt, from 0, across both streams.
    pub seq: u64,
    /// Lossy UTF-8.
    pub data: String,
    pub sent_at: DateTime<Utc>,
}

/// Orders for one agent, on `ris.agent.<id>.ctl` (consumed on its own channel, so a busy
/// agent still hears them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum ControlMessage {
    #[serde(rename = "task.cancel")]
    Cancel { v: V1, task_id: TaskId },
    /// The dispatcher took this attempt back (its agent was declared lost and the task
    /// was placed elsewhere): if its assignment arrives, drop it unrun.
    #[serde(rename = "task.revoke")]
    Revoke {
        v: V1,
        task_id: TaskId,
        attempt: u32,
    },
    #[serde(rename = "ping")]
    Ping { v: V1, nonce: String },
    /// Run this revision of a service (the agent stores it on disk and converges to it).
    /// Sent on every change and again whenever the agent's report lags behind, so it may
    /// arrive more than once or out of order: the agent keeps the highest revision.
    #[serde(rename = "service.apply")]
    ServiceApply {
        v: V1,
        service: ServiceName,
        revision: u32,
        spec: Box<ServiceSpec>,
    },
    /// Remove every container of a service and forget it. `revision` is the service's
    /// last revision: an older `service.apply` arriving late does not bring it back.
    #[serde(rename = "service.remove")]
    ServiceRemove {
        v: V1,
        service: ServiceName,
        revision: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{NoopSpec, Outcome, TaskOutput};

    #[test]
    fn assignment_round_trip() {
        let msg = AgentMessage::Assign(Assignment {
            v: V1,
            task_id: TaskId::new(),
            attempt: 1,
            agent_id: AgentId::new(),
            task: TaskSpec::Noop(NoopSpec {}),
            timeout_secs: 60,
            output_cap_bytes: 1024,
            assigned_at: Utc::now(),
        });
        let json = serde_json::to_value(&msg).unwrap();
        assert_eq!(json["type"], "task.assign");
        assert_eq!(json["v"], 1);
        assert_eq!(serde_json::from_value::<AgentMessage>(json).unwrap(), msg);
    }

    #[test]
    fn result_round_trip_and_version_check() {
        let msg = ResultMessage::Finished(Finished {
            v: V1,
            task_id: TaskId::new(),
            attempt: 2,
            agent_id: AgentId::new(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            result: TaskResult {
                outcome: Outcome::Completed,
                reason: None,
                error: None,
                duration_ms: 3,
                output: TaskOutput::Noop,
            },
        });
        let mut json = serde_json::to_value(&msg).unwrap();
        assert_eq!(
            serde_json::from_value::<ResultMessage>(json.clone()).unwrap(),
            msg
        );
        json["v"] = 2.into();
        let err = serde_json::from_value::<ResultMessage>(json).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
    }

    #[test]
    fn output_round_trip() {
        let msg = ResultMessage::Output(OutputChunk {
            v: V1,
            task_id: TaskId::new(),
            attempt: 1,
            agent_id: AgentId::new(),
            stream: OutputStream::Stderr,
            seq: 3,
            data: "line 1\n".to_owned(),
            sent_at: Utc::now(),
        });
        let json = serde_json::to_value(&msg).unwrap();
        assert_eq!(json["type"], "task.output");
        assert_eq!(json["stream"], "stderr");
        assert_eq!(serde_json::from_value::<ResultMessage>(json).unwrap(), msg);
    }

    #[test]
    fn control_round_trip() {
        let msg = ControlMessage::Cancel {
            v: V1,
            task_id: TaskId::new(),
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(serde_json::from_str::<ControlMessage>(&json).unwrap(), msg);
    }
}
