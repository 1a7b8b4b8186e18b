//! Frames on the agent heartbeat WebSocket (`/v1/agents/{id}/heartbeat`).
//!
//! The agent sends a [`HeartbeatFrame`] as a text frame every few seconds; the API
//! answers each with a [`HeartbeatReply`]. No task traffic ever rides this socket.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::TaskId;
use crate::labels::Labels;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatFrame {
    pub v: crate::version::V1,
    pub sent_at: DateTime<Utc>,
    /// Tasks running now.
    pub running: u32,
    /// Tasks the agent runs at once (its prefetch).
    pub capacity: u32,
    /// Ids of the running tasks: the heartbeat is their lease.
    #[serde(default)]
    pub running_tasks: Vec<TaskId>,
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub version: String,
    pub hostname: String,
    pub labels: Labels,
    /// The machine's non-loopback IP addresses.
    pub addresses: Vec<String>,
    /// What the agent can run (`shell`, `http`, `docker`, ...).
    #[serde(default)]
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatReply {
    pub v: crate::version::V1,
    pub received_at: DateTime<Utc>,
    /// Seconds until the next frame is expected.
    pub interval_secs: u32,
    /// The current signing keys (replaces the agent's set; see `EnrollResponse`).
    /// Absent from older APIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<crate::security::SigningKeyView>,
}
