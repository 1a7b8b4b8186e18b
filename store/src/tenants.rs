//! Tenants: the scope of every other row.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::ids::TenantName;
use uuid::Uuid;

use crate::{PgStore, StoreError, TenantRepo};

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: Uuid,
    pub name: TenantName,
    pub created_at: DateTime<Utc>,
}

impl Tenant {
    /// The scope to pass to tenant-scoped store calls.
    pub fn ctx(&self) -> TenantCtx {
        TenantCtx {
            id: self.id,
            name: self.name.clone(),
        }
    }
}

/// The tenant a call acts for, taken from the caller's credential. Every tenant-scoped
/// store call takes one and sees only that tenant's rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantCtx {
    pub id: Uuid,
    /// Carried for logs and spans.
    pub name: TenantName,
}

impl From<&Tenant> for TenantCtx {
    fn from(t: &Tenant) -> Self {
        t.ctx()
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TenantRow {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;
    fn try_from(r: TenantRow) -> Result<Self, Self::Error> {
        Ok(Tenant {
            id: r.id,
            name: parse_name(r.name)?,
            created_at: r.created_at,
        })
    }
}

/// Builds the [`Tenant`] that cross-tenant queries return as `tenant_name` and
/// `tenant_created_at` next to the row's own `tenant_id`.
pub(crate) fn joined(
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id,
        name: parse_name(name)?,
        created_at,
    })
}

fn parse_name(name: String) -> Result<TenantName, StoreError> {
    TenantName::try_from(name).map_err(|e| StoreError::corrupt("tenant name", e))
}

#[async_trait]
impl TenantRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %name))]
    async fn create_tenant(&self, name: &TenantName) -> Result<(Tenant, bool), StoreError> {
        let created: Option<TenantRow> = sqlx::query_as(
            "INSERT INTO tenants (id, name) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING
             RETURNING id, name, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(name.as_str())
        .fetch_optional(self.pool())
        .await?;
        if let Some(row) = created {
            return Ok((row.try_into()?, true));
        }
        // The name exists (its insert has committed: ON CONFLICT waited for it).
        match self.get_tenant(name).await? {
            Some(t) => Ok((t, false)),
            // Deleted in between: rare enough to report rather than loop.
            None => Err(StoreError::Corrupt(format!(
                "tenant {name} vanished while being created"
            ))),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %name))]
    async fn get_tenant(&self, name: &TenantName) -> Result<Option<Tenant>, StoreError> {
        let row: Option<TenantRow> =
            sqlx::query_as("SELECT id, name, created_at FROM tenants WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(self.pool())
                .await?;
        row.map(Tenant::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<TenantRow> =
            sqlx::query_as("SELECT id, name, created_at FROM tenants ORDER BY name")
                .fetch_all(self.pool())
                .await?;
        rows.into_iter().map(Tenant::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %name))]
    async fn delete_tenant(&self, name: &TenantName) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tenants WHERE name = $1")
            .bind(name.as_str())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
