//! One-off `docker` tasks: what is not a service (`kind: docker`, tagged by `op`).
//!
//! They run through the agent's Docker engine (bollard over the local socket), with the
//! same lifecycle, timeout and cancellation as every task. An agent whose engine is
//! absent or unreachable advertises no `docker` capability; a docker task sent to it
//! fails with reason `docker_unavailable`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::service::{PortMapping, ServiceName};

/// The capability an agent advertises when its Docker engine answers.
pub const DOCKER_CAPABILITY: &str = "docker";

/// A docker operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum DockerSpec {
    /// Pull an image. Fails `image_pull_failed` with the engine's message.
    Pull { image: String },
    /// Create and start a container, wait for it to exit, return its exit code and
    /// (capped) logs, and remove it (unless `keep`). Pulls the image when missing.
    Run(DockerRun),
    /// Containers this agent manages (labelled `ris.managed` with its agent id): all of
    /// them, or only running ones. `inspect`, `stop` and `rm` likewise refuse any other
    /// container (reason `not_managed`): an agent never touches what it did not create.
    Ps {
        #[serde(default)]
        all: bool,
    },
    /// `docker inspect` of one container (by id or name).
    Inspect { container: String },
    /// Stop a container, with `timeout_secs` of grace before SIGKILL (default 10).
    Stop {
        container: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u32>,
    },
    /// Remove a container.
    Rm {
        container: String,
        #[serde(default)]
        force: bool,
    },
    /// Images on the machine.
    Images {},
    /// Logs of a service's containers on this agent (what `GET /v1/services/{name}/logs`
    /// runs): the last `tail` lines of each, since `since` (unix seconds) when given.
    Logs {
        service: ServiceName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<i64>,
    },
}

impl DockerSpec {
    pub fn op(&self) -> &'static str {
        match self {
            DockerSpec::Pull { .. } => "pull",
            DockerSpec::Run(_) => "run",
            DockerSpec::Ps { .. } => "ps",
            DockerSpec::Inspect { .. } => "inspect",
            DockerSpec::Stop { .. } => "stop",
            DockerSpec::Rm { .. } => "rm",
            DockerSpec::Images {} => "images",
            DockerSpec::Logs { .. } => "logs",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerRun {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Keep the container after it exits (default: remove it).
    #[serde(default)]
    pub keep: bool,
}

/// What a docker task produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DockerOutput {
    /// `run`: the container's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// `run` and `logs`: standard output (for `logs`, lines prefixed by container name).
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub truncated: bool,
    /// Structured answer of `ps`, `inspect`, `images`, `pull` (as the engine gave it,
    /// trimmed to the useful fields).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use crate::task::TaskSpec;
    use serde_json::json;

    #[test]
    fn docker_tasks_parse_and_name_bad_fields() {
        let spec: TaskSpec = serde_json::from_value(
            json!({"kind": "docker", "op": "run", "image": "busybox:1", "command": ["true"]}),
        )
        .unwrap();
        assert_eq!(spec.kind(), "docker");
        assert_eq!(spec.required_capability(), Some("docker"));
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["op"], "run");
        assert_eq!(back["kind"], "docker");
        let err = serde_json::from_value::<TaskSpec>(json!({"kind": "docker", "op": "fly"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fly"), "{err}");
        let err = serde_json::from_value::<TaskSpec>(json!({"kind": "docker", "op": "pull"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("image"), "{err}");
    }
}
