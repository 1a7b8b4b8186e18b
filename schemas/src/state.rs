//! The task lifecycle: its states, the one transition function, and how an attempt
//! ended.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The lifecycle of a task.
///
/// ```text
/// queued → routing → executing → completed | failed | timed_out | cancelled
///    ↑________↓ (re-placed)   ↘ retrying → queued
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Routing,
    Executing,
    Retrying,
    Completed,
    Failed,
    TimedOut,
    Cancelled,
}

/// A transition that the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task cannot go from {from} to {to}")]
pub struct InvalidTransition {
    pub from: TaskState,
    pub to: TaskState,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        TaskState::Queued,
        TaskState::Routing,
        TaskState::Executing,
        TaskState::Retrying,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::TimedOut,
        TaskState::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::TimedOut | TaskState::Cancelled
        )
    }

    /// The only way a task changes state. Terminal states never change; a result may
    /// arrive before its `executing` report (they travel separately), so `routing` may
    /// end directly.
    pub fn transition(self, to: TaskState) -> Result<TaskState, InvalidTransition> {
        use TaskState::*;
        let allowed = match self {
            Queued => matches!(to, Routing | Failed | Cancelled),
            Routing => to != Routing,
            Executing => matches!(to, Retrying | Completed | Failed | TimedOut | Cancelled),
            Retrying => matches!(to, Queued | Routing | Failed | Cancelled),
            Completed | Failed | TimedOut | Cancelled => false,
        };
        if allowed {
            Ok(to)
        } else {
            Err(InvalidTransition { from: self, to })
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Routing => "routing",
            TaskState::Executing => "executing",
            TaskState::Retrying => "retrying",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::TimedOut => "timed_out",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an attempt ended, as the agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    Failed,
    TimedOut,
    Cancelled,
}

impl Outcome {
    pub fn state(self) -> TaskState {
        match self {
            Outcome::Completed => TaskState::Completed,
            Outcome::Failed => TaskState::Failed,
            Outcome::TimedOut => TaskState::TimedOut,
            Outcome::Cancelled => TaskState::Cancelled,
        }
    }
}
