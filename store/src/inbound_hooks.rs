//! Inbound webhooks: a signed POST to `/v1/hooks/{id}` turns the hook's template into
//! a task of the hook's tenant.
//!
//! Management calls are tenant-scoped; [`InboundHookRepo::find_inbound_hook`] is the
//! one cross-tenant lookup, for the trigger, whose credential is the hook id plus a
//! signature under the hook's secret (as the heartbeat's is the agent id plus a token).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::hooks::{HookField, HookName, HookTemplate, InboundHookId};
use ris_schemas::webhooks::WebhookSecret;
use uuid::Uuid;

use crate::tenants::joined;
use crate::{PgStore, StoreError, Tenant, TenantCtx};

/// An inbound hook as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundHookRecord {
    pub id: InboundHookId,
    pub name: HookName,
    pub secret: WebhookSecret,
    pub template: HookTemplate,
    pub created_at: DateTime<Utc>,
}

/// A hook to create.
#[derive(Debug, Clone)]
pub struct NewInboundHook {
    pub id: InboundHookId,
    pub name: HookName,
    pub secret: WebhookSecret,
    pub template: HookTemplate,
}

/// Inbound hooks.
#[async_trait]
pub trait InboundHookRepo: Send + Sync {
    /// `None` when the tenant already has a hook of that name.
    async fn insert_inbound_hook(
        &self,
        tenant: &TenantCtx,
        hook: &NewInboundHook,
    ) -> Result<Option<InboundHookRecord>, StoreError>;
    /// Oldest first.
    async fn list_inbound_hooks(
        &self,
        tenant: &TenantCtx,
    ) -> Result<Vec<InboundHookRecord>, StoreError>;
    /// `false` if absent (or another tenant's).
    async fn delete_inbound_hook(
        &self,
        tenant: &TenantCtx,
        id: InboundHookId,
    ) -> Result<bool, StoreError>;
    /// Cross-tenant lookup for a trigger: the hook and its tenant.
    async fn find_inbound_hook(
        &self,
        id: InboundHookId,
    ) -> Result<Option<(Tenant, InboundHookRecord)>, StoreError>;
}

const COLUMNS: &str = "h.id, h.tenant_id, h.name, h.secret, h.template, h.fields, h.created_at";

#[derive(sqlx::FromRow)]
struct HookRow {
    id: Uuid,
    name: String,
    secret: String,
    template: serde_json::Value,
    fields: serde_json::Value,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct HookWithTenantRow {
    #[sqlx(flatten)]
    hook: HookRow,
    tenant_id: Uuid,
    tenant_name: String,
    tenant_created_at: DateTime<Utc>,
}

impl TryFrom<HookRow> for InboundHookRecord {
    type Error = StoreError;
    fn try_from(r: HookRow) -> Result<Self, Self::Error> {
        let fields: Vec<HookField> =
            serde_json::from_value(r.fields).map_err(|e| StoreError::corrupt("hook fields", e))?;
        Ok(InboundHookRecord {
            id: InboundHookId(r.id),
            name: HookName::parse(&r.name).map_err(|e| StoreError::corrupt("hook name", e))?,
            secret: WebhookSecret::try_from(r.secret)
                .map_err(|e| StoreError::corrupt("hook secret", e))?,
            template: HookTemplate::new(r.template, fields)
                .map_err(|e| StoreError::corrupt("hook template", e))?,
            created_at: r.created_at,
        })
    }
}

#[async_trait]
impl InboundHookRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, hook = %hook.id))]
    async fn insert_inbound_hook(
        &self,
        tenant: &TenantCtx,
        hook: &NewInboundHook,
    ) -> Result<Option<InboundHookRecord>, StoreError> {
        let fields = serde_json::to_value(hook.template.fields())
            .map_err(|e| StoreError::corrupt("hook fields", e))?;
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<HookRow> = sqlx::query_as(
            "INSERT INTO inbound_hooks AS h (id, tenant_id, name, secret, template, fields)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, name) DO NOTHING
             RETURNING h.id, h.name, h.secret, h.template, h.fields, h.created_at",
        )
        .bind(hook.id.0)
        .bind(tenant.id)
        .bind(hook.name.as_str())
        .bind(hook.secret.expose())
        .bind(hook.template.template())
        .bind(fields)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(InboundHookRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn list_inbound_hooks(
        &self,
        tenant: &TenantCtx,
    ) -> Result<Vec<InboundHookRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows: Vec<HookRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM inbound_hooks h WHERE h.tenant_id = $1 ORDER BY h.id"
        ))
        .bind(tenant.id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(InboundHookRecord::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, hook = %id))]
    async fn delete_inbound_hook(
        &self,
        tenant: &TenantCtx,
        id: InboundHookId,
    ) -> Result<bool, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let done = sqlx::query("DELETE FROM inbound_hooks WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.id)
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(hook = %id))]
    async fn find_inbound_hook(
        &self,
        id: InboundHookId,
    ) -> Result<Option<(Tenant, InboundHookRecord)>, StoreError> {
        let row: Option<HookWithTenantRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS}, t.name AS tenant_name, t.created_at AS tenant_created_at
             FROM inbound_hooks h JOIN tenants t ON t.id = h.tenant_id
             WHERE h.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let tenant = joined(row.tenant_id, row.tenant_name, row.tenant_created_at)?;
        Ok(Some((tenant, row.hook.try_into()?)))
    }
}
