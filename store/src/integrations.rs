//! Integrations, and where a task's final outcome is to be sent (AMQP request/reply).
//!
//! An integration row records that the tenant has a broker user for the integration
//! (the password lives only in RabbitMQ). A task's `reply_to`/`correlation_id` come
//! from the AMQP properties of an integrator's submission; the dispatcher publishes
//! the task's final outcome there.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::ids::TaskId;
use ris_schemas::integrations::IntegrationName;
use ris_schemas::replies::{ReplyMessage, TaskReply};
use ris_schemas::version::V1;

use crate::tasks::{task_columns, TaskRow};
use crate::{PgStore, StoreError, TaskRecord, TenantCtx};

/// An integration as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationRecord {
    pub name: IntegrationName,
    pub created_at: DateTime<Utc>,
}

/// Where a task's final outcome goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTarget {
    /// A queue, reached through the default exchange.
    pub reply_to: String,
    pub correlation_id: Option<String>,
}

/// The reply a task's record makes (meant for a terminal task).
pub fn reply_of(task: &TaskRecord) -> ReplyMessage {
    ReplyMessage::Reply(TaskReply {
        v: V1,
        task_id: task.id,
        state: task.state,
        reason: task.reason.clone(),
        attempts: task.attempts,
        result: task.result.clone(),
    })
}

/// Integrations and reply targets. Every call is tenant-scoped.
#[async_trait]
pub trait IntegrationRepo: Send + Sync {
    /// `None` when the tenant already has an integration of that name.
    async fn insert_integration(
        &self,
        tenant: &TenantCtx,
        name: &IntegrationName,
    ) -> Result<Option<IntegrationRecord>, StoreError>;
    /// By name.
    async fn list_integrations(
        &self,
        tenant: &TenantCtx,
    ) -> Result<Vec<IntegrationRecord>, StoreError>;
    async fn get_integration(
        &self,
        tenant: &TenantCtx,
        name: &IntegrationName,
    ) -> Result<Option<IntegrationRecord>, StoreError>;
    /// `false` if absent.
    async fn delete_integration(
        &self,
        tenant: &TenantCtx,
        name: &IntegrationName,
    ) -> Result<bool, StoreError>;
    /// Records where the task's final outcome goes (the latest submission wins) and
    /// returns the task as it is after that, `None` for an unknown task. The update
    /// waits for a concurrent state change to commit, so either that change's reply
    /// lookup sees this target or the returned task is already terminal: the caller
    /// replies at once when it is, and no final outcome goes unanswered.
    async fn set_reply_to(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        reply_to: &str,
        correlation_id: Option<&str>,
    ) -> Result<Option<TaskRecord>, StoreError>;
    /// The task's reply target, `None` when nobody awaits it (or it is unknown).
    async fn reply_target(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
    ) -> Result<Option<ReplyTarget>, StoreError>;
}

#[derive(sqlx::FromRow)]
struct IntegrationRow {
    name: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<IntegrationRow> for IntegrationRecord {
    type Error = StoreError;
    fn try_from(r: IntegrationRow) -> Result<Self, Self::Error> {
        Ok(IntegrationRecord {
            name: IntegrationName::parse(&r.name)
                .map_err(|e| StoreError::corrupt("integration name", e))?,
            created_at: r.created_at,
        })
    }
}

#[async_trait]
impl IntegrationRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, integration = %name))]
    async fn insert_integration(
        &self,
        tenant: &TenantCtx,
        name: &IntegrationName,
    ) -> Result<Option<IntegrationRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<IntegrationRow> = sqlx::query_as(
            "INSERT INTO integrations (tenant_id, name) VALUES ($1, $2)
             ON CONFLICT DO NOTHING RETURNING name, created_at",
        )
        .bind(tenant.id)
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(IntegrationRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn list_integrations(
        &self,
        tenant: &TenantCtx,
    ) -> Result<Vec<IntegrationRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows: Vec<IntegrationRow> = sqlx::query_as(
            "SELECT name, created_at FROM integrations WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant.id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(IntegrationRecord::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, integration = %name))]
    async fn get_integration(
        &self,
        tenant: &TenantCtx,
        name: &IntegrationName,
    ) -> Result<Option<IntegrationRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<IntegrationRow> = sqlx::query_as(
            "SELECT name, created_at FROM integrations WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant.id)
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(IntegrationRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, integration = %name))]
    async fn delete_integration(
        &self,
        tenant: &TenantCtx,
        name: &IntegrationName,
    ) -> Result<bool, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let done = sqlx::query("DELETE FROM integrations WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.id)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %id))]
    async fn set_reply_to(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        reply_to: &str,
        correlation_id: Option<&str>,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "UPDATE tasks SET reply_to = $3, correlation_id = $4
             WHERE tenant_id = $1 AND id = $2 RETURNING ",
            task_columns!()
        ))
        .bind(tenant.id)
        .bind(id.0)
        .bind(reply_to)
        .bind(correlation_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(TaskRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %id))]
    async fn reply_target(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
    ) -> Result<Option<ReplyTarget>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT reply_to, correlation_id FROM tasks
             WHERE tenant_id = $1 AND id = $2 AND reply_to IS NOT NULL",
        )
        .bind(tenant.id)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(|(reply_to, correlation_id)| ReplyTarget {
            reply_to,
            correlation_id,
        }))
    }
}
