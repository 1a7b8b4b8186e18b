//! Rate limiting with GCRA (the generic cell rate algorithm) in one Lua script.
//!
//! Each limit is a key `<p>:rl:<name>` holding its theoretical arrival time (unix ms).
//! A request is allowed when every limit it is subject to allows it, and only then are
//! they all charged, atomically, so one refused limit does not consume the others.
//! Time comes from Redis (`TIME`), so API instances with skewed clocks agree.

use std::time::Duration;

use crate::{Presence, PresenceError};

/// One limit: at most `per_minute` requests a minute, `burst` of them at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Key suffix, e.g. `key:<id>` or `tenant:<name>`.
    pub name: String,
    pub per_minute: u32,
    pub burst: u32,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Index in the slice of limits passed to [`Presence::rate_limit`].
    pub limit: usize,
    pub retry_after: Duration,
}

const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local new = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tau = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  if tat - now > tau then return {i, math.ceil(tat - tau - now)} end
  new[i] = tat + interval
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.3f', new[i]), 'PX', math.ceil(new[i] - now) + 1000)
end
return {0, 0}
";

impl Presence {
    /// Charges one request to every limit, or to none: `Err(Refused)` names the first
    /// limit that is exhausted and when to retry.
    pub async fn rate_limit(&self, limits: &[Limit]) -> Result<Result<(), Refused>, PresenceError> {
        if limits.is_empty() {
            return Ok(Ok(()));
        }
        let script = redis::Script::new(SCRIPT);
        let mut invocation = script.prepare_invoke();
        for l in limits {
            let per_minute = f64::from(l.per_minute.max(1));
            let interval = 60_000.0 / per_minute;
            let tau = interval * f64::from(l.burst.max(1).saturating_sub(1));
            invocation
                .key(format!("{}:rl:{}", self.prefix, l.name))
                .arg(interval)
                .arg(tau);
        }
        let mut conn = self.conn.clone();
        let (index, retry_ms): (i64, i64) = invocation.invoke_async(&mut conn).await?;
        if index == 0 {
            return Ok(Ok(()));
        }
        Ok(Err(Refused {
            limit: usize::try_from(index - 1).unwrap_or(0),
            retry_after: Duration::from_millis(u64::try_from(retry_ms).unwrap_or(0)),
        }))
    }
}
