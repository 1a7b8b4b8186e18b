//! [`PgStore`]: the connection pool, migrations and tenant-scoped transactions.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::{Store, StoreError, TenantCtx};

/// The PostgreSQL implementation of every repository.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// How long a caller waits for a free connection before the call fails. Short, so a
/// database outage turns into quick errors (and retries) rather than piled-up requests.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest any one statement may run (a stuck query or lock wait fails instead of
/// holding a connection forever).
const STATEMENT_TIMEOUT: &str = "60s";

impl PgStore {
    /// A pool that connects on first use, so a process can start while PostgreSQL is
    /// down; each connection is re-established when it breaks.
    pub fn connect_lazy(database_url: &str, max_connections: u32) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(database_url)?
            .options([("statement_timeout", STATEMENT_TIMEOUT)]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(PgStore { pool })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> PgStore {
        PgStore { pool }
    }

    /// Applies pending migrations. Safe to run from several processes at once: sqlx
    /// holds a PostgreSQL advisory lock while migrating.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!().run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction scoped to one tenant: runs as role `ris_app` with `ris.tenant_id`
    /// set, so row-level security hides every other tenant's rows. Both settings are
    /// transaction-local and vanish at commit or rollback, before the connection goes
    /// back to the pool.
    pub(crate) async fn tenant_tx(
        &self,
        tenant: &TenantCtx,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        // One round trip: BEGIN and the settings travel as one simple query. The tenant
        // id is a UUID (no quoting issue); the settings are transaction-local.
        let begin = format!(
            "BEGIN; SELECT set_config('role', 'ris_app', true), set_config('ris.tenant_id', '{}', true)",
            tenant.id
        );
        let tx = self.pool.begin_with(begin).await?;
        Ok(tx)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Converts a count stored as `integer` into the `u32` of the domain types.
pub(crate) fn to_u32(what: &str, v: i32) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is negative: {v}")))
}

/// Converts a domain count into `integer`, saturating (the API bounds these far lower).
pub(crate) fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// A duration as whole microseconds, for `$n * interval '1 microsecond'`, capped at ten
/// years so the interval arithmetic cannot overflow.
pub(crate) fn micros(d: Duration) -> i64 {
    const TEN_YEARS: i64 = 10 * 366 * 24 * 3600 * 1_000_000;
    i64::try_from(d.as_micros()).map_or(TEN_YEARS, |m| m.min(TEN_YEARS))
}
