//! Outbound webhooks and their deliveries.
//!
//! A delivery is one event to one webhook: created once per `(webhook_id, event_id)`
//! (an event the dispatcher reads twice is delivered once), then worked through by the
//! dispatcher's delivery loop, which claims due rows across tenants with a lease
//! ([`WebhookRepo::claim_due_deliveries`]) and records each attempt's outcome. The
//! retry schedule is `next_attempt_at`, so it survives restarts. Everything but the
//! claim is tenant-scoped.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::task::HttpUrl;
use ris_schemas::webhooks::{
    CreateWebhook, DeliveryAttemptView, DeliveryId, DeliveryStatus, EventPattern, EventPatterns,
    WebhookId, WebhookSecret,
};
use sqlx::types::Json;
use uuid::Uuid;

use crate::pg::{micros, to_u32};
use crate::tenants::joined;
use crate::{PgStore, StoreError, Tenant, TenantCtx};

/// A webhook as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    pub id: WebhookId,
    pub tenant_id: Uuid,
    pub url: HttpUrl,
    pub events: EventPatterns,
    pub secret: WebhookSecret,
    pub created_at: DateTime<Utc>,
}

/// A delivery as stored (its body apart).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub tenant_id: Uuid,
    pub webhook_id: WebhookId,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts made in total.
    pub attempt: u32,
    /// Attempts made before the latest redelivery request: the retry budget counts
    /// `attempt - budget_from`.
    pub budget_from: u32,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub attempts: Vec<DeliveryAttemptView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An event to deliver, as read from `ris.events`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    /// Its type, also its routing key.
    pub event_type: String,
    /// Exactly as published.
    pub body: Vec<u8>,
}

/// A delivery whose attempt is due, with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub tenant: Tenant,
    pub delivery: DeliveryRecord,
    pub url: HttpUrl,
    pub secret: WebhookSecret,
    pub body: Vec<u8>,
}

/// How an attempt ended, and what happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Accepted: no more attempts.
    Succeeded,
    /// Failed; try again at this time.
    RetryAt(DateTime<Utc>),
    /// Failed, and the retry budget is spent.
    Dead,
}

/// One attempt, for [`WebhookRepo::record_delivery_attempt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub next: NextStep,
    pub response_status: Option<u16>,
    pub error: Option<String>,
}

/// Webhooks of a tenant and their deliveries.
#[async_trait]
pub trait WebhookRepo: Send + Sync {
    async fn create_webhook(
        &self,
        tenant: &TenantCtx,
        webhook: &CreateWebhook,
    ) -> Result<WebhookRecord, StoreError>;
    /// Oldest first.
    async fn list_webhooks(&self, tenant: &TenantCtx) -> Result<Vec<WebhookRecord>, StoreError>;
    async fn get_webhook(
        &self,
        tenant: &TenantCtx,
        id: WebhookId,
    ) -> Result<Option<WebhookRecord>, StoreError>;
    /// Deletes the webhook and its deliveries. `false` if absent.
    async fn delete_webhook(&self, tenant: &TenantCtx, id: WebhookId) -> Result<bool, StoreError>;
    /// One `pending` delivery of `event` per webhook in `webhooks` that still exists,
    /// due now; a `(webhook, event)` pair already stored is left alone. Returns how many
    /// were created.
    async fn create_deliveries(
        &self,
        tenant: &TenantCtx,
        event: &NewEvent,
        webhooks: &[WebhookId],
    ) -> Result<u64, StoreError>;
    /// Cross-tenant: `pending` and `failed` deliveries that are due, oldest due first,
    /// at most `limit`. Each is leased: not offered again before `lease` has passed, so
    /// concurrent dispatchers never send the same delivery at once.
    async fn claim_due_deliveries(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<DueDelivery>, StoreError>;
    /// Records attempt number `attempt + 1` of a delivery claimed with `attempt`
    /// attempts made (fenced: `false`, and nothing changes, when another attempt was
    /// recorded meanwhile or the delivery is no longer pending or failed).
    async fn record_delivery_attempt(
        &self,
        tenant: &TenantCtx,
        id: DeliveryId,
        attempt: u32,
        outcome: &AttemptOutcome,
    ) -> Result<bool, StoreError>;
    /// Newest first, at most `limit` (clamped to 1..=500).
    async fn list_deliveries(
        &self,
        tenant: &TenantCtx,
        webhook: WebhookId,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Back to `pending`, due now, with a fresh retry budget. `None` if absent.
    async fn redeliver(
        &self,
        tenant: &TenantCtx,
        webhook: WebhookId,
        id: DeliveryId,
    ) -> Result<Option<DeliveryRecord>, StoreError>;
}

macro_rules! webhook_columns {
    () => {
        "id, tenant_id, url, events, secret, created_at"
    };
}

macro_rules! delivery_columns {
    () => {
        "id, tenant_id, webhook_id, event_id, event_type, status, attempt, budget_from, \
         response_status, error, next_attempt_at, attempt_log, created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct WebhookRow {
    id: Uuid,
    tenant_id: Uuid,
    url: String,
    events: Vec<String>,
    secret: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<WebhookRow> for WebhookRecord {
    type Error = StoreError;
    fn try_from(r: WebhookRow) -> Result<Self, Self::Error> {
        let patterns = r
            .events
            .into_iter()
            .map(EventPattern::try_from)
            .collect::<Result<Vec<_>, _>>()
            .and_then(EventPatterns::try_from)
            .map_err(|e| StoreError::corrupt("webhook events", e))?;
        Ok(WebhookRecord {
            id: WebhookId(r.id),
            tenant_id: r.tenant_id,
            url: HttpUrl::try_from(r.url).map_err(|e| StoreError::corrupt("webhook url", e))?,
            events: patterns,
            secret: WebhookSecret::try_from(r.secret)
                .map_err(|e| StoreError::corrupt("webhook secret", e))?,
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    tenant_id: Uuid,
    webhook_id: Uuid,
    event_id: Uuid,
    event_type: String,
    status: String,
    attempt: i32,
    budget_from: i32,
    response_status: Option<i32>,
    error: Option<String>,
    next_attempt_at: DateTime<Utc>,
    attempt_log: Json<Vec<DeliveryAttemptView>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<DeliveryRow> for DeliveryRecord {
    type Error = StoreError;
    fn try_from(r: DeliveryRow) -> Result<Self, Self::Error> {
        Ok(DeliveryRecord {
            id: DeliveryId(r.id),
            tenant_id: r.tenant_id,
            webhook_id: WebhookId(r.webhook_id),
            event_id: r.event_id,
            event_type: r.event_type,
            status: r
                .status
                .parse()
                .map_err(|e| StoreError::corrupt("delivery status", e))?,
            attempt: to_u32("delivery attempt", r.attempt)?,
            budget_from: to_u32("delivery budget", r.budget_from)?,
            response_status: r.response_status.and_then(|s| u16::try_from(s).ok()),
            error: r.error,
            next_attempt_at: r.next_attempt_at,
            attempts: r.attempt_log.0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// A claimed delivery joined with its webhook and tenant.
#[derive(sqlx::FromRow)]
struct DueRow {
    #[sqlx(flatten)]
    delivery: DeliveryRow,
    body: Vec<u8>,
    url: String,
    secret: String,
    tenant_name: String,
    tenant_created_at: DateTime<Utc>,
}

impl TryFrom<DueRow> for DueDelivery {
    type Error = StoreError;
    fn try_from(r: DueRow) -> Result<Self, Self::Error> {
        let delivery = DeliveryRecord::try_from(r.delivery)?;
        Ok(DueDelivery {
            tenant: joined(delivery.tenant_id, r.tenant_name, r.tenant_created_at)?,
            delivery,
            url: HttpUrl::try_from(r.url).map_err(|e| StoreError::corrupt("webhook url", e))?,
            secret: WebhookSecret::try_from(r.secret)
                .map_err(|e| StoreError::corrupt("webhook secret", e))?,
            body: r.body,
        })
    }
}

/// Lists and claims return at most this many rows.
const MAX_PAGE: i64 = 500;

#[async_trait]
impl WebhookRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn create_webhook(
        &self,
        tenant: &TenantCtx,
        webhook: &CreateWebhook,
    ) -> Result<WebhookRecord, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let events: Vec<&str> = webhook
            .events
            .as_slice()
            .iter()
            .map(EventPattern::as_str)
            .collect();
        let row: WebhookRow = sqlx::query_as(concat!(
            "INSERT INTO webhooks (id, tenant_id, url, events, secret)
             VALUES ($1, $2, $3, $4, $5) RETURNING ",
            webhook_columns!()
        ))
        .bind(WebhookId::new().0)
        .bind(tenant.id)
        .bind(webhook.url.as_url().as_str())
        .bind(&events)
        .bind(webhook.secret.expose())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        row.try_into()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn list_webhooks(&self, tenant: &TenantCtx) -> Result<Vec<WebhookRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows: Vec<WebhookRow> = sqlx::query_as(concat!(
            "SELECT ",
            webhook_columns!(),
            " FROM webhooks WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant.id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(WebhookRecord::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, webhook = %id))]
    async fn get_webhook(
        &self,
        tenant: &TenantCtx,
        id: WebhookId,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<WebhookRow> = sqlx::query_as(concat!(
            "SELECT ",
            webhook_columns!(),
            " FROM webhooks WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.id)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(WebhookRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, webhook = %id))]
    async fn delete_webhook(&self, tenant: &TenantCtx, id: WebhookId) -> Result<bool, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let deleted = sqlx::query("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.id)
            .bind(id.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, event = %event.event_id))]
    async fn create_deliveries(
        &self,
        tenant: &TenantCtx,
        event: &NewEvent,
        webhooks: &[WebhookId],
    ) -> Result<u64, StoreError> {
        if webhooks.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = webhooks.iter().map(|w| w.0).collect();
        // One new id per webhook: UUIDv7 from Rust keeps them time-ordered.
        let delivery_ids: Vec<Uuid> = webhooks.iter().map(|_| DeliveryId::new().0).collect();
        let mut tx = self.tenant_tx(tenant).await?;
        let created = sqlx::query(
            "INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, event_type, body)
             SELECT d.id, w.tenant_id, w.id, $3, $4, $5
             FROM unnest($1::uuid[], $2::uuid[]) AS d (webhook_id, id)
             JOIN webhooks w ON w.id = d.webhook_id AND w.tenant_id = $6
             ON CONFLICT (webhook_id, event_id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&delivery_ids)
        .bind(event.event_id)
        .bind(&event.event_type)
        .bind(&event.body)
        .bind(tenant.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(created)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn claim_due_deliveries(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        // The statuses are spelled out (not bound) so the partial index applies.
        let rows: Vec<DueRow> = sqlx::query_as(concat!(
            "WITH claimed AS (
                 UPDATE webhook_deliveries
                 SET next_attempt_at = now() + $2 * interval '1 microsecond'
                 WHERE id IN (
                     SELECT id FROM webhook_deliveries
                     WHERE status IN ('pending', 'failed') AND next_attempt_at <= now()
                     ORDER BY next_attempt_at
                     LIMIT $1
                     FOR UPDATE SKIP LOCKED
                 )
                 RETURNING ",
            delivery_columns!(),
            ", body
             )
             SELECT c.*, w.url, w.secret, tn.name AS tenant_name,
                    tn.created_at AS tenant_created_at
             FROM claimed c
             JOIN webhooks w ON w.id = c.webhook_id
             JOIN tenants tn ON tn.id = c.tenant_id
             ORDER BY c.created_at, c.id"
        ))
        .bind(limit.clamp(0, MAX_PAGE))
        .bind(micros(lease))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(DueDelivery::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, delivery = %id))]
    async fn record_delivery_attempt(
        &self,
        tenant: &TenantCtx,
        id: DeliveryId,
        attempt: u32,
        outcome: &AttemptOutcome,
    ) -> Result<bool, StoreError> {
        let (status, next_at) = match outcome.next {
            NextStep::Succeeded => (DeliveryStatus::Succeeded, None),
            NextStep::RetryAt(at) => (DeliveryStatus::Failed, Some(at)),
            NextStep::Dead => (DeliveryStatus::Dead, None),
        };
        let mut tx = self.tenant_tx(tenant).await?;
        let updated = sqlx::query(
            "UPDATE webhook_deliveries
             SET attempt = attempt + 1, status = $4, response_status = $5, error = $6,
                 next_attempt_at = COALESCE($7, next_attempt_at), updated_at = now(),
                 attempt_log = attempt_log || jsonb_build_array(jsonb_build_object(
                     'attempt', attempt + 1, 'response_status', $5::integer,
                     'error', $6::text, 'at', now()))
             WHERE tenant_id = $1 AND id = $2 AND attempt = $3
               AND status IN ('pending', 'failed')",
        )
        .bind(tenant.id)
        .bind(id.0)
        .bind(crate::pg::to_i32(attempt))
        .bind(status.as_str())
        .bind(outcome.response_status.map(i32::from))
        .bind(outcome.error.as_deref())
        .bind(next_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(updated > 0)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, webhook = %webhook))]
    async fn list_deliveries(
        &self,
        tenant: &TenantCtx,
        webhook: WebhookId,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries WHERE tenant_id = $1 AND webhook_id = $2
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(tenant.id)
        .bind(webhook.0)
        .bind(limit.clamp(1, MAX_PAGE))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(DeliveryRecord::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, delivery = %id))]
    async fn redeliver(
        &self,
        tenant: &TenantCtx,
        webhook: WebhookId,
        id: DeliveryId,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<DeliveryRow> = sqlx::query_as(concat!(
            "UPDATE webhook_deliveries
             SET status = 'pending', budget_from = attempt, next_attempt_at = now(),
                 updated_at = now()
             WHERE tenant_id = $1 AND webhook_id = $2 AND id = $3
             RETURNING ",
            delivery_columns!()
        ))
        .bind(tenant.id)
        .bind(webhook.0)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(DeliveryRecord::try_from).transpose()
    }
}
