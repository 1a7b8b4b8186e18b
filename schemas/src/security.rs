//! Security-related REST bodies: roles, API key listings, the audit log, tenant limits.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ApiKeyId, TenantName};

/// What a credential may do; the permission matrix is in `docs/security.md`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs the platform: tenants, their first keys, their limits. Acts in no tenant.
    PlatformAdmin,
    /// Everything inside one tenant, including its keys and settings.
    TenantAdmin,
    /// Day-to-day work inside one tenant: tasks, agents' enrollment, dead letters,
    /// webhooks and hooks. No keys, settings or integrations.
    Operator,
    /// Reads everything of one tenant except its audit log; changes nothing.
    Viewer,
    /// An enrolled agent (heartbeat token, broker user). Never an API key.
    Agent,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::PlatformAdmin,
        Role::TenantAdmin,
        Role::Operator,
        Role::Viewer,
        Role::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform-admin",
            Role::TenantAdmin => "tenant-admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    pub tenant: TenantName,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// How a recorded call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// 2xx/3xx.
    Success,
    /// 401/403/429: the caller was refused.
    Denied,
    /// Any other 4xx/5xx.
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<AuditOutcome> {
        [
            AuditOutcome::Success,
            AuditOutcome::Denied,
            AuditOutcome::Failed,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// One entry of the audit log. `hash` = SHA-256 over the canonical entry and
/// `prev_hash` (see `docs/security.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntryView {
    /// Position in the tenant's chain, from 1.
    pub seq: i64,
    /// `key:<id>`, `platform-admin`, `agent:<id>`, `enrollment-token`, `anonymous`.
    pub actor: String,
    /// Absent for platform-level entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantName>,
    /// The operation, e.g. `submitTask`, or `auth.failed`.
    pub action: String,
    /// What it acted on: the request path, or the created resource.
    pub target: String,
    pub outcome: AuditOutcome,
    /// HTTP status of the call.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub at: DateTime<Utc>,
    /// Hex; 64 zeros for the first entry.
    pub prev_hash: String,
    pub hash: String,
}

/// Answer to `GET /v1/audit/verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditVerifyReport {
    /// True when every entry's hash and link check out.
    pub ok: bool,
    /// Entries checked.
    pub checked: u64,
    /// The first entry whose hash or link does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BrokenLink {
    pub seq: i64,
    /// `hash_mismatch` (the entry was changed) or `prev_mismatch` (an entry before it
    /// was removed or changed) or `seq_gap` (an entry was removed).
    pub problem: String,
}

/// Rate limits and quotas of a tenant. Absent fields take the platform defaults.
/// Set by the platform admin (`PUT /v1/tenants/{name}/limits`); a tenant reads its own
/// in `GET /v1/settings`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Requests per minute per API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute_per_key: Option<u32>,
    /// Requests per minute for the whole tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_agents: Option<u32>,
    /// Tasks in state `queued` at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_tasks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_services: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
    }
}

/// The public half of a key that signs assignments and control messages (Ed25519).
/// Agents verify every message with the key its `x-ris-sig-kid` header names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SigningKeyView {
    pub kid: String,
    /// 32 bytes, hex.
    pub public_key: String,
    /// When it starts signing (it verifies as soon as it is listed).
    pub activate_at: DateTime<Utc>,
}

/// Body of `POST /v1/signing-keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSigningKey {
    /// Seconds before the new key starts signing (default 60): time for every agent to
    /// learn it from a heartbeat reply.
    #[serde(default)]
    pub activate_in_secs: Option<u32>,
}

/// A key that signs users' access tokens (its secret is never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JwtKeyView {
    pub kid: String,
    pub activate_at: DateTime<Utc>,
}
