//! Dead letters: messages taken off a tenant's `ris.dead` queue, kept for listing,
//! replay and discarding.
//!
//! Inserting is idempotent: a fingerprint of the message (computed by PostgreSQL) is
//! unique per tenant, so a delivery that comes back after its ack was lost is stored
//! once. Every call is tenant-scoped.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::dead_letters::{DeadLetterId, Headers, MessageProperties};
use ris_schemas::ids::TaskId;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::pg::to_u32;
use crate::{Cursor, PgStore, StoreError, TenantCtx};

/// A message to park, as read from `ris.dead`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    pub source_queue: String,
    pub reason: String,
    /// Where a replay publishes it; empty when unknown.
    pub exchange: String,
    pub routing_key: String,
    pub headers: Headers,
    pub properties: MessageProperties,
    pub body: Vec<u8>,
    pub dead_at: DateTime<Utc>,
}

/// A dead letter as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterRecord {
    pub id: DeadLetterId,
    pub tenant_id: Uuid,
    pub source_queue: String,
    pub reason: String,
    pub exchange: String,
    pub routing_key: String,
    pub headers: Headers,
    pub properties: MessageProperties,
    pub body: Vec<u8>,
    pub dead_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replay_count: u32,
}

/// Where a page of dead letters ended (newest first: `dead_at` desc, id desc). Same
/// opaque encoding as the task list's [`Cursor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterCursor {
    pub dead_at: DateTime<Utc>,
    pub id: DeadLetterId,
}

impl DeadLetterCursor {
    /// The cursor that continues after `record`.
    pub fn after(record: &DeadLetterRecord) -> Self {
        Self {
            dead_at: record.dead_at,
            id: record.id,
        }
    }

    pub fn encode(&self) -> String {
        Cursor {
            created_at: self.dead_at,
            id: TaskId(self.id.0),
        }
        .encode()
    }

    /// `None` for anything [`DeadLetterCursor::encode`] did not produce.
    pub fn decode(s: &str) -> Option<Self> {
        let c = Cursor::decode(s)?;
        Some(Self {
            dead_at: c.created_at,
            id: DeadLetterId(c.id.0),
        })
    }
}

/// Dead letters of a tenant.
#[async_trait]
pub trait DeadLetterRepo: Send + Sync {
    /// Stores the message with a new id. The same message stored again (same source,
    /// reason, exchange, routing key, headers, properties and body) returns the first
    /// record instead.
    async fn insert_dead_letter(
        &self,
        tenant: &TenantCtx,
        letter: NewDeadLetter,
    ) -> Result<DeadLetterRecord, StoreError>;
    /// Newest first (`dead_at` desc, id desc); rows strictly after the cursor; limit
    /// clamped to 1..=500.
    async fn list_dead_letters(
        &self,
        tenant: &TenantCtx,
        limit: i64,
        after: Option<&DeadLetterCursor>,
    ) -> Result<Vec<DeadLetterRecord>, StoreError>;
    async fn get_dead_letter(
        &self,
        tenant: &TenantCtx,
        id: DeadLetterId,
    ) -> Result<Option<DeadLetterRecord>, StoreError>;
    /// Sets `replayed_at` to now and counts the replay. `None` if absent.
    async fn mark_replayed(
        &self,
        tenant: &TenantCtx,
        id: DeadLetterId,
    ) -> Result<Option<DeadLetterRecord>, StoreError>;
    /// `false` if absent.
    async fn delete_dead_letter(
        &self,
        tenant: &TenantCtx,
        id: DeadLetterId,
    ) -> Result<bool, StoreError>;
}

macro_rules! columns {
    () => {
        "id, tenant_id, source_queue, reason, exchange, routing_key, headers, properties, \
         body, dead_at, replayed_at, replay_count"
    };
}

/// The fingerprint of the message in parameters `$1`..`$7` (see the migration); both
/// queries of [`DeadLetterRepo::insert_dead_letter`] bind them first, in this order.
macro_rules! fingerprint {
    () => {
        "sha256(convert_to(jsonb_build_array($1::text, $2::text, $3::text, $4::text, \
         $5::jsonb, $6::jsonb)::text, 'UTF8') || $7::bytea)"
    };
}

#[derive(sqlx::FromRow)]
struct DeadLetterRow {
    id: Uuid,
    tenant_id: Uuid,
    source_queue: String,
    reason: String,
    exchange: String,
    routing_key: String,
    headers: serde_json::Value,
    properties: serde_json::Value,
    body: Vec<u8>,
    dead_at: DateTime<Utc>,
    replayed_at: Option<DateTime<Utc>>,
    replay_count: i32,
}

impl TryFrom<DeadLetterRow> for DeadLetterRecord {
    type Error = StoreError;
    fn try_from(r: DeadLetterRow) -> Result<Self, Self::Error> {
        Ok(DeadLetterRecord {
            id: DeadLetterId(r.id),
            tenant_id: r.tenant_id,
            source_queue: r.source_queue,
            reason: r.reason,
            exchange: r.exchange,
            routing_key: r.routing_key,
            headers: serde_json::from_value(r.headers)
                .map_err(|e| StoreError::corrupt("dead letter headers", e))?,
            properties: serde_json::from_value(r.properties)
                .map_err(|e| StoreError::corrupt("dead letter properties", e))?,
            body: r.body,
            dead_at: r.dead_at,
            replayed_at: r.replayed_at,
            replay_count: to_u32("dead letter replay count", r.replay_count)?,
        })
    }
}

/// Lists return at most this many rows.
const MAX_PAGE: i64 = 500;

#[async_trait]
impl DeadLetterRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, source = %letter.source_queue))]
    async fn insert_dead_letter(
        &self,
        tenant: &TenantCtx,
        letter: NewDeadLetter,
    ) -> Result<DeadLetterRecord, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let fingerprinted = |sql| {
            sqlx::query_as::<_, DeadLetterRow>(sql)
                .bind(&letter.source_queue)
                .bind(&letter.reason)
                .bind(&letter.exchange)
                .bind(&letter.routing_key)
                .bind(Json(&letter.headers))
                .bind(Json(&letter.properties))
                .bind(&letter.body)
        };
        let inserted = fingerprinted(concat!(
            "INSERT INTO dead_letters (source_queue, reason, exchange, routing_key, headers,
                                       properties, body, id, tenant_id, dead_at, fingerprint)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, ",
            fingerprint!(),
            ")
             ON CONFLICT (tenant_id, fingerprint) DO NOTHING
             RETURNING ",
            columns!()
        ))
        .bind(DeadLetterId::new().0)
        .bind(tenant.id)
        .bind(letter.dead_at)
        .fetch_optional(&mut *tx)
        .await?;
        let row = match inserted {
            Some(row) => row,
            // Already stored (the conflicting row is committed: ON CONFLICT waited).
            None => {
                fingerprinted(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM dead_letters WHERE tenant_id = $8 AND fingerprint = ",
                    fingerprint!(),
                ))
                .bind(tenant.id)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        row.try_into()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn list_dead_letters(
        &self,
        tenant: &TenantCtx,
        limit: i64,
        after: Option<&DeadLetterCursor>,
    ) -> Result<Vec<DeadLetterRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let mut query = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            columns!(),
            " FROM dead_letters WHERE tenant_id = "
        ));
        query.push_bind(tenant.id);
        if let Some(cursor) = after {
            query
                .push(" AND (dead_at, id) < (")
                .push_bind(cursor.dead_at)
                .push(", ")
                .push_bind(cursor.id.0)
                .push(")");
        }
        query
            .push(" ORDER BY dead_at DESC, id DESC LIMIT ")
            .push_bind(limit.clamp(1, MAX_PAGE));
        let rows: Vec<DeadLetterRow> = query.build_query_as().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.into_iter().map(DeadLetterRecord::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, dead_letter = %id))]
    async fn get_dead_letter(
        &self,
        tenant: &TenantCtx,
        id: DeadLetterId,
    ) -> Result<Option<DeadLetterRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<DeadLetterRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM dead_letters WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.id)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(DeadLetterRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, dead_letter = %id))]
    async fn mark_replayed(
        &self,
        tenant: &TenantCtx,
        id: DeadLetterId,
    ) -> Result<Option<DeadLetterRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<DeadLetterRow> = sqlx::query_as(concat!(
            "UPDATE dead_letters SET replayed_at = now(), replay_count = replay_count + 1
             WHERE tenant_id = $1 AND id = $2
             RETURNING ",
            columns!()
        ))
        .bind(tenant.id)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(DeadLetterRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, dead_letter = %id))]
    async fn delete_dead_letter(
        &self,
        tenant: &TenantCtx,
        id: DeadLetterId,
    ) -> Result<bool, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let deleted = sqlx::query("DELETE FROM dead_letters WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.id)
            .bind(id.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let c = DeadLetterCursor {
            dead_at: DateTime::<Utc>::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: DeadLetterId::new(),
        };
        assert_eq!(DeadLetterCursor::decode(&c.encode()), Some(c));
        assert_eq!(DeadLetterCursor::decode("nope"), None);
    }
}
