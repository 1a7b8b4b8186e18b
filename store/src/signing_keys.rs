//! Keys that sign what the platform sends to agents. Platform-level (no tenant).
//!
//! The store only keeps bytes; generating keys and signing is `ris_broker::envelope`'s
//! job.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::pg::micros;
use crate::{PgStore, StoreError};

/// Lock class of the advisory lock taken while the first key is created.
const LOCK_CLASS: i32 = 0x5a_0d_18;

/// A freshly generated key, to insert.
#[derive(Clone)]
pub struct NewSigningKey {
    pub kid: String,
    pub public_key: [u8; 32],
    pub secret_seed: [u8; 32],
}

#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub public_key: Vec<u8>,
    pub secret_seed: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub activate_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("activate_at", &self.activate_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait SigningKeyRepo: Send + Sync {
    /// The key to sign with now: the newest unretired key already active. When there
    /// is none at all, `candidate` becomes the first (active at once).
    async fn current_signing_key(
        &self,
        candidate: NewSigningKey,
    ) -> Result<SigningKeyRecord, StoreError>;
    /// Every unretired key (including ones not active yet), oldest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// Publishes `key`, to start signing after `delay` (so agents learn it first).
    async fn add_signing_key(
        &self,
        key: NewSigningKey,
        delay: Duration,
    ) -> Result<SigningKeyRecord, StoreError>;
    /// Retires a key (it no longer verifies). `false` if unknown or already retired.
    async fn retire_signing_key(&self, kid: &str) -> Result<bool, StoreError>;
}

const COLUMNS: &str = "kid, public_key, secret_seed, created_at, activate_at, retired_at";

#[async_trait]
impl SigningKeyRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn current_signing_key(
        &self,
        candidate: NewSigningKey,
    ) -> Result<SigningKeyRecord, StoreError> {
        let current = format!(
            "SELECT {COLUMNS} FROM signing_keys
             WHERE retired_at IS NULL AND activate_at <= now()
             ORDER BY activate_at DESC, kid DESC LIMIT 1"
        );
        if let Some(key) = sqlx::query_as(&current).fetch_optional(self.pool()).await? {
            return Ok(key);
        }
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, 1)")
            .bind(LOCK_CLASS)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, public_key, secret_seed)
             SELECT $1, $2, $3
             WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)",
        )
        .bind(&candidate.kid)
        .bind(&candidate.public_key[..])
        .bind(&candidate.secret_seed[..])
        .execute(&mut *tx)
        .await?;
        let key: Option<SigningKeyRecord> =
            sqlx::query_as(&current).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        key.ok_or_else(|| StoreError::Corrupt("no signing key is active yet".into()))
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM signing_keys WHERE retired_at IS NULL
             ORDER BY activate_at, kid"
        ))
        .fetch_all(self.pool())
        .await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kid = %key.kid))]
    async fn add_signing_key(
        &self,
        key: NewSigningKey,
        delay: Duration,
    ) -> Result<SigningKeyRecord, StoreError> {
        Ok(sqlx::query_as(&format!(
            "INSERT INTO signing_keys (kid, public_key, secret_seed, activate_at)
             VALUES ($1, $2, $3, now() + $4 * interval '1 microsecond')
             RETURNING {COLUMNS}"
        ))
        .bind(&key.kid)
        .bind(&key.public_key[..])
        .bind(&key.secret_seed[..])
        .bind(micros(delay))
        .fetch_one(self.pool())
        .await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kid))]
    async fn retire_signing_key(&self, kid: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE signing_keys SET retired_at = now() WHERE kid = $1 AND retired_at IS NULL",
        )
        .bind(kid)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(done == 1)
    }
}
