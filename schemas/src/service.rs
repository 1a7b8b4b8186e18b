//! Docker services: what an operator declares, what agents are told, what they report.
//!
//! A service is declared once per tenant (`PUT /v1/services/{name}`) with a [`ServiceSpec`]
//! and a [`ServiceTarget`]. Every change — a new spec, a scale, a restart — is a new
//! revision. The dispatcher sends each matching agent the current revision
//! ([`crate::messages::ControlMessage::ServiceApply`]); the agent keeps it on disk,
//! converges its containers to it, and reports what it has
//! ([`crate::messages::ResultMessage::ServiceStatus`]).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{check_slug, AgentId, InvalidName, TaskId};
use crate::labels::LabelSelector;
use crate::task::nested;

/// Most replicas one agent runs of one service.
pub const MAX_REPLICAS: u32 = 100;
/// Default time a new replica has to become healthy during an update: 60 s.
pub const DEFAULT_HEALTH_DEADLINE_SECS: u32 = 60;

/// A service name: 1 to 32 lowercase letters, digits and '-'.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String", extend("pattern" = "^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"))]
pub struct ServiceName(String);

impl ServiceName {
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        check_slug("service name", s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ServiceName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ServiceName> for String {
    fn from(n: ServiceName) -> Self {
        n.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a service runs: one agent, or every agent whose labels match a selector
/// (including agents that enroll or change labels later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawServiceTarget", into = "RawServiceTarget")]
#[schemars(with = "RawServiceTarget")]
pub enum ServiceTarget {
    Agent(AgentId),
    Selector(LabelSelector),
}

/// The JSON form of a [`ServiceTarget`]: exactly one of `agent_id` and `selector`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServiceTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

impl TryFrom<RawServiceTarget> for ServiceTarget {
    type Error = InvalidName;
    fn try_from(raw: RawServiceTarget) -> Result<Self, Self::Error> {
        match (raw.agent_id, raw.selector) {
            (Some(id), None) => Ok(ServiceTarget::Agent(id)),
            (None, Some(sel)) => Ok(ServiceTarget::Selector(sel)),
            _ => Err(InvalidName(
                "target needs exactly one of `agent_id` or `selector`".into(),
            )),
        }
    }
}

impl From<ServiceTarget> for RawServiceTarget {
    fn from(t: ServiceTarget) -> Self {
        match t {
            ServiceTarget::Agent(id) => RawServiceTarget {
                agent_id: Some(id),
                selector: None,
            },
            ServiceTarget::Selector(sel) => RawServiceTarget {
                agent_id: None,
                selector: Some(sel),
            },
        }
    }
}

/// `PUT /v1/services/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutService {
    pub target: ServiceTarget,
    pub spec: ServiceSpec,
}

/// `POST /v1/services/{name}/scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleService {
    /// Replicas per agent, `0..=100`.
    pub replicas: Replicas,
}

/// What to run, per agent. Validated as a whole: a bad field is reported by its path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawServiceSpec", into = "RawServiceSpec")]
#[schemars(with = "RawServiceSpec")]
pub struct ServiceSpec(RawServiceSpec);

impl ServiceSpec {
    pub fn get(&self) -> &RawServiceSpec {
        &self.0
    }

    /// The same spec with another replica count (a scale is a new revision).
    pub fn with_replicas(&self, replicas: Replicas) -> ServiceSpec {
        let mut raw = self.0.clone();
        raw.replicas = replicas;
        ServiceSpec(raw)
    }

    /// The same spec with the restart generation bumped: every replica is replaced, one
    /// at a time, as in an update.
    pub fn restarted(&self) -> ServiceSpec {
        let mut raw = self.0.clone();
        raw.restart_generation += 1;
        ServiceSpec(raw)
    }

    /// SHA-256 (hex) of everything that shapes a container — all but `replicas` and
    /// `update`. Containers carry it as a label: a container whose hash differs from the
    /// desired one is replaced; a scale alone replaces nothing.
    pub fn container_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut shape = self.0.clone();
        shape.replicas = Replicas(0);
        shape.update = UpdatePolicy::default();
        // Serializing a plain struct of maps, strings and numbers cannot fail.
        let bytes = serde_json::to_vec(&shape).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }
}

impl TryFrom<RawServiceSpec> for ServiceSpec {
    type Error = InvalidName;
    fn try_from(raw: RawServiceSpec) -> Result<Self, Self::Error> {
        raw.validate().map_err(InvalidName)?;
        Ok(ServiceSpec(raw))
    }
}

impl From<ServiceSpec> for RawServiceSpec {
    fn from(s: ServiceSpec) -> Self {
        s.0
    }
}

/// The JSON form of a [`ServiceSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServiceSpec {
    /// Image reference (`name[:tag]` or `name@sha256:...`). Pulled when missing.
    pub image: String,
    /// Overrides the image's `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Overrides the image's `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Replicas on each target agent.
    #[serde(default = "one_replica")]
    pub replicas: Replicas,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub update: UpdatePolicy,
    /// Bumped by `POST /v1/services/{name}/restart`; not set by clients.
    #[serde(default)]
    pub restart_generation: u32,
}

fn one_replica() -> Replicas {
    Replicas(1)
}

impl RawServiceSpec {
    fn validate(&self) -> Result<(), String> {
        let image = self.image.trim();
        if image.is_empty() || image.len() > 255 || image.chars().any(char::is_whitespace) {
            return Err(nested(
                "image",
                "must be an image reference without spaces, 1 to 255 characters",
            ));
        }
        for (field, argv) in [("command", &self.command), ("entrypoint", &self.entrypoint)] {
            if let Some(argv) = argv {
                if argv.is_empty() {
                    return Err(nested(field, "must not be empty when given"));
                }
                if argv.iter().any(|a| a.contains('\0')) {
                    return Err(nested(field, "must not contain NUL characters"));
                }
            }
        }
        if let Some(k) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0') || k.starts_with("RIS_"))
        {
            return Err(nested(
                &format!("env.{k}"),
                "is not a valid variable name (non-empty, no '=', not starting with RIS_)",
            ));
        }
        let mut seen_host = std::collections::BTreeSet::new();
        let mut seen_container = std::collections::BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            if !seen_container.insert((p.container, p.protocol)) {
                return Err(nested(
                    &format!("ports[{i}].container"),
                    "is published twice",
                ));
            }
            if let Some(host) = p.host {
                if !seen_host.insert((host, p.protocol)) {
                    return Err(nested(&format!("ports[{i}].host"), "is used twice"));
                }
                if self.replicas.0 > 1 {
                    return Err(nested(
                        &format!("ports[{i}].host"),
                        "a fixed host port allows at most one replica per agent; omit `host` to let Docker choose one",
                    ));
                }
            }
        }
        if let Some(hc) = &self.health_check {
            hc.validate()?;
        }
        self.limits.validate()?;
        self.update.validate()?;
        Ok(())
    }

    /// True when a replica must stop before its replacement starts: a fixed host port
    /// cannot be bound twice.
    pub fn needs_stop_first(&self) -> bool {
        self.ports.iter().any(|p| p.host.is_some()) || self.update.max_surge == 0
    }
}

/// Replicas per agent, `0..=100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "u64", into = "u32")]
#[schemars(with = "u32", extend("minimum" = 0, "maximum" = 100))]
pub struct Replicas(u32);

impl Replicas {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u64> for Replicas {
    type Error = InvalidName;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        if v <= u64::from(MAX_REPLICAS) {
            Ok(Self(v as u32))
        } else {
            Err(InvalidName(format!(
                "must be between 0 and {MAX_REPLICAS}, got {v}"
            )))
        }
    }
}

impl From<Replicas> for u32 {
    fn from(r: Replicas) -> Self {
        r.0
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

/// A container port published on the agent's machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// Port inside the container.
    #[schemars(range(min = 1, max = 65535))]
    pub container: Port,
    /// Port on the machine; absent: Docker picks a free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Port>,
    #[serde(default)]
    pub protocol: PortProtocol,
}

/// A TCP or UDP port, `1..=65535`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "u64", into = "u16")]
#[schemars(with = "u16", extend("minimum" = 1, "maximum" = 65535))]
pub struct Port(u16);

impl Port {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u64> for Port {
    type Error = InvalidName;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        match u16::try_from(v) {
            Ok(p) if p > 0 => Ok(Self(p)),
            _ => Err(InvalidName(format!("must be between 1 and 65535, got {v}"))),
        }
    }
}

impl From<Port> for u16 {
    fn from(p: Port) -> Self {
        p.0
    }
}

/// How the agent decides a replica is healthy. Exactly one of `http` and `cmd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The agent sends `GET http://<container address>:<port><path>` and wants a 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheck>,
    /// Run inside the container by Docker's own health check; exit 0 is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Seconds between checks (default 2).
    #[serde(default = "two")]
    pub interval_secs: u32,
    /// Seconds one check may take (default 2).
    #[serde(default = "two")]
    pub timeout_secs: u32,
    /// Consecutive failures after which a running replica counts as unhealthy (default 3).
    #[serde(default = "three")]
    pub retries: u32,
}

fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}

impl HealthCheck {
    fn validate(&self) -> Result<(), String> {
        match (&self.http, &self.cmd) {
            (Some(http), None) => {
                if !http.path.starts_with('/') {
                    return Err(nested("health_check.http.path", "must start with '/'"));
                }
            }
            (None, Some(cmd)) => {
                if cmd.is_empty() {
                    return Err(nested("health_check.cmd", "must not be empty"));
                }
            }
            _ => {
                return Err(nested(
                    "health_check",
                    "needs exactly one of `http` or `cmd`",
                ))
            }
        }
        for (field, v, max) in [
            ("interval_secs", self.interval_secs, 3600),
            ("timeout_secs", self.timeout_secs, 600),
            ("retries", self.retries, 100),
        ] {
            if v == 0 || v > max {
                return Err(nested(
                    &format!("health_check.{field}"),
                    &format!("must be between 1 and {max}, got {v}"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpHealthCheck {
    /// Port inside the container.
    pub port: Port,
    #[serde(default = "root_path")]
    pub path: String,
}

fn root_path() -> String {
    "/".to_owned()
}

/// Resource limits per replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Memory limit in bytes (at least 6 MiB, Docker's minimum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPUs, e.g. `0.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
}

impl Limits {
    fn validate(&self) -> Result<(), String> {
        if let Some(m) = self.memory_bytes {
            if m < 6 * 1024 * 1024 {
                return Err(nested(
                    "limits.memory_bytes",
                    "must be at least 6291456 (6 MiB)",
                ));
            }
        }
        if let Some(c) = self.cpus {
            if !(c.is_finite() && c > 0.0 && c <= 1024.0) {
                return Err(nested(
                    "limits.cpus",
                    "must be greater than 0 and at most 1024",
                ));
            }
        }
        Ok(())
    }
}

/// How replicas are replaced when the container shape changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    /// Extra replicas that may run during an update (0 or 1; default 1: start the new one,
    /// then stop an old one). Forced to 0 when a fixed host port is published.
    #[serde(default = "one")]
    pub max_surge: u32,
    /// Replicas that may be missing during an update (0 or 1; default 0).
    #[serde(default)]
    pub max_unavailable: u32,
    /// Seconds a new replica has to become healthy (running, and passing its health check
    /// when it has one) before the update is rolled back.
    #[serde(default = "default_health_deadline")]
    pub health_deadline_secs: u32,
}

fn one() -> u32 {
    1
}
fn default_health_deadline() -> u32 {
    DEFAULT_HEALTH_DEADLINE_SECS
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            max_surge: 1,
            max_unavailable: 0,
            health_deadline_secs: DEFAULT_HEALTH_DEADLINE_SECS,
        }
    }
}

impl UpdatePolicy {
    fn validate(&self) -> Result<(), String> {
        if self.max_surge > 1 {
            return Err(nested("update.max_surge", "must be 0 or 1"));
        }
        if self.max_unavailable > 1 {
            return Err(nested("update.max_unavailable", "must be 0 or 1"));
        }
        if self.max_surge == 0 && self.max_unavailable == 0 {
            return Err(nested(
                "update.max_unavailable",
                "must be 1 when `max_surge` is 0, or no replica could ever be replaced",
            ));
        }
        if !(1..=3600).contains(&self.health_deadline_secs) {
            return Err(nested(
                "update.health_deadline_secs",
                "must be between 1 and 3600",
            ));
        }
        Ok(())
    }
}

/// One revision of a service: the spec and target as they were after one change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceRevision {
    pub revision: u32,
    /// `create`, `update`, `scale`, `restart`, `delete`.
    pub change: String,
    pub target: ServiceTarget,
    pub spec: ServiceSpec,
    pub created_at: DateTime<Utc>,
}

/// Where one agent stands with one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// The agent has been told, and has not reported yet.
    Pending,
    /// Creating, replacing or removing containers.
    Converging,
    /// Every replica of the desired revision runs (and is healthy, when checked).
    Running,
    /// The last update failed its health check; the agent went back to the revision
    /// given in `revision` and does not retry the failed one.
    RolledBack,
    /// The agent cannot converge (`reason` says why: `image_pull_failed`,
    /// `docker_unavailable`, `port_in_use`, `create_failed`, ...); it keeps trying.
    Failed,
    /// Told to remove the service; containers are gone.
    Removed,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Converging => "converging",
            InstanceState::Running => "running",
            InstanceState::RolledBack => "rolled_back",
            InstanceState::Failed => "failed",
            InstanceState::Removed => "removed",
        }
    }
}

/// One container, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerStatus {
    pub id: String,
    pub name: String,
    /// The revision whose spec made it.
    pub revision: u32,
    /// Docker's state: `created`, `running`, `exited`, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or absent without a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Times the agent restored this replica (restarted or recreated) after it died.
    pub restarts: u32,
    /// Published ports: `"<container>/<proto>" -> host port`.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    pub created_at: DateTime<Utc>,
}

/// What one agent reports about one service (on change, and every 30 s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceStatusReport {
    pub service: ServiceName,
    /// The revision the agent was last told to run.
    pub desired_revision: u32,
    /// The revision the running replicas belong to (after a rollback, the older one).
    pub revision: u32,
    pub state: InstanceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub containers: Vec<ContainerStatus>,
    /// Total replica restorations since the agent started managing the service.
    pub restarts: u32,
}

/// `GET /v1/services` row and the head of `GET /v1/services/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceView {
    pub name: ServiceName,
    pub revision: u32,
    pub target: ServiceTarget,
    pub spec: ServiceSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set once `DELETE` was accepted: the agents are removing the containers, and the
    /// service disappears when every one of them reported `removed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// Agents by instance state.
    pub agents: BTreeMap<String, u32>,
    /// Per agent: desired against actual (only in `GET /v1/services/{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceView>>,
}

/// One agent's side of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceView {
    pub agent_id: AgentId,
    pub agent_name: String,
    pub desired_revision: u32,
    /// Revision the agent runs (absent before its first report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    pub desired_replicas: u32,
    pub state: InstanceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub containers: Vec<ContainerStatus>,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<DateTime<Utc>>,
}

/// `GET /v1/services/{name}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ServiceLogs {
    pub service: ServiceName,
    /// One entry per agent asked, by agent name.
    pub items: Vec<AgentLogs>,
}

/// One agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AgentLogs {
    pub agent_id: AgentId,
    pub agent_name: String,
    /// The internal task that fetched them.
    pub task_id: TaskId,
    /// `completed`, or why there are no logs: the task's state (`failed`, ...) or
    /// `no_answer` when the agent did not answer in time (offline, busy, lost).
    pub outcome: String,
    /// `docker_unavailable`, `no_agent`, ... when not completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Log lines, each prefixed by its container's name.
    pub lines: Vec<String>,
    /// The output was cut at the task's output cap.
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> Result<ServiceSpec, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_hash_ignores_replicas() {
        let s = spec(json!({"image": "busybox:1"})).unwrap();
        assert_eq!(s.get().replicas.get(), 1);
        assert_eq!(s.get().update, UpdatePolicy::default());
        let scaled = s.with_replicas(Replicas(5));
        assert_eq!(s.container_hash(), scaled.container_hash());
        assert_ne!(s.container_hash(), s.restarted().container_hash());
    }

    #[test]
    fn bad_fields_are_named() {
        let err =
            spec(json!({"image": "x", "replicas": 2, "ports": [{"container": 80, "host": 8080}]}))
                .unwrap_err();
        assert!(err.contains("ports[0].host"), "{err}");
        let err = spec(json!({"image": ""})).unwrap_err();
        assert!(err.contains("`image`"), "{err}");
        let err =
            spec(json!({"image": "x", "health_check": {"http": {"port": 80}, "cmd": ["true"]}}))
                .unwrap_err();
        assert!(err.contains("health_check"), "{err}");
        let err = spec(json!({"image": "x", "replicas": 101})).unwrap_err();
        assert!(err.contains("between 0 and 100"), "{err}");
        let err = spec(json!({"image": "x", "limits": {"cpus": -1.0}})).unwrap_err();
        assert!(err.contains("limits.cpus"), "{err}");
    }
}
