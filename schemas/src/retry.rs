//! Retry policies: when an attempt that ended badly gets another one, and after how long.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::task::nested;

/// Why an attempt may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The attempt ran and failed (non-zero exit, unexpected HTTP status, ...).
    Failed,
    /// The attempt ran past its timeout.
    TimedOut,
    /// The agent running it vanished (no heartbeat) or shut down.
    AgentLost,
}

/// Retries with exponential backoff and full jitter: before attempt `n + 1` the task
/// waits a random time in `[0, min(max_ms, initial_ms * multiplier^(n-1))]`. Attempts
/// count placements, so `max_attempts: 1` means no retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawRetryPolicy")]
#[schemars(with = "RawRetryPolicy")]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_ms: u64,
    pub multiplier: f64,
    pub max_ms: u64,
    pub retry_on: Vec<RetryOn>,
}

/// The JSON form of a [`RetryPolicy`], checked on the way in.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetryPolicy {
    /// 1 to 100.
    pub max_attempts: u32,
    /// First delay, 1 ms to 1 hour (default 1000).
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// 1.0 to 10.0 (default 2.0).
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Longest delay, at least `initial_ms`, at most 1 day (default 60000).
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
    /// Which endings are retried (default: all three).
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<RetryOn>,
}

fn default_initial_ms() -> u64 {
    1000
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_max_ms() -> u64 {
    60_000
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::Failed, RetryOn::TimedOut, RetryOn::AgentLost]
}

impl TryFrom<RawRetryPolicy> for RetryPolicy {
    type Error = String;
    fn try_from(raw: RawRetryPolicy) -> Result<Self, Self::Error> {
        if !(1..=100).contains(&raw.max_attempts) {
            return Err(nested("max_attempts", "must be between 1 and 100"));
        }
        if !(1..=3_600_000).contains(&raw.initial_ms) {
            return Err(nested("initial_ms", "must be between 1 and 3600000"));
        }
        if !(1.0..=10.0).contains(&raw.multiplier) {
            return Err(nested("multiplier", "must be between 1.0 and 10.0"));
        }
        if raw.max_ms < raw.initial_ms || raw.max_ms > 86_400_000 {
            return Err(nested(
                "max_ms",
                "must be at least `initial_ms` and at most 86400000",
            ));
        }
        Ok(RetryPolicy {
            max_attempts: raw.max_attempts,
            initial_ms: raw.initial_ms,
            multiplier: raw.multiplier,
            max_ms: raw.max_ms,
            retry_on: raw.retry_on,
        })
    }
}

impl From<RetryPolicy> for RawRetryPolicy {
    fn from(p: RetryPolicy) -> Self {
        RawRetryPolicy {
            max_attempts: p.max_attempts,
            initial_ms: p.initial_ms,
            multiplier: p.multiplier,
            max_ms: p.max_ms,
            retry_on: p.retry_on,
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_ms: default_initial_ms(),
            multiplier: default_multiplier(),
            max_ms: default_max_ms(),
            retry_on: Vec::new(),
        }
    }

    /// Whether an attempt that ended for `why`, being attempt number `attempt`, gets
    /// another one.
    pub fn allows(&self, why: RetryOn, attempt: u32) -> bool {
        attempt < self.max_attempts && self.retry_on.contains(&why)
    }

    /// The longest wait before the attempt after `attempt` (1-based): the cap of the
    /// full-jitter window. Callers draw uniformly from `0..=cap`.
    pub fn backoff_cap_ms(&self, attempt: u32) -> u64 {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let cap = self.initial_ms as f64 * self.multiplier.powi(exponent);
        if cap.is_finite() {
            (cap as u64).min(self.max_ms)
        } else {
            self.max_ms
        }
    }
}
