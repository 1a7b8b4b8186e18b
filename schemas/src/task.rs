//! Tasks: what to run, where, and what came of it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::docker::DockerSpec;
use crate::ids::{AgentId, InvalidName};
use crate::labels::LabelSelector;

// The lifecycle, results and retry policies have their own modules; they are part of
// what a task is, so they are re-exported here.
pub use crate::result::{HttpOutput, ShellOutput, TaskOutput, TaskResult};
pub use crate::retry::{RawRetryPolicy, RetryOn, RetryPolicy};
pub use crate::state::{InvalidTransition, Outcome, TaskState};

/// Default task timeout: 60 s.
pub const DEFAULT_TIMEOUT_SECS: u32 = 60;
/// Longest allowed timeout: one week. Tasks do not hold a broker delivery while they run
/// (the heartbeat is their lease), so long tasks are fine.
pub const MAX_TIMEOUT_SECS: u32 = 7 * 24 * 3600;
/// Default cap on each captured output stream: 1 MiB.
pub const DEFAULT_OUTPUT_CAP: u32 = 1024 * 1024;
/// Largest allowed output cap: 16 MiB.
pub const MAX_OUTPUT_CAP: u32 = 16 * 1024 * 1024;
/// Default time a task may wait for an agent before failing with `no_agent`: 5 minutes.
pub const DEFAULT_QUEUE_TIMEOUT_SECS: u32 = 300;

/// A task as submitted: through `POST /v1/tasks`, or inside a [`crate::messages::SubmitMessage`]
/// on `ris.submit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// Where to run it.
    pub target: Target,
    /// What to run.
    pub task: TaskSpec,
    /// Seconds the task may run before its process group is killed and it ends `timed_out`.
    #[serde(default = "default_timeout")]
    pub timeout_secs: Timeout,
    /// Bytes kept of each output stream (stdout, stderr, http body); the rest is dropped
    /// and the result says `truncated`.
    #[serde(default = "default_output_cap")]
    pub output_cap_bytes: OutputCap,
    /// Seconds the task may wait for a matching online agent before it fails `no_agent`.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout_secs: Timeout,
    /// Free-form metadata kept with the task and echoed in its events.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When to try again. Absent: the tenant's default policy, else no retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

pub(crate) fn default_timeout() -> Timeout {
    Timeout(DEFAULT_TIMEOUT_SECS)
}
pub(crate) fn default_queue_timeout() -> Timeout {
    Timeout(DEFAULT_QUEUE_TIMEOUT_SECS)
}
pub(crate) fn default_output_cap() -> OutputCap {
    OutputCap(DEFAULT_OUTPUT_CAP)
}

/// A number of seconds in `1..=604800`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "u64", into = "u32")]
#[schemars(with = "u32", extend("minimum" = 1, "maximum" = 604800))]
pub struct Timeout(u32);

impl Timeout {
    pub fn secs(self) -> u32 {
        self.0
    }
}

impl TryFrom<u64> for Timeout {
    type Error = InvalidName;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        if (1..=u64::from(MAX_TIMEOUT_SECS)).contains(&v) {
            Ok(Self(v as u32))
        } else {
            Err(InvalidName(format!(
                "must be between 1 and {MAX_TIMEOUT_SECS} seconds, got {v}"
            )))
        }
    }
}

impl From<Timeout> for u32 {
    fn from(t: Timeout) -> Self {
        t.0
    }
}

/// A byte count in `1..=16777216`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "u64", into = "u32")]
#[schemars(with = "u32", extend("minimum" = 1, "maximum" = 16777216))]
pub struct OutputCap(u32);

impl OutputCap {
    pub fn bytes(self) -> usize {
        self.0 as usize
    }
}

impl TryFrom<u64> for OutputCap {
    type Error = InvalidName;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        if (1..=u64::from(MAX_OUTPUT_CAP)).contains(&v) {
            Ok(Self(v as u32))
        } else {
            Err(InvalidName(format!(
                "must be between 1 and {MAX_OUTPUT_CAP} bytes, got {v}"
            )))
        }
    }
}

impl From<OutputCap> for u32 {
    fn from(t: OutputCap) -> Self {
        t.0
    }
}

/// Where a task runs: one named agent, or one agent chosen by load among those whose
/// labels match a selector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawTarget", into = "RawTarget")]
#[schemars(with = "RawTarget")]
pub enum Target {
    Agent(AgentId),
    /// `mode: any`: the online matching agent with the lowest running/capacity ratio.
    Selector(LabelSelector),
}

/// How a selector picks agents. Fan-out to every match (`all`) is a job (`/v1/jobs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SelectorMode {
    #[default]
    Any,
}

/// The JSON form of a [`Target`]: exactly one of `agent_id` and `selector`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SelectorMode>,
}

impl TryFrom<RawTarget> for Target {
    type Error = InvalidName;
    fn try_from(raw: RawTarget) -> Result<Self, Self::Error> {
        match (raw.agent_id, raw.selector) {
            (Some(id), None) => Ok(Target::Agent(id)),
            (None, Some(sel)) => Ok(Target::Selector(sel)),
            _ => Err(InvalidName(
                "target needs exactly one of `agent_id` or `selector`".into(),
            )),
        }
    }
}

impl From<Target> for RawTarget {
    fn from(t: Target) -> Self {
        match t {
            Target::Agent(id) => RawTarget {
                agent_id: Some(id),
                selector: None,
                mode: None,
            },
            Target::Selector(sel) => RawTarget {
                agent_id: None,
                selector: Some(sel),
                mode: Some(SelectorMode::Any),
            },
        }
    }
}

/// What to run, tagged by `kind`.
///
/// Deserialized by hand (through [`TryFrom<serde_json::Value>`]) rather than by serde's
/// internally-tagged enum support, which buffers the content and loses the path of a bad
/// field: `{"kind": "shell", "argv": 3}` must be reported as `argv`, not as the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    try_from = "serde_json::Value"
)]
#[schemars(with = "TaskSpecSchema")]
pub enum TaskSpec {
    Shell(ShellSpec),
    Http(HttpSpec),
    /// Does nothing and completes at once. For benchmarks and smoke tests.
    Noop(NoopSpec),
    /// A one-off Docker operation (`op`: pull, run, ps, inspect, stop, rm, images, logs).
    Docker(DockerSpec),
}

impl TaskSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            TaskSpec::Shell(_) => "shell",
            TaskSpec::Http(_) => "http",
            TaskSpec::Noop(_) => "noop",
            TaskSpec::Docker(_) => "docker",
        }
    }

    /// The agent capability this task needs, beyond the basic kinds every agent runs.
    pub fn required_capability(&self) -> Option<&'static str> {
        match self {
            TaskSpec::Docker(_) => Some(crate::docker::DOCKER_CAPABILITY),
            _ => None,
        }
    }
}

/// The JSON Schema of [`TaskSpec`] (serde's derive would describe the hand-written
/// deserializer's input as "any value").
#[derive(JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(dead_code)]
enum TaskSpecSchema {
    Shell(RawShellSpec),
    Http(HttpSpec),
    Noop(NoopSpec),
    Docker(DockerSpec),
}

impl TryFrom<serde_json::Value> for TaskSpec {
    type Error = String;

    fn try_from(value: serde_json::Value) -> Result<Self, Self::Error> {
        let serde_json::Value::Object(mut map) = value else {
            return Err("a task must be an object with a `kind`".into());
        };
        let kind = match map.remove("kind") {
            Some(serde_json::Value::String(kind)) => kind,
            Some(_) => return Err(nested("kind", "must be a string")),
            None => return Err("missing field `kind`".into()),
        };
        let rest = serde_json::Value::Object(map);
        match kind.as_str() {
            "shell" => parse_nested(rest).map(TaskSpec::Shell),
            "http" => parse_nested(rest).map(TaskSpec::Http),
            "noop" => parse_nested(rest).map(TaskSpec::Noop),
            "docker" => parse_nested(rest).map(TaskSpec::Docker),
            other => Err(nested(
                "kind",
                &format!(
                    "unknown variant `{other}`, expected one of `shell`, `http`, `noop`, `docker`"
                ),
            )),
        }
    }
}

/// Formats an error found at `path` inside a value, so that the API can name the field:
/// `at `path`: message` (see [`split_nested`]).
pub fn nested(path: &str, message: &str) -> String {
    format!("at `{path}`: {message}")
}

/// The inverse of [`nested`]: `(path, message)` if `message` names a nested field.
pub fn split_nested(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix("at `")?;
    let (path, message) = rest.split_once("`: ")?;
    Some((path, message))
}

fn parse_nested<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        match split_nested(&inner) {
            // A nested error deeper down: join the paths.
            Some((deeper, message)) if path != "." => nested(&format!("{path}.{deeper}"), message),
            _ if path == "." => inner,
            _ => nested(&path, &inner),
        }
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopSpec {}

/// A process to run: `argv` is executed directly (no shell); `script` runs through
/// `/bin/sh -c`. Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawShellSpec", into = "RawShellSpec")]
#[schemars(with = "RawShellSpec")]
pub struct ShellSpec {
    pub command: Command,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Argv(Vec<String>),
    Script(String),
}

/// The JSON form of a [`ShellSpec`].
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShellSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
}

impl TryFrom<RawShellSpec> for ShellSpec {
    type Error = InvalidName;
    fn try_from(raw: RawShellSpec) -> Result<Self, Self::Error> {
        let command = match (raw.argv, raw.script) {
            (Some(argv), None) => {
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(InvalidName(
                        "`argv` must name a program as its first element".into(),
                    ));
                }
                Command::Argv(argv)
            }
            (None, Some(script)) => Command::Script(script),
            _ => {
                return Err(InvalidName(
                    "shell task needs exactly one of `argv` or `script`".into(),
                ))
            }
        };
        if let Some(k) = raw
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(InvalidName(format!("`env` key `{k}` is not a valid name")));
        }
        Ok(ShellSpec {
            command,
            env: raw.env,
            cwd: raw.cwd,
        })
    }
}

impl From<ShellSpec> for RawShellSpec {
    fn from(s: ShellSpec) -> Self {
        let (argv, script) = match s.command {
            Command::Argv(a) => (Some(a), None),
            Command::Script(s) => (None, Some(s)),
        };
        RawShellSpec {
            argv,
            script,
            env: s.env,
            cwd: s.cwd,
        }
    }
}

/// An HTTP request made from the agent's machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    #[serde(default)]
    pub method: HttpMethod,
    /// `http` or `https` URL.
    pub url: HttpUrl,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    /// Status that counts as success; any 2xx when absent.
    #[serde(default)]
    pub expected_status: Option<u16>,
    /// Verify the server's TLS certificate (default true).
    #[serde(default = "yes")]
    pub tls_verify: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Options => "OPTIONS",
        }
    }
}

/// An absolute `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String", extend("format" = "uri"))]
pub struct HttpUrl(url::Url);

impl HttpUrl {
    pub fn as_url(&self) -> &url::Url {
        &self.0
    }
}

impl TryFrom<String> for HttpUrl {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let url = url::Url::parse(&s).map_err(|e| InvalidName(format!("invalid url: {e}")))?;
        match url.scheme() {
            "http" | "https" => Ok(Self(url)),
            other => Err(InvalidName(format!(
                "url scheme must be http or https, got `{other}`"
            ))),
        }
    }
}

impl From<HttpUrl> for String {
    fn from(u: HttpUrl) -> Self {
        u.0.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_never_change() {
        for from in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in TaskState::ALL {
                assert!(from.transition(to).is_err(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn happy_path_and_shortcuts() {
        use TaskState::*;
        assert_eq!(Queued.transition(Routing), Ok(Routing));
        assert_eq!(Routing.transition(Executing), Ok(Executing));
        assert_eq!(Executing.transition(Completed), Ok(Completed));
        assert_eq!(Routing.transition(Completed), Ok(Completed));
        assert!(Queued.transition(Executing).is_err());
        assert!(Executing.transition(Executing).is_err());
    }

    #[test]
    fn shell_needs_exactly_one_command_form() {
        let ok: TaskSpec = serde_json::from_str(r#"{"kind":"shell","argv":["true"]}"#).unwrap();
        assert_eq!(ok.kind(), "shell");
        for bad in [
            r#"{"kind":"shell"}"#,
            r#"{"kind":"shell","argv":["a"],"script":"b"}"#,
            r#"{"kind":"shell","argv":[]}"#,
            r#"{"kind":"nope"}"#,
        ] {
            assert!(serde_json::from_str::<TaskSpec>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_round_trip_with_defaults() {
        let req: TaskRequest = serde_json::from_str(
            r#"{"target":{"selector":"env=prod"},"task":{"kind":"http","url":"https://example.com/"}}"#,
        )
        .unwrap();
        assert_eq!(req.timeout_secs.secs(), DEFAULT_TIMEOUT_SECS);
        let back: TaskRequest =
            serde_json::from_value(serde_json::to_value(&req).unwrap()).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn retry_policy_bounds_and_backoff() {
        let p: RetryPolicy =
            serde_json::from_str(r#"{"max_attempts":3,"initial_ms":100,"max_ms":250}"#).unwrap();
        assert_eq!(
            (
                p.backoff_cap_ms(1),
                p.backoff_cap_ms(2),
                p.backoff_cap_ms(3)
            ),
            (100, 200, 250)
        );
        assert!(p.allows(RetryOn::Failed, 2));
        assert!(!p.allows(RetryOn::Failed, 3));
        assert!(!RetryPolicy::none().allows(RetryOn::AgentLost, 1));
        for bad in [
            r#"{"max_attempts":0}"#,
            r#"{"max_attempts":2,"multiplier":0.5}"#,
            r#"{"max_attempts":2,"initial_ms":10,"max_ms":5}"#,
            r#"{"max_attempts":2,"retry_on":["sometimes"]}"#,
        ] {
            assert!(serde_json::from_str::<RetryPolicy>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn target_needs_exactly_one() {
        assert!(serde_json::from_str::<Target>(r#"{}"#).is_err());
        assert!(serde_json::from_str::<Target>(
            r#"{"agent_id":"0190a4f2-0000-7000-8000-000000000000","selector":"a=b"}"#
        )
        .is_err());
    }

    #[test]
    fn bad_numbers_and_urls() {
        let base = r#""target":{"selector":"a=b"},"task":{"kind":"noop"}"#;
        for bad in [
            format!(r#"{{{base},"timeout_secs":0}}"#),
            format!(r#"{{{base},"timeout_secs":-1}}"#),
            format!(r#"{{{base},"output_cap_bytes":99999999999}}"#),
        ] {
            assert!(serde_json::from_str::<TaskRequest>(&bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<HttpSpec>(r#"{"url":"ftp://x"}"#).is_err());
    }
}
