//! Credentials: API keys and enrollment tokens, and redeeming a token for an agent.
//!
//! Only hashes are stored; comparing a presented secret with its hash is the API's job.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::ids::ApiKeyId;
use uuid::Uuid;

use crate::agents::insert_agent;
use crate::tenants::joined;
use crate::{AgentRecord, AuthRepo, NewAgent, PgStore, RedeemError, StoreError, Tenant, TenantCtx};

/// An API key as stored, with its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub tenant: Tenant,
    pub name: String,
    /// `platform-admin`, `tenant-admin`, `operator`, `viewer`.
    pub role: String,
    pub secret_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: Uuid,
    tenant_id: Uuid,
    name: String,
    role: String,
    secret_hash: Vec<u8>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    tenant_name: String,
    tenant_created_at: DateTime<Utc>,
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = StoreError;
    fn try_from(r: ApiKeyRow) -> Result<Self, Self::Error> {
        Ok(ApiKeyRecord {
            id: ApiKeyId(r.id),
            tenant: joined(r.tenant_id, r.tenant_name, r.tenant_created_at)?,
            name: r.name,
            role: r.role,
            secret_hash: r.secret_hash,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        })
    }
}

/// The enrollment token row locked while it is redeemed.
#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    tenant_id: Uuid,
    used: bool,
    expired: bool,
    tenant_name: String,
    tenant_created_at: DateTime<Utc>,
}

#[async_trait]
impl AuthRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, api_key_id = %id))]
    async fn insert_api_key(
        &self,
        tenant: &TenantCtx,
        id: ApiKeyId,
        name: &str,
        role: &str,
        secret_hash: &[u8],
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<ApiKeyRecord, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: ApiKeyRow = sqlx::query_as(
            "WITH k AS (
                 INSERT INTO api_keys (id, tenant_id, name, role, secret_hash, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING id, tenant_id, name, role, secret_hash, created_at, expires_at,
                           revoked_at
             )
             SELECT k.*, t.name AS tenant_name, t.created_at AS tenant_created_at
             FROM k JOIN tenants t ON t.id = k.tenant_id",
        )
        .bind(id.0)
        .bind(tenant.id)
        .bind(name)
        .bind(role)
        .bind(secret_hash)
        .bind(expires_at)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        row.try_into()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(api_key_id = %id))]
    async fn find_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row: Option<ApiKeyRow> = sqlx::query_as(
            "SELECT k.id, k.tenant_id, k.name, k.role, k.secret_hash, k.created_at,
                    k.expires_at, k.revoked_at,
                    t.name AS tenant_name, t.created_at AS tenant_created_at
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
             WHERE k.id = $1",
        )
        .bind(id.0)
        .fetch_optional(self.pool())
        .await?;
        row.map(ApiKeyRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn list_api_keys(&self, tenant: &TenantCtx) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows: Vec<ApiKeyRow> = sqlx::query_as(
            "SELECT k.id, k.tenant_id, k.name, k.role, k.secret_hash, k.created_at,
                    k.expires_at, k.revoked_at,
                    t.name AS tenant_name, t.created_at AS tenant_created_at
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
             WHERE k.tenant_id = $1
             ORDER BY k.created_at, k.id",
        )
        .bind(tenant.id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(ApiKeyRecord::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, api_key_id = %id))]
    async fn revoke_api_key(&self, tenant: &TenantCtx, id: ApiKeyId) -> Result<bool, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.id)
        .bind(id.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(done == 1)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn insert_enrollment_token(
        &self,
        tenant: &TenantCtx,
        token_hash: &[u8],
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, tenant_id, token_hash, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(Uuid::now_v7())
        .bind(tenant.id)
        .bind(token_hash)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(agent_id = %agent.id, agent = %agent.name))]
    async fn enroll_agent_within(
        &self,
        token_hash: &[u8],
        agent: NewAgent,
        default_max_agents: Option<u32>,
    ) -> Result<(Tenant, AgentRecord), RedeemError> {
        let mut tx = self.pool().begin().await?;
        // The row lock makes concurrent redemptions of one token wait for each other;
        // the second then sees `used`.
        let token: Option<TokenRow> = sqlx::query_as(
            "SELECT e.id, e.tenant_id, e.used_at IS NOT NULL AS used,
                    e.expires_at <= now() AS expired,
                    t.name AS tenant_name, t.created_at AS tenant_created_at
             FROM enrollment_tokens e JOIN tenants t ON t.id = e.tenant_id
             WHERE e.token_hash = $1
             FOR UPDATE OF e",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let token = token.ok_or(RedeemError::NotFound)?;
        if token.used {
            return Err(RedeemError::AlreadyUsed);
        }
        if token.expired {
            return Err(RedeemError::Expired);
        }
        // The quota: the tenant row lock serializes the tenant's enrollments, so two
        // cannot both take the last place.
        let (limit, enrolled): (Option<i64>, i64) = sqlx::query_as(
            "SELECT (limits->>'max_agents')::bigint,
                    (SELECT count(*) FROM agents WHERE tenant_id = $1)
             FROM tenants WHERE id = $1 FOR UPDATE",
        )
        .bind(token.tenant_id)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(max) = limit.or(default_max_agents.map(i64::from)) {
            if enrolled >= max {
                return Err(RedeemError::QuotaExceeded { max });
            }
        }
        // On a taken name the transaction is dropped (rolled back): the token stays unused.
        let record = insert_agent(&mut tx, token.tenant_id, &agent)
            .await?
            .ok_or(RedeemError::NameTaken)?;
        sqlx::query("UPDATE enrollment_tokens SET used_at = now(), agent_id = $2 WHERE id = $1")
            .bind(token.id)
            .bind(agent.id.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let tenant = joined(token.tenant_id, token.tenant_name, token.tenant_created_at)?;
        Ok((tenant, record))
    }
}
