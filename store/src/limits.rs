//! Tenant rate limits and quotas, kept as JSON on the tenant row (`tenants.limits`).

use async_trait::async_trait;
use ris_schemas::security::TenantLimits;
use sqlx::types::Json;

use crate::{PgStore, StoreError, TenantCtx};

/// Rate limits and quotas. Platform-level writes; reads by the tenant's own calls.
#[async_trait]
pub trait LimitsRepo: Send + Sync {
    /// The tenant's own limits (absent fields: the platform defaults apply).
    async fn tenant_limits(&self, tenant: &TenantCtx) -> Result<TenantLimits, StoreError>;
    /// Replaces the tenant's limits.
    async fn set_tenant_limits(
        &self,
        tenant: &TenantCtx,
        limits: &TenantLimits,
    ) -> Result<(), StoreError>;
    /// Agents enrolled in the tenant (for the `max_agents` quota).
    async fn count_agents(&self, tenant: &TenantCtx) -> Result<i64, StoreError>;
}

#[async_trait]
impl LimitsRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn tenant_limits(&self, tenant: &TenantCtx) -> Result<TenantLimits, StoreError> {
        let row: Option<(Json<TenantLimits>,)> =
            sqlx::query_as("SELECT limits FROM tenants WHERE id = $1")
                .bind(tenant.id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(Json(l),)| l).unwrap_or_default())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn set_tenant_limits(
        &self,
        tenant: &TenantCtx,
        limits: &TenantLimits,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE tenants SET limits = $2 WHERE id = $1")
            .bind(tenant.id)
            .bind(Json(limits))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn count_agents(&self, tenant: &TenantCtx) -> Result<i64, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM agents WHERE tenant_id = $1")
            .bind(tenant.id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }
}
