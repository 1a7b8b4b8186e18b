//! What an attempt produced.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::state::Outcome;

/// What an attempt produced, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskOutput {
    Shell(ShellOutput),
    Http(HttpOutput),
    Noop,
    Docker(crate::docker::DockerOutput),
    /// The task could not be started or run at all; `reason` says why.
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShellOutput {
    /// Exit code, when the process exited on its own.
    pub exit_code: Option<i32>,
    /// Signal number, when the process was killed by a signal.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpOutput {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub body_truncated: bool,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskResult {
    pub outcome: Outcome,
    /// Machine-readable reason for anything but `completed`: `exit_status`,
    /// `spawn_failed`, `http_error`, `unexpected_status`, `timeout`, `cancelled`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail of the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
    pub output: TaskOutput,
}
