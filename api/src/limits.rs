//! Rate limits and quotas: the tenant's own values over the configured defaults.
//!
//! A tenant's limits are read from PostgreSQL at most every [`CACHE_FOR`] per API
//! instance (a cache of configuration: losing it loses nothing), and rate limits are
//! counted in Redis ([`ris_presence::Presence::rate_limit`]), so every instance shares
//! the same budget.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ris_presence::Limit;
use ris_schemas::security::TenantLimits;
use ris_store::TenantCtx;
use uuid::Uuid;

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How long a tenant's limits are reused before being read again.
pub const CACHE_FOR: Duration = Duration::from_secs(5);

/// The platform defaults: generous enough for an operator's scripts and the tests,
/// tight enough that one tenant cannot starve the others.
pub fn defaults() -> TenantLimits {
    TenantLimits {
        requests_per_minute_per_key: Some(30_000),
        requests_per_minute: Some(60_000),
        max_agents: Some(1000),
        max_queued_tasks: Some(10_000),
        max_services: Some(1000),
    }
}

/// Recently read tenant limits, each kept for [`CACHE_FOR`].
pub struct LimitsCache(moka::sync::Cache<Uuid, TenantLimits>);

impl Default for LimitsCache {
    fn default() -> Self {
        LimitsCache(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_FOR)
                .build(),
        )
    }
}

/// The tenant's limits, each field filled from the configured defaults.
pub async fn effective(state: &AppState, tenant: &TenantCtx) -> ApiResult<TenantLimits> {
    if let Some(limits) = state.limits_cache.0.get(&tenant.id) {
        return Ok(limits);
    }
    let own = state.store.tenant_limits(tenant).await?;
    let d = &state.config.limits;
    let limits = TenantLimits {
        requests_per_minute_per_key: own
            .requests_per_minute_per_key
            .or(d.requests_per_minute_per_key),
        requests_per_minute: own.requests_per_minute.or(d.requests_per_minute),
        max_agents: own.max_agents.or(d.max_agents),
        max_queued_tasks: own.max_queued_tasks.or(d.max_queued_tasks),
        max_services: own.max_services.or(d.max_services),
    };
    state.limits_cache.0.insert(tenant.id, limits.clone());
    Ok(limits)
}

/// Forgets a tenant's cached limits (they were just changed here).
pub fn forget(state: &AppState, tenant: &TenantCtx) {
    state.limits_cache.0.invalidate(&tenant.id);
}

/// Charges the request to the key's and the tenant's budgets. `Some(response)` is the
/// 429 to send. Redis being down lets the request through (logged): availability over
/// strictness for a limit that only protects capacity.
pub async fn charge(state: &AppState, caller: &TenantCaller) -> Option<Response> {
    let limits = match effective(state, &caller.tenant).await {
        Ok(l) => l,
        Err(e) => return Some(e.into_response()),
    };
    let mut checks = Vec::new();
    if let Some(n) = limits.requests_per_minute_per_key {
        checks.push((
            format!("key:{}", caller.key_id),
            "requests_per_minute_per_key",
            n,
        ));
    }
    if let Some(n) = limits.requests_per_minute {
        checks.push((
            format!("tenant:{}", caller.tenant.name),
            "requests_per_minute",
            n,
        ));
    }
    refuse(state, &checks).await
}

/// Charges an unauthenticated request (login, refresh, enrollment, signed hook) to
/// its source address: `Config::unauthenticated_per_minute_per_ip`.
pub async fn charge_address(state: &AppState, ip: &str) -> Option<Response> {
    let n = state.config.unauthenticated_per_minute_per_ip;
    refuse(
        state,
        &[(format!("ip:{ip}"), "unauthenticated_per_minute_per_ip", n)],
    )
    .await
}

/// Charges a login attempt to the email it names (`LOGIN_PER_MINUTE`), against
/// password guessing spread over many addresses.
pub async fn charge_login(state: &AppState, email: &str) -> Option<Response> {
    let key = crate::secrets::sha256(email);
    refuse(
        state,
        &[(
            format!("login:{}", hex::encode(&key[..16])),
            "login_attempts_per_minute",
            LOGIN_PER_MINUTE,
        )],
    )
    .await
}

/// Login attempts per minute for one email.
pub const LOGIN_PER_MINUTE: u32 = 10;

/// Charges `(key, name, per minute)` limits; the 429 naming the first exhausted one.
async fn refuse(state: &AppState, limits: &[(String, &'static str, u32)]) -> Option<Response> {
    let checks: Vec<Limit> = limits
        .iter()
        .map(|(key, _, n)| Limit {
            name: key.clone(),
            per_minute: *n,
            burst: *n,
        })
        .collect();
    match state.presence.rate_limit(&checks).await {
        Ok(Ok(())) => None,
        Ok(Err(refused)) => {
            let (_, name, n) = limits.get(refused.limit)?;
            Some(too_many(name, *n, refused.retry_after))
        }
        Err(e) => {
            tracing::warn!(error = %e, "rate limit not checked: redis unavailable");
            None
        }
    }
}

fn too_many(name: &'static str, n: u32, retry_after: Duration) -> Response {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    metrics::counter!("ris_rate_limited_total", "limit" => name).increment(1);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("rate limit `{name}` ({n} per minute) exceeded; retry after {secs} s"),
    )
    .with_field(name)
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// A quota a request would exceed, named in `field`: 429 for `max_queued_tasks` (it
/// frees up as work drains), 403 for the others (only fewer things, or a higher quota,
/// make room).
pub fn quota_exceeded(quota: &'static str, max: impl std::fmt::Display) -> ApiError {
    let status = if quota == "max_queued_tasks" {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::FORBIDDEN
    };
    ApiError::new(
        status,
        "quota_exceeded",
        format!("the tenant's quota `{quota}` ({max}) is reached"),
    )
    .with_field(quota)
}

/// How long a tenant's count of queued tasks is reused (plus the submissions this
/// instance accepted since) before it is counted again.
const COUNT_FOR: Duration = Duration::from_secs(1);

/// Recently counted queued tasks, per tenant: counting them on every submission cost a
/// scan of the tenant's queue per task. Between counts this instance adds the tasks it
/// queued itself, so it alone never lets the queue grow past the quota; several API
/// instances may overshoot it by what the others accepted within [`COUNT_FOR`]. (A
/// count is kept [`COUNT_FOR`] from when it was read; adding to it does not extend it.)
pub struct QueuedCounts(moka::sync::Cache<Uuid, Arc<AtomicI64>>);

impl Default for QueuedCounts {
    fn default() -> Self {
        QueuedCounts(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(COUNT_FOR)
                .build(),
        )
    }
}

impl QueuedCounts {
    /// Counts a task this instance just queued.
    pub fn queued_one(&self, tenant: &TenantCtx) {
        if let Some(n) = self.0.get(&tenant.id) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Refuses a new task when the tenant already has `max_queued_tasks` queued.
pub async fn check_queued_tasks(state: &AppState, tenant: &TenantCtx) -> ApiResult<()> {
    let Some(max) = effective(state, tenant).await?.max_queued_tasks else {
        return Ok(());
    };
    let counts = &state.queued_counts.0;
    let queued = match counts.get(&tenant.id) {
        Some(n) => n.load(Ordering::Relaxed),
        None => {
            let n = state.store.count_queued(tenant).await?;
            counts.insert(tenant.id, Arc::new(AtomicI64::new(n)));
            n
        }
    };
    if queued >= i64::from(max) {
        return Err(quota_exceeded("max_queued_tasks", max));
    }
    Ok(())
}

/// The hook for services (`max_services`): call before creating one, with the
/// tenant's current number of services.
pub async fn check_services(state: &AppState, tenant: &TenantCtx, current: i64) -> ApiResult<()> {
    match effective(state, tenant).await?.max_services {
        Some(max) if current >= i64::from(max) => Err(quota_exceeded("max_services", max)),
        _ => Ok(()),
    }
}
