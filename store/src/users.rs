//! Users, their login sessions, and the keys that sign access tokens.
//!
//! Lookups by credential (email at login, session id in a token) are cross-tenant, run
//! by the connecting user, like API key lookups; the tenant then comes from the row.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{PgStore, StoreError, Tenant, TenantCtx};

/// Lock class of the advisory lock taken while the first JWT key is created.
const LOCK_CLASS: i32 = 0x5a_0d_19;

#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub password_hash: String,
    /// Set (and enabled) at creation for admin roles.
    pub totp_secret: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Uuid,
    pub tenant: Option<Tenant>,
    pub email: String,
    pub role: String,
    pub password_hash: String,
    pub totp_secret: Option<Vec<u8>>,
    pub totp_enabled: bool,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    tenant_id: Option<Uuid>,
    email: String,
    role: String,
    password_hash: String,
    totp_secret: Option<Vec<u8>>,
    totp_enabled: bool,
    created_at: DateTime<Utc>,
    tenant_name: Option<String>,
    tenant_created_at: Option<DateTime<Utc>>,
}

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<Self, StoreError> {
        let tenant = match (r.tenant_id, r.tenant_name, r.tenant_created_at) {
            (Some(id), Some(name), Some(at)) => Some(crate::tenants::joined(id, name, at)?),
            _ => None,
        };
        Ok(UserRecord {
            id: r.id,
            tenant,
            email: r.email,
            role: r.role,
            password_hash: r.password_hash,
            totp_secret: r.totp_secret,
            totp_enabled: r.totp_enabled,
            created_at: r.created_at,
        })
    }
}

/// A JWT signing key.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JwtKeyRecord {
    pub kid: String,
    pub secret: Vec<u8>,
    pub activate_at: DateTime<Utc>,
}

impl std::fmt::Debug for JwtKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeyRecord")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait UserRepo: Send + Sync {
    /// `None` for a platform admin. `Ok(None)` when the email is taken.
    async fn insert_user(
        &self,
        tenant: Option<&TenantCtx>,
        user: NewUser,
    ) -> Result<Option<UserRecord>, StoreError>;
    /// Cross-tenant, for logins.
    async fn find_user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError>;
    /// A tenant's users, or the platform admins (`None`), by email.
    async fn list_users(&self, tenant: Option<&TenantCtx>) -> Result<Vec<UserRecord>, StoreError>;
    /// Sets the TOTP secret; `enabled` turns codes on for logins.
    async fn set_totp(&self, user: Uuid, secret: &[u8], enabled: bool) -> Result<(), StoreError>;
    async fn enable_totp(&self, user: Uuid) -> Result<(), StoreError>;
    async fn insert_session(
        &self,
        id: Uuid,
        user: Uuid,
        refresh_hash: &[u8],
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// A live (unrevoked, unexpired) session and its user.
    async fn live_session(&self, id: Uuid) -> Result<Option<UserRecord>, StoreError>;
    /// Swaps a live session's refresh token for a new one; the session and user, or
    /// `None` when the token is unknown, used, revoked or expired.
    async fn rotate_refresh(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
    ) -> Result<Option<(Uuid, UserRecord)>, StoreError>;
    /// Revokes the session holding this refresh token. `false` if none.
    async fn revoke_session(&self, refresh_hash: &[u8]) -> Result<bool, StoreError>;
    /// The key to sign access tokens with (`candidate` becomes the first).
    async fn current_jwt_key(&self, candidate: JwtKeyRecord) -> Result<JwtKeyRecord, StoreError>;
    /// Every unretired JWT key.
    async fn jwt_keys(&self) -> Result<Vec<JwtKeyRecord>, StoreError>;
    /// A new key, signing from now on (older ones keep verifying).
    async fn add_jwt_key(&self, key: JwtKeyRecord) -> Result<JwtKeyRecord, StoreError>;
    /// Retires a key: tokens it signed stop working. `false` if unknown or retired.
    async fn retire_jwt_key(&self, kid: &str) -> Result<bool, StoreError>;
}

const USER: &str = "SELECT u.id, u.tenant_id, u.email, u.role, u.password_hash, u.totp_secret,
                           u.totp_enabled, u.created_at,
                           t.name AS tenant_name, t.created_at AS tenant_created_at
                    FROM users u LEFT JOIN tenants t ON t.id = u.tenant_id";

#[async_trait]
impl UserRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %user.id))]
    async fn insert_user(
        &self,
        tenant: Option<&TenantCtx>,
        user: NewUser,
    ) -> Result<Option<UserRecord>, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO users (id, tenant_id, email, role, password_hash, totp_secret,
                                totp_enabled)
             VALUES ($1, $2, $3, $4, $5, $6, $6 IS NOT NULL)
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(user.id)
        .bind(tenant.map(|t| t.id))
        .bind(&user.email)
        .bind(&user.role)
        .bind(&user.password_hash)
        .bind(&user.totp_secret)
        .execute(self.pool())
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(None);
        }
        let row: UserRow = sqlx::query_as(&format!("{USER} WHERE u.id = $1"))
            .bind(user.id)
            .fetch_one(self.pool())
            .await?;
        row.try_into().map(Some)
    }

    async fn find_user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(&format!("{USER} WHERE u.email = $1"))
            .bind(email)
            .fetch_optional(self.pool())
            .await?;
        row.map(UserRecord::try_from).transpose()
    }

    async fn list_users(&self, tenant: Option<&TenantCtx>) -> Result<Vec<UserRecord>, StoreError> {
        let rows: Vec<UserRow> = sqlx::query_as(&format!(
            "{USER} WHERE u.tenant_id IS NOT DISTINCT FROM $1 ORDER BY u.email"
        ))
        .bind(tenant.map(|t| t.id))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(UserRecord::try_from).collect()
    }

    async fn set_totp(&self, user: Uuid, secret: &[u8], enabled: bool) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET totp_secret = $2, totp_enabled = $3 WHERE id = $1")
            .bind(user)
            .bind(secret)
            .bind(enabled)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn enable_totp(&self, user: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE users SET totp_enabled = true WHERE id = $1 AND totp_secret IS NOT NULL",
        )
        .bind(user)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn insert_session(
        &self,
        id: Uuid,
        user: Uuid,
        refresh_hash: &[u8],
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, refresh_hash, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(user)
        .bind(refresh_hash)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn live_session(&self, id: Uuid) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(&format!(
            "{USER} JOIN sessions s ON s.user_id = u.id
             WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > now()"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(UserRecord::try_from).transpose()
    }

    async fn rotate_refresh(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
    ) -> Result<Option<(Uuid, UserRecord)>, StoreError> {
        let session: Option<(Uuid, Uuid)> = sqlx::query_as(
            "UPDATE sessions SET refresh_hash = $2
             WHERE refresh_hash = $1 AND revoked_at IS NULL AND expires_at > now()
             RETURNING id, user_id",
        )
        .bind(old_hash)
        .bind(new_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some((session, user)) = session else {
            return Ok(None);
        };
        let row: UserRow = sqlx::query_as(&format!("{USER} WHERE u.id = $1"))
            .bind(user)
            .fetch_one(self.pool())
            .await?;
        Ok(Some((session, row.try_into()?)))
    }

    async fn revoke_session(&self, refresh_hash: &[u8]) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = now()
             WHERE refresh_hash = $1 AND revoked_at IS NULL",
        )
        .bind(refresh_hash)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    async fn current_jwt_key(&self, candidate: JwtKeyRecord) -> Result<JwtKeyRecord, StoreError> {
        const CURRENT: &str = "SELECT kid, secret, activate_at FROM jwt_keys
                               WHERE retired_at IS NULL AND activate_at <= now()
                               ORDER BY activate_at DESC, kid DESC LIMIT 1";
        if let Some(key) = sqlx::query_as(CURRENT).fetch_optional(self.pool()).await? {
            return Ok(key);
        }
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, 1)")
            .bind(LOCK_CLASS)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO jwt_keys (kid, secret) SELECT $1, $2
             WHERE NOT EXISTS (SELECT 1 FROM jwt_keys WHERE retired_at IS NULL)",
        )
        .bind(&candidate.kid)
        .bind(&candidate.secret)
        .execute(&mut *tx)
        .await?;
        let key: Option<JwtKeyRecord> = sqlx::query_as(CURRENT).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        key.ok_or_else(|| StoreError::Corrupt("no JWT key is active yet".into()))
    }

    async fn add_jwt_key(&self, key: JwtKeyRecord) -> Result<JwtKeyRecord, StoreError> {
        Ok(sqlx::query_as(
            "INSERT INTO jwt_keys (kid, secret, activate_at)
             VALUES ($1, $2, clock_timestamp())
             RETURNING kid, secret, activate_at",
        )
        .bind(&key.kid)
        .bind(&key.secret)
        .fetch_one(self.pool())
        .await?)
    }

    async fn retire_jwt_key(&self, kid: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jwt_keys SET retired_at = now() WHERE kid = $1 AND retired_at IS NULL",
        )
        .bind(kid)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    async fn jwt_keys(&self) -> Result<Vec<JwtKeyRecord>, StoreError> {
        Ok(
            sqlx::query_as(
                "SELECT kid, secret, activate_at FROM jwt_keys WHERE retired_at IS NULL",
            )
            .fetch_all(self.pool())
            .await?,
        )
    }
}
