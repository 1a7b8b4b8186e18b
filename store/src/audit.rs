//! The audit log: append-only, one SHA-256 hash chain per tenant (and one for the
//! platform), verifiable end to end.
//!
//! An entry's hash covers its canonical form ([`canonical`]: a JSON array of every
//! field in a fixed order, the time in RFC 3339 with microseconds, and the previous
//! entry's hash). Appending takes a transaction-scoped advisory lock on the chain, reads
//! the chain's head and inserts the next entry, so concurrent writers queue up instead
//! of forking the chain. Entries are appended in batches (the API's audit writer groups
//! the entries of concurrent requests), so the lock is taken once per batch, not per
//! request.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use ris_schemas::ids::TenantName;
use ris_schemas::security::{AuditOutcome, BrokenLink};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{PgStore, StoreError, TenantCtx};

/// Class of the advisory locks taken on audit chains (the other key is the chain's hash).
const LOCK_CLASS: i32 = 0x5a_0d_17;
/// Most entries [`AuditRepo::append_audit`] takes at once (13 bind parameters each, well
/// under PostgreSQL's 65,535).
pub const MAX_AUDIT_BATCH: usize = 1000;
/// Rows read per round trip while verifying.
const VERIFY_BATCH: i64 = 1000;

/// An entry to append; the store adds `seq`, `prev_hash` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// `None`: the platform's chain.
    pub tenant: Option<TenantCtx>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: AuditOutcome,
    pub status: u16,
    pub request_id: Option<String>,
    pub source: Option<String>,
    /// Truncated to microseconds (what PostgreSQL keeps) before hashing.
    pub at: DateTime<Utc>,
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRecord {
    pub tenant_id: Option<Uuid>,
    pub seq: i64,
    pub tenant_name: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub status: i32,
    pub request_id: Option<String>,
    pub source: Option<String>,
    pub at: DateTime<Utc>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl AuditRecord {
    pub fn tenant(&self) -> Option<TenantName> {
        self.tenant_name
            .as_deref()
            .and_then(|n| TenantName::parse(n).ok())
    }
}

/// Filters of `GET /v1/audit`; all optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// The audit log.
#[async_trait]
pub trait AuditRepo: Send + Sync {
    /// Appends `entries`, in order, to their chain (the tenant's, or the platform's when
    /// `tenant` is `None`): one transaction, one lock on the chain, one insert. Every
    /// entry must belong to the same chain. At most [`MAX_AUDIT_BATCH`] entries.
    async fn append_audit(
        &self,
        entries: Vec<NewAuditEntry>,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Newest first, entries with `seq` below `before` (a cursor), at most `limit`.
    async fn list_audit(
        &self,
        tenant: Option<&TenantCtx>,
        filter: &AuditFilter,
        limit: i64,
        before: Option<i64>,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Recomputes the whole chain: entries checked and the first broken link.
    async fn verify_audit(
        &self,
        tenant: Option<&TenantCtx>,
    ) -> Result<(u64, Option<BrokenLink>), StoreError>;
}

/// Microsecond precision, as PostgreSQL stores it.
pub fn truncate_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// The bytes an entry's hash is computed over.
pub fn canonical(r: &AuditRecord) -> String {
    serde_json::json!([
        1,
        r.tenant_id.map(|t| t.to_string()),
        r.seq,
        r.tenant_name,
        r.actor,
        r.action,
        r.target,
        r.outcome,
        r.status,
        r.request_id,
        r.source,
        r.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        hex::encode(&r.prev_hash),
    ])
    .to_string()
}

pub fn entry_hash(r: &AuditRecord) -> Vec<u8> {
    Sha256::digest(canonical(r).as_bytes()).to_vec()
}

/// The chain key used by the unique index and the lock.
fn chain_key(tenant: Option<&TenantCtx>) -> Uuid {
    tenant.map_or(Uuid::nil(), |t| t.id)
}

/// How a statement picks one chain's rows (`$1` = [`chain_key`]), and the key to order
/// them by before `seq`, so that an index serves it. A tenant's chain is read under
/// row-level security, which keeps the `coalesce` expression of `audit_log_chain` from
/// being used (each read scanned the whole log): it goes through `tenant_id`
/// (`audit_log_tenant_chain`). The platform's chain, read without row-level security,
/// through the expression.
fn chain_sql(tenant: Option<&TenantCtx>) -> (&'static str, &'static str) {
    match tenant {
        Some(_) => ("tenant_id = $1", "tenant_id"),
        None => (
            "coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid) = $1",
            "coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)",
        ),
    }
}

const COLUMNS: &str = "tenant_id, seq, tenant_name, actor, action, target, outcome, status, \
                       request_id, source, at, prev_hash, hash";

impl PgStore {
    async fn chain_tx(
        &self,
        tenant: Option<&TenantCtx>,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        match tenant {
            Some(t) => self.tenant_tx(t).await,
            None => Ok(self.pool().begin().await?),
        }
    }
}

#[async_trait]
impl AuditRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(entries = entries.len()))]
    async fn append_audit(
        &self,
        entries: Vec<NewAuditEntry>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let Some(first) = entries.first() else {
            return Ok(Vec::new());
        };
        let chain = first.tenant.clone();
        let key = chain_key(chain.as_ref());
        if entries.len() > MAX_AUDIT_BATCH {
            return Err(StoreError::Invalid(format!(
                "{} audit entries at once (at most {MAX_AUDIT_BATCH})",
                entries.len()
            )));
        }
        if entries.iter().any(|e| chain_key(e.tenant.as_ref()) != key) {
            return Err(StoreError::Invalid(
                "an audit batch must belong to one chain".into(),
            ));
        }
        let mut tx = self.chain_tx(chain.as_ref()).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(key.to_string())
            .execute(&mut *tx)
            .await?;
        let (filter, order) = chain_sql(chain.as_ref());
        let head: Option<(i64, Vec<u8>)> = sqlx::query_as(&format!(
            "SELECT seq, hash FROM audit_log WHERE {filter}
             ORDER BY {order} DESC, seq DESC
             LIMIT 1"
        ))
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        let (mut seq, mut prev_hash) = head.map_or((0, vec![0; 32]), |h| h);
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries {
            seq += 1;
            let mut record = AuditRecord {
                tenant_id: entry.tenant.as_ref().map(|t| t.id),
                seq,
                tenant_name: entry.tenant.as_ref().map(|t| t.name.to_string()),
                actor: entry.actor,
                action: entry.action,
                target: entry.target,
                outcome: entry.outcome.as_str().to_owned(),
                status: i32::from(entry.status),
                request_id: entry.request_id,
                source: entry.source,
                at: truncate_micros(entry.at),
                prev_hash,
                hash: Vec::new(),
            };
            record.hash = entry_hash(&record);
            prev_hash = record.hash.clone();
            records.push(record);
        }
        let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "INSERT INTO audit_log ({COLUMNS}) "
        ));
        insert.push_values(&records, |mut row, r| {
            row.push_bind(r.tenant_id)
                .push_bind(r.seq)
                .push_bind(&r.tenant_name)
                .push_bind(&r.actor)
                .push_bind(&r.action)
                .push_bind(&r.target)
                .push_bind(&r.outcome)
                .push_bind(r.status)
                .push_bind(&r.request_id)
                .push_bind(&r.source)
                .push_bind(r.at)
                .push_bind(&r.prev_hash)
                .push_bind(&r.hash);
        });
        insert.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(records)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_audit(
        &self,
        tenant: Option<&TenantCtx>,
        filter: &AuditFilter,
        limit: i64,
        before: Option<i64>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut tx = self.chain_tx(tenant).await?;
        let (chain, order) = chain_sql(tenant);
        let rows = sqlx::query_as::<_, AuditRecord>(&format!(
            "SELECT {COLUMNS} FROM audit_log
             WHERE {chain}
               AND ($2::bigint IS NULL OR seq < $2)
               AND ($3::text IS NULL OR action = $3)
               AND ($4::text IS NULL OR actor = $4)
               AND ($5::timestamptz IS NULL OR at >= $5)
               AND ($6::timestamptz IS NULL OR at < $6)
             ORDER BY {order} DESC, seq DESC
             LIMIT $7"
        ))
        .bind(chain_key(tenant))
        .bind(before)
        .bind(&filter.action)
        .bind(&filter.actor)
        .bind(filter.since)
        .bind(filter.until)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn verify_audit(
        &self,
        tenant: Option<&TenantCtx>,
    ) -> Result<(u64, Option<BrokenLink>), StoreError> {
        let mut tx = self.chain_tx(tenant).await?;
        let mut checked = 0u64;
        let mut expected_seq = 1i64;
        let mut prev = vec![0u8; 32];
        let (chain, order) = chain_sql(tenant);
        loop {
            let rows = sqlx::query_as::<_, AuditRecord>(&format!(
                "SELECT {COLUMNS} FROM audit_log
                 WHERE {chain} AND seq >= $2
                 ORDER BY {order}, seq
                 LIMIT $3"
            ))
            .bind(chain_key(tenant))
            .bind(expected_seq)
            .bind(VERIFY_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in rows {
                let broken = |problem: &str| BrokenLink {
                    seq: r.seq,
                    problem: problem.to_owned(),
                };
                if r.seq != expected_seq {
                    return Ok((checked, Some(broken("seq_gap"))));
                }
                if entry_hash(&r) != r.hash {
                    return Ok((checked, Some(broken("hash_mismatch"))));
                }
                if r.prev_hash != prev {
                    return Ok((checked, Some(broken("prev_mismatch"))));
                }
                checked += 1;
                expected_seq += 1;
                prev = r.hash;
            }
        }
        tx.commit().await?;
        Ok((checked, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_changed_field_changes_the_hash() {
        let base = AuditRecord {
            tenant_id: None,
            seq: 1,
            tenant_name: None,
            actor: "platform-admin".into(),
            action: "createTenant".into(),
            target: "/v1/tenants".into(),
            outcome: "success".into(),
            status: 201,
            request_id: Some("r".into()),
            source: None,
            at: truncate_micros(Utc::now()),
            prev_hash: vec![0; 32],
            hash: Vec::new(),
        };
        let h = entry_hash(&base);
        let mut other = base.clone();
        other.actor = "key:x".into();
        assert_ne!(entry_hash(&other), h);
        let mut other = base.clone();
        other.prev_hash = vec![1; 32];
        assert_ne!(entry_hash(&other), h);
        assert_eq!(entry_hash(&base.clone()), h);
    }
}
