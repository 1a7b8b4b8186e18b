//! People: users, logging in (password, and TOTP for admins), tokens.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::TenantName;
use crate::security::Role;

/// Body of `POST /v1/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The login name (an email address, usually); unique on the platform.
    pub email: String,
    /// 12 to 256 characters; only an argon2id hash is kept.
    pub password: String,
    /// `platform-admin` (platform admin only, no tenant), `tenant-admin`, `operator`
    /// or `viewer`.
    pub role: Role,
    /// Required when the platform admin creates a tenant's user; a tenant admin creates
    /// users of its own tenant.
    #[serde(default)]
    pub tenant: Option<TenantName>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserView {
    pub id: uuid::Uuid,
    pub email: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantName>,
    /// Whether logins need a TOTP code (always, once set up; admins must set it up).
    pub totp_enabled: bool,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /v1/auth/login`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// The current RFC 6238 code; required once the user has TOTP set up.
    #[serde(default)]
    pub totp: Option<String>,
}

/// Answer to a login or a refresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TokenPair {
    /// A JWT, sent as `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u32,
    /// One-time: exchange it with `POST /v1/auth/refresh` for a new pair.
    pub refresh_token: String,
}

/// Body of `POST /v1/auth/refresh` and `POST /v1/auth/logout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Answer to `POST /v1/users/me/totp`: the secret to put in an authenticator app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TotpEnrollment {
    /// `otpauth://totp/RIS:<email>?secret=<base32>&issuer=RIS&algorithm=SHA1&digits=6&period=30`
    pub otpauth_uri: String,
    pub secret: String,
}

/// Body of `POST /v1/users/me/totp/confirm`: a code from the app, which turns TOTP on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirm {
    pub code: String,
}

/// Answer to `POST /v1/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserCreated {
    #[serde(flatten)]
    pub user: UserView,
    /// For admin roles: the TOTP secret, shown this once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<TotpEnrollment>,
}
