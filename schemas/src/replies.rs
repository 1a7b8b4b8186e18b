//! The reply an integrator gets on AMQP request/reply.
//!
//! A submission published to `ris.submit` with the AMQP properties `reply_to` (a queue
//! of the integrator's own, `ris.int.<name>.*`) and `correlation_id` is answered once
//! the task reaches a terminal state: the dispatcher publishes a [`ReplyMessage`] to
//! that queue (default exchange, routing key = `reply_to`), echoing `correlation_id`.
//! Only the final outcome is sent; progress is on `ris.events`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::TaskId;
use crate::task::{TaskResult, TaskState};
use crate::version::V1;

/// What the integrator's reply queue receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum ReplyMessage {
    #[serde(rename = "task.reply")]
    Reply(TaskReply),
}

/// A task's final outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskReply {
    pub v: V1,
    pub task_id: TaskId,
    /// Always terminal: `completed`, `failed`, `timed_out` or `cancelled`.
    pub state: TaskState,
    /// Why it ended (`exit_status`, `no_agent`, `agent_lost`, `cancelled`, ...); absent
    /// for a plain success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Attempts made (0 when it never reached an agent, e.g. `no_agent`).
    pub attempts: u32,
    /// The last attempt's result; absent when no attempt finished (the task expired in
    /// the queue, or its agent was lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reply_round_trips_with_its_type_and_version() {
        let reply = ReplyMessage::Reply(TaskReply {
            v: V1,
            task_id: TaskId::new(),
            state: TaskState::Failed,
            reason: Some("no_agent".into()),
            attempts: 0,
            result: None,
        });
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(json["type"], "task.reply");
        assert_eq!(json["v"], 1);
        assert_eq!(json["state"], "failed");
        assert!(json.get("result").is_none());
        let back: ReplyMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, reply);
    }
}
