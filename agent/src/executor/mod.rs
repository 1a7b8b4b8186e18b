//! Running one task into a [`TaskResult`].
//!
//! Each kind has its executor ([`shell`], [`http`], [`docker`]; `noop` is inline). Executors never
//! fail and never panic: whatever happens (spawn error, transport error, timeout,
//! cancellation) becomes a result with an outcome and a machine-readable reason.

pub mod docker;
pub mod http;
pub mod shell;

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use ris_schemas::ids::TaskId;
use ris_schemas::messages::Assignment;
use ris_schemas::task::{Outcome, TaskOutput, TaskResult, TaskSpec};
use tokio_util::sync::CancellationToken;

use crate::live::LiveOutput;

pub use docker::DockerExecutor;
pub use http::HttpExecutor;

/// Reasons carried in [`TaskResult::reason`].
pub mod reason {
    pub const EXIT_STATUS: &str = "exit_status";
    pub const SPAWN_FAILED: &str = "spawn_failed";
    pub const HTTP_ERROR: &str = "http_error";
    pub const UNEXPECTED_STATUS: &str = "unexpected_status";
    pub const TIMEOUT: &str = "timeout";
    pub const CANCELLED: &str = "cancelled";
    /// A cancelled assignment dropped before it started.
    pub const NOT_STARTED: &str = "not_started";
    /// The agent died while the task ran; reported when it starts again.
    pub const AGENT_RESTARTED: &str = "agent_restarted";
    /// The agent was stopped and the task did not finish within the shutdown grace.
    pub const AGENT_SHUTDOWN: &str = "agent_shutdown";
    /// The agent reported the attempt `executing` but could not make its journal entry
    /// durable, so it did not start it.
    pub const JOURNAL_FAILED: &str = "journal_failed";
}

/// The limits every task carries.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    /// Bytes kept of each output stream.
    pub output_cap: usize,
}

impl Limits {
    pub fn of(assignment: &Assignment) -> Self {
        Self {
            timeout: Duration::from_secs(u64::from(assignment.timeout_secs.max(1))),
            output_cap: assignment.output_cap_bytes as usize,
        }
    }
}

/// How long a process group gets between SIGTERM and SIGKILL.
#[derive(Debug, Clone, Copy)]
pub struct KillGrace {
    pub on_timeout: Duration,
    pub on_cancel: Duration,
}

impl Default for KillGrace {
    fn default() -> Self {
        Self {
            on_timeout: Duration::from_secs(2),
            on_cancel: Duration::from_secs(5),
        }
    }
}

/// Runs tasks of every kind. Cheap to share: holds the two HTTP clients and the Docker
/// engine handle.
#[derive(Clone)]
pub struct Executors {
    http: HttpExecutor,
    docker: DockerExecutor,
    grace: KillGrace,
}

impl Executors {
    pub fn new(docker: DockerExecutor) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: HttpExecutor::new()?,
            docker,
            grace: KillGrace::default(),
        })
    }

    /// Runs `spec` within `limits`; `cancel` stops it early (outcome `cancelled`). A
    /// shell task's output is also offered to `live` as it is read.
    pub async fn run(
        &self,
        task_id: TaskId,
        spec: &TaskSpec,
        limits: Limits,
        cancel: &CancellationToken,
        live: Option<LiveOutput>,
    ) -> TaskResult {
        match spec {
            TaskSpec::Shell(shell) => {
                shell::run_live(shell, limits, self.grace, cancel, live).await
            }
            TaskSpec::Http(http) => self.http.run(http, limits, cancel).await,
            TaskSpec::Noop(_) => TaskResult {
                outcome: Outcome::Completed,
                reason: None,
                error: None,
                duration_ms: 0,
                output: TaskOutput::Noop,
            },
            TaskSpec::Docker(docker) => self.docker.run(task_id, docker, limits, cancel).await,
        }
    }
}

/// A result that is not `completed`.
pub(crate) fn unsuccessful(
    outcome: Outcome,
    reason: &str,
    error: impl Into<String>,
    started: Instant,
    output: TaskOutput,
) -> TaskResult {
    TaskResult {
        outcome,
        reason: Some(reason.to_owned()),
        error: Some(error.into()),
        duration_ms: elapsed_ms(started),
        output,
    }
}

pub(crate) fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// An error with its causes, `outer: inner: innermost` (reqwest's own message alone
/// rarely says what went wrong).
pub(crate) fn error_chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
